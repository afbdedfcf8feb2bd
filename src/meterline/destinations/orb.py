"""Orb's events API: ``POST {base_url}/ingest`` with ``{"events": [...]}`` (up to 500).

``customer`` becomes ``external_customer_id`` (or ``customer_id`` with
``Orb(customer_field="customer_id")``). A 200 always carries ``validation_failed`` (events
refused inside an accepted batch, by ``idempotency_key``); a 400 names bad events in
``validation_errors``/``validation_failed`` or is an RFC 7807 problem that names none (then
the bad events are found by bisection). Any other 2xx or 400 body is not Orb's answer.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Final, Literal

import orjson

from meterline._errors import ConfigError
from meterline._event import Pending
from meterline._response import Response

from ._base import (
    ACCEPTED,
    EXACT,
    INVALID,
    INVALID_BATCH,
    Answer,
    Session,
    bearer,
    default_read,
    iso_utc_many,
    problem_detail,
    reasons,
)

__all__ = ["Orb"]

DEFAULT_BASE_URL: Final = "https://api.withorb.com/v1"
CustomerField = Literal["external_customer_id", "customer_id"]


class Orb:
    """Orb's ``POST /v1/ingest``. ``customer_field`` picks which customer id ``customer``
    fills: ``external_customer_id`` (your id, the default) or ``customer_id`` (Orb's)."""

    name: Final = "orb"
    default_base_url: Final = DEFAULT_BASE_URL
    max_batch_events: Final = 500
    key_field: Final = "idempotency_key"
    content_type: Final = "application/json"
    has_rules: Final = False  # report()'s own rules are Orb's

    def __init__(self, *, customer_field: CustomerField = "external_customer_id") -> None:
        if customer_field not in ("external_customer_id", "customer_id"):
            raise ConfigError(
                "customer_field must be 'external_customer_id' or 'customer_id', "
                f"got {customer_field!r}"
            )
        self.customer_field: CustomerField = customer_field

    def __repr__(self) -> str:
        return f"Orb(customer_field={self.customer_field!r})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Orb) and other.customer_field == self.customer_field

    def __hash__(self) -> int:
        return hash((Orb, self.customer_field))

    def ingest_url(self, base_url: str) -> str:
        return f"{base_url}/ingest"

    def headers(self, api_key: str | None) -> dict[str, str]:
        return bearer(api_key)

    def session(self, base_url: str) -> Session | None:
        return None

    def check(self, event: Pending) -> None:
        return None

    def serialize_many(self, events: Sequence[Pending]) -> list[bytes]:
        field = self.customer_field
        doc: dict[str, Any] = dict.fromkeys(
            ("idempotency_key", field, "event_name", "timestamp", "properties")
        )
        dumps = orjson.dumps
        out = []
        for (key, customer, event_name, props, _, _), stamp in zip(
            events, iso_utc_many(events), strict=True
        ):
            doc["idempotency_key"] = key
            doc[field] = customer
            doc["event_name"] = event_name
            doc["timestamp"] = stamp
            doc["properties"] = props
            out.append(dumps(doc, option=EXACT)[:-1])  # bytes of their own size: see _base
        return out

    def envelope(self, events: Sequence[bytes]) -> bytes:
        return b'{"events":[' + b",".join(events) + b"]}"

    def read(self, response: Response, keys: Sequence[str]) -> Answer:
        return default_read(response, success=_success, invalid=_invalid)


def _success(response: Response) -> Answer | None:
    doc = response.json()
    if not isinstance(doc, dict) or not isinstance(doc.get("validation_failed"), list):
        return None
    return Answer(ACCEPTED, rejected=named_keys(doc))


def _invalid(response: Response) -> Answer | None:
    doc = response.json()
    if not isinstance(doc, dict):
        return None
    named = named_keys(doc)
    if named:
        return Answer(INVALID, rejected=named)
    if isinstance(doc.get("validation_errors"), list) or isinstance(
        doc.get("validation_failed"), list
    ):
        return Answer(INVALID_BATCH, detail=problem_detail(response))
    if isinstance(doc.get("type"), str) and isinstance(doc.get("status"), int):
        return Answer(INVALID_BATCH, detail=problem_detail(response))  # RFC 7807
    return None


def named_keys(doc: Mapping[str, object]) -> dict[str, list[str]]:
    """Keys Orb named as invalid, with its reasons: ``validation_failed`` (200) or
    ``validation_errors`` (400) entries ``{idempotency_key, validation_errors}``."""
    found: dict[str, list[str]] = {}
    for name in ("validation_failed", "validation_errors"):
        entries = doc.get(name)
        if not isinstance(entries, list):
            continue
        for entry in entries:
            if isinstance(entry, dict) and isinstance(entry.get("idempotency_key"), str):
                found.setdefault(entry["idempotency_key"], []).extend(
                    reasons(entry.get("validation_errors"))
                )
    return found
