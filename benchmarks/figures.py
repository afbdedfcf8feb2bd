"""The medians of a benchmark run's rows, and how RESULTS.md formats a figure.

Every figure is the median over the runs of one (scenario, peer). Ratios to a baseline
(meterline ÷ raw limit end to end and in CPU per delivered event, a peer ÷ no reporting in
the web app) and the CPU a peer adds to a web request over no reporting are taken run by
run first, since the baseline ran right next to meterline, and their median is reported.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

from stats import median

DASH = "\u2013"  # an en dash: "no figure", and ranges
TIMES = "\u00d7"  # a multiplication sign: ratios

NAMES = {
    "meterline": "meterline",
    "meterline-wal": "meterline, write-ahead",
    "raw": "raw limit",
    "segment": "segment",
    "posthog": "posthog",
    "mixpanel": "mixpanel",
    "orb-billing": "orb-billing",
    "none": "no reporting",
}
PEER_ORDER = ("meterline", "meterline-wal", "raw", "segment", "posthog", "mixpanel", "orb-billing")

# CPU per delivered event in the steady scenario: all threads, the caller's thread alone
CPU, MAIN_CPU = "cpu_us_per_delivered", "main_cpu_us_per_delivered"
ADDED = "added_us_per_request"  # web: CPU per request over no reporting's, same round
# fields whose lowest and highest run are kept too
SPREAD = (
    "rps",
    "cpu_us_per_request",
    "events_per_s_vs_raw",
    "cpu_vs_raw",
    "rps_vs_none",
    ADDED,
)

Rows = dict[str, list[dict[str, Any]]]
Med = dict[str, dict[str, dict[str, Any]]]  # scenario -> peer -> field -> median


def medians(results: Rows) -> Med:
    out: Med = {}
    for scenario, rows in results.items():
        if scenario in ("web", "web_1ms"):
            rows = _relative(
                rows, "none", {"rps": "rps_vs_none", "cpu_us_per_request": "cpu_vs_none"}
            )
            rows = _added(rows, "none", "cpu_us_per_request", ADDED)
            rows = [_background_cpu(r) for r in rows]
        if scenario == "steady":
            rows = _relative(
                rows,
                "raw",
                {"events_per_s": "events_per_s_vs_raw", "cpu_us_per_delivered": "cpu_vs_raw"},
            )
        by_peer: dict[str, list[dict[str, Any]]] = {}
        for row in rows:
            by_peer.setdefault(row["peer"], []).append(row)
        out[scenario] = {}
        for peer, peer_rows in by_peer.items():
            fields = {k for r in peer_rows for k, v in r.items() if is_number(v)}
            out[scenario][peer] = {k: median(r.get(k) for r in peer_rows) for k in fields}
            out[scenario][peer]["runs"] = len(peer_rows)
            out[scenario][peer]["info"] = peer_rows[-1].get("info")
            notes = sorted({r["note"] for r in peer_rows if r.get("note")})
            out[scenario][peer]["notes"] = notes
            out[scenario][peer]["spread"] = {
                k: (min(r[k] for r in peer_rows), max(r[k] for r in peer_rows))
                for k in SPREAD
                if all(is_number(r.get(k)) for r in peer_rows)
            }
    return out


def _relative(
    rows: list[dict[str, Any]], baseline: str, fields: dict[str, str]
) -> list[dict[str, Any]]:
    """Rows with ``fields`` also relative to the baseline peer's row of the same run (it ran
    right after meterline, so a slow spell of the machine tends to hit both)."""
    base = {r["run"]: r for r in rows if r["peer"] == baseline}
    out = []
    for row in rows:
        row, b = dict(row), base.get(row["run"], {})
        for field, name in fields.items():
            if is_number(row.get(field)) and b.get(field):
                row[name] = row[field] / b[field]
        out.append(row)
    return out


def _added(
    rows: list[dict[str, Any]], baseline: str, field: str, name: str
) -> list[dict[str, Any]]:
    """Rows with ``name``: ``field`` minus the baseline peer's ``field`` in the same run."""
    base = {r["run"]: r for r in rows if r["peer"] == baseline}
    out = []
    for row in rows:
        b = base.get(row["run"], {})
        if is_number(row.get(field)) and is_number(b.get(field)):
            row = {**row, name: row[field] - b[field]}
        out.append(row)
    return out


def _background_cpu(row: dict[str, Any]) -> dict[str, Any]:
    if is_number(row.get("cpu_us_per_request")) and is_number(row.get("main_us_per_request")):
        row = {
            **row,
            "other_us_per_request": row["cpu_us_per_request"] - row["main_us_per_request"],
        }
    return row


def is_number(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


# -- formatting ------------------------------------------------------------------------------


def num(value: float | None, digits: int = 0) -> str:
    if value is None:
        return DASH
    return f"{value:,.{digits}f}"


def lat(us: float | None) -> str:
    """Microseconds, shown as µs below 10 ms and as ms above."""
    if us is None:
        return DASH
    if us >= 10_000:
        return f"{us / 1000:,.0f} ms"
    if us >= 100:
        return f"{us:,.0f} µs"
    return f"{us:.1f} µs"


def seconds(value: float | None) -> str:
    return DASH if value is None else f"{max(0.0, value):.1f} s"


def of(part: float | None, whole: float | None) -> str:
    if part is None or whole is None:
        return DASH
    return f"{part:,.0f} / {whole:,.0f}"


def ratio(a: float | None, b: float | None) -> str:
    if a is None or b is None or b == 0:
        return DASH
    r = a / b
    return f"{r:.2f}{TIMES}" if r >= 0.1 else f"{r:.2g}{TIMES}"


def cell(field: str, fmt: Callable[[Any], str]) -> Callable[[dict[str, Any]], str]:
    """A table cell: ``field`` of a peer's medians, formatted by ``fmt``."""
    return lambda m: fmt(m.get(field))


def delivered(m: dict[str, Any]) -> str:
    return of(m.get("delivered"), m.get("calls"))


def share_pct(value: float | None) -> str:
    return DASH if value is None else f"{100 * value:.1f}%"


def table(header: list[str], rows: Iterable[list[str]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return lines


def table_row(
    label: str,
    med: dict[str, dict[str, Any]],
    peers: Iterable[str],
    make_cell: Callable[[dict[str, Any]], str],
) -> list[str]:
    """One table row: the label, then one cell per peer."""
    return [label] + [make_cell(med.get(p, {})) for p in peers]


def span(m: dict[str, Any], field: str, fmt: Callable[[float], str]) -> str:
    low_high = (m.get("spread") or {}).get(field)
    return DASH if not low_high else f"{fmt(low_high[0])}{DASH}{fmt(low_high[1])}"


def e2e_vs_raw(me: dict[str, Any]) -> str:
    value = me.get("events_per_s_vs_raw")
    return DASH if value is None else f"{value:.2f}{TIMES}"


def share(m: dict[str, Any]) -> float | None:
    calls, delivered = m.get("calls"), m.get("delivered")
    return float(delivered) / calls if calls and delivered is not None else None
