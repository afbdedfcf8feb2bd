"""Programmable Stripe and OpenMeter ingest endpoints on 127.0.0.1, for tests only.

``StripeServer`` serves ``POST /v2/billing/meter_event_session`` (the secret key buys a
token and an ``expires_at``) and ``POST /v2/billing/meter_event_stream`` (``{}`` for a
live token; ``billing_meter_event_session_expired`` for one ``expire_sessions()`` ended);
``OpenMeterServer`` serves ``POST /api/v1/events`` (204; a 400 problem for a batch holding
one of ``bad_ids``). Both record every request, count each key's deliveries, and play a
script of ``Reply`` per path first, then an ``outage`` if one is set.
"""

from __future__ import annotations

import json
import secrets
import threading
import time
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

SESSION = "/v2/billing/meter_event_session"
STREAM = "/v2/billing/meter_event_stream"
EVENTS = "/api/v1/events"


@dataclass
class Reply:
    """One scripted answer: JSON-able ``body`` (or raw bytes), headers, content type."""

    status: int
    body: Any = None
    headers: dict[str, str] = field(default_factory=dict)
    content_type: str = "application/json"


@dataclass
class Seen:
    """One request as it arrived, and the status it was answered with."""

    path: str
    headers: dict[str, str]
    doc: Any
    keys: list[str]
    status: int = 0
    at: float = field(default_factory=time.monotonic)


class VendorServer:
    """The HTTP plumbing both vendors share; a subclass answers in ``answer``."""

    key_field = "id"

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.requests: list[Seen] = []
        self.scripts: dict[str, list[Reply]] = {}
        self.outage: Reply | None = None
        self.received: dict[str, dict[str, Any]] = {}
        self.deliveries: dict[str, int] = {}
        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), _handler(self))
        self.httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self._thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def __enter__(self) -> VendorServer:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()

    def push(self, path: str, *replies: Reply) -> None:
        with self.lock:
            self.scripts.setdefault(path, []).extend(replies)

    def seen(self, path: str) -> list[Seen]:
        with self.lock:
            return [r for r in self.requests if r.path == path]

    def store(self, events: list[dict[str, Any]]) -> None:
        for event in events:
            key = event[self.key_field]
            self.deliveries[key] = self.deliveries.get(key, 0) + 1
            self.received.setdefault(key, event)

    def events_of(self, doc: Any) -> list[dict[str, Any]]:
        return list(doc) if isinstance(doc, list) else []

    def answer(self, seen: Seen) -> Reply:
        raise NotImplementedError

    def _respond(self, seen: Seen) -> Reply:
        with self.lock:
            script = self.scripts.get(seen.path)
            reply = script.pop(0) if script else self.outage or self.answer(seen)
            seen.status = reply.status
            self.requests.append(seen)
        return reply


def _handler(server: VendorServer) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, format: str, *args: Any) -> None:
            pass

        def do_POST(self) -> None:
            raw = self.rfile.read(int(self.headers.get("Content-Length", "0")))
            try:
                doc = json.loads(raw) if raw else None
            except ValueError:
                doc = None
            headers = {k.lower(): v for k, v in self.headers.items()}
            events = server.events_of(doc)
            keys = [str(e.get(server.key_field)) for e in events if isinstance(e, dict)]
            reply = server._respond(Seen(self.path, headers, doc, keys))
            body = reply.body
            data = (
                body
                if isinstance(body, bytes)
                else b""
                if body is None
                else json.dumps(body).encode()
            )
            self.send_response(reply.status)
            if data:
                self.send_header("Content-Type", reply.content_type)
            self.send_header("Content-Length", str(len(data)))
            for name, value in reply.headers.items():
                self.send_header(name, value)
            self.end_headers()
            self.wfile.write(data)

    return Handler


def stripe_error(code: str, message: str, **more: str) -> dict[str, Any]:
    """Stripe's v2 error body."""
    return {"error": {"code": code, "message": message, **more}}


EXPIRED_BODY = stripe_error(
    "billing_meter_event_session_expired",
    "The meter event session has expired.",
    type="temporary_session_expired",
    doc_url="https://docs.stripe.com/error-codes",
)


class StripeServer(VendorServer):
    """Stripe's session and stream endpoints, with sessions that last ``lifetime`` s."""

    key_field = "identifier"

    def __init__(self, api_key: str = "sk_test_meterline_0123456789", lifetime: float = 900.0):
        super().__init__()
        self.api_key = api_key
        self.lifetime = lifetime
        self.tokens: list[str] = []  # every token issued, in order
        self.live: set[str] = set()
        self.echo = False  # answer the stream with a 503 that quotes the Authorization

    def events_of(self, doc: Any) -> list[dict[str, Any]]:
        events = doc.get("events") if isinstance(doc, dict) else None
        return list(events) if isinstance(events, list) else []

    def expire_sessions(self) -> None:
        """End every session issued so far: the stream answers them as expired."""
        with self.lock:
            self.live.clear()

    def answer(self, seen: Seen) -> Reply:
        auth = seen.headers.get("authorization", "")
        if seen.path == SESSION:
            if auth != f"Bearer {self.api_key}":
                return Reply(401, stripe_error("api_key_invalid", "Invalid API Key provided"))
            token = f"ek_test_{secrets.token_hex(12)}"
            self.tokens.append(token)
            self.live.add(token)
            now = datetime.now(timezone.utc)
            return Reply(200, _session(token, now, now + timedelta(seconds=self.lifetime)))
        if seen.path == STREAM:
            token = auth.removeprefix("Bearer ")
            if token in self.tokens and token not in self.live:
                return Reply(401, EXPIRED_BODY)
            if token not in self.live:
                return Reply(401, stripe_error("authentication_failed", "Not authenticated"))
            if self.echo:
                error = stripe_error("api_error", f"overloaded; you sent {auth!r}")
                return Reply(503, error, {"Stripe-Should-Retry": "false"})
            self.store(self.events_of(seen.doc))
            return Reply(200, {})
        return Reply(404, stripe_error("not_found", "Unrecognized request URL"))


def _session(token: str, created: datetime, expires: datetime) -> dict[str, Any]:
    def iso(t: datetime) -> str:
        return t.isoformat(timespec="milliseconds").replace("+00:00", "Z")

    return {
        "id": f"mes_{secrets.token_hex(8)}",
        "object": "v2.billing.meter_event_session",
        "authentication_token": token,
        "created": iso(created),
        "expires_at": iso(expires),
        "livemode": False,
    }


def problem(status: int, title: str, detail: str) -> dict[str, Any]:
    """An RFC 7807 problem as OpenMeter writes it."""
    return {
        "type": "about:blank",
        "title": title,
        "status": status,
        "detail": detail,
        "instance": "",
    }


class OpenMeterServer(VendorServer):
    """OpenMeter's events endpoint: 204, or a 400 problem for a batch with a bad id."""

    def __init__(self, api_key: str = "om_test_meterline_0123456789") -> None:
        super().__init__()
        self.api_key = api_key
        self.bad_ids: set[str] = set()

    def answer(self, seen: Seen) -> Reply:
        if seen.headers.get("authorization") != f"Bearer {self.api_key}":
            return Reply(
                401, problem(401, "Unauthorized", "invalid API key"), content_type=_PROBLEM
            )
        if seen.path != EVENTS:
            return Reply(404, problem(404, "Not Found", seen.path), content_type=_PROBLEM)
        if self.bad_ids & set(seen.keys):
            return Reply(400, problem(400, "Bad Request", "invalid event"), content_type=_PROBLEM)
        self.store(self.events_of(seen.doc))
        return Reply(204)


_PROBLEM = "application/problem+json"
