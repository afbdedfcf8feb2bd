"""Replay throughput: how fast a journal backlog drains to a local sink.

Journals N events with the endpoint failing, then starts a fresh client on the same
journal against the counting sink and times ``replay()`` until the sink holds them all.

    .venv/bin/python benchmarks/replay_throughput.py [--events 200000]
"""

from __future__ import annotations

import argparse
import socket
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from sinkctl import SinkProcess

import meterline


def _dead_url() -> str:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return f"http://127.0.0.1:{sock.getsockname()[1]}/v1"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--events", type=int, default=200_000)
    args = parser.parse_args()
    journal = Path(tempfile.mkdtemp(prefix="meterline-replay-")) / "journal"
    down = meterline.Client(
        api_key="k",
        base_url=_dead_url(),
        journal_dir=journal,
        retry_attempts=1,
        max_queue_events=args.events + 1,
        max_queue_bytes=1 << 30,
    )
    for i in range(args.events):
        down.report(f"cust_{i % 50}", "api_call", {"tokens": i, "model": "small"})
    closed = down.close(timeout=60)
    print(f"journaled {closed.journaled:,} events")
    with SinkProcess() as sink:
        sink.control.reset("replay")
        up = meterline.Client(api_key="k", base_url=f"{sink.url}/v1", journal_dir=journal)
        start = time.perf_counter()
        result = up.replay(timeout=120)
        elapsed = time.perf_counter() - start
        up.close()
        counts = sink.control.settle(args.events)
    print(
        f"replayed {result.replayed:,} events in {elapsed:.2f} s: "
        f"{result.replayed / elapsed:,.0f} events/s; sink counted {counts}"
    )
    return 0 if result else 1


if __name__ == "__main__":
    raise SystemExit(main())
