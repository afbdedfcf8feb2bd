"""Run every benchmark end to end and write ``benchmarks/RESULTS.md``.

    .venv/bin/python benchmarks/run.py            # what `make bench` runs (< 10 min, 2 cores)
    .venv/bin/python benchmarks/run.py --quick    # a smoke run: 1/10 of the calls, one run

Starts the sink (pinned to the last CPU) and measures its ceiling. Then, round after round,
runs every scenario for every peer, each run in a fresh process pinned to the first CPU,
the peers' order rotating from round to round so that a slow moment of the machine does
not always land on the same one; meterline and its baseline (the raw limit in the steady
scenario, no reporting in the web one) run back to back and get extra rounds, because
their ratio is what the targets are about (meterline in write-ahead mode, steady only,
gets them too). After the first round, a run that would end past ``--budget`` seconds is
skipped. Raw rows go to ``.bench/results.json``, logs to ``.bench/logs/``. The
destinations stage (``dest_suite.py``) measures meterline once per destination in each of
the first ``--runs`` rounds; ``--only destinations`` runs just it.
The Kafka stage (``kafka_bench.py``, its own broker) runs once at the end; ``--only kafka``
runs just it.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from datetime import datetime, timezone
from functools import partial
from importlib.util import find_spec
from pathlib import Path
from typing import Any

import dest_suite
import loadgen
import peers
import results_md
import suite
from sinkctl import SinkProcess

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
NEEDED = {"segment": "segment-analytics-python", "posthog": "posthog", "mixpanel": "mixpanel"}
NEEDED |= {"orb": "orb-billing", "gunicorn": "gunicorn", "meterline": "meterline"}
# run right after meterline, in every round
BASELINE = {"steady": "raw", "web": "none", "web_1ms": "none"}
# also in every round (about 1.5 s a run), wherever the rotation puts them
EVERY_ROUND = {"steady": ("meterline-wal",)}

Job = Callable[[], dict[str, Any]]


def main() -> int:
    args = _arguments()
    if args.render:
        saved = json.loads((args.work / "results.json").read_text())
        args.output.write_text(results_md.render(saved["meta"], saved["results"]))
        print(f"wrote {args.output} from {args.work / 'results.json'}")
        return 0
    needed = NEEDED
    if args.only and set(args.only) <= {"destinations", "kafka"}:
        needed = {"meterline": "meterline", "confluent_kafka": "confluent-kafka"}
    missing = [dist for module, dist in needed.items() if find_spec(module) is None]
    if missing:
        print(f"missing {', '.join(missing)}: pip install -e '.[bench]'", file=sys.stderr)
        return 2
    started = time.monotonic()
    meta = machine()
    work, logs = args.work / "runs", args.work / "logs"
    for folder in (work, logs):
        shutil.rmtree(folder, ignore_errors=True)
        folder.mkdir(parents=True)
    cpus = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else []
    driver_cpu, sink_cpu = (cpus[0], cpus[-1]) if len(cpus) >= 2 else (None, None)
    meta["pinning"] = (
        f"drivers and the web app on CPU {driver_cpu}, sink and load on CPU {sink_cpu}"
    )

    results: dict[str, list[dict[str, Any]]] = {}
    skipped: list[str] = []
    took: dict[tuple[str, str], float] = {}
    with SinkProcess(cpu=sink_cpu) as sink:
        ctx = suite.Context(sink.control, sink.url, work, logs, driver_cpu, sink_cpu)
        meta["sink_ceiling"] = ceiling(sink.url, driver_cpu)
        _log(started, f"sink ceiling {meta['sink_ceiling']}")
        for run in range(max(args.runs, args.core_runs)):
            for name, peer, job in plan(ctx, args, run):
                if run > 0 and time.monotonic() - started + took[(name, peer)] > args.budget:
                    skipped.append(f"{name}/{peer} run {run + 1}")
                    continue
                t0 = time.monotonic()
                results.setdefault(name, []).append(job())
                took[(name, peer)] = time.monotonic() - t0
                _log(started, f"{name} {peer} run {run + 1}: {_brief(results[name][-1])}")

    if not args.only or "kafka" in args.only:
        meta["kafka"] = kafka_stage(args, started)
    meta.update(
        skipped=skipped,
        wall_seconds=time.monotonic() - started,
        load_after=os.getloadavg(),
        runs=args.runs,
        core_runs=max(args.runs, args.core_runs),
        web={"seconds": args.web_seconds, "connections": args.web_connections},
        calls={n: (s.calls, s.orb_calls) for n, s in suite.scenarios(args.quick).items()},
        destination_calls=dest_suite.calls(args.quick),
    )
    (args.work / "results.json").write_text(json.dumps({"meta": meta, "results": results}))
    args.output.write_text(results_md.render(meta, results))
    _log(started, f"wrote {args.output}")
    return 0


def kafka_stage(args: argparse.Namespace, started: float) -> dict[str, Any] | None:
    """``kafka_bench.py`` in its own process (it starts its own broker and servers)."""
    out = args.work / "kafka.json"
    cmd = [sys.executable, str(HERE / "kafka_bench.py"), "--out", str(out)]
    if args.quick:
        cmd.append("--quick")
    with (args.work / "logs" / "kafka.log").open("w") as log:
        code = subprocess.run(cmd, stdout=log, stderr=log, timeout=600).returncode
    if code != 0 or not out.exists():
        _log(started, f"kafka stage failed ({code}); see {args.work / 'logs' / 'kafka.log'}")
        return None
    doc: dict[str, Any] = json.loads(out.read_text())
    _log(started, f"kafka stage: {doc['seconds']:.0f} s")
    return doc


def _arguments() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=3, help="runs per (peer, scenario)")
    parser.add_argument(
        "--core-runs", type=int, default=5, help="runs of meterline and its baselines"
    )
    parser.add_argument("--web-seconds", type=float, default=5.0)
    parser.add_argument("--web-connections", type=int, default=4)
    parser.add_argument("--only", nargs="*", default=None, help="scenarios to run (web too)")
    parser.add_argument("--quick", action="store_true", help="1/10 of the calls, one run")
    parser.add_argument("--budget", type=float, default=540.0, help="seconds (see above)")
    parser.add_argument("--output", type=Path, default=HERE / "RESULTS.md")
    parser.add_argument("--work", type=Path, default=ROOT / ".bench")
    parser.add_argument(
        "--render", action="store_true", help="only rewrite RESULTS.md from the last run's rows"
    )
    args = parser.parse_args()
    if args.quick:
        args.runs, args.core_runs, args.web_seconds = 1, 1, 2.0
    return args


def plan(ctx: suite.Context, args: argparse.Namespace, run: int) -> list[tuple[str, str, Job]]:
    """The (scenario, peer, job) of one round; after ``--runs`` rounds, only the pairs."""
    scenarios = suite.scenarios(args.quick)
    if args.only:
        scenarios = {n: s for n, s in scenarios.items() if n in args.only}
    units: list[tuple[str, str, Job]] = []
    for name, scenario in scenarios.items():
        for peer in _order(name, scenario.peers, run, core_only=run >= args.runs):
            units.append((name, peer, partial(suite.run_driver, ctx, scenario, peer, run)))
    if (not args.only or "destinations" in args.only) and run < args.runs:
        n = dest_suite.calls(args.quick)
        for dest in dest_suite.order(run):
            job = partial(dest_suite.run_destination, ctx, dest, run, n)
            units.append(("destinations", dest, job))
    if not args.only or "web" in args.only:
        web = partial(suite.run_web, duration=args.web_seconds, connections=args.web_connections)
        for peer in _order("web", ("none", *suite.PEERS), run, core_only=run >= args.runs):
            units.append(("web", peer, partial(web, ctx, peer, run)))
    if (not args.only or "web_1ms" in args.only) and run < args.runs:
        # An endpoint that spends 1 ms of CPU: meterline, the raw limit and no reporting.
        slow = partial(suite.run_web, duration=args.web_seconds, connections=args.web_connections)
        for peer in _order("web_1ms", ("none", "meterline", "raw"), run, core_only=False):
            units.append(("web_1ms", peer, partial(slow, ctx, peer, run, cpu_ms=1.0)))
    return units


def _order(scenario: str, names: tuple[str, ...], run: int, *, core_only: bool) -> list[str]:
    """The peers rotated by ``run``, with the scenario's baseline right after meterline."""
    baseline = BASELINE.get(scenario)
    rest = [p for p in names if p != baseline]
    k = run % len(rest)
    order = rest[k:] + rest[:k]
    if baseline in names:
        order.insert(order.index("meterline") + 1, baseline)
    core = ("meterline", baseline, *EVERY_ROUND.get(scenario, ()))
    return [p for p in order if p in core] if core_only else order


def machine() -> dict[str, Any]:
    """What the figures were measured on."""
    model = "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    tool = loadgen.tool()
    if tool == "wrk":
        banner = subprocess.run(["wrk", "--version"], capture_output=True, text=True).stdout
        tool = banner.split(" Copyright")[0].strip() or "wrk"
    return {
        "cpu": model,
        "cores": os.cpu_count(),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "date": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "versions": peers.versions(),
        "load_generator": tool,
        "load_before": os.getloadavg(),
    }


def ceiling(sink_url: str, cpu: int | None) -> dict[str, Any]:
    """The sink's own ceiling, measured from a fresh process on the drivers' CPU."""
    cmd = [sys.executable, str(HERE / "ceiling.py"), sink_url]
    if cpu is not None:
        cmd += ["--cpu", str(cpu)]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=60, check=True)
    data: dict[str, Any] = json.loads(out.stdout)
    return data


def _brief(row: dict[str, Any]) -> str:
    keys = ("p50_us", "p99_us", "events_per_s", "delivered", "rps", "cpu_us_per_request", "note")
    return ", ".join(
        f"{k}={row[k]:.1f}" if isinstance(row[k], float) else f"{k}={row[k]}"
        for k in keys
        if k in row
    )


def _log(started: float, text: str) -> None:
    print(f"[{time.monotonic() - started:6.1f} s] {text}", flush=True)


if __name__ == "__main__":
    sys.exit(main())
