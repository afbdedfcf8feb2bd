"""Lago's events API: ``POST {base_url}/events/batch`` with ``{"events": [...]}`` (up to 100).

Lago bills subscriptions, so ``customer`` must be the subscription's
``external_subscription_id`` (your id for it), not a customer id. ``event_name`` becomes
``code`` (a billable metric's code), the idempotency key ``transaction_id``, and the
timestamp Unix seconds with milliseconds as a string (``"1651240791.123"``: the spec takes
an integer or a string, and documents millisecond precision). Property values are strings
and numbers; a bool is sent as ``"true"``/``"false"``, which Lago filters and aggregates as
it would a JSON bool.

A batch is atomic: a 422 refuses all of it. When its ``error_details`` names events by
index they are rejected and the others sent again at once; otherwise they are found by
bisection. ``transaction_id: value_already_exist`` means Lago already holds that event (a
retry of one it stored): when every event of a batch is such, the batch counts as
delivered, since each is in Lago and counted once. A 429 waits ``Retry-After`` or
``X-RateLimit-Reset`` (seconds until the window resets).
"""

from __future__ import annotations

import calendar
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Final

import orjson

from meterline._event import Pending
from meterline._response import Response, retry_after

from ._base import (
    ACCEPTED,
    EXACT,
    INVALID,
    INVALID_BATCH,
    Answer,
    Session,
    bearer,
    default_read,
    problem_detail,
    reasons,
)

__all__ = ["Lago"]

DEFAULT_BASE_URL: Final = "https://api.getlago.com/api/v1"
ALREADY_THERE: Final = "value_already_exist"
_EPOCH_LIKE = 1_000_000_000.0  # an X-RateLimit-Reset this large is a time, not a duration


class Lago:
    """Lago's ``POST /api/v1/events/batch`` (self-hosted: ``base_url=".../api/v1"``)."""

    name: Final = "lago"
    default_base_url: Final = DEFAULT_BASE_URL
    max_batch_events: Final = 100
    key_field: Final = "transaction_id"
    content_type: Final = "application/json"
    has_rules: Final = False  # report()'s rules suffice; bools are sent as text

    def __repr__(self) -> str:
        return "Lago()"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Lago)

    def __hash__(self) -> int:
        return hash(Lago)

    def ingest_url(self, base_url: str) -> str:
        return f"{base_url}/events/batch"

    def headers(self, api_key: str | None) -> dict[str, str]:
        return bearer(api_key)

    def session(self, base_url: str) -> Session | None:
        return None

    def check(self, event: Pending) -> None:
        return None

    def serialize_many(self, events: Sequence[Pending]) -> list[bytes]:
        doc: dict[str, Any] = dict.fromkeys(
            ("transaction_id", "external_subscription_id", "code", "timestamp", "properties")
        )
        dumps = orjson.dumps
        out = []
        for key, customer, event_name, props, ts, _ in events:
            doc["transaction_id"] = key
            doc["external_subscription_id"] = customer
            doc["code"] = event_name
            doc["timestamp"] = unix_text(ts)
            doc["properties"] = _no_bools(props)
            out.append(dumps(doc, option=EXACT)[:-1])  # bytes of their own size: see _base
        return out

    def envelope(self, events: Sequence[bytes]) -> bytes:
        return b'{"events":[' + b",".join(events) + b"]}"

    def read(self, response: Response, keys: Sequence[str]) -> Answer:
        # Lago sends X-RateLimit-Reset on every answer: only a 429's is a reason to wait
        delay = rate_delay if response.status == 429 else retry_after
        return default_read(
            response, success=_success, invalid=lambda r: _invalid(r, keys), delay=delay
        )


def unix_text(ts: int | str) -> str:
    """Unix seconds with milliseconds (truncated) as text, from ns or UTC text."""
    if type(ts) is int:
        ms = ts // 1_000_000
    else:
        day, clock = str(ts).rstrip("Z").split("T")
        year, month, mday = (int(p) for p in day.split("-"))
        hms, _, fraction = clock.partition(".")
        hour, minute, second = (int(p) for p in hms.split(":"))
        whole = calendar.timegm((year, month, mday, hour, minute, second, 0, 0, 0))
        ms = whole * 1000 + int((fraction + "000")[:3])
    sign = "-" if ms < 0 else ""
    seconds, millis = divmod(abs(ms), 1000)
    return f"{sign}{seconds}.{millis:03d}"


def _no_bools(props: dict[str, Any]) -> dict[str, Any]:
    if not any(type(v) is bool for v in props.values()):
        return props
    return {k: ("true" if v else "false") if type(v) is bool else v for k, v in props.items()}


def rate_delay(headers: Mapping[str, str], now: Callable[[], float] = time.time) -> float | None:
    """``Retry-After`` when given, else Lago's ``X-RateLimit-Reset`` (seconds to wait)."""
    delay = retry_after(headers, now)
    if delay is not None:
        return delay
    raw = headers.get("x-ratelimit-reset")
    try:
        value = float(raw) if raw is not None else -1.0
    except ValueError:
        return None
    if value != value or value < 0:
        return None
    return max(0.0, value - now()) if value >= _EPOCH_LIKE else value


def _lago_error(doc: object) -> bool:
    return (
        isinstance(doc, dict)
        and isinstance(doc.get("status"), int)
        and isinstance(doc.get("error"), str)
    )


def _success(response: Response) -> Answer | None:
    doc = response.json()
    if response.status == 200 and isinstance(doc, dict) and isinstance(doc.get("events"), list):
        return Answer(ACCEPTED)
    return None


def _invalid(response: Response, keys: Sequence[str]) -> Answer | None:
    """Lago's 400 ``{status, error}`` or 422 ``{status, error, code, error_details}``."""
    doc = response.json()
    if not _lago_error(doc):
        return None
    assert isinstance(doc, dict)
    named = _by_index(doc.get("error_details"), keys)
    if named is None:  # nothing (or not only events) named: find the bad ones by bisection
        return Answer(INVALID_BATCH, detail=problem_detail(response))
    bad = {k: why for k, why in named.items() if why != [f"transaction_id: {ALREADY_THERE}"]}
    if not bad and len(named) == len(set(keys)):
        return Answer(ACCEPTED, detail="already in Lago")  # each stored, counted once
    if not bad:  # some are there, the rest were rolled back with them: split them apart
        return Answer(INVALID_BATCH, detail=problem_detail(response))
    return Answer(INVALID, rejected=bad)


def _by_index(details: object, keys: Sequence[str]) -> dict[str, list[str]] | None:
    """``{"0": {"transaction_id": ["value_already_exist"]}}`` as keys and reasons; None
    when ``details`` is not such a mapping of indexes of this batch."""
    if not isinstance(details, dict) or not details:
        return None
    named: dict[str, list[str]] = {}
    for index, why in details.items():
        text = str(index)
        if not (text.isascii() and text.isdigit()) or int(text) >= len(keys):
            return None
        if isinstance(why, dict):
            found = [f"{field}: {r}" for field, rs in why.items() for r in reasons(rs)]
        else:  # a message for the whole event (an expression that failed)
            found = reasons(why)
        named.setdefault(keys[int(text)], []).extend(found or ["invalid"])
    return named
