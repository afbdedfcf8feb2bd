"""Stripe's v2 meter event stream: ``POST {stream_url}/v2/billing/meter_event_stream``.

The stream is authenticated by a session token, not by the secret key: the transport opens
a session (``POST {base_url}/v2/billing/meter_event_session`` with the secret key as
bearer), sends batches with its ``authentication_token`` until 60 s before its
``expires_at``, and when an answer says ``billing_meter_event_session_expired`` opens a new
one and resends the same bytes once. The body is ``{"events": [...]}`` (at most 100), each
``{"identifier", "event_name", "timestamp", "payload"}``; ``payload`` holds the properties
with their values as strings and the customer under ``customer_payload_key``.

Stripe validates the stream's events asynchronously: a 200 ``{}`` accepts the batch and a
bad event is never named, so a 400 (the request refused) is found out by bisection.
``Stripe-Should-Retry`` overrides the status: ``true`` retries; ``false`` is not retried
(the events are kept, as for a refusal) unless the status is an ordinary 4xx, read as usual.
"""

from __future__ import annotations

import re
import time
from collections.abc import Mapping, Sequence
from datetime import datetime
from decimal import Decimal
from typing import Any, Final
from urllib.parse import urlsplit

import orjson

from meterline._errors import ConfigError, InvalidEventError
from meterline._event import Pending
from meterline._response import Response, SessionGrant, is_retryable_status, retry_after

from ._base import (
    ACCEPTED,
    EXACT,
    INVALID_BATCH,
    REFUSED,
    RETRY,
    Answer,
    Session,
    bearer,
    check_age,
    check_lengths,
    default_read,
    iso_utc_many,
    problem_detail,
)

__all__ = ["Stripe"]

DEFAULT_BASE_URL: Final = "https://api.stripe.com"
DEFAULT_STREAM_URL: Final = "https://meter-events.stripe.com"
API_VERSION: Final = "2026-09-30.endive"  # the version of the document the body follows
SESSION_PATH: Final = "/v2/billing/meter_event_session"
STREAM_PATH: Final = "/v2/billing/meter_event_stream"
EXPIRED: Final = "billing_meter_event_session_expired"
MAX_AGE: Final = 35 * 86_400.0  # Stripe: "within the past 35 calendar days"
MAX_CHARS: Final = 100  # of event_name and identifier


class Stripe:
    """Stripe's v2 meter event stream. ``customer_payload_key`` is the meter's
    ``customer_mapping.event_payload_key``; ``stream_url`` is where the stream is served
    (default: Stripe's own for Stripe's API, else ``base_url``: a mock or proxy serving
    both); ``api_version`` is sent as ``Stripe-Version`` (None: the account's default)."""

    name: Final = "stripe"
    default_base_url: Final = DEFAULT_BASE_URL
    max_batch_events: Final = 100
    key_field: Final = "identifier"
    content_type: Final = "application/json"
    has_rules: Final = True
    max_event_age: Final = MAX_AGE  # journal_max_age may not exceed it

    def __init__(
        self,
        *,
        customer_payload_key: str = "stripe_customer_id",
        stream_url: str | None = None,
        api_version: str | None = API_VERSION,
    ) -> None:
        if (
            not isinstance(customer_payload_key, str)
            or not customer_payload_key.strip()
            or customer_payload_key != customer_payload_key.strip()
        ):
            raise ConfigError(
                f"customer_payload_key must be a non-empty str, got {customer_payload_key!r}"
            )
        if stream_url is not None:
            parts = urlsplit(stream_url) if isinstance(stream_url, str) else None
            if parts is None or parts.scheme not in ("http", "https") or not parts.hostname:
                raise ConfigError("stream_url must be an http(s) URL with a host")
            if parts.query or parts.fragment or parts.username or parts.password:
                raise ConfigError("stream_url must not carry a query, a fragment or credentials")
        if api_version is not None and (
            not isinstance(api_version, str)
            or not api_version.isprintable()
            or not api_version.strip()
        ):
            raise ConfigError(f"api_version must be a version string or None, got {api_version!r}")
        self.customer_payload_key = customer_payload_key
        self.stream_url = None if stream_url is None else stream_url.rstrip("/")
        self.api_version = api_version

    def _fields(self) -> tuple[str, str | None, str | None]:
        return (self.customer_payload_key, self.stream_url, self.api_version)

    def __repr__(self) -> str:
        key, url, version = self._fields()
        return f"Stripe(customer_payload_key={key!r}, stream_url={url!r}, api_version={version!r})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Stripe) and other._fields() == self._fields()

    def __hash__(self) -> int:
        return hash((Stripe, *self._fields()))

    def ingest_url(self, base_url: str) -> str:
        if self.stream_url is not None:
            return self.stream_url + STREAM_PATH
        stream = DEFAULT_STREAM_URL if base_url.rstrip("/") == DEFAULT_BASE_URL else base_url
        return stream + STREAM_PATH

    def headers(self, api_key: str | None) -> dict[str, str]:
        return {}  # the stream is authenticated by the session's token

    def session(self, base_url: str) -> Session | None:
        return StripeSession(f"{base_url}{SESSION_PATH}", self.api_version)

    def check(self, event: Pending) -> None:
        # The common event (report()'s own stamp, a default key, a short name) passes on
        # one line: this runs on the caller's thread.
        if (
            type(event[4]) is int
            and len(event[2]) <= MAX_CHARS
            and len(event[0]) <= MAX_CHARS
            and self.customer_payload_key not in event[3]
        ):
            return
        check_lengths(event, "Stripe", name=MAX_CHARS, key=MAX_CHARS)
        check_age(event, MAX_AGE, "Stripe", time.time)
        if self.customer_payload_key in event[3]:
            raise InvalidEventError(
                f"properties[{self.customer_payload_key!r}]",
                "is Stripe's customer payload key, which the customer argument fills",
            )

    def serialize_many(self, events: Sequence[Pending]) -> list[bytes]:
        customer_key = self.customer_payload_key
        doc: dict[str, Any] = dict.fromkeys(("identifier", "event_name", "timestamp", "payload"))
        dumps = orjson.dumps
        out = []
        for (key, customer, event_name, props, _, _), stamp in zip(
            events, iso_utc_many(events), strict=True
        ):
            payload = {k: as_text(v) for k, v in props.items()}
            payload[customer_key] = customer
            doc["identifier"] = key
            doc["event_name"] = event_name
            doc["timestamp"] = stamp
            doc["payload"] = payload
            out.append(dumps(doc, option=EXACT)[:-1])  # bytes of their own size: see _base
        return out

    def envelope(self, events: Sequence[bytes]) -> bytes:
        return b'{"events":[' + b",".join(events) + b"]}"

    def read(self, response: Response, keys: Sequence[str]) -> Answer:
        status = response.status
        should = response.headers.get("stripe-should-retry", "").strip().lower()
        failed = not 200 <= status < 300
        # An expired session (when the transport's one resend met another) and concurrent
        # requests for one customer and meter are transient, whatever the status.
        if error_code(response) in _TRANSIENT or (failed and should == "true"):
            delay = retry_after(response.headers)
            return Answer(RETRY, delay=delay, detail=problem_detail(response))
        if failed and should == "false" and is_retryable_status(status):
            detail = problem_detail(response) + " (Stripe-Should-Retry: false)"
            return Answer(REFUSED, detail=detail)  # kept and probed slowly, not retried
        return default_read(response, success=_success, invalid=_invalid)


_TRANSIENT: Final = frozenset({EXPIRED, "too_many_concurrent_requests"})


def as_text(value: object) -> str:
    """A property value as Stripe's payload wants it: a string (``3`` → ``"3"``, ``1.5`` →
    ``"1.5"``, ``1e16`` → ``"10000000000000000"``, ``True`` → ``"true"``)."""
    if isinstance(value, str):
        return value
    if value is True or value is False:
        return "true" if value else "false"
    if type(value) is float:
        text = repr(value)  # the shortest text that reads back as the same float
        return format(Decimal(text), "f") if "e" in text else text
    return str(value)


def error_code(response: Response) -> str | None:
    """``error.code`` of a Stripe error body, or None."""
    doc = response.json()
    error = doc.get("error") if isinstance(doc, dict) else None
    code = error.get("code") if isinstance(error, dict) else None
    return code if isinstance(code, str) else None


def _success(response: Response) -> Answer | None:
    """A JSON object (Stripe's is ``{}``); anything else is not Stripe's answer."""
    doc = response.json()
    if response.status != 200 or not isinstance(doc, dict):
        return None
    if "error" in doc or "errors" in doc:
        return None  # an error body with a 200: not an acceptance
    return Answer(ACCEPTED)


def _invalid(response: Response) -> Answer | None:
    """Stripe's error body names no event: bisect to find the bad ones."""
    doc = response.json()
    if isinstance(doc, dict) and isinstance(doc.get("error"), dict):
        return Answer(INVALID_BATCH, detail=problem_detail(response))
    return None


class StripeSession:
    """Opens meter event sessions: the secret key buys a token for about 15 minutes."""

    def __init__(self, url: str, api_version: str | None) -> None:
        self._url = url
        self._version = {"Stripe-Version": api_version} if api_version else {}

    def __repr__(self) -> str:
        return f"StripeSession(url={self._url!r})"

    def request(self, api_key: str | None) -> tuple[str, bytes, Mapping[str, str]]:
        return self._url, b"", {**bearer(api_key), **self._version}  # the spec: no body

    def grant(self, response: Response) -> SessionGrant | None:
        doc = response.json()
        if not isinstance(doc, dict):
            return None
        token = doc.get("authentication_token")
        expires = _instant(doc.get("expires_at"))
        if not isinstance(token, str) or not token or expires is None:
            return None
        return SessionGrant({**bearer(token), **self._version}, expires)

    def expired(self, response: Response) -> bool:
        return error_code(response) == EXPIRED


def _instant(value: object) -> float | None:
    """Seconds since the epoch from an RFC 3339 string (the spec's ``date-time``) or, as
    older answers gave it, a Unix time in seconds."""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    match = _RFC3339.fullmatch(value.strip()) if isinstance(value, str) else None
    if match is None:
        return None
    base, fraction, zone = match.groups()
    zone = "+00:00" if zone in ("Z", "z") else zone
    try:  # Python 3.10's fromisoformat takes neither "Z" nor every length of fraction
        when = datetime.fromisoformat(base + zone)
    except ValueError:
        return None
    return when.timestamp() + (float(fraction) if fraction else 0.0)


_RFC3339 = re.compile(r"(\d{4}-\d\d-\d\d[Tt ]\d\d:\d\d:\d\d)(\.\d+)?([Zz]|[+-]\d\d:\d\d)")
