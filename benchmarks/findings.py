"""What the figures say: meterline's targets, and the "what it means" paragraphs.

Every clause is computed from the medians of the run, so a re-run cannot leave it stale.
"""

from __future__ import annotations

from typing import Any

from figures import DASH, TIMES, Med, lat, num


def _runs(m: dict[str, Any], field: str, fmt: str) -> str:
    """The lowest and highest run of ``field``, as ``low-high`` (an en dash)."""
    low_high = (m.get("spread") or {}).get(field)
    return DASH if not low_high else f"{fmt.format(low_high[0])}{DASH}{fmt.format(low_high[1])}"


def targets(med: Med) -> list[tuple[str, str, bool | None]]:
    """(target, measured, met) for each of meterline's targets."""
    s = med.get("steady", {})
    me, raw = s.get("meterline", {}), s.get("raw", {})
    out: list[tuple[str, str, bool | None]] = []
    p50, p99 = me.get("p50_us"), me.get("p99_us")
    out.append(("report() p50 ≤ 3 µs", lat(p50), None if p50 is None else p50 <= 3.0))
    out.append(("report() p99 ≤ 15 µs", lat(p99), None if p99 is None else p99 <= 15.0))
    eps, limit, share = (
        me.get("events_per_s"),
        raw.get("events_per_s"),
        me.get("events_per_s_vs_raw"),
    )
    out.append(
        (
            f"end-to-end ≥ 0.75 {TIMES} raw limit",
            f"{share:.3f}{TIMES}, runs {_runs(me, 'events_per_s_vs_raw', '{:.2f}')} (median of "
            f"per-run ratios; medians {num(eps)} vs {num(limit)} events/s)"
            if share
            else DASH,
            None if share is None else share >= 0.75,
        )
    )
    losses = []
    for scenario, field in (
        ("steady", "delivered"),
        ("outage", "delivered"),
        ("exit", "delivered_after_restart"),
        ("flaky", "delivered"),
    ):
        m = med.get(scenario, {}).get("meterline")
        if m and m.get(field) is not None and m.get("calls"):
            losses.append((scenario, m["calls"] - m[field]))
    lost = sum(n for _, n in losses)
    detail = ", ".join(f"{name} {n:,.0f}" for name, n in losses)
    out.append(
        ("nothing lost", f"lost: {detail}" if losses else DASH, lost == 0 if losses else None)
    )
    me_web = med.get("web", {}).get("meterline", {})
    share_rps, share_cpu = me_web.get("rps_vs_none"), me_web.get("cpu_vs_none")
    if share_rps is not None:
        measured = (
            f"{100 * share_rps:.1f}% of requests/s, runs {_runs(me_web, 'rps_vs_none', '{:.0%}')}"
        )
        if share_cpu:
            measured += f"; {100 * share_cpu:.1f}% of the CPU per request"
        out.append(("web requests/s with reporting ≥ 97% of without", measured, share_rps >= 0.97))
    return out  # fmt: skip


LOSS_LABELS = {
    "steady": "in the burst",
    "outage": "in the outage",
    "exit": "at exit",
    "flaky": "with the flaky server",
}


def lost(med: Med, peer: str) -> list[tuple[str, float]]:
    """(scenario, events lost) where ``peer`` delivered fewer events than it was given."""
    out = []
    for scenario in LOSS_LABELS:
        m = med.get(scenario, {}).get(peer)
        if not m or not m.get("calls"):
            continue
        delivered = m.get("delivered_after_restart", m.get("delivered"))
        if delivered is not None and delivered < m["calls"]:
            out.append((scenario, m["calls"] - delivered))
    return out


def meaning(med: Med) -> list[str]:
    """The "what it means" paragraphs, every clause computed from the medians."""
    s = med.get("steady", {})
    me = s.get("meterline")
    if not me:
        return []
    parts = [
        f"On the caller's thread `report()` costs a median {lat(me.get('p50_us'))} "
        f"({lat(me.get('p99_us'))} at p99)"
    ]
    peers = [p for p in ("segment", "posthog", "mixpanel", "orb-billing") if p in s]
    if peers:
        fastest = min(peers, key=lambda p: s[p].get("p50_us") or float("inf"))
        parts[-1] += (
            f"; the cheapest peer, {fastest}, costs {lat(s[fastest].get('p50_us'))} "
            f"({lat(s[fastest].get('p99_us'))} at p99)."
        )
    outage = med.get("outage", {})
    blockers = [p for p in peers if (outage.get(p, {}).get("p99_us") or 0) >= 100_000]
    if blockers:
        parts.append(
            "During the outage "
            + " and ".join(
                f"{p} held the caller {lat(outage[p]['p99_us'])} (p99)" for p in blockers
            )
            + f", meterline {lat(outage.get('meterline', {}).get('p99_us'))}."
        )
    mine = lost(med, "meterline")
    parts.append(
        "meterline delivered every event in every scenario (at exit, after a restart "
        "replayed its journal)."
        if not mine
        else "meterline lost " + ", ".join(f"{n:,.0f} {LOSS_LABELS[sc]}" for sc, n in mine) + "."
    )
    lossy = [(p, lost(med, p)) for p in peers]
    lossy = [(p, lost) for p, lost in lossy if lost]
    if lossy:
        parts.append(
            "Of the peers, "
            + "; ".join(
                f"{p} lost " + ", ".join(f"{n:,.0f} {LOSS_LABELS[sc]}" for sc, n in lost)
                for p, lost in lossy
            )
            + "."
        )
    return ["", "### What it means", "", " ".join(parts), *why(med)]


def why(med: Med) -> list[str]:
    """What stands in the way of the missed targets, from this run's own measurements."""
    s, w = med.get("steady", {}), med.get("web", {})
    me, raw = s.get("meterline", {}), s.get("raw", {})
    notes = []
    share = me.get("events_per_s_vs_raw")
    if share is not None and me.get("cpu_us_per_event") and raw.get("cpu_us_per_event"):
        notes.append(
            f"End to end, meterline reached {share:.2f}{TIMES} the raw limit. Both are bound "
            "by one core (the GIL), and meterline spent "
            f"{lat(me['cpu_us_per_event'])} of CPU per event across its threads against the "
            f"raw limit's {lat(raw['cpu_us_per_event'])}: the raw loop serializes 500 events "
            "with one orjson call and keeps no per-event state, while meterline serializes "
            "each event on its own (the exact bytes it retries and journals), draws its keys "
            "from a pool, and settles every event for flush() and stats()."
        )
    me_w, base, raw_w = w.get("meterline", {}), w.get("none", {}), w.get("raw", {})
    if me_w.get("cpu_us_per_request") and base.get("cpu_us_per_request"):
        extra = me_w["cpu_us_per_request"] - base["cpu_us_per_request"]
        bg = me_w.get("other_us_per_request") or 0.0
        budget = 0.03 * base["cpu_us_per_request"] / 0.97
        note = (
            f"In the web worker, a request cost {lat(base['cpu_us_per_request'])} of CPU "
            f"without reporting and {lat(extra)} more with meterline, {lat(bg)} of that on "
            "its background thread and the rest on the request thread. On a core that serves "
            "nothing else, requests/s is the inverse of that cost, so the 97% target allows "
            f"about {lat(budget)} per request for an endpoint this cheap"
        )
        if raw_w.get("cpu_us_per_request"):
            raw_extra = raw_w["cpu_us_per_request"] - base["cpu_us_per_request"]
            note += (
                f"; the raw limit, the least work an in-process shipper can do, added "
                f"{lat(raw_extra)}"
            )
        notes.append(
            note + f". An endpoint that costs 1 ms of CPU would lose "
            f"{100 * extra / (1000 + extra):.1f}% (computed, not measured). Requests/s also "
            f"moves with other work on the machine (see the lowest{DASH}highest row), CPU per "
            "request much less."
        )
    return [line for note in notes for line in ("", note)]
