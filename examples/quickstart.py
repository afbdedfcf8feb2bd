"""meterline in one run: a small web service reports usage through an outage.

``make demo`` runs this file. It starts meterline's reference ingest server on a free
port, simulates a web service (8 request threads, 100,000 events for 50 customers),
stops the server in the middle so the journal visibly takes over, starts it again so the
backlog replays, then prints the client's stats and the server's usage report next to
what was sent. Then the three systems meterline grew from, end to end: Per's confirmed
``await client.asend(...)`` and usage report for a window (``meterline usage``), Orb's
amendment of an event, and Tier's "set, not add" reports billed by a ``latest`` metric
and its ``can()`` against the server's entitlements.

The part a real application needs is only this::

    client = meterline.Client(api_key=..., base_url=..., journal_dir=...)
    client.report(customer, "api_call", {"tokens": n})   # in a request handler
    client.close()                                       # at shutdown (also automatic)
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter, defaultdict
from datetime import datetime, timedelta, timezone
from pathlib import Path

import httpx

import meterline

EVENTS = int(os.environ.get("DEMO_EVENTS", "100000"))
THREADS = 8
CUSTOMERS = 50
API_KEY = "demo-key"
# The billable metrics the server reports in GET /v1/usage (meterline serve --metrics FILE).
METRICS = [
    {"name": "api_calls", "event_name": "api_call", "aggregation": "count"},
    {"name": "tokens", "event_name": "api_call", "aggregation": "sum", "property": "tokens"},
    {"name": "pages", "event_name": "export", "aggregation": "sum", "property": "pages"},
    {"name": "seats", "event_name": "seats", "aggregation": "latest", "property": "count"},
    {"name": "seats_if_added", "event_name": "seats", "aggregation": "sum", "property": "count"},
]
# Entitlements for Tier's can() (meterline serve --plans FILE): 2 PDF exports a month.
PLANS = {
    "default_plan": "free",
    "plans": {"free": {"features": {"pdf_export": {"limit": 2, "unit": "quantity"}}}},
}


class Server:
    """The reference server as a child process, stoppable and restartable on one port."""

    def __init__(self, db: Path, metrics: Path, plans: Path) -> None:
        self.db = db
        self.metrics = metrics
        self.plans = plans
        self.port = 0
        self.proc: subprocess.Popen[str] | None = None

    def start(self) -> str:
        cmd = [sys.executable, "-m", "meterline.cli", "serve", "--port", str(self.port)]
        cmd += ["--db", str(self.db), "--api-key", API_KEY, "--metrics", str(self.metrics)]
        cmd += ["--plans", str(self.plans)]
        self.proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True)
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline().strip()
        if "listening on" not in line:
            raise SystemExit(f"the reference server did not start: {line!r}")
        url = line.rsplit(" ", 1)[-1]
        self.port = int(url.split(":")[2].split("/")[0])
        return url

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.terminate()
            self.proc.wait(timeout=10)
            if self.proc.stdout is not None:
                self.proc.stdout.close()
            self.proc = None


def simulate_service(
    client: meterline.Client, sent: dict[str, Counter[str]], stop_at: int, done: threading.Event
) -> None:
    """Request threads: each request reports one event, as a handler would."""
    lock = threading.Lock()
    counter = iter(range(EVENTS))

    def handle_requests() -> None:
        local_count: Counter[str] = Counter()
        local_tokens: Counter[str] = Counter()
        for i in counter:
            customer = f"cust_{i % CUSTOMERS:02d}"
            tokens = 1 + (i * 7919) % 1000
            time.sleep(0.0003)  # the request's own work
            client.report(customer, "api_call", {"tokens": tokens, "model": "small"})
            local_count[customer] += 1
            local_tokens[customer] += tokens
            if i == stop_at:
                done.set()
        with lock:
            sent["count"].update(local_count)
            sent["tokens"].update(local_tokens)

    threads = [threading.Thread(target=handle_requests) for _ in range(THREADS)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()


_last_line = 0.0


def progress(client: meterline.Client, label: str) -> None:
    """One status line: rewritten in place on a terminal, once a second in a log."""
    global _last_line
    tty = sys.stdout.isatty()
    if not tty and time.monotonic() - _last_line < 1.0 and label != "closed":
        return
    _last_line = time.monotonic()
    s = client.stats()
    start = "\r" if tty else ""
    print(
        f"{start}  {label:<12} reported {s['reported']:>7,}  sent {s['sent']:>7,}  "
        f"journaled {s['journaled']:>7,}  replayed {s['replayed']:>7,}  "
        f"queue {s['queue_events']:>6,}",
        end="" if tty else "\n",
        flush=True,
    )


def main() -> int:
    work = Path(tempfile.mkdtemp(prefix="meterline-demo-"))
    (work / "metrics.json").write_text(json.dumps({"metric": METRICS}, indent=2))
    (work / "plans.json").write_text(json.dumps(PLANS, indent=2))
    server = Server(work / "usage.db", work / "metrics.json", work / "plans.json")
    url = server.start()
    print(f"reference server: {url}  (db {server.db})")
    print(f"journal:          {work / 'journal'}")
    start = datetime.now(timezone.utc) - timedelta(seconds=1)
    client = meterline.Client(
        api_key=API_KEY,
        base_url=url,
        journal_dir=work / "journal",
        retry_attempts=2,
        probe_interval=0.5,
    )
    sent: dict[str, Counter[str]] = {"count": Counter(), "tokens": Counter()}
    halfway = threading.Event()
    service = threading.Thread(target=simulate_service, args=(client, sent, EVENTS // 2, halfway))
    print(f"\n1. {THREADS} request threads report {EVENTS:,} events for {CUSTOMERS} customers")
    service.start()
    halfway.wait()
    server.stop()
    print("\n2. the ingest server goes down halfway: meterline journals to disk")
    while service.is_alive():
        progress(client, "server down")
        service.join(0.25)
    deadline = time.monotonic() + 3
    while time.monotonic() < deadline:
        progress(client, "server down")
        time.sleep(0.25)
    server.start()
    print("\n3. the server is back: the journal replays, in order, exactly once")
    while client.stats()["journal_ready_batches"] or client.stats()["queue_events"]:
        progress(client, "replaying")
        time.sleep(0.25)
    result = client.close()
    progress(client, "closed")
    print(f"\n   close(): {result}")

    end = datetime.now(timezone.utc) + timedelta(seconds=1)
    report = httpx.get(
        f"{url}/usage",
        params={"start": start.isoformat(), "end": end.isoformat()},
        headers={"Authorization": f"Bearer {API_KEY}"},
        timeout=30,
    ).json()

    got_count: dict[str, int] = defaultdict(int)
    got_tokens: dict[str, int] = defaultdict(int)
    for row in report["usage"]:
        if row["event_name"] != "api_call":
            continue
        got_count[row["customer"]] += row["count"]
        got_tokens[row["customer"]] += row["sums"].get("tokens", 0)
    print("\n4. the server's usage report next to what was sent")
    print(f"   {'customer':<10} {'sent':>8} {'billed':>8} {'tokens sent':>12} {'billed':>12}")
    for customer in sorted(sent["count"])[:5]:
        print(
            f"   {customer:<10} {sent['count'][customer]:>8,} {got_count[customer]:>8,} "
            f"{sent['tokens'][customer]:>12,} {got_tokens[customer]:>12,}"
        )
    print(f"   ... {CUSTOMERS - 5} more customers")
    total_sent, total_got = sum(sent["count"].values()), sum(got_count.values())
    tok_sent, tok_got = sum(sent["tokens"].values()), sum(got_tokens.values())
    print(f"   {'total':<10} {total_sent:>8,} {total_got:>8,} {tok_sent:>12,} {tok_got:>12,}")
    stats = client.stats()
    print(f"\n   stats(): {dict(stats)}")
    same = dict(sent["count"]) == dict(got_count) and dict(sent["tokens"]) == dict(got_tokens)

    seed_systems_ok = seed_systems(url, work, start)
    server.stop()
    print(
        "\nRESULT: "
        + ("the usage report equals what was sent" if same else "MISMATCH between sent and billed")
    )
    return 0 if same and stats["dropped"] == 0 and seed_systems_ok else 1


def seed_systems(url: str, work: Path, start: datetime) -> bool:
    """Per's, Orb's and Tier's flows against the same server; True when each billed right."""
    client = meterline.Client(api_key=API_KEY, base_url=url, journal_dir=work / "journal-2")
    api = httpx.Client(base_url=url, headers={"Authorization": f"Bearer {API_KEY}"}, timeout=30)

    print("\n5. Per: `await client.asend(...)` returns once the server confirmed the event")

    async def per_exports() -> list[meterline.Receipt]:
        pages = (10, 20, 30)
        sends = [client.asend("per_acme", "export", {"pages": n}) for n in pages]
        return await asyncio.gather(*sends)  # a DeliveryError subclass would raise here

    receipts = asyncio.run(per_exports())
    for receipt in receipts:
        print(f"   {receipt}")

    print("\n6. Orb: amend an event (PUT /v1/events/{id}); the report bills the new value")
    key = receipts[0].idempotency_key
    (original,) = api.post("/events/search", json={"event_ids": [key]}).json()["data"]
    amended = {k: original[k] for k in ("event_name", "timestamp", "external_customer_id")}
    amended["properties"] = {"pages": 15}
    print(f"   {key}: pages 10 -> 15: {api.put(f'/events/{key}', json=amended).json()}")

    print("\n7. Tier: seats reported as a current value each time (clobber, not add)")
    for count in (3, 5, 4):
        client.report("tier_acme", "seats", {"count": count})
        print(f"   client.report('tier_acme', 'seats', {{'count': {count}}})")
    print("   and can(): 2 PDF exports a month (meterline serve --plans)")
    answers = []
    for _ in range(3):
        answer = client.can("tier_acme", "pdf_export")
        answers.append(answer.ok)
        print(f"   can -> ok={answer.ok} used={answer.used} remaining={answer.remaining}")
        if answer.ok:
            answer.report()  # one export: report(customer, "pdf_export", {"quantity": 1})
            client.flush()
    print(f"   close(): {client.close()}")
    api.close()

    end = datetime.now(timezone.utc) + timedelta(seconds=1)
    print("\n8. Per's report for the window: meterline usage --start ... --end ... --customer")
    values: dict[str, dict[str, object]] = {}
    for customer in ("per_acme", "tier_acme"):
        args = ["usage", "--url", url, "--start", start.isoformat(), "--end", end.isoformat()]
        shown = usage_cli([*args, "--customer", customer])
        print("\n".join(f"   {line}".rstrip() for line in shown.splitlines()[1:]))
        body = json.loads(usage_cli([*args, "--customer", customer, "--json"]))
        values[customer] = {row["metric"]: row["value"] for row in body["metrics"]}
    ok = values["per_acme"]["pages"] == 65 and values["tier_acme"]["seats"] == 4
    ok = ok and answers == [True, True, False]
    print(
        f"\n   pages billed {values['per_acme']['pages']} (10 amended to 15, + 20 + 30); "
        f"seats billed {values['tier_acme']['seats']} (the latest report; added up they "
        f"would be {values['tier_acme']['seats_if_added']})"
    )
    return ok


def usage_cli(args: list[str]) -> str:
    """``meterline usage ARGS``; the key goes through the environment, never the command line."""
    done = subprocess.run(
        [sys.executable, "-m", "meterline.cli", *args],
        capture_output=True,
        text=True,
        env={**os.environ, "METERLINE_API_KEY": API_KEY},
        timeout=60,
        check=True,
    )
    return done.stdout


if __name__ == "__main__":
    raise SystemExit(main())
