"""Journal micro-benchmark: spill latency with real fsync, and replay throughput.

    PYTHONPATH=src .venv/bin/python benchmarks/journal_bench.py [--dir DIR] [--spills N]

Spills 500-event batches of realistic ~230-byte Orb events into a fresh journal made
inside ``--dir`` (default ``.bench``; only what the run creates is removed), then replays
them. Targets: spill median <= 2 ms; replay (read + ack) >= 50,000 events/s.
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path

import orjson

from meterline.journal import Journal

BATCH = 500
SPILL_TARGET_MS = 2.0
REPLAY_TARGET = 50_000.0


def events(count: int) -> list[bytes]:
    return [
        orjson.dumps(
            {
                "idempotency_key": str(uuid.uuid4()),
                "external_customer_id": f"cust_{i % 97:04d}",
                "event_name": "api_call",
                "timestamp": "2026-11-22T04:00:00.000000Z",
                "properties": {"tokens": 812 + i, "model": "small", "region": "eu-west-1"},
            }
        )
        for i in range(count)
    ]


def percentile(sorted_values: list[float], fraction: float) -> float:
    index = min(len(sorted_values) - 1, round(fraction * (len(sorted_values) - 1)))
    return sorted_values[index]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dir", type=Path, default=Path(".bench"), help="on the disk to test")
    parser.add_argument("--spills", type=int, default=400)
    args = parser.parse_args()
    args.dir.mkdir(parents=True, exist_ok=True)
    scratch = Path(tempfile.mkdtemp(prefix="journal-bench-", dir=args.dir))
    journal = Journal(scratch / "journal", max_bytes=1 << 34, min_free_bytes=0)
    journal.open()
    batches = [events(BATCH) for _ in range(args.spills)]
    size = sum(map(len, batches[0])) / BATCH
    try:
        for batch in batches[:10]:  # warm-up: page cache, directory blocks
            journal.ack(journal.spill_held(batch))
        costs = []
        for batch in batches:
            start = time.perf_counter()
            journal.spill(batch)
            costs.append((time.perf_counter() - start) * 1000.0)
        costs.sort()

        refs = journal.ready()
        start = time.perf_counter()
        replayed = 0
        for ref in refs:
            claim = journal.claim(ref)
            assert claim is not None
            replayed += len(journal.read(claim))
            journal.ack(claim)
        elapsed = time.perf_counter() - start
    finally:
        journal.close()
        shutil.rmtree(scratch)

    median, p99 = statistics.median(costs), percentile(costs, 0.99)
    rate = replayed / elapsed
    print(f"events: {BATCH} per batch, {size:.0f} bytes each on average; {len(costs)} spills")
    print(f"spill (fsync'd) median {median:.2f} ms  p99 {p99:.2f} ms  max {costs[-1]:.2f} ms")
    print(f"replay claim+read+ack: {rate:,.0f} events/s ({replayed} events, {elapsed:.2f} s)")
    ok = median <= SPILL_TARGET_MS and rate >= REPLAY_TARGET
    verdict = "meets" if ok else "MISSES"
    print(f"{verdict} the targets: spill median <= {SPILL_TARGET_MS} ms, replay >= 50,000 ev/s")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
