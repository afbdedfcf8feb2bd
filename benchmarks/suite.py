"""The scenarios, and one fresh driver process per (peer, scenario, run).

Each run resets the sink under its own label, switches on the scenario's fault, starts
``drive.py`` pinned to the driver CPU, waits for it (bounded), and turns the driver's JSON
and the sink's counts into one row of figures.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import web
from sinkctl import SinkControl

HERE = Path(__file__).resolve().parent
PEERS = ("meterline", "raw", "segment", "posthog", "mixpanel", "orb-billing")
SHIPPERS = tuple(p for p in PEERS if p != "raw")  # the raw limit has no retries or exit path
STEADY = (*PEERS, "meterline-wal")  # write-ahead meterline: its figures in the steady table


@dataclass(frozen=True)
class Scenario:
    name: str
    peers: tuple[str, ...]
    calls: int
    orb_calls: int  # orb-billing makes one HTTP request per call: fewer calls, same shape
    limit: float  # seconds one driver process may take before it is killed

    def calls_for(self, peer: str) -> int:
        return self.orb_calls if peer == "orb-billing" else self.calls


def scenarios(quick: bool) -> dict[str, Scenario]:
    scale = 10 if quick else 1
    return {
        s.name: s
        for s in (
            Scenario("steady", STEADY, 50_000 // scale, 2_000 // scale, 120.0),
            Scenario("outage", SHIPPERS, 20_000 // scale, 200 // scale, 90.0),
            Scenario("exit", SHIPPERS, 10_010 // scale, 1_010 // scale, 60.0),
            # PostHog and orb-billing back off >= 0.5-1 s per failed request: keep it short.
            Scenario("flaky", SHIPPERS, 5_000 // scale, 100 // scale, 90.0),
        )
    }


@dataclass
class Context:
    """What every run needs: the sink, the CPUs, and where to put files."""

    control: SinkControl
    sink_url: str
    work: Path  # journals and per-run JSON
    logs: Path
    driver_cpu: int | None
    sink_cpu: int | None
    outage_seconds: float = 5.0
    flaky_rate: float = 0.2


def run_driver(ctx: Context, scenario: Scenario, peer: str, run: int) -> dict[str, Any]:
    """One driver process; the row of figures for this (scenario, peer, run)."""
    label = f"{scenario.name}-{peer}-{run}"
    ctx.control.reset(label)
    if scenario.name == "flaky":
        ctx.control.fault(flaky_rate=ctx.flaky_rate, seed=run + 1)
    journal = ctx.work / label / "journal"
    journal.mkdir(parents=True)
    calls = scenario.calls_for(peer)
    driver = _drive(ctx, scenario.name, peer, label, journal, calls, scenario.limit)
    counts = ctx.control.settle(calls, quiet=0.3, limit=10.0)
    row = ROWS[scenario.name](driver, counts)
    row.update(peer=peer, run=run, calls=driver.get("calls", calls))
    if driver.get("timeout"):
        row["note"] = f"driver killed after {scenario.limit:.0f} s"
    if scenario.name == "exit" and peer == "meterline":
        restart = _drive(ctx, "replay", peer, label + "-restart", journal, 0, scenario.limit)
        after = ctx.control.settle(calls, quiet=0.3, limit=10.0)
        row["delivered_after_restart"] = after["seqs"]
        row["restart_replay_s"] = restart.get("seconds")
    return row


def _drive(
    ctx: Context, scenario: str, peer: str, label: str, journal: Path, calls: int, limit: float
) -> dict[str, Any]:
    out = ctx.work / f"{label}.json"
    cmd = [sys.executable, str(HERE / "drive.py"), "--peer", peer, "--scenario", scenario]
    cmd += ["--sink", ctx.sink_url, "--n", str(calls), "--journal-dir", str(journal)]
    cmd += ["--outage", str(ctx.outage_seconds), "--out", str(out)]
    if ctx.driver_cpu is not None:
        cmd += ["--cpu", str(ctx.driver_cpu)]
    with (ctx.logs / f"{label}.log").open("w") as log:
        try:
            code = subprocess.run(cmd, stdout=log, stderr=log, timeout=limit).returncode
        except subprocess.TimeoutExpired:
            return {"timeout": True}
    if code != 0 or not out.exists():
        raise RuntimeError(f"{label}: driver exited with {code}; see {ctx.logs / label}.log")
    data: dict[str, Any] = json.loads(out.read_text())
    return data


def _us(ns: float) -> float:
    return ns / 1000.0


def _latency(driver: dict[str, Any]) -> dict[str, Any]:
    lat = driver.get("latency") or {}
    return {
        "p50_us": _us(lat.get("p50", 0)),
        "p99_us": _us(lat.get("p99", 0)),
        "p999_us": _us(lat.get("p99.9", 0)),
        "max_us": _us(lat.get("max", 0)),
    }


def _wire(counts: dict[str, Any]) -> dict[str, Any]:
    return {
        "delivered": counts["seqs"],
        "duplicates": counts["events"] - counts["unique_ids"],
        "extra_ids": counts["unique_ids"] - counts["seqs"],
        "requests": counts["requests"],
        "statuses": counts["statuses"],
    }


def _steady(driver: dict[str, Any], counts: dict[str, Any]) -> dict[str, Any]:
    row = {**_latency(driver), **_wire(counts), "errors": driver.get("errors", 0)}
    last = counts.get("last_new_at")
    if last is not None and "t_first" in driver:
        row["e2e_s"] = last - driver["t_first"]
        row["events_per_s"] = counts["seqs"] / row["e2e_s"]
    row["rss_growth_mb"] = driver.get("rss_growth_kib", 0) / 1024
    row["cpu_us_per_event"] = driver.get("cpu_us_per_event")
    row["main_cpu_us_per_event"] = driver.get("main_cpu_us_per_event")
    if row["cpu_us_per_event"] is not None and counts["seqs"]:
        per_delivered = driver.get("calls", 0) / counts["seqs"]
        row["cpu_us_per_delivered"] = row["cpu_us_per_event"] * per_delivered
        if row["main_cpu_us_per_event"] is not None:
            row["main_cpu_us_per_delivered"] = row["main_cpu_us_per_event"] * per_delivered
    row["floor_us"] = _us(driver.get("floor_ns", 0))
    row["info"] = driver.get("info")
    return row


def _outage(driver: dict[str, Any], counts: dict[str, Any]) -> dict[str, Any]:
    row = {**_latency(driver), **_wire(counts), "errors": driver.get("errors", 0)}
    row["calls_during_outage"] = driver.get("calls_during_outage")
    last = counts.get("last_new_at")
    if last is not None and "t_healed" in driver:
        row["heal_to_last_s"] = last - driver["t_healed"]
    row["info"] = driver.get("info")
    return row


def _exit(driver: dict[str, Any], counts: dict[str, Any]) -> dict[str, Any]:
    return {**_latency(driver), **_wire(counts), "errors": driver.get("errors", 0)}


ROWS: dict[str, Callable[[dict[str, Any], dict[str, Any]], dict[str, Any]]] = {
    "steady": _steady,
    "flaky": _steady,
    "outage": _outage,
    "exit": _exit,
}


def run_web(
    ctx: Context,
    peer: str,
    run: int,
    *,
    duration: float,
    connections: int,
    cpu_ms: float = 0.0,
) -> dict[str, Any]:
    """One gunicorn run for ``peer`` (or ``none``), with the sink's counts afterwards;
    ``cpu_ms``: CPU each request spends before it reports (the ``web_1ms`` scenario)."""
    label = f"web{'-1ms' if cpu_ms else ''}-{peer}-{run}"
    ctx.control.reset(label)
    journal = ctx.work / label / "journal"
    journal.mkdir(parents=True)
    started = time.monotonic()
    row = web.run_once(
        peer,
        ctx.sink_url,
        str(journal),
        duration=duration,
        connections=connections,
        app_cpu=ctx.driver_cpu,
        load_cpu=ctx.sink_cpu,
        log=ctx.logs / f"{label}.log",
        cpu_ms=cpu_ms,
    )
    counts = ctx.control.settle(1 << 40, quiet=0.3, limit=5.0)
    row.update(run=run, delivered=counts["seqs"], wall_s=time.monotonic() - started)
    return row
