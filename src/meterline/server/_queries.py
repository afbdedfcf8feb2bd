"""The inputs of search, usage and query strings, and Orb's 400 for a refused batch."""

from __future__ import annotations

from typing import Any
from urllib.parse import parse_qsl

from meterline.server._problem import Problem, bad_request
from meterline.server._time import parse_instant

MAX_SEARCH_IDS = 500
_SEARCH_KEYS = frozenset({"event_ids", "timeframe_start", "timeframe_end"})


def search_criteria(body: Any) -> tuple[list[str], int | None, int | None]:
    """The distinct ids and the optional ``[start, end)`` of an ``EventSearchCriteria`` body."""
    if not isinstance(body, dict):
        raise bad_request("the body must be an object with `event_ids`")
    errors: list[object] = [f"unknown field `{k}`" for k in sorted(body.keys() - _SEARCH_KEYS)]
    ids = body.get("event_ids")
    if not (
        isinstance(ids, list)
        and 1 <= len(ids) <= MAX_SEARCH_IDS
        and all(isinstance(i, str) for i in ids)
    ):
        errors.append(f"`event_ids` must be an array of 1 to {MAX_SEARCH_IDS} strings")
        ids = []
    window: list[int | None] = []
    for name in ("timeframe_start", "timeframe_end"):
        value = body.get(name)
        try:
            window.append(None if value is None else parse_instant(value, require_utc=False))
        except (ValueError, TypeError) as exc:
            errors.append(f"`{name}` must be an ISO 8601 date-time with an offset: {exc}")
    if errors:
        raise bad_request("; ".join(str(e) for e in errors), errors)
    return list(dict.fromkeys(ids)), window[0], window[1]


def usage_query(params: dict[str, str]) -> tuple[int, int, str | None]:
    """``start`` and ``end`` (microseconds) and the optional customer of a usage report."""
    bounds = []
    for name in ("start", "end"):
        if name not in params:
            raise bad_request(f"the query parameter `{name}` is required")
        # An unencoded "+01:00" arrives as " 01:00"; no valid instant contains a space.
        text = params[name].replace(" ", "+")
        try:
            bounds.append(parse_instant(text, require_utc=False))
        except ValueError as exc:
            raise bad_request(f"`{name}` {exc}") from None
    start_us, end_us = bounds
    if start_us > end_us:
        raise bad_request("`start` must not be later than `end`")
    customer = params.get("customer")
    if customer == "":
        raise bad_request("`customer` must not be empty when given")
    return start_us, end_us, customer


def refused_batch(
    unique: dict[str, Any],
    failed: dict[str, list[str]],
    deprecated: list[str],
    duplicate: list[str],
) -> Problem:
    """Orb's 400 for a batch with events that break a per-event rule, naming their keys.

    A key already ingested (a duplicate) is not named even if it would fail now: Orb
    de-duplicates first. Nothing in the batch was stored; the other events may be resent.
    """
    gone, seen = set(deprecated), set(duplicate)
    entries: list[object] = []
    for key in unique:
        if key in gone:
            errors = ["the event was deprecated and cannot be ingested again"]
        elif key in failed and key not in seen:
            errors = failed[key]
        else:
            continue
        entries.append({"idempotency_key": key, "validation_errors": errors})
    return bad_request(
        f"{len(entries)} event(s) failed validation; nothing in this batch was ingested",
        entries,
    )


def query_params(query: str, allowed: frozenset[str]) -> dict[str, str]:
    """Query parameters, refusing unknown and repeated names."""
    pairs = parse_qsl(query, keep_blank_values=True)
    unknown = sorted({name for name, _ in pairs} - allowed)
    if unknown:
        raise bad_request(f"unknown query parameter(s): {', '.join(unknown)}")
    params = dict(pairs)
    if len(params) != len(pairs):
        raise bad_request("a query parameter is repeated")
    return params


def flag(name: str, value: str) -> bool:
    lowered = value.lower()
    if lowered not in ("true", "false"):
        raise bad_request(f"`{name}` must be true or false")
    return lowered == "true"
