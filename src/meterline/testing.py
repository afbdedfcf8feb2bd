"""Helpers for testing code that uses meterline (public module).

- ``RecordingTransport``: accepts every batch and keeps the decoded events (answering as
  the destination it is told, Orb by default).
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

from ._response import Response
from ._transport import Transport, TransportError
from .destinations import Destination, resolve

__all__ = [
    "FlakyTransport",
    "RecordingTransport",
    "TransportError",
    "accepted",
    "wait_until",
]


def accepted(destination: str | Destination = "orb") -> Response:
    """The answer with which ``destination`` accepts a whole batch."""
    return _ACCEPTED.get(resolve(destination).name, _ACCEPTED["orb"])


_JSON = {"content-type": "application/json"}
_ACCEPTED: dict[str, Response] = {
    "orb": Response(200, _JSON, b'{"validation_failed":[]}'),
    "metronome": Response(200, {}, b""),
    "lago": Response(200, _JSON, b'{"events":[]}'),
    "openmeter": Response(204, {}, b""),
    "stripe": Response(200, _JSON, b"{}"),
}


class RecordingTransport:
    """A transport that accepts every batch, as ``destination`` answers, and records what
    it received: ``bodies`` (the request bodies) and ``batches`` (the events, decoded)."""

    def __init__(self, destination: str | Destination = "orb") -> None:
        self._destination = resolve(destination)
        self._answer = accepted(self._destination)
        self._lock = threading.Lock()
        self.batches: list[list[dict[str, Any]]] = []
        self.bodies: list[bytes] = []
        self.closed = False

    def send(self, events: Sequence[bytes], *, timeout: float | None = None) -> Response:
        body = self._destination.envelope(events)
        decoded = [orjson.loads(event) for event in events]
        with self._lock:
            self.bodies.append(body)
            self.batches.append(decoded)
        return self._answer

    def close(self) -> None:
        self.closed = True

    @property
    def events(self) -> list[dict[str, Any]]:
        """Every event received, in order, duplicates included."""
        with self._lock:
            return [event for batch in self.batches for event in batch]

    def keys(self) -> set[str]:
        """The distinct idempotency keys received (in the destination's own field)."""
        field = self._destination.key_field
        return {e[field] for e in self.events}


Step = int | Response | BaseException


class FlakyTransport:
    """Plays a script of outcomes, one per request, then delegates to ``then``.

    A step is an HTTP status (``503``; a 2xx comes as ``destination`` accepts a batch), a
    full ``Response`` (for headers such as ``Retry-After``, or a body that is not the
    destination's), or an exception to raise (``TransportError("refused")``).
    """

    def __init__(
        self,
        script: Iterable[Step],
        then: Transport | None = None,
        destination: str | Destination = "orb",
    ) -> None:
        self._script = list(script)
        self._lock = threading.Lock()
        self._accepted = accepted(destination)
        self.then: Transport = then if then is not None else RecordingTransport(destination)
        self.attempts = 0

    def send(self, events: Sequence[bytes], *, timeout: float | None = None) -> Response:
        with self._lock:
            self.attempts += 1
            step = self._script.pop(0) if self._script else None
        if step is None:
            return self.then.send(events, timeout=timeout)
        if isinstance(step, BaseException):
            raise step
        if isinstance(step, int):  # a 2xx is the destination's acceptance
            if 200 <= step < 300:
                ok = self._accepted
                return Response(step, ok.headers, ok.body)
            return Response(step, {"content-type": "application/json"}, b"{}")
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
