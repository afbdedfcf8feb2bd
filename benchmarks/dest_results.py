"""The destinations table of ``RESULTS.md``: each destination's figures and its ratio to Orb.

Every figure is the median over the runs, with the lowest and highest run; a ratio is taken
run by run against Orb's run of the same round (the destinations ran back to back), then
its median and range are shown. "Within 10%" means ``report()`` p50 at most 1.10 times Orb's
and end-to-end events/s at least 0.90 times Orb's (medians of the per-round ratios). Orb
also runs at 100 events per batch, the other destinations' limit, so that the cost of the
smaller batches shows apart from the cost of each destination's own code.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from dest_drive import ENTRIES
from figures import DASH, TIMES, lat, num, table
from stats import median

REFERENCE = "orb"
SAME_BATCH = "orb-100"  # Orb at the others' batch limit
NAMES = {
    "orb": "Orb",
    "orb-100": "Orb, batch 100",
    "metronome": "Metronome",
    "lago": "Lago",
    "openmeter": "OpenMeter",
    "stripe": "Stripe",
}
WITHIN = 0.10

Row = dict[str, Any]


def with_ratios(rows: list[Row]) -> list[Row]:
    """Rows with ``p50_vs_orb`` and ``eps_vs_orb`` (÷ Orb's row of the same round) and
    ``eps_vs_orb100`` (÷ the same round's Orb at batch 100)."""
    orb = {r["run"]: r for r in rows if r["peer"] == REFERENCE}
    orb100 = {r["run"]: r for r in rows if r["peer"] == SAME_BATCH}
    pairs = (
        (orb, "p50_us", "p50_vs_orb"),
        (orb, "events_per_s", "eps_vs_orb"),
        (orb100, "events_per_s", "eps_vs_orb100"),
    )
    out = []
    for row in rows:
        row = dict(row)
        for bases, field, name in pairs:
            base = bases.get(row["run"], {})
            if row.get(field) and base.get(field):
                row[name] = row[field] / base[field]
        out.append(row)
    return out


def _spread(rows: list[Row], field: str, fmt: Callable[[float], str]) -> str:
    """``median (lowest-highest)`` of ``field`` over the rows that have it."""
    values = [r[field] for r in rows if isinstance(r.get(field), (int, float))]
    if not values:
        return DASH
    mid = median(values)
    assert mid is not None
    if len(values) == 1:
        return fmt(mid)
    return f"{fmt(mid)} ({fmt(min(values))}{DASH}{fmt(max(values))})"


def _times(value: float) -> str:
    return f"{value:.2f}{TIMES}"


def _within(rows: list[Row]) -> str:
    p50 = median(r.get("p50_vs_orb") for r in rows)
    eps = median(r.get("eps_vs_orb") for r in rows)
    if p50 is None or eps is None:
        return DASH
    return "yes" if p50 <= 1 + WITHIN and eps >= 1 - WITHIN else "**no**"


def section(rows: list[Row], meta: dict[str, Any]) -> list[str]:
    """The destinations heading, what was measured, and the table ([] without rows)."""
    if not rows:
        return []
    rows = with_ratios(rows)
    by_dest = {d: [r for r in rows if r["peer"] == d] for d in ENTRIES}
    n = meta.get("destination_calls") or rows[0].get("calls") or 0
    runs = max(len(v) for v in by_dest.values())
    table_rows = []
    for dest, mine in by_dest.items():
        if not mine:
            continue
        counted = [r for r in mine if "events_per_s" in r]
        is_orb = dest == REFERENCE
        table_rows.append(
            [
                NAMES[dest],
                num(mine[-1].get("batch")),
                _spread(mine, "p50_us", lat),
                _spread(mine, "p99_us", lat),
                _spread(counted, "events_per_s", num),
                f"{num(min(r['delivered'] for r in mine))} / {num(n)}",
                DASH if is_orb else _spread(mine, "p50_vs_orb", _times),
                DASH if is_orb else _spread(counted, "eps_vs_orb", _times),
                DASH if dest == SAME_BATCH else _spread(counted, "eps_vs_orb100", _times),
                DASH if dest in (REFERENCE, SAME_BATCH) else _within(mine),
            ]
        )
    header = ["destination", "batch", "report() p50", "report() p99", "end-to-end events/s"]
    header += ["delivered / calls (fewest)", "p50 ÷ Orb", "events/s ÷ Orb"]
    header += ["events/s ÷ Orb at batch 100", "within 10% of Orb"]
    out = [
        "",
        f"### Destinations: {n:,} calls in a tight loop, per destination",
        "",
        f"meterline with `Client(destination=...)` and its defaults (so each destination's "
        f"own batch limit), the steady scenario's loop, then `flush()` and `close()`; "
        f"{runs} run(s) per destination, each in a fresh process, the order rotating round "
        "by round. For each run the sink speaks only that vendor's API (Orb "
        "`/v1/ingest`, Metronome `/v1/ingest` with a bare array, Lago "
        "`/api/v1/events/batch`, OpenMeter `/api/v1/events` answering 204, Stripe a "
        "session at `/v2/billing/meter_event_session`, then `/v2/billing/meter_event_stream` "
        "with its token) and counts each event's call index; a run whose events did not all "
        f"arrive exactly once with the vendor's success answer has no events/s. Figures: "
        f"median (lowest{DASH}highest run); ratios run by run against Orb's run of the same "
        f"round. Within 10%: p50 at most 1.10{TIMES} and events/s at least 0.90{TIMES} Orb's. "
        "Orb also runs at 100 events per batch (`max_batch_events=100`), the limit of every "
        "other destination, to tell the cost of smaller batches from that of a destination's "
        "own code.",
        "",
    ]
    out += table(header, table_rows)
    notes = [f"{NAMES[r['peer']]} run {r['run'] + 1}: {r['note']}" for r in rows if r.get("note")]
    if notes:
        out += ["", "Runs not counted: " + "; ".join(notes) + "."]
    return out
