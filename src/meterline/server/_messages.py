"""The messages between the HTTP plumbing and the endpoints, and the request log's entries."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

__all__ = ["Request", "RequestRecord", "Response"]


@dataclass(frozen=True)
class Request:
    """One HTTP request; ``read_body`` applies the size limit and Content-Encoding."""

    method: str
    target: str
    headers: dict[str, str]  # lower-case names
    read_body: Callable[[], bytes]


@dataclass(frozen=True)
class Response:
    """A JSON response."""

    status: int
    body: object
    headers: dict[str, str]


@dataclass(frozen=True)
class RequestRecord:
    """One request as the server saw it, for tests: ``events`` and ``idempotency_keys``
    describe an ingest body (empty for other requests or unreadable bodies)."""

    method: str
    path: str
    status: int
    events: int = 0
    idempotency_keys: tuple[str, ...] = ()
    gzip: bool = False
