"""One benchmark run: one peer, one scenario, in this (fresh) process.

    .venv/bin/python benchmarks/drive.py --peer meterline --scenario steady \\
        --sink http://127.0.0.1:PORT --n 50000 --out run.json

Scenarios (the sink's faults are switched on by the caller, except ``outage``, which
starts the 503 window itself so that its clock and the calls line up):

    steady   ``n`` calls in a tight loop, then the library's flush and close
    outage   ``n`` calls paced evenly over the sink's 503 window, then flush once it heals
    exit     ``n`` calls, then return without flushing (atexit hooks run as usual)
    flaky    like steady; the caller has set the sink to fail 20% of requests
    replay   meterline only: a restarted process on the same journal calls ``replay()``

Writes a JSON object with the caller latencies (ns, summarized), the times (all
``time.monotonic()``, comparable with the sink's) and what the library said.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

import peers
from sinkctl import SinkControl
from stats import percentiles, vm_hwm_kib

CUSTOMERS = [f"cust_{i:03d}" for i in range(100)]
REGION = "eu-west"


def timer_floor(calls: int = 20_000) -> int:
    """p50 in ns of timing a call to a no-op with the same arguments: the loop's own cost."""

    def noop(customer: str, event_name: str, properties: dict[str, Any]) -> None:
        return None

    lat = _loop(noop, calls, offset=0)[0]
    return percentiles(lat)["p50"]


def _loop(send: peers.Send, n: int, *, offset: int) -> tuple[list[int], int]:
    """Call ``send`` ``n`` times as fast as possible; per-call ns and the errors raised."""
    clock = time.perf_counter_ns
    customers = CUSTOMERS
    event = peers.EVENT_NAME
    lat = [0] * n
    errors = 0
    for i in range(n):
        props = {"n": offset + i, "region": REGION}
        customer = customers[i % 100]
        t0 = clock()
        try:
            send(customer, event, props)
        except Exception:
            errors += 1
        lat[i] = clock() - t0
    return lat, errors


def steady(peer: peers.Peer, args: argparse.Namespace) -> dict[str, Any]:
    hwm0 = vm_hwm_kib()
    cpu0, main0 = time.process_time(), time.thread_time()
    t_first = time.monotonic()
    lat, errors = _loop(peer.send, args.n, offset=0)
    t_loop = time.monotonic()
    info = peer.flush(args.flush_timeout)
    t_flush = time.monotonic()
    cpu, main = time.process_time() - cpu0, time.thread_time() - main0
    hwm1 = vm_hwm_kib()
    peer.close(args.flush_timeout)
    return {
        "calls": args.n,
        "errors": errors,
        "latency": percentiles(lat),
        "t_first": t_first,
        "t_loop": t_loop,
        "t_flush": t_flush,
        "rss_growth_kib": hwm1 - hwm0,
        "cpu_us_per_event": cpu * 1e6 / args.n,
        "main_cpu_us_per_event": main * 1e6 / args.n,  # the caller's thread alone
        "info": info,
    }


def outage(peer: peers.Peer, args: argparse.Namespace) -> dict[str, Any]:
    """Calls paced over the outage; latencies of the calls made while it lasted."""
    control = SinkControl(args.sink)
    window = control.fault(outage_seconds=args.outage)
    ends = float(window["outage_until"])
    start = time.monotonic()
    gap = args.outage / args.n
    cap = start + 3 * args.outage
    clock = time.perf_counter_ns
    send = peer.send
    during: list[int] = []
    errors = made = 0
    for i in range(args.n):
        now = time.monotonic()
        if now > cap:
            break
        ahead = start + i * gap - now
        if ahead > 0.001:
            time.sleep(ahead)
        props = {"n": i, "region": REGION}
        t0 = clock()
        try:
            send(CUSTOMERS[i % 100], peers.EVENT_NAME, props)
        except Exception:
            errors += 1
        elapsed = clock() - t0
        made += 1
        if time.monotonic() < ends:
            during.append(elapsed)
    t_loop = time.monotonic()
    time.sleep(max(0.0, ends - time.monotonic()))
    t_healed = time.monotonic()
    info = peer.flush(args.flush_timeout)
    t_flush = time.monotonic()
    peer.close(args.flush_timeout)
    control.close()
    return {
        "calls": made,
        "calls_during_outage": len(during),
        "errors": errors,
        "latency": percentiles(during),
        "t_first": start,
        "t_loop": t_loop,
        "t_healed": t_healed,
        "t_flush": t_flush,
        "info": info,
    }


def exit_without_flush(peer: peers.Peer, args: argparse.Namespace) -> dict[str, Any]:
    t_first = time.monotonic()
    lat, errors = _loop(peer.send, args.n, offset=0)
    _keep_alive.append(peer)  # like a module-level client: alive until the interpreter exits
    return {
        "calls": args.n,
        "errors": errors,
        "latency": percentiles(lat),
        "t_first": t_first,
        "t_loop": time.monotonic(),
    }


def replay(peer: peers.Peer, args: argparse.Namespace) -> dict[str, Any]:
    """A restarted meterline process: ``replay()`` what the previous one journaled."""
    assert isinstance(peer, peers.Meterline)
    before = peer.stats()
    t0 = time.monotonic()
    result = peer.client.replay(args.flush_timeout)
    t1 = time.monotonic()
    peer.close(args.flush_timeout)
    return {"replay": repr(result), "seconds": t1 - t0, "before": before, **peer.stats()}


_keep_alive: list[peers.Peer] = []
SCENARIOS = {
    "steady": steady,
    "flaky": steady,
    "outage": outage,
    "exit": exit_without_flush,
    "replay": replay,
}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--peer", choices=peers.PEERS, required=True)
    parser.add_argument("--scenario", choices=sorted(SCENARIOS), required=True)
    parser.add_argument("--sink", required=True, help="http://127.0.0.1:PORT")
    parser.add_argument("--n", type=int, default=50_000)
    parser.add_argument("--journal-dir", required=True)
    parser.add_argument("--outage", type=float, default=5.0, help="seconds of 503")
    parser.add_argument("--flush-timeout", type=float, default=30.0)
    parser.add_argument("--cpu", type=int, default=None, help="pin this process to a CPU")
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    if not args.sink.startswith("http://127.0.0.1:"):
        parser.error("the sink must be on 127.0.0.1")
    if args.cpu is not None and hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {args.cpu})

    floor = timer_floor()
    t_start = time.monotonic()
    peer = peers.make(args.peer, args.sink, args.journal_dir)
    result = SCENARIOS[args.scenario](peer, args)
    result.update(peer=args.peer, scenario=args.scenario, floor_ns=floor, t_start=t_start)
    args.out.write_text(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
