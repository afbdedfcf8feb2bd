"""The inputs of the backfill and event-volume endpoints, and the hourly volume query."""

from __future__ import annotations

import sqlite3
from typing import Any

from meterline.server._backfill_store import NewBackfill
from meterline.server._problem import bad_request
from meterline.server._sqlite import COUNTED
from meterline.server._time import format_instant, parse_instant

MAX_BACKFILL_SECONDS = 31 * 86400  # Orb's default limit on a backfill's timeframe
DEFAULT_CLOSE_SECONDS = 86400  # Orb closes a backfill a day after its creation by default
HOUR_US = 3600 * 1_000_000
_NEW_KEYS = frozenset(
    {
        "timeframe_start",
        "timeframe_end",
        "close_time",
        "customer_id",
        "external_customer_id",
        "replace_existing_events",
        "deprecation_filter",
    }
)
STATUSES = ("pending", "reflected", "pending_revert", "reverted")
LIST_PARAMS = frozenset({"limit", "cursor", "customer_id", "status"})
VOLUME_PARAMS = frozenset({"limit", "cursor", "timeframe_start", "timeframe_end"})


def new_backfill(body: Any, now_us: int) -> NewBackfill:
    """Check a ``NewBackfill`` body (Orb's rules: a timeframe of at most 31 days)."""
    if not isinstance(body, dict):
        raise bad_request("the body must be an object with timeframe_start and timeframe_end")
    errors = [f"unknown field `{k}`" for k in sorted(body.keys() - _NEW_KEYS)]
    instants: dict[str, int | None] = {}
    for name in ("timeframe_start", "timeframe_end", "close_time"):
        value = body.get(name)
        if value is None and name == "close_time":
            instants[name] = None
            continue
        try:
            if not isinstance(value, str):
                raise TypeError(f"got {value!r}")
            instants[name] = parse_instant(value, require_utc=False)
        except (TypeError, ValueError) as exc:
            errors.append(f"`{name}` must be an ISO 8601 date-time with an offset: {exc}")
    for name in ("customer_id", "external_customer_id", "deprecation_filter"):
        if body.get(name) is not None and not isinstance(body[name], str):
            errors.append(f"`{name}` must be a string or null")
    if body.get("customer_id") is not None and body.get("external_customer_id") is not None:
        errors.append("give at most one of customer_id and external_customer_id")
    if body.get("deprecation_filter") is not None:
        errors.append("`deprecation_filter` (computed properties) is not supported here")
    replace = body.get("replace_existing_events", True)
    if not isinstance(replace, bool):
        errors.append("`replace_existing_events` must be a boolean")
    start, end = instants.get("timeframe_start"), instants.get("timeframe_end")
    if start is not None and end is not None:
        if start >= end:
            errors.append("`timeframe_start` must be earlier than `timeframe_end`")
        elif end - start > MAX_BACKFILL_SECONDS * 1_000_000:
            errors.append("a backfill's timeframe may be at most 31 days long")
    if errors or start is None or end is None:
        raise bad_request("; ".join(errors), list(errors))
    close_us = instants.get("close_time")
    return NewBackfill(
        start,
        end,
        now_us + DEFAULT_CLOSE_SECONDS * 1_000_000 if close_us is None else close_us,
        body.get("customer_id"),
        body.get("external_customer_id"),
        bool(replace),
    )


def limit_and_cursor(params: dict[str, str]) -> tuple[int, int | None]:
    """``limit`` (1 to 100, default 20) and the decoded ``cursor`` of a paginated list."""
    try:
        limit = int(params.get("limit", "20"))
    except ValueError:
        limit = 0
    if not 1 <= limit <= 100:
        raise bad_request("`limit` must be an integer from 1 to 100")
    cursor = params.get("cursor") or None
    if cursor is None:
        return limit, None
    if not cursor.isdigit():
        raise bad_request("`cursor` is not a cursor this server returned")
    return limit, int(cursor)


def list_filters(params: dict[str, str]) -> tuple[str | None, str | None]:
    """The ``customer_id`` and ``status`` filters of the backfill list (the SDK sends them)."""
    status = params.get("status") or None
    if status is not None and status not in STATUSES:
        raise bad_request(f"`status` must be one of {', '.join(STATUSES)}")
    return params.get("customer_id") or None, status


def volume_window(params: dict[str, str], now_us: int) -> tuple[int, int]:
    """The hours (as indexes since the epoch) that ``[timeframe_start, timeframe_end)`` touches."""
    bounds: list[int] = []
    for name in ("timeframe_start", "timeframe_end"):
        text = params.get(name)
        if text is None and name == "timeframe_end":
            bounds.append(now_us)
            continue
        if text is None:
            raise bad_request("the query parameter `timeframe_start` is required")
        try:
            bounds.append(parse_instant(text.replace(" ", "+"), require_utc=False))
        except ValueError as exc:
            raise bad_request(f"`{name}` {exc}") from None
    start_us, end_us = bounds
    if start_us >= end_us:
        raise bad_request("`timeframe_start` must be earlier than `timeframe_end`")
    return start_us // HOUR_US, -(-end_us // HOUR_US)


def volume(
    db: sqlite3.Connection, first_hour: int, end_hour: int, limit: int, after: int | None
) -> dict[str, Any]:
    """``EventVolumes``: counted events per hour with any, oldest hour first, paginated."""
    start = first_hour if after is None else max(first_hour, after + 1)
    rows = db.execute(
        f"SELECT ts_us / {HOUR_US} AS hour, count(*) FROM events"
        f" WHERE deprecated_at IS NULL AND {COUNTED} AND ts_us >= ? AND ts_us < ?"
        " GROUP BY hour ORDER BY hour LIMIT ?",
        (start * HOUR_US, end_hour * HOUR_US, limit + 1),
    ).fetchall()
    more = len(rows) > limit
    rows = rows[:limit]
    data = [
        {
            "timeframe_start": format_instant(hour * HOUR_US),
            "timeframe_end": format_instant((hour + 1) * HOUR_US),
            "count": count,
        }
        for hour, count in rows
    ]
    cursor = str(rows[-1][0]) if more else None
    return {"data": data, "pagination_metadata": {"has_more": more, "next_cursor": cursor}}
