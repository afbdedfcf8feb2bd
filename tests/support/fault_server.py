"""A real HTTP ingest endpoint on 127.0.0.1 with programmable faults, for tests only.

It speaks Orb's ``POST /v1/ingest`` closely enough for the client (200 with
``validation_failed``, de-duplication by key) and can be told to fail: a script of statuses
with headers, an outage (open-ended, or a timed ``blip``), keys to reject, a body-size
limit, a delay, a required API key (or several accepted ones).

Beyond status codes a ``Step`` can answer with any content type and raw body (an HTML page
from a proxy), trickle its answer one byte at a time (the body, or the headers too), hang
(read the request and never answer until ``release_hung()`` or ``stop()``), wait before
answering (one connection only: every connection has its own thread), drop the connection
or reset it (TCP RST). ``always`` plays one step for every request the script does not
cover. Each request is recorded with its keys, headers and ``Authorization``, and for each
key the ``Authorization`` of every request that carried it (``auths``).
"""

from __future__ import annotations

import gzip
import json
import select
import socket
import struct
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


@dataclass
class Step:
    """One scripted answer: a status with headers and body, or a dropped connection.

    ``body`` is JSON-able data, raw ``bytes`` (sent as is, with ``content_type``), or a
    callable taking the ``Request`` and returning either. ``trickle`` sends the answer one
    byte every that many seconds (only the body, unless ``trickle_headers``); ``hang`` never
    answers until released; ``delay`` waits before answering; ``reset`` answers with a TCP
    reset instead of HTTP.
    """

    status: int = 200
    headers: dict[str, str] = field(default_factory=dict)
    body: Any = None
    drop_connection: bool = False
    count_events: bool = False  # store the events before answering (a lost 200)
    content_type: str = "application/json"
    trickle: float | None = None
    trickle_headers: bool = False
    hang: bool = False
    delay: float = 0.0
    reset: bool = False


@dataclass
class Request:
    """One request as it arrived; ``ended`` is when its answer was complete, or when the
    client went away in the middle of it (None while it is still open)."""

    status: int
    keys: list[str]
    headers: dict[str, str]
    at: float
    ended: float | None = None
    outcome: str = "answered"  # or "hung", "trickled", "client closed", "reset", "dropped"

    @property
    def authorization(self) -> str | None:
        return self.headers.get("authorization")

    @property
    def held(self) -> float | None:
        """Seconds between arrival and the end of the exchange."""
        return None if self.ended is None else self.ended - self.at


class FaultServer:
    """Counts unique keys like the real API and fails when told to."""

    def __init__(self, port: int = 0) -> None:
        self.lock = threading.Lock()
        self.received: dict[str, dict[str, Any]] = {}  # key -> first event body
        self.deliveries: dict[str, int] = {}  # key -> times it arrived in an accepted request
        self.auths: dict[str, list[str | None]] = {}  # key -> Authorization of each request
        self.requests: list[Request] = []
        self.conflicts: list[str] = []  # keys that came back with a different body
        self.script: list[Step] = []
        self.always: Step | None = None  # answer for every request the script leaves
        self.outage_status: int | None = None
        self.outage_until: float | None = None  # monotonic end of a timed outage (blip)
        self.reject: dict[str, list[str]] = {}
        self.bad_request_keys: set[str] = set()  # answered 400 without detail when present
        self.max_body_bytes: int | None = None
        self.delay = 0.0
        self.api_key: str | None = None
        self.api_keys: set[str] | None = None  # several accepted keys (with api_key, if set)
        self.received_event = threading.Event()
        self._stopped = threading.Event()
        self._release = threading.Event()
        handler = _make_handler(self)
        self.httpd = ThreadingHTTPServer(("127.0.0.1", port), handler)
        self.httpd.daemon_threads = True
        self.port = self.httpd.server_address[1]
        self.url = f"http://127.0.0.1:{self.port}/v1"
        self._thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self._started = False

    def start(self) -> FaultServer:
        self._thread.start()
        self._started = True
        return self

    def stop(self) -> None:
        """Stop serving; hung and trickling answers end at once (never blocks on them)."""
        if self._stopped.is_set():
            return
        self._stopped.set()
        self._release.set()
        if self._started:
            self.httpd.shutdown()
        self.httpd.server_close()

    def push(self, *steps: int | Step) -> None:
        with self.lock:
            self.script.extend(s if isinstance(s, Step) else Step(s) for s in steps)

    def blip(self, status: int, seconds: float) -> None:
        """Answer ``status`` to every request for the next ``seconds``, then recover."""
        with self.lock:
            self.outage_status = status
            self.outage_until = time.monotonic() + seconds

    def in_outage(self) -> bool:
        """Whether an outage (open-ended or a blip not yet over) is in force now."""
        with self.lock:
            return self._outage_locked() is not None

    def _outage_locked(self) -> int | None:
        if self.outage_until is not None and time.monotonic() >= self.outage_until:
            self.outage_status = None
            self.outage_until = None
        return self.outage_status

    def release_hung(self) -> None:
        """Let every request hung so far get its answer; later ones hang again."""
        with self.lock:
            release, self._release = self._release, threading.Event()
        release.set()

    def keys(self) -> set[str]:
        with self.lock:
            return set(self.received)

    def count(self) -> int:
        with self.lock:
            return len(self.received)

    def statuses(self) -> list[int]:
        with self.lock:
            return [r.status for r in self.requests]

    def events(self) -> list[dict[str, Any]]:
        with self.lock:
            return list(self.received.values())

    def requests_snapshot(self) -> list[Request]:
        with self.lock:
            return list(self.requests)

    def auths_of(self, keys: Iterable[str]) -> set[str | None]:
        """Every ``Authorization`` value any request carrying one of ``keys`` had."""
        with self.lock:
            return {auth for key in keys for auth in self.auths.get(key, ())}

    def _store(self, events: Iterable[dict[str, Any]]) -> tuple[list[str], list[str]]:
        ingested, duplicate = [], []
        for e in events:
            key = e["idempotency_key"]
            self.deliveries[key] = self.deliveries.get(key, 0) + 1
            if key in self.received:
                duplicate.append(key)
                if self.received[key] != e:
                    self.conflicts.append(key)
            else:
                self.received[key] = e
                ingested.append(key)
        return ingested, duplicate

    def _authorized(self, header: str | None) -> bool:
        accepted = set(self.api_keys or ())
        if self.api_key is not None:
            accepted.add(self.api_key)
        if self.api_key is None and self.api_keys is None:
            return True
        return header in {f"Bearer {k}" for k in accepted}


def _make_handler(server: FaultServer) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, format: str, *args: Any) -> None:
            pass

        def _render(
            self,
            status: int,
            body: Any,
            headers: dict[str, str] | None = None,
            content_type: str = "application/json",
        ) -> tuple[bytes, bytes]:
            raw = json.dumps(body).encode() if not isinstance(body, bytes) else body
            lines = [f"HTTP/1.1 {status} {self.responses.get(status, ('',))[0]}"]
            lines.append(f"Content-Type: {content_type}")
            lines.append(f"Content-Length: {len(raw)}")
            lines.extend(f"{k}: {v}" for k, v in (headers or {}).items())
            head = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")
            return head, raw

        def _answer(
            self,
            status: int,
            body: Any,
            headers: dict[str, str] | None = None,
            content_type: str = "application/json",
        ) -> None:
            head, raw = self._render(status, body, headers, content_type)
            if any(
                k.lower() == "connection" and v.lower() == "close"
                for k, v in (headers or {}).items()
            ):
                self.close_connection = True
            self.wfile.write(head + raw)

        def _peer_closed(self) -> bool:
            try:
                data = self.connection.recv(1, socket.MSG_PEEK | socket.MSG_DONTWAIT)
            except BlockingIOError:
                return False
            except OSError:
                return True
            return data == b""

        def _trickle(self, head: bytes, raw: bytes, every: float, with_headers: bool) -> str:
            """Send the answer one byte every ``every`` seconds; stop if the client leaves."""
            slow = head + raw if with_headers else raw
            try:
                if not with_headers:
                    self.connection.sendall(head)
                for i in range(len(slow)):
                    if i:
                        readable, _, _ = select.select([self.connection], [], [], every)
                        if readable and self._peer_closed():
                            return "client closed"
                        if server._stopped.is_set():
                            return "stopped"
                    self.connection.sendall(slow[i : i + 1])
            except OSError:
                return "client closed"
            return "trickled"

        def _reset(self) -> None:
            self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            self.connection.close()

        def do_POST(self) -> None:
            length = int(self.headers.get("Content-Length", "0"))
            raw = self.rfile.read(length)
            if self.headers.get("Content-Encoding") == "gzip":
                raw = gzip.decompress(raw)
            doc = json.loads(raw)
            events = doc["events"]
            keys = [e["idempotency_key"] for e in events]
            hdrs = {k.lower(): v for k, v in self.headers.items()}
            if server.delay:
                server._stopped.wait(server.delay)
            with server.lock:
                step = server.script.pop(0) if server.script else None
                if step is None:
                    step = server.always
                release = server._release
            if step is not None and step.delay:
                server._stopped.wait(step.delay)
            request = Request(0, keys, hdrs, time.monotonic())
            with server.lock:
                for key in keys:
                    server.auths.setdefault(key, []).append(hdrs.get("authorization"))
                status = 200
                outage = server._outage_locked()
                if not server._authorized(hdrs.get("authorization")):
                    status, body = 401, {"type": "auth", "status": 401, "title": "bad key"}
                elif step is not None:
                    status, body = step.status, step.body
                    if callable(body):
                        body = body(request)
                    if not isinstance(body, bytes):
                        body = body or {"status": step.status}
                    if step.count_events:
                        server._store(events)
                elif outage is not None:
                    status, body = outage, {"status": outage}
                elif server.max_body_bytes is not None and len(raw) > server.max_body_bytes:
                    status, body = 413, {"status": 413, "title": "too large"}
                elif server.bad_request_keys & set(keys):
                    status, body = (
                        400,
                        {"type": "about:blank", "status": 400, "title": "bad request"},
                    )
                else:
                    failed = [
                        {"idempotency_key": k, "validation_errors": server.reject[k]}
                        for k in keys
                        if k in server.reject
                    ]
                    server._store(e for e in events if e["idempotency_key"] not in server.reject)
                    body = {"validation_failed": failed}
                request.status = status
                server.requests.append(request)
            server.received_event.set()
            if step is not None and step.hang:
                request.outcome = "hung"
                release.wait()
                if server._stopped.is_set():
                    self.close_connection = True
                    request.ended = time.monotonic()
                    return
            if step is not None and step.reset:
                request.outcome = "reset"
                self.close_connection = True
                self._reset()
                request.ended = time.monotonic()
                return
            if step is not None and step.drop_connection:
                request.outcome = "dropped"
                self.close_connection = True
                self.connection.shutdown(2)
                request.ended = time.monotonic()
                return
            headers = step.headers if step else None
            content_type = step.content_type if step else "application/json"
            if step is not None and step.trickle is not None:
                head, data = self._render(status, body, headers, content_type)
                request.outcome = self._trickle(head, data, step.trickle, step.trickle_headers)
                request.ended = time.monotonic()
                if request.outcome != "trickled":
                    self.close_connection = True
                return
            self._answer(status, body, headers, content_type)
            request.ended = time.monotonic()

    return Handler
