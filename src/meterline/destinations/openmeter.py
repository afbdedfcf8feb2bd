"""OpenMeter's events API: ``POST {base_url}/api/v1/events``, a CloudEvents batch.

The body is ``application/cloudevents-batch+json``, a JSON array of CloudEvents 1.0:
``id`` (the idempotency key), ``source`` (``OpenMeter(source=...)``), ``type`` (the event
name), ``subject`` (the customer), ``time`` (RFC 3339 UTC) and ``data`` (the properties).
OpenMeter deduplicates on ``id`` *and* ``source``, so ``source`` must stay the same for as
long as events may be resent; the journal keeps each event's bytes, source included.

An accepted batch is answered 204, and only a 204 counts: an empty 200 from a load
balancer or a catch-all route is not OpenMeter's answer. A 400 is an RFC 7807 problem that names
no event (the batch is refused as a whole), so the bad events are found by bisection.
The spec's constraints (non-empty ``id``, ``source``, ``type``, ``subject``; ``data`` a
JSON object of any values) are already ``report()``'s own rules: no ``check`` is needed.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any, Final

import orjson

from meterline._errors import ConfigError
from meterline._event import Pending
from meterline._response import Response

from ._base import (
    ACCEPTED,
    EXACT,
    INVALID_BATCH,
    Answer,
    Session,
    bearer,
    default_read,
    iso_utc_many,
)
from ._base import problem_detail as _detail

__all__ = ["OpenMeter"]

DEFAULT_BASE_URL: Final = "https://openmeter.cloud"
DEFAULT_SOURCE: Final = "meterline"
# The spec names no limit per request; 100 keeps a batch (and a bisection) small.
MAX_BATCH_EVENTS: Final = 100
# An RFC 3986 URI reference, as the spec's ``format: uri-reference`` wants: printable
# ASCII without spaces, quotes, angle brackets, braces, pipes, backslashes or carets.
_URI_REFERENCE = re.compile(r"[A-Za-z0-9\-._~:/?#\[\]@!$&'()*+,;=%]{1,512}")


class OpenMeter:
    """OpenMeter's ``POST /api/v1/events`` (CloudEvents). ``source`` is every event's
    CloudEvents ``source``: a URI reference such as ``"meterline"`` or ``"billing-api"``."""

    name: Final = "openmeter"
    default_base_url: Final = DEFAULT_BASE_URL
    max_batch_events: Final = MAX_BATCH_EVENTS
    key_field: Final = "id"
    content_type: Final = "application/cloudevents-batch+json"
    has_rules: Final = False  # the spec's rules on these fields are report()'s own

    def __init__(self, *, source: str = DEFAULT_SOURCE) -> None:
        if not isinstance(source, str) or _URI_REFERENCE.fullmatch(source) is None:
            raise ConfigError(
                "source must be a non-empty URI reference (RFC 3986) of at most 512 "
                f"characters, such as 'meterline' or 'urn:app:billing', got {source!r}"
            )
        self.source = source

    def __repr__(self) -> str:
        return f"OpenMeter(source={self.source!r})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, OpenMeter) and other.source == self.source

    def __hash__(self) -> int:
        return hash((OpenMeter, self.source))

    def ingest_url(self, base_url: str) -> str:
        return f"{base_url}/api/v1/events"

    def headers(self, api_key: str | None) -> dict[str, str]:
        return bearer(api_key)

    def session(self, base_url: str) -> Session | None:
        return None

    def check(self, event: Pending) -> None:
        return None

    def serialize_many(self, events: Sequence[Pending]) -> list[bytes]:
        doc: dict[str, Any] = {
            "specversion": "1.0",
            "id": None,
            "source": self.source,
            "type": None,
            "subject": None,
            "time": None,
            "data": None,
        }
        dumps = orjson.dumps
        out = []
        for (key, customer, event_name, props, _, _), stamp in zip(
            events, iso_utc_many(events), strict=True
        ):
            doc["id"] = key
            doc["type"] = event_name
            doc["subject"] = customer
            doc["time"] = stamp
            doc["data"] = props
            out.append(dumps(doc, option=EXACT)[:-1])  # bytes of their own size: see _base
        return out

    def envelope(self, events: Sequence[bytes]) -> bytes:
        return b"[" + b",".join(events) + b"]"

    def read(self, response: Response, keys: Sequence[str]) -> Answer:
        return default_read(response, success=_success, invalid=_invalid)


def _success(response: Response) -> Answer | None:
    """204 (OpenMeter's answer), or another 2xx with an empty body; a 2xx with a body
    (an HTML page) is not OpenMeter's answer."""
    if response.status == 204:
        return Answer(ACCEPTED)
    return None


def _invalid(response: Response) -> Answer | None:
    """An RFC 7807 problem refuses the whole batch without naming events: bisect."""
    doc = response.json()
    kind = response.headers.get("content-type", "").split(";")[0].strip().lower()
    if isinstance(doc, dict) and (
        kind == "application/problem+json"
        or (isinstance(doc.get("title"), str) and isinstance(doc.get("type"), str))
    ):
        return Answer(INVALID_BATCH, detail=_detail(response))
    return None
