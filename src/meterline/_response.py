"""An HTTP answer as meterline reads it: the one type the transport, the destinations and
the delivery module share (it sits below all three, so none of them imports another)."""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from email.utils import parsedate_to_datetime
from typing import Protocol

import orjson

__all__ = [
    "RETRYABLE_STATUSES",
    "Response",
    "Session",
    "SessionGrant",
    "is_retryable_status",
    "retry_after",
]

RETRYABLE_STATUSES = frozenset({408, 409, 429})


@dataclass(frozen=True)
class Response:
    """An HTTP answer: status, headers with lower-case names, and the raw body."""

    status: int
    headers: Mapping[str, str] = field(default_factory=dict)
    body: bytes = field(default=b"", repr=False)  # a server may echo a credential in it

    def json(self) -> object:
        """The body decoded as JSON, or ``None`` when it is not JSON."""
        try:
            return orjson.loads(self.body)
        except orjson.JSONDecodeError:
            return None


@dataclass(frozen=True, slots=True)
class SessionGrant:
    """A short-lived credential: the headers to send with it, and when it stops working."""

    headers: Mapping[str, str] = field(repr=False)
    expires_at: float  # seconds since the epoch

    def __repr__(self) -> str:
        return f"SessionGrant(headers=<{len(self.headers)} hidden>, expires_at={self.expires_at})"


class Session(Protocol):
    """How a destination with session tokens (Stripe's meter event stream) gets one.

    The transport POSTs ``request()`` (made with the account's secret key), hands the
    answer to ``grant``, and sends batches with the grant's headers until ``expires_at``
    (less a margin) or until ``expired`` says an answer means the session ended; then it
    gets a new grant and sends the same bytes once more.
    """

    def request(self, api_key: str | None) -> tuple[str, bytes, Mapping[str, str]]:
        """``(url, body, headers)`` of the request that opens a session."""
        ...

    def grant(self, response: Response) -> SessionGrant | None:
        """The session from a 2xx answer to ``request``, or None when it holds none."""
        ...

    def expired(self, response: Response) -> bool:
        """Whether an answer to a batch says the session is no longer valid."""
        ...


def is_retryable_status(status: int) -> bool:
    """408, 409, 429 and every 5xx are worth another try; other statuses are final."""
    return status in RETRYABLE_STATUSES or status >= 500


def retry_after(headers: Mapping[str, str], now: Callable[[], float] = time.time) -> float | None:
    """Seconds to wait from ``retry-after-ms`` or ``Retry-After`` (seconds or an HTTP date)."""
    ms = headers.get("retry-after-ms")
    if ms is not None:
        try:
            value = float(ms) / 1000.0
        except ValueError:
            value = -1.0
        if value == value and value >= 0:
            return value
    raw = headers.get("retry-after")
    if raw is None:
        return None
    raw = raw.strip()
    try:
        value = float(raw)
    except ValueError:
        try:
            when = parsedate_to_datetime(raw)
        except (TypeError, ValueError, IndexError):
            return None
        if when is None or when.tzinfo is None:
            return None
        return max(0.0, when.timestamp() - now())
    return value if value == value and value >= 0 else None
