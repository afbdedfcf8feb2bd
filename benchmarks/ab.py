"""Interleaved steady runs of a few peers, for comparing two versions of the code.

    .venv/bin/python benchmarks/ab.py --runs 8 meterline=/path/to/old/src meterline raw

Each spec is a peer of ``peers.PEERS``, optionally ``=SRC``: that run imports meterline
from ``SRC`` (a checkout's ``src`` directory) instead of the installed one. Runs go round
robin, spec after spec, so that a slow moment of the machine falls on all of them; each is
a fresh ``drive.py`` process on CPU 0 against one sink on CPU 1. Prints the median and the
range of each figure per spec: CPU per event (all threads, and the caller's), end-to-end
events/s (thousands), ``report()`` p50 and p99 (µs), RSS growth (MB) and events lost.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

from sinkctl import SinkProcess

HERE = Path(__file__).resolve().parent


def run(sink: SinkProcess, spec: str, calls: int, work: Path, label: str) -> dict[str, float]:
    peer, _, src = spec.partition("=")
    env = dict(os.environ)
    if src:
        env["PYTHONPATH"] = src
    journal = work / label
    journal.mkdir()
    out = work / f"{label}.json"
    sink.control.reset(label)
    cmd = [sys.executable, str(HERE / "drive.py"), "--peer", peer, "--scenario", "steady"]
    cmd += ["--sink", sink.url, "--n", str(calls), "--journal-dir", str(journal)]
    cmd += ["--out", str(out), "--cpu", "0"]
    subprocess.run(cmd, env=env, check=True, stdout=subprocess.DEVNULL)
    d: dict[str, Any] = json.loads(out.read_text())
    c = sink.control.settle(calls, quiet=0.3, limit=10)
    return {
        "cpu_us": d["cpu_us_per_event"],
        "caller_us": d["main_cpu_us_per_event"],
        "kev_per_s": c["seqs"] / (c["last_new_at"] - d["t_first"]) / 1000,
        "p50_us": d["latency"]["p50"] / 1000,
        "p99_us": d["latency"]["p99"] / 1000,
        "rss_mb": d["rss_growth_kib"] / 1024,
        "lost": calls - c["seqs"],
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("specs", nargs="+", help="peer or peer=SRC")
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--calls", type=int, default=50_000)
    args = parser.parse_args()
    rows: dict[str, list[dict[str, float]]] = {spec: [] for spec in args.specs}
    with tempfile.TemporaryDirectory() as tmp, SinkProcess(cpu=1) as sink:
        for r in range(args.runs):
            for i, spec in enumerate(args.specs):
                rows[spec].append(run(sink, spec, args.calls, Path(tmp), f"{i}-{r}"))
    for spec, runs in rows.items():
        figures = "  ".join(
            f"{k}={statistics.median(x[k] for x in runs):.2f}"
            f"[{min(x[k] for x in runs):.1f}-{max(x[k] for x in runs):.1f}]"
            for k in runs[0]
        )
        print(f"{spec:40s} {figures}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
