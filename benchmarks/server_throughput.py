"""How many events per second the reference server ingests into SQLite.

Starts ``python -m meterline.cli serve --port 0`` with a database file in a temporary
directory, posts ``--batches`` batches of ``--batch-size`` distinct events over keep-alive
connections (bodies are built before the clock starts, so the figure is the server's), checks
with ``GET /v1/usage`` that every event was counted once, and prints events/s.

    .venv/bin/python benchmarks/server_throughput.py --batches 400
"""

from __future__ import annotations

import argparse
import gzip
import os
import queue
import signal
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from datetime import datetime, timedelta, timezone
from pathlib import Path

import httpx
import orjson

API_KEY = "bench-key"
READY_PREFIX = "meterline reference server listening on "


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--batches", type=int, default=400)
    parser.add_argument("--batch-size", type=int, default=500)
    parser.add_argument(
        "--connections", type=int, default=1, help="parallel keep-alive clients (default: 1)"
    )
    parser.add_argument("--gzip", action="store_true", help="send gzip-compressed bodies")
    args = parser.parse_args()

    bodies = _bodies(args.batches + 1, args.batch_size, compress=args.gzip)
    with tempfile.TemporaryDirectory(prefix="meterline-bench-") as tmp:
        server, url = _start_server(Path(tmp) / "bench.db")
        try:
            headers = {"Authorization": f"Bearer {API_KEY}", "Content-Type": "application/json"}
            if args.gzip:
                headers["Content-Encoding"] = "gzip"
            with httpx.Client(base_url=url, headers=headers) as warm:
                _post(warm, bodies.pop())  # warm-up: first connection, table pages, caches
            cpu_before = _cpu_seconds(server.pid)
            elapsed = _timed_posts(url, headers, bodies, args.connections)
            server_cpu = _cpu_seconds(server.pid) - cpu_before
            counted = _counted(url, headers)
        finally:
            server.send_signal(signal.SIGTERM)
            code = server.wait(timeout=10)
    total = args.batches * args.batch_size
    if counted != total + args.batch_size:
        print(f"error: the server counted {counted} events, expected {total + args.batch_size}")
        return 1
    print(
        f"{total} events in {args.batches} batches of {args.batch_size} over "
        f"{args.connections} connection(s){' (gzip)' if args.gzip else ''}: "
        f"{elapsed:.2f} s, {total / elapsed:,.0f} events/s"
    )
    if server_cpu > 0:
        print(
            f"server CPU {server_cpu * 1e6 / total:.1f} us/event "
            f"({total / server_cpu:,.0f} events per CPU-second of the server process)"
        )
    print(
        f"{os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.2f} at the end, "
        f"Python {sys.version.split()[0]}, server exit code {code}"
    )
    return 0 if code == 0 else 1


def _bodies(count: int, size: int, *, compress: bool) -> list[bytes]:
    """Ingest bodies of distinct events with distinct timestamps over the last two minutes."""
    start = datetime.now(timezone.utc) - timedelta(minutes=2)
    step = timedelta(minutes=2) / (count * size)
    bodies = []
    for b in range(count):
        events = [
            {
                "external_customer_id": f"cust_{i % 50}",
                "event_name": "api_call",
                "timestamp": (start + (b * size + i) * step).strftime("%Y-%m-%dT%H:%M:%S.%fZ"),
                "properties": {"tokens": 800 + i % 100, "model": "small", "cached": i % 2 == 0},
                "idempotency_key": str(uuid.uuid4()),
            }
            for i in range(size)
        ]
        body = orjson.dumps({"events": events})
        bodies.append(gzip.compress(body, compresslevel=1) if compress else body)
    return bodies


def _cpu_seconds(pid: int) -> float:
    """User plus system CPU time of a process (Linux /proc; 0.0 elsewhere)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _start_server(db: Path) -> tuple[subprocess.Popen[str], str]:
    command = [sys.executable, "-m", "meterline.cli", "serve", "--port", "0", "--db", str(db)]
    server = subprocess.Popen(
        [*command, "--api-key", API_KEY], stdout=subprocess.PIPE, text=True, bufsize=1
    )
    stdout = server.stdout
    assert stdout is not None
    lines: queue.Queue[str] = queue.Queue()
    threading.Thread(target=lambda: lines.put(stdout.readline()), daemon=True).start()
    try:
        line = lines.get(timeout=15)
    except queue.Empty:
        server.kill()
        raise SystemExit("the server did not print its ready line within 15 s") from None
    if not line.startswith(READY_PREFIX):
        server.kill()
        raise SystemExit(f"unexpected first line from the server: {line!r}")
    return server, line[len(READY_PREFIX) :].strip()


def _post(client: httpx.Client, body: bytes) -> None:
    response = client.post("/ingest", content=body)
    if response.status_code != 200 or response.json()["validation_failed"]:
        raise SystemExit(f"ingest failed: {response.status_code} {response.text[:300]}")


def _timed_posts(url: str, headers: dict[str, str], bodies: list[bytes], connections: int) -> float:
    """Post every body, ``connections`` clients in parallel; returns the wall time."""
    shares = [bodies[i::connections] for i in range(connections)]
    clients = [httpx.Client(base_url=url, headers=headers) for _ in shares]
    for client in clients:
        client.get("/health")  # open each keep-alive connection before timing
    errors: list[BaseException] = []

    def run(client: httpx.Client, share: list[bytes]) -> None:
        try:
            for body in share:
                _post(client, body)
        except BaseException as exc:
            errors.append(exc)

    threads = [
        threading.Thread(target=run, args=pair) for pair in zip(clients, shares, strict=True)
    ]
    started = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    elapsed = time.perf_counter() - started
    for client in clients:
        client.close()
    if errors:
        raise errors[0]
    return elapsed


def _counted(url: str, headers: dict[str, str]) -> int:
    start = (datetime.now(timezone.utc) - timedelta(days=1)).strftime("%Y-%m-%dT%H:%M:%SZ")
    end = (datetime.now(timezone.utc) + timedelta(days=1)).strftime("%Y-%m-%dT%H:%M:%SZ")
    response = httpx.get(f"{url}/usage", params={"start": start, "end": end}, headers=headers)
    response.raise_for_status()
    return sum(row["count"] for row in response.json()["usage"])


if __name__ == "__main__":
    sys.exit(main())
