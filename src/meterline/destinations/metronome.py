"""Metronome's usage ingest: ``POST {base_url}/v1/ingest`` with a bare JSON array (1-100).

``customer`` becomes ``customer_id`` (a Metronome customer id or one of the customer's
ingest aliases), ``event_name`` becomes ``event_type``, the idempotency key
``transaction_id`` (Metronome ignores a repeat within 34 days, so a retry or a replay is
never counted twice), and the timestamp RFC 3339 UTC text.

Field rules at ``report()``: an explicit timestamp may be at most 34 days old (Metronome's
backdating window) and the key at most 128 characters (the ``Event`` schema's
``maxLength``). The spec declares a bare 200 with no body for success: an empty body (or
a JSON one) counts as delivery, anything else (an HTML page from a proxy) is not
Metronome's answer. A 400 with Metronome's error body ``{"message": ...}`` names no
event, so the bad ones are found by bisection.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import Any, Final

import orjson

from meterline._event import Pending
from meterline._response import Response

from ._base import (
    ACCEPTED,
    EXACT,
    INVALID_BATCH,
    Answer,
    Session,
    bearer,
    check_age,
    check_lengths,
    default_read,
    iso_utc_many,
    problem_detail,
)

__all__ = ["Metronome"]

DEFAULT_BASE_URL: Final = "https://api.metronome.com"
MAX_AGE_SECONDS: Final = 34 * 86_400  # "supports backdating 34 days"
MAX_KEY_CHARS: Final = 128  # Event.transaction_id maxLength
MAX_NAME_CHARS: Final = 256  # the spec sets none; report()'s own limit


class Metronome:
    """Metronome's ``POST /v1/ingest``; ``now`` (seconds since the epoch) is for tests."""

    name: Final = "metronome"
    default_base_url: Final = DEFAULT_BASE_URL
    max_batch_events: Final = 100
    key_field: Final = "transaction_id"
    content_type: Final = "application/json"
    has_rules: Final = True
    max_event_age: Final = float(MAX_AGE_SECONDS)  # journal_max_age may not exceed it

    def __init__(self, *, now: Callable[[], float] = time.time) -> None:
        self._now = now

    def __repr__(self) -> str:
        return "Metronome()"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Metronome)

    def __hash__(self) -> int:
        return hash(Metronome)

    def ingest_url(self, base_url: str) -> str:
        return f"{base_url}/v1/ingest"

    def headers(self, api_key: str | None) -> dict[str, str]:
        return bearer(api_key)

    def session(self, base_url: str) -> Session | None:
        return None

    def check(self, event: Pending) -> None:
        if type(event[4]) is int and len(event[0]) <= MAX_KEY_CHARS:  # report()'s own stamp
            return  # (and report() already bounds the name to MAX_NAME_CHARS)
        check_lengths(event, "Metronome", name=MAX_NAME_CHARS, key=MAX_KEY_CHARS)
        check_age(event, MAX_AGE_SECONDS, "Metronome", self._now)

    def serialize_many(self, events: Sequence[Pending]) -> list[bytes]:
        doc: dict[str, Any] = dict.fromkeys(
            ("transaction_id", "customer_id", "event_type", "timestamp", "properties")
        )
        dumps = orjson.dumps
        out = []
        for (key, customer, event_name, props, _, _), stamp in zip(
            events, iso_utc_many(events), strict=True
        ):
            doc["transaction_id"] = key
            doc["customer_id"] = customer
            doc["event_type"] = event_name
            doc["timestamp"] = stamp
            doc["properties"] = props
            out.append(dumps(doc, option=EXACT)[:-1])  # bytes of their own size: see _base
        return out

    def envelope(self, events: Sequence[bytes]) -> bytes:
        return b"[" + b",".join(events) + b"]"

    def read(self, response: Response, keys: Sequence[str]) -> Answer:
        return default_read(response, success=_success, invalid=_invalid)


def _success(response: Response) -> Answer | None:
    """A 200 with an empty body (what the spec declares) or a JSON object that is not an
    error; an HTML page or any other text is not Metronome's answer."""
    if response.status != 200:
        return None
    if not response.body.strip():
        return Answer(ACCEPTED)
    doc = response.json()
    if isinstance(doc, dict) and not {"error", "errors", "message"} & doc.keys():
        return Answer(ACCEPTED)
    return None


def _invalid(response: Response) -> Answer | None:
    """Metronome's error body is ``{"message": "..."}``: the batch was refused without
    naming an event, so the delivery bisects to find the bad ones."""
    doc = response.json()
    if isinstance(doc, dict) and isinstance(doc.get("message"), str):
        return Answer(INVALID_BATCH, detail=problem_detail(response))
    return None
