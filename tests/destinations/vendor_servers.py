"""Programmable Lago and Metronome ingest endpoints on 127.0.0.1, for tests only.

``LagoServer`` serves ``POST /api/v1/events/batch`` as Lago does: the batch is atomic, an
event in ``bad`` (or a ``transaction_id`` it already holds: ``value_already_exist``) makes
it a 422 that stores nothing and names the events by index in ``error_details`` (or, with
``name_indexes = False``, names none). ``MetronomeServer`` serves ``POST /v1/ingest``: a
bare 200 with no body, a repeated ``transaction_id`` ignored, and a 400
``{"message": ...}`` for a batch holding one of ``bad``. Both play a script of ``Reply``
first (``store=True``: keep the events, then answer, as a lost success), then an
``outage`` if set, and record every request with its arrival time and raw body.
"""

from __future__ import annotations

import gzip
import json
import shutil
import subprocess
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from tests.support.prism import PRISM_DIR, spec_path

__all__ = ["LagoServer", "MetronomeServer", "Reply", "Seen", "load_spec"]


@dataclass
class Reply:
    """One scripted answer: JSON-able ``body`` (or raw bytes), headers, content type."""

    status: int
    body: Any = None
    headers: dict[str, str] = field(default_factory=dict)
    content_type: str = "application/json"
    store: bool = False  # keep the batch's events before answering (a lost success)


@dataclass
class Seen:
    """One request as it arrived (monotonic ``at``), and the status it was answered with."""

    at: float
    path: str
    raw: bytes
    events: list[dict[str, Any]]
    keys: list[str]
    headers: dict[str, str]
    status: int = 0


class _IngestServer:
    """The HTTP plumbing both vendors share; a subclass answers in ``answer``."""

    path = ""
    prefix = ""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.requests: list[Seen] = []
        self.script: list[Reply] = []
        self.outage: Reply | None = None
        self.received: dict[str, dict[str, Any]] = {}  # transaction_id -> first event
        self.deliveries: dict[str, int] = {}  # transaction_id -> times stored or ignored
        self.bad: dict[str, Any] = {}  # transaction_id -> the vendor's reason
        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), _handler(self))
        self.httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}{self.prefix}"
        self._thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def __enter__(self) -> _IngestServer:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()

    def push(self, *replies: Reply) -> None:
        with self.lock:
            self.script.extend(replies)

    def keys(self) -> set[str]:
        with self.lock:
            return set(self.received)

    def seen(self) -> list[Seen]:
        with self.lock:
            return list(self.requests)

    def events_of(self, doc: Any) -> list[dict[str, Any]]:
        raise NotImplementedError

    def answer(self, events: list[dict[str, Any]]) -> Reply:
        raise NotImplementedError

    def store(self, events: list[dict[str, Any]]) -> None:
        for event in events:
            key = event["transaction_id"]
            self.deliveries[key] = self.deliveries.get(key, 0) + 1
            self.received.setdefault(key, event)

    def handle(self, path: str, raw: bytes, headers: dict[str, str]) -> Reply:
        events = self.events_of(json.loads(raw))
        seen = Seen(
            time.monotonic(), path, raw, events, [e["transaction_id"] for e in events], headers
        )
        with self.lock:
            reply = self.script.pop(0) if self.script else self.outage
            if path != self.path:
                reply = Reply(404, {"status": 404, "error": "Not Found"})
            elif reply is None:
                reply = self.answer(events)
            elif reply.store:
                self.store(events)
            seen.status = reply.status
            self.requests.append(seen)
        return reply


class LagoServer(_IngestServer):
    """Lago's atomic ``POST /api/v1/events/batch``; ``bad`` maps a key to its field errors."""

    path = "/api/v1/events/batch"
    prefix = "/api/v1"
    name_indexes = True

    def events_of(self, doc: Any) -> list[dict[str, Any]]:
        return list(doc["events"])

    def answer(self, events: list[dict[str, Any]]) -> Reply:
        errors: dict[str, Any] = {}
        for index, event in enumerate(events):
            key = event["transaction_id"]
            if key in self.bad:
                errors[str(index)] = self.bad[key]
            elif key in self.received:
                errors[str(index)] = {"transaction_id": ["value_already_exist"]}
        if errors:
            details = errors if self.name_indexes else {"events": ["invalid_events"]}
            body = {
                "status": 422,
                "error": "Unprocessable Entity",
                "code": "validation_errors",
                "error_details": details,
            }
            return Reply(422, body)
        self.store(events)
        created = [{**e, "lago_id": None, "lago_customer_id": None} for e in events]
        return Reply(200, {"events": created})


class MetronomeServer(_IngestServer):
    """Metronome's ``POST /v1/ingest``; ``bad`` maps a key to the 400's message."""

    path = "/v1/ingest"

    def events_of(self, doc: Any) -> list[dict[str, Any]]:
        return list(doc)

    def answer(self, events: list[dict[str, Any]]) -> Reply:
        for event in events:
            if event["transaction_id"] in self.bad:
                return Reply(400, {"message": self.bad[event["transaction_id"]]})
        self.store(events)  # a repeat is counted in deliveries, kept once
        return Reply(200, b"", content_type="")


def _handler(server: _IngestServer) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, format: str, *args: Any) -> None:
            pass

        def do_POST(self) -> None:
            raw = self.rfile.read(int(self.headers.get("Content-Length", "0")))
            if self.headers.get("Content-Encoding") == "gzip":
                raw = gzip.decompress(raw)
            headers = {k.lower(): v for k, v in self.headers.items()}
            reply = server.handle(self.path, raw, headers)
            body = reply.body
            if not isinstance(body, bytes):
                body = b"" if body is None else json.dumps(body).encode()
            self.send_response(reply.status)
            if reply.content_type:
                self.send_header("Content-Type", reply.content_type)
            self.send_header("Content-Length", str(len(body)))
            for name, value in reply.headers.items():
                self.send_header(name, value)
            self.end_headers()
            self.wfile.write(body)

    return Handler


def load_spec(name: str) -> dict[str, Any]:
    """A vendor's OpenAPI document as data: JSON directly, YAML with PyYAML when installed,
    else with the js-yaml that Prism's install brings; skip when neither is there."""
    path = spec_path(name)
    if path.suffix == ".json":
        return dict(json.loads(path.read_text()))
    try:
        import yaml  # type: ignore[import-untyped]
    except ImportError:
        pass
    else:
        return dict(yaml.safe_load(path.read_text()))
    js_yaml = PRISM_DIR / "node_modules" / "js-yaml"
    if shutil.which("node") is None or not js_yaml.exists():
        pytest.skip(f"no YAML reader for {name} (PyYAML, or Node.js with Prism's js-yaml)")
    script = (
        f"const y=require({json.dumps(str(js_yaml))});const fs=require('fs');"
        "process.stdout.write(JSON.stringify(y.load(fs.readFileSync(process.argv[1],'utf8'))))"
    )
    out = subprocess.run(
        ["node", "-e", script, str(path)], capture_output=True, check=True, timeout=60
    )
    return dict(json.loads(out.stdout))
