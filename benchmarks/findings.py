"""What the figures say: meterline's targets, and the "what it means" paragraphs.

Every clause is computed from the medians of the run, so a re-run cannot leave it stale.
"""

from __future__ import annotations

from typing import Any

from figures import ADDED, CPU, DASH, MAIN_CPU, TIMES, Med, is_number, lat, num, share_pct


def _runs(m: dict[str, Any], field: str, fmt: str) -> str:
    """The lowest and highest run of ``field``, as ``low-high`` (an en dash)."""
    low_high = (m.get("spread") or {}).get(field)
    return DASH if not low_high else f"{fmt.format(low_high[0])}{DASH}{fmt.format(low_high[1])}"


# DESIGN §13, the costs meterline answers for in every run
P50_US, P99_US = 1.5, 10.0
CPU_VS_RAW, E2E_VS_RAW = 1.0, 1.0  # at most, at least
RSS_ALLOWANCE_MB = 10.0
WEB = {"web": "trivial endpoint", "web_1ms": "1 ms CPU endpoint"}
MINUS = "\u2212"

Target = tuple[str, str, bool | None]
Check = tuple[Target, str]  # the target's row, and what it means if it is missed


def targets(med: Med) -> list[Target]:
    """(target, measured, met) for each of meterline's targets."""
    return [target for target, _ in _checks(med)]


def _checks(med: Med) -> list[Check]:
    s = med.get("steady", {})
    me, raw = s.get("meterline", {}), s.get("raw", {})
    out = [
        _p50(me, raw),
        _p99(me, raw),
        _cpu(me, raw, s.get("meterline-wal", {})),
        _end_to_end(me, raw),
        _rss(me, raw),
    ]
    out += [_web(med[name], name) for name in WEB if "meterline" in med.get(name, {})]
    out.append(_lost(med))
    return out


def _at_most(value: float | None, limit: float) -> bool | None:
    return None if value is None else value <= limit


def _signed(us: float | None) -> str:
    return DASH if us is None else ("+" if us >= 0 else MINUS) + lat(abs(us))


def _p50(me: dict[str, Any], raw: dict[str, Any]) -> Check:
    p50 = me.get("p50_us")
    note = (
        f"On the caller's thread `report()` took a median {lat(p50)}, against {P50_US:g} µs; "
        f"timing an empty call with the same arguments took {lat(me.get('floor_us'))} of "
        f"that, and the raw limit's call took {lat(raw.get('p50_us'))}."
    )
    return (f"report() p50 ≤ {P50_US:g} µs", lat(p50), _at_most(p50, P50_US)), note


def _p99(me: dict[str, Any], raw: dict[str, Any]) -> Check:
    p99 = me.get("p99_us")
    note = (
        f"One `report()` in a hundred took more than {lat(p99)} (p99.9 "
        f"{lat(me.get('p999_us'))}), against {P99_US:g} µs: the caller shares the one core "
        "and the GIL with meterline's spooler and sender threads. The raw limit, with no "
        f"thread of its own, had a p99 of {lat(raw.get('p99_us'))}."
    )
    return (f"report() p99 ≤ {P99_US:g} µs", lat(p99), _at_most(p99, P99_US)), note


def _cpu(me: dict[str, Any], raw: dict[str, Any], wal: dict[str, Any]) -> Check:
    share, cpu = me.get("cpu_vs_raw"), me.get(CPU)
    measured = DASH
    if share is not None:
        measured = (
            f"{share:.3f}{TIMES}, runs {_runs(me, 'cpu_vs_raw', '{:.2f}')} (median of per-run "
            f"ratios; medians {lat(cpu)} vs {lat(raw.get(CPU))} per delivered event)"
        )
    note = (
        f"Per delivered event meterline spent {lat(cpu)} of CPU across its threads, "
        f"{share or 0:.2f}{TIMES} the raw limit's {lat(raw.get(CPU))}"
    )
    main = me.get(MAIN_CPU)
    if cpu is not None and main is not None:
        note += (
            f": {lat(main)} on the caller's thread (`report()` and `flush()`) and "
            f"{lat(cpu - main)} on its spooler and sender threads"
        )
    note += (
        ". The raw limit does everything on the caller's thread: it serializes 500 events "
        "with one orjson call and POSTs them, and keeps no per-event state, retries nothing "
        "and journals nothing."
    )
    if wal.get(CPU) is not None:
        note += f" In write-ahead mode meterline spent {lat(wal[CPU])} per delivered event."
    target = f"CPU per delivered event, all threads ≤ {CPU_VS_RAW:.1f}{TIMES} the raw limit's"
    return (target, measured, _at_most(share, CPU_VS_RAW)), note


def _end_to_end(me: dict[str, Any], raw: dict[str, Any]) -> Check:
    share = me.get("events_per_s_vs_raw")
    eps, limit = me.get("events_per_s"), raw.get("events_per_s")
    measured = DASH
    if share is not None:
        measured = (
            f"{share:.3f}{TIMES}, runs {_runs(me, 'events_per_s_vs_raw', '{:.2f}')} (median "
            f"of per-run ratios; medians {num(eps)} vs {num(limit)} events/s)"
        )
    note = (
        f"End to end meterline reached {share or 0:.2f}{TIMES} the raw limit ({num(eps)} vs "
        f"{num(limit)} events/s). Both are bound by the driver's one core (the GIL), so "
        "events/s follows the CPU per delivered event"
    )
    if me.get("cpu_vs_raw") is not None:
        note += f", {me['cpu_vs_raw']:.2f}{TIMES} the raw limit's"
    target = f"end to end ≥ {E2E_VS_RAW:.1f}{TIMES} the raw limit"
    met = None if share is None else share >= E2E_VS_RAW
    return (target, measured, met), note + "."


def _rss(me: dict[str, Any], raw: dict[str, Any]) -> Check:
    growth, base = me.get("rss_growth_mb"), raw.get("rss_growth_mb")
    over = None if growth is None or base is None else growth - base
    burst = f"{num(me.get('calls'))}-event burst"
    measured = DASH
    if over is not None:
        measured = (
            f"{num(growth, 1)} MB vs the raw limit's {num(base, 1)} MB ({_mb(over)}; medians, "
            f"{burst})"
        )
    note = (
        f"A {burst} grew meterline's peak RSS by {num(growth, 1)} MB and the raw limit's by "
        f"{num(base, 1)} MB, {num((over or 0) - RSS_ALLOWANCE_MB, 1)} MB beyond the "
        f"{RSS_ALLOWANCE_MB:g} MB allowance: the raw limit holds at most one batch of 500 "
        "events, meterline every event reported and not yet delivered."
    )
    target = f"peak RSS growth ≤ the raw limit's + {RSS_ALLOWANCE_MB:g} MB"
    met = None if over is None else over <= RSS_ALLOWANCE_MB
    return (target, measured, met), note


def _mb(value: float) -> str:
    return f"{'+' if value >= 0 else MINUS}{abs(value):.1f} MB"


def _web(w: dict[str, dict[str, Any]], scenario: str) -> Check:
    me, raw, none = w.get("meterline", {}), w.get("raw", {}), w.get("none", {})
    added, raw_added = me.get(ADDED), raw.get(ADDED)
    kept = (
        f"requests/s kept: meterline {share_pct(me.get('rps_vs_none'))} "
        f"(runs {_runs(me, 'rps_vs_none', '{:.0%}')}), raw limit "
        f"{share_pct(raw.get('rps_vs_none'))}"
    )
    measured = (
        f"meterline {_signed(added)}, raw limit {_signed(raw_added)} per request over "
        f"{lat(none.get('cpu_us_per_request'))} without reporting (medians of per-run "
        f"differences); {kept}"
    )
    note = (
        f"In the web worker ({WEB[scenario]}), a request cost "
        f"{lat(none.get('cpu_us_per_request'))} of CPU without reporting; meterline added "
        f"{lat(added)}"
    )
    if is_number(me.get("other_us_per_request")):
        background = me["other_us_per_request"] - (none.get("other_us_per_request") or 0.0)
        note += f" ({lat(background)} of it on its background threads)"
    note += (
        f", the raw limit, all on the request thread, {lat(raw_added)}; {kept}. Requests/s "
        f"also moves with other work on the machine, CPU per request much less."
    )
    target = f"web worker, {WEB[scenario]}: added CPU per request ≤ the raw limit's"
    met = None if added is None or raw_added is None else added <= raw_added
    return (target, measured, met), note


def _lost(med: Med) -> Check:
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
    target = ("nothing lost", f"lost: {detail}" if losses else DASH, lost == 0 if losses else None)
    return target, ""  # the paragraph above says what was lost


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
    else:
        parts[-1] += "."
    wal = s.get("meterline-wal")
    if wal:
        parts.append(
            'With `durability="write_ahead"`, which journals every event within a few '
            f"milliseconds, `report()` costs {lat(wal.get('p50_us'))} "
            f"({lat(wal.get('p99_us'))} at p99), and end to end reaches "
            f"{num(wal.get('events_per_s'))} events/s with {lat(wal.get(CPU))} of CPU per "
            "delivered event."
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
    """What each missed target is, from this run's own measurements."""
    notes = [note for (_, _, met), note in _checks(med) if met is False and note]
    return [line for note in notes for line in ("", note)]
