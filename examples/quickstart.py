"""meterline in one run: a small web service reports usage through an outage.

``make demo`` runs this file. It starts meterline's reference ingest server on a free
port, simulates a web service (8 request threads, 100,000 events for 50 customers),
stops the server in the middle so the journal visibly takes over, starts it again so the
backlog replays, then prints the client's stats and the server's usage report next to
what was sent.

The part a real application needs is only this::

    client = meterline.Client(api_key=..., base_url=..., journal_dir=...)
    client.report(customer, "api_call", {"tokens": n})   # in a request handler
    client.close()                                       # at shutdown (also automatic)
"""

from __future__ import annotations

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


class Server:
    """The reference server as a child process, stoppable and restartable on one port."""

    def __init__(self, db: Path) -> None:
        self.db = db
        self.port = 0
        self.proc: subprocess.Popen[str] | None = None

    def start(self) -> str:
        cmd = [sys.executable, "-m", "meterline.cli", "serve", "--port", str(self.port)]
        cmd += ["--db", str(self.db), "--api-key", API_KEY]
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
    server = Server(work / "usage.db")
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
    server.stop()

    got_count: dict[str, int] = defaultdict(int)
    got_tokens: dict[str, int] = defaultdict(int)
    for row in report["usage"]:
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
    print(
        "\nRESULT: "
        + ("the usage report equals what was sent" if same else "MISMATCH between sent and billed")
    )
    return 0 if same and stats["dropped"] == 0 else 1


if __name__ == "__main__":
    raise SystemExit(main())
