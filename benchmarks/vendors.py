"""What the sink speaks when a run names a vendor: each destination's paths, body, answer.

``POST /_ctl/reset?label=X&vendor=lago`` makes the sink answer only that vendor's ingest
paths until the next reset; anything else is a 404 and counts nothing, so a run pointed at
the wrong path or speaking the wrong body cannot be counted as delivered. Each route reads
the vendor's body (the event's id field and its ``n`` property), checks the request's
content type and credentials, and answers the vendor's success:

    orb        POST /v1/ingest                       {"events": [...]}  200 {"validation_failed":[]}
    metronome  POST /v1/ingest                       [...]              200, no body
    lago       POST /api/v1/events/batch             {"events": [...]}  200 {"events":[]}
    openmeter  POST /api/v1/events                   [CloudEvents]      204
    stripe     POST /v2/billing/meter_event_session  (the secret key)   200 a session
               POST /v2/billing/meter_event_stream   {"events": [...]}  200 {}

Stripe's stream takes only a token the session endpoint issued (else 401, Stripe's error).
"""

from __future__ import annotations

import secrets
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Any

import orjson

Events = list[tuple[Any, Any]]  # (id, n) per event, as in sink.py
Headers = Mapping[str, str]

STRIPE_SESSION = "/v2/billing/meter_event_session"
SESSION_SECONDS = 15 * 60  # Stripe: a session token is valid for 15 minutes
UNAUTHORIZED = (
    b'{"error":{"type":"invalid_request_error","code":"api_key_invalid",'
    b'"message":"not a session token this sink issued"}}'
)


@dataclass(frozen=True)
class Route:
    """One vendor's ingest path: how to read its body, what it must carry, what it answers."""

    parse: Callable[[bytes], Events]
    status: int
    answer: bytes
    content_type: str
    auth: str  # "key": any bearer; "session": a token from the session endpoint


def _n(value: object) -> int | None:
    """The driver's call index; Stripe's payload carries it as text."""
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    if isinstance(value, str) and value.isdigit():
        return int(value)
    return None


def _reader(list_key: str | None, id_key: str, props_key: str) -> Callable[[bytes], Events]:
    """A parser for ``{list_key: [...]}`` (or a bare array when ``list_key`` is None)."""

    def parse(body: bytes) -> Events:
        doc = orjson.loads(body)
        if list_key is None:
            if not isinstance(doc, list):
                raise ValueError("expected a JSON array")
            items = doc
        else:
            if not isinstance(doc, dict) or not isinstance(doc.get(list_key), list):
                raise ValueError(f"expected an object with {list_key!r}")
            items = doc[list_key]
        return [(e[id_key], _n((e.get(props_key) or {}).get("n"))) for e in items]

    return parse


ROUTES: dict[str, dict[str, Route]] = {
    "orb": {
        "/v1/ingest": Route(
            _reader("events", "idempotency_key", "properties"),
            200,
            b'{"validation_failed":[]}',
            "application/json",
            "key",
        )
    },
    "metronome": {
        "/v1/ingest": Route(
            _reader(None, "transaction_id", "properties"), 200, b"", "application/json", "key"
        )
    },
    "lago": {
        "/api/v1/events/batch": Route(
            _reader("events", "transaction_id", "properties"),
            200,
            b'{"events":[]}',
            "application/json",
            "key",
        )
    },
    "openmeter": {
        "/api/v1/events": Route(
            _reader(None, "id", "data"), 204, b"", "application/cloudevents-batch+json", "key"
        )
    },
    "stripe": {
        "/v2/billing/meter_event_stream": Route(
            _reader("events", "identifier", "payload"), 200, b"{}", "application/json", "session"
        )
    },
}
# where each destination is pointed (meterline's base_url), the sink's URL prepended
BASE_PATHS = {"orb": "/v1", "metronome": "", "lago": "/api/v1", "openmeter": "", "stripe": ""}


class Sessions:
    """Stripe's meter event sessions the sink issued, by token."""

    def __init__(self) -> None:
        self.tokens: set[str] = set()

    def open(self, headers: Headers) -> tuple[int, bytes]:
        if not _bearer(headers):
            return 401, UNAUTHORIZED
        token = "ek_test_" + secrets.token_hex(16)
        self.tokens.add(token)
        now = datetime.now(timezone.utc)
        expires = now + timedelta(seconds=SESSION_SECONDS)
        session = {
            "id": "mes_" + secrets.token_hex(8),
            "object": "v2.billing.meter_event_session",
            "authentication_token": token,
            "created": _rfc3339(now),
            "expires_at": _rfc3339(expires),
            "livemode": False,
        }
        return 200, orjson.dumps(session)

    def valid(self, headers: Headers) -> bool:
        return _bearer(headers) in self.tokens


def refusal(route: Route, headers: Headers, sessions: Sessions) -> tuple[int, bytes] | None:
    """The vendor's error when the request lacks its content type or credentials."""
    kind = headers.get("content-type", "").split(";")[0].strip().lower()
    if kind != route.content_type:
        return 415, b'{"detail":"unsupported content type"}'
    if route.auth == "session" and not sessions.valid(headers):
        return 401, UNAUTHORIZED
    if route.auth == "key" and not _bearer(headers):
        return 401, b'{"detail":"missing bearer credentials"}'
    return None


def _bearer(headers: Headers) -> str:
    scheme, _, token = headers.get("authorization", "").partition(" ")
    return token.strip() if scheme.lower() == "bearer" else ""


def _rfc3339(when: datetime) -> str:
    return when.strftime("%Y-%m-%dT%H:%M:%SZ")
