"""The core figure alone: what ``report()`` costs the caller, and how fast events arrive.

    .venv/bin/python benchmarks/report_latency.py             # ~10 s on 2 cores
    .venv/bin/python benchmarks/report_latency.py --peer raw  # the same for the raw limit

Starts the sink, then runs the steady scenario (50,000 calls in a tight loop, then
``flush()``) three times, each in a fresh process with default settings and a temporary
journal, and prints the medians, one line per figure.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path

import suite
from sinkctl import SinkProcess
from stats import median


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--peer", default="meterline", choices=suite.PEERS)
    parser.add_argument("--calls", type=int, default=50_000)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    cpus = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else []
    driver_cpu, sink_cpu = (cpus[0], cpus[-1]) if len(cpus) >= 2 else (None, None)
    scenario = suite.Scenario("steady", (args.peer,), args.calls, args.calls, 120.0)
    with tempfile.TemporaryDirectory(prefix="meterline-latency-") as tmp:
        work = Path(tmp)
        with SinkProcess(cpu=sink_cpu) as sink:
            ctx = suite.Context(sink.control, sink.url, work, work, driver_cpu, sink_cpu)
            rows = [suite.run_driver(ctx, scenario, args.peer, run) for run in range(args.runs)]

    def med(field: str) -> float:
        return median(row.get(field) for row in rows) or 0.0

    print(f"{args.peer}: median of {args.runs} runs of {args.calls:,} calls")
    for name, field in (("p50", "p50_us"), ("p99", "p99_us"), ("p99.9", "p999_us")):
        print(f"report() {name}: {med(field):.1f} µs")
    print(f"report() max: {med('max_us') / 1000:.1f} ms")
    print(f"end-to-end: {med('events_per_s'):,.0f} events/s")
    print(f"delivered: {med('delivered'):,.0f} of {args.calls:,}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
