"""The long chaos run: ``python -m tests.chaos.run --runs N --seed S [--workers 2]``.

Runs seeds S, S+1, ..., S+N-1 (or ``--seeds A,B,...``; each draws its scenario unless
``--scenario`` forces one), two at a time by default, prints the figures of all runs
together and every violation with the seed and scenario to re-run it with (``--runs 1
--seed X --scenario Y --keep`` keeps the run's folder: logs, stats, journals, the
server's arrivals). ``--src DIR`` runs the children against another copy of meterline.
``--destination NAME`` speaks one vendor's API (server and clients); ``all`` (the default)
gives seed S the destination ``DESTINATIONS[S % 6]``, so a long run covers all five vendors
and ``kafka`` (the children produce to a real broker; two ``meterline relay`` processes ship
the topic to the server, one killed with ``kill -9`` and restarted, the broker frozen).
Exits 1 if any run found a violation.
"""

from __future__ import annotations

import argparse
import multiprocessing
import sys
import time
from collections import Counter
from concurrent.futures import ProcessPoolExecutor, as_completed
from typing import Any

from tests.chaos.dialects import DIALECTS
from tests.chaos.harness import WAL_WINDOW, run_one
from tests.chaos.plan import SCENARIOS

DESTINATIONS = [*DIALECTS, "kafka"]  # kafka: a real broker, relays ship it to the server


def destination_of(seed: int, choice: str) -> str:
    return DESTINATIONS[seed % len(DESTINATIONS)] if choice == "all" else choice


def _one(
    seed: int,
    scenario: str | None,
    keep: bool,
    wal_window: float,
    src: str | None,
    destination: str = "all",
) -> dict[str, Any]:
    dest = destination_of(seed, destination)
    try:
        return run_one(seed, scenario, keep=keep, wal_window=wal_window, src=src, destination=dest)
    except Exception as exc:  # a harness failure is reported as one, with its seed
        return {
            "seed": seed,
            "scenario": scenario or "?",
            "destination": dest,
            "violations": [
                {"kind": "harness error", "count": 1, "examples": [f"{type(exc).__name__}: {exc}"]}
            ],
            "figures": {},
            "plan": "",
            "seconds": 0.0,
        }


def _print_run(r: dict[str, Any], verbose: bool) -> None:
    bad = sum(x["count"] for x in r["violations"])
    f = r["figures"]
    line = (
        f"seed {r['seed']:>6} {r['scenario']:<11} {r.get('destination', 'orb'):<9} "
        f"{r['seconds']:5.1f}s  "
        f"reported {f.get('reported', 0):5}  delivered {f.get('events delivered', 0):5}  "
        f"kills {f.get('kills', 0)}  forks {f.get('forks', 0)}  "
        + (f"VIOLATIONS {bad}" if bad else "ok")
    )
    print(line, flush=True)
    if bad or verbose:
        for x in r["violations"]:
            print(f"    {x['kind']}: {x['count']}", flush=True)
            for e in x["examples"]:
                print(f"        e.g. {e}", flush=True)
        if r.get("plan"):
            print("    " + r["plan"].replace("\n", "\n    "), flush=True)
        if r.get("kept"):
            print(f"    evidence kept in {r['kept']}", flush=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.chaos.run", description=__doc__)
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--seeds", default=None, help="a comma-separated list, instead of a range")
    parser.add_argument("--scenario", choices=SCENARIOS, default=None)
    parser.add_argument("--destination", choices=["all", *DESTINATIONS], default="all")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--keep", action="store_true", help="keep every run's folder")
    parser.add_argument("--verbose", action="store_true", help="print every run's plan")
    parser.add_argument(
        "--wal-window",
        type=float,
        default=WAL_WINDOW,
        help="seconds before a kill -9 that write_ahead mode may lose (default %(default)s)",
    )
    parser.add_argument(
        "--src",
        default=None,
        help="import meterline from this folder in the children (e.g. an older release's "
        "src/), instead of this checkout's",
    )
    args = parser.parse_args(argv)
    seeds = (
        [int(x) for x in args.seeds.split(",") if x.strip()]
        if args.seeds
        else list(range(args.seed, args.seed + args.runs))
    )
    t0 = time.monotonic()
    results: list[dict[str, Any]] = []
    if args.workers <= 1:
        for seed in seeds:
            results.append(
                _one(seed, args.scenario, args.keep, args.wal_window, args.src, args.destination)
            )
            _print_run(results[-1], args.verbose)
    else:
        ctx = multiprocessing.get_context("spawn")
        with ProcessPoolExecutor(args.workers, mp_context=ctx) as pool:
            futures = [
                pool.submit(
                    _one,
                    seed,
                    args.scenario,
                    args.keep,
                    args.wal_window,
                    args.src,
                    args.destination,
                )
                for seed in seeds
            ]
            for future in as_completed(futures):
                results.append(future.result())
                _print_run(results[-1], args.verbose)
    results.sort(key=lambda r: r["seed"])
    _summary(results, time.monotonic() - t0)
    return 1 if any(r["violations"] for r in results) else 0


def _summary(results: list[dict[str, Any]], seconds: float) -> None:
    total: Counter[str] = Counter()
    for r in results:
        total.update({k: v for k, v in r["figures"].items() if isinstance(v, int)})
    scenarios = Counter(r["scenario"] for r in results)
    kinds: Counter[str] = Counter()
    seeds_by_kind: dict[str, list[str]] = {}
    for r in results:
        for x in r["violations"]:
            kinds[x["kind"]] += x["count"]
            seeds_by_kind.setdefault(x["kind"], []).append(
                f"{r['seed']}/{r['scenario']}/{r.get('destination', 'orb')}"
            )
    print()
    print(
        f"runs                      {len(results)} in {seconds:.0f} s "
        f"({', '.join(f'{k} {n}' for k, n in sorted(scenarios.items()))})"
    )
    rows = [
        ("events reported", "reported"),
        ("delivered (server)", "events delivered"),
        ("  sent live (stats)", "stats sent"),
        ("journaled (stats)", "stats journaled"),
        ("  replayed (stats)", "stats replayed"),
        ("rejected (rejected/)", "events rejected"),
        ("expired (expired/)", "events expired"),
        ("dropped, counted", "events dropped"),
        ("lost in kill window", "events lost in the kill window"),
        ("lost (violations)", "events lost"),
        ("kills (kill -9)", "kills"),
        ("restarts", "restarts"),
        ("forks", "forks"),
        ("in Kafka (topic keys)", "kafka keys"),
        ("  duplicate messages", "kafka duplicate messages"),
        ("relay delivered", "relay delivered"),
        ("relay rejected", "relay rejected"),
        ("relay kills (kill -9)", "relay kills"),
        ("broker freezes (STOP)", "broker freezes"),
        ("requests", "requests"),
        ("  cut short (body)", "requests cut short"),
    ]
    for label, key in rows:
        print(f"{label:<26}{total.get(key, 0)}")
    reasons = sorted(k for k in total if k.startswith("dropped: "))
    for k in reasons:
        print(f"  {k:<24}{total[k]}")
    answers = sorted(k for k in total if k.startswith("answers "))
    print("answers                   " + ", ".join(f"{k[8:]} {total[k]}" for k in answers))
    bad = [r for r in results if r["violations"]]
    print(f"violations                {sum(kinds.values())} in {len(bad)} of {len(results)} runs")
    for kind, n in kinds.most_common():
        seeds = seeds_by_kind[kind]
        shown = ", ".join(seeds[:8]) + (f" (+{len(seeds) - 8})" if len(seeds) > 8 else "")
        print(f"  {kind:<30}{n:>6}   seeds {shown}")
    if bad:
        r = bad[0]
        print(
            f"re-run one: python -m tests.chaos.run --runs 1 --seed {r['seed']} "
            f"--scenario {r['scenario']} --destination {r.get('destination', 'orb')} "
            "--keep --verbose"
        )


if __name__ == "__main__":
    sys.exit(main())
