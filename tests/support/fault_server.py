"""A real HTTP ingest endpoint on 127.0.0.1 with programmable faults, for tests only.

It speaks Orb's ``POST /v1/ingest`` closely enough for the client (200 with
``validation_failed``, de-duplication by key) and can be told to fail: a script of statuses
with headers, an outage, keys to reject, a body-size limit, a delay, a required API key.
"""

from __future__ import annotations

import gzip
import json
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


@dataclass
class Step:
    """One scripted answer: a status with headers and body, or a dropped connection."""

    status: int = 200
    headers: dict[str, str] = field(default_factory=dict)
    body: Any = None
    drop_connection: bool = False
    count_events: bool = False  # store the events before answering (a lost 200)


@dataclass
class Request:
    status: int
    keys: list[str]
    headers: dict[str, str]
    at: float


class FaultServer:
    """Counts unique keys like the real API and fails when told to."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.received: dict[str, dict[str, Any]] = {}  # key -> first event body
        self.deliveries: dict[str, int] = {}  # key -> times it arrived in an accepted request
        self.requests: list[Request] = []
        self.conflicts: list[str] = []  # keys that came back with a different body
        self.script: list[Step] = []
        self.outage_status: int | None = None
        self.reject: dict[str, list[str]] = {}
        self.bad_request_keys: set[str] = set()  # answered 400 without detail when present
        self.max_body_bytes: int | None = None
        self.delay = 0.0
        self.api_key: str | None = None
        self.received_event = threading.Event()
        handler = _make_handler(self)
        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self.httpd.daemon_threads = True
        self.port = self.httpd.server_address[1]
        self.url = f"http://127.0.0.1:{self.port}/v1"
        self._thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def start(self) -> FaultServer:
        self._thread.start()
        return self

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()

    def push(self, *steps: int | Step) -> None:
        with self.lock:
            self.script.extend(s if isinstance(s, Step) else Step(s) for s in steps)

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


def _make_handler(server: FaultServer) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, format: str, *args: Any) -> None:
            pass

        def _answer(self, status: int, body: Any, headers: dict[str, str] | None = None) -> None:
            raw = json.dumps(body).encode() if not isinstance(body, bytes) else body
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(raw)))
            for k, v in (headers or {}).items():
                self.send_header(k, v)
            self.end_headers()
            self.wfile.write(raw)

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
                time.sleep(server.delay)
            with server.lock:
                step = server.script.pop(0) if server.script else None
                status = 200
                if server.api_key is not None and hdrs.get("authorization") != (
                    f"Bearer {server.api_key}"
                ):
                    status, body = 401, {"type": "auth", "status": 401, "title": "bad key"}
                elif step is not None:
                    status, body = step.status, step.body or {"status": step.status}
                    if step.count_events:
                        server._store(events)
                elif server.outage_status is not None:
                    status, body = server.outage_status, {"status": server.outage_status}
                elif server.max_body_bytes is not None and len(raw) > server.max_body_bytes:
                    status, body = 413, {"status": 413, "title": "too large"}
                elif server.bad_request_keys & set(keys):
                    status, body = 400, {"status": 400, "title": "bad request"}
                else:
                    failed = [
                        {"idempotency_key": k, "validation_errors": server.reject[k]}
                        for k in keys
                        if k in server.reject
                    ]
                    server._store(e for e in events if e["idempotency_key"] not in server.reject)
                    body = {"validation_failed": failed}
                server.requests.append(Request(status, keys, hdrs, time.monotonic()))
            server.received_event.set()
            if step is not None and step.drop_connection:
                self.close_connection = True
                self.connection.shutdown(2)
                return
            self._answer(status, body, step.headers if step else None)

    return Handler
