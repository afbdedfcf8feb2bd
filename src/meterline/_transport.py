"""How a batch reaches the ingest API: the ``Transport`` protocol and Orb's wire format over httpx.

A transport takes the already-serialized events of one batch and returns the server's
``Response``; a connection problem or timeout raises ``TransportError``. It never retries,
never journals and never decides what a status means: that is the delivery module's job.
"""

from __future__ import annotations

import gzip as _gzip
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable

import httpx
import orjson

from ._version import __version__

__all__ = [
    "HttpxTransport",
    "Response",
    "Transport",
    "TransportError",
    "encode_batch",
    "rejected_keys",
]

USER_AGENT = f"meterline/{__version__}"


class TransportError(Exception):
    """The request did not get an HTTP answer (refused, reset, timed out); worth retrying."""


@dataclass(frozen=True)
class Response:
    """An HTTP answer: status, headers with lower-case names, and the raw body."""

    status: int
    headers: Mapping[str, str] = field(default_factory=dict)
    body: bytes = b""

    def json(self) -> object:
        """The body decoded as JSON, or ``None`` when it is not JSON."""
        try:
            return orjson.loads(self.body)
        except orjson.JSONDecodeError:
            return None


@runtime_checkable
class Transport(Protocol):
    """Sends one batch of serialized events and returns the server's answer."""

    def send(self, events: Sequence[bytes], *, timeout: float | None = None) -> Response:
        """POST the batch within ``timeout`` seconds (None: the transport's own); raise
        ``TransportError`` when no HTTP answer came back."""
        ...

    def close(self) -> None:
        """Release connections; the transport is not used again."""
        ...


def encode_batch(events: Sequence[bytes]) -> bytes:
    """Orb's ``IngestRequestBody``: ``{"events": [...]}`` from the events' exact bytes."""
    return b'{"events":[' + b",".join(events) + b"]}"


def rejected_keys(response: Response) -> dict[str, list[str]]:
    """Keys the server named as invalid, with its reasons (200 or 400 bodies alike).

    Orb answers 200 with ``validation_failed: [{idempotency_key, validation_errors}]``; a
    400 may carry the same entries in ``validation_errors``. Anything else yields ``{}``.
    """
    doc = response.json()
    if not isinstance(doc, dict):
        return {}
    found: dict[str, list[str]] = {}
    for name in ("validation_failed", "validation_errors"):
        entries = doc.get(name)
        if not isinstance(entries, list):
            continue
        for entry in entries:
            if isinstance(entry, dict) and isinstance(entry.get("idempotency_key"), str):
                reasons = entry.get("validation_errors")
                texts = [str(r) for r in reasons] if isinstance(reasons, list) else []
                found.setdefault(entry["idempotency_key"], []).extend(texts or ["invalid"])
    return found


class HttpxTransport:
    """``POST {base_url}/ingest`` over one keep-alive ``httpx.Client``."""

    def __init__(
        self,
        url: str,
        api_key: str | None,
        *,
        timeout: float,
        connect_timeout: float,
        gzip: bool = False,
    ) -> None:
        headers = {"User-Agent": USER_AGENT, "Content-Type": "application/json"}
        if api_key:
            headers["Authorization"] = f"Bearer {api_key}"
        if gzip:
            headers["Content-Encoding"] = "gzip"
        self._url = url
        self._gzip = gzip
        self._client = httpx.Client(
            headers=headers,
            timeout=httpx.Timeout(timeout, connect=connect_timeout),
            limits=httpx.Limits(max_connections=4, max_keepalive_connections=2),
            follow_redirects=False,
        )

    def __repr__(self) -> str:
        return f"HttpxTransport(url={self._url!r}, gzip={self._gzip})"

    def send(self, events: Sequence[bytes], *, timeout: float | None = None) -> Response:
        body = encode_batch(events)
        if self._gzip:
            body = _gzip.compress(body, compresslevel=5)
        try:
            if timeout is None:
                r = self._client.post(self._url, content=body)
            else:
                r = self._client.post(self._url, content=body, timeout=max(0.05, timeout))
        except httpx.TransportError as exc:
            # httpx's message names the URL and the errno, never the headers.
            raise TransportError(f"{type(exc).__name__}: {exc}") from None
        return Response(r.status_code, {k.lower(): v for k, v in r.headers.items()}, r.content)

    def close(self) -> None:
        self._client.close()
