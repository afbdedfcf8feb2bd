"""Helpers for testing code that uses meterline (public module).

- ``RecordingTransport``: accepts every batch and keeps the decoded events.
- ``FlakyTransport``: answers from a script of statuses and failures, then delegates.
- ``wait_until(predicate, timeout)``: waits for a condition with a deadline, never a fixed sleep.

Plug a transport into a client with ``Client(transport=...)``; no network is used.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import orjson

from ._transport import Response, Transport, TransportError, encode_batch

__all__ = ["FlakyTransport", "RecordingTransport", "TransportError", "wait_until"]


class RecordingTransport:
    """A transport that answers 200 to every batch and records what it received."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.batches: list[list[dict[str, Any]]] = []
        self.bodies: list[bytes] = []
        self.closed = False

    def send(self, events: Sequence[bytes], *, timeout: float | None = None) -> Response:
        body = encode_batch(events)
        decoded = orjson.loads(body)["events"]
        with self._lock:
            self.bodies.append(body)
            self.batches.append(decoded)
        return Response(200, {"content-type": "application/json"}, b'{"validation_failed":[]}')

    def close(self) -> None:
        self.closed = True

    @property
    def events(self) -> list[dict[str, Any]]:
        """Every event received, in order, duplicates included."""
        with self._lock:
            return [event for batch in self.batches for event in batch]

    def keys(self) -> set[str]:
        """The distinct idempotency keys received."""
        return {e["idempotency_key"] for e in self.events}


Step = int | Response | BaseException


class FlakyTransport:
    """Plays a script of outcomes, one per request, then delegates to ``then``.

    A step is an HTTP status (``503``; a 2xx comes with Orb's empty ``validation_failed``
    answer), a full ``Response`` (for headers such as ``Retry-After``, or a body that is
    not Orb's), or an exception to raise (``TransportError("refused")``).
    """

    def __init__(self, script: Iterable[Step], then: Transport | None = None) -> None:
        self._script = list(script)
        self._lock = threading.Lock()
        self.then: Transport = then if then is not None else RecordingTransport()
        self.attempts = 0

    def send(self, events: Sequence[bytes], *, timeout: float | None = None) -> Response:
        with self._lock:
            self.attempts += 1
            step = self._script.pop(0) if self._script else None
        if step is None:
            return self.then.send(events, timeout=timeout)
        if isinstance(step, BaseException):
            raise step
        if isinstance(step, int):  # a 2xx is Orb's ingest answer: anything else is not delivery
            body = b'{"validation_failed":[]}' if 200 <= step < 300 else b"{}"
            return Response(step, {"content-type": "application/json"}, body)
        return step

    def close(self) -> None:
        self.then.close()


def wait_until(
    predicate: Callable[[], object], timeout: float = 5.0, interval: float = 0.005
) -> Any:
    """Return the first truthy value of ``predicate()``; raise ``TimeoutError`` at ``timeout``."""
    deadline = time.monotonic() + timeout
    event = threading.Event()
    while True:
        value = predicate()
        if value:
            return value
        left = deadline - time.monotonic()
        if left <= 0:
            raise TimeoutError(f"condition not met within {timeout} s")
        event.wait(min(interval, left))
