"""A counting ingest sink for the benchmarks: every peer's batch endpoint on 127.0.0.1.

    .venv/bin/python benchmarks/sink.py --port 0      # prints "sink listening on 127.0.0.1:N"

One asyncio process with a minimal HTTP/1.1 parser (keep-alive, Content-Length or chunked
bodies, gzip request bodies). Per request it decodes the body once and records, for the
current label, every event's id and its ``n`` property (the driver's call index):

    unique_ids   distinct ids received (Orb/meterline ``idempotency_key``, Segment
                 ``messageId``, PostHog ``uuid``, Mixpanel ``$insert_id``)
    events       every event received, duplicates included
    seqs         distinct ``n`` values: how many of the calls made arrived at least once

so ``events - unique_ids`` is duplicates at the wire (the server can de-duplicate them by
id) and ``unique_ids - seqs`` counts events that arrived under more than one id (it cannot).

Control (JSON): ``POST /_ctl/reset?label=X`` (``&vendor=lago``: until the next reset, speak
only that vendor's API, see ``vendors.py``), ``GET /_ctl/counts``, ``POST /_ctl/fault``
with ``{"outage_seconds": 5}`` (503 to every ingest request for that long) or
``{"flaky_rate": 0.2, "seed": 1}`` (that share of ingest requests answer 500, half of
them after counting the events: a success the client never hears of), ``{}`` to clear.
Times are ``time.monotonic()``, which on Linux is one clock for every process.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import gzip
import os
import random
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qs, urlsplit

import orjson
import vendors

MAX_HEAD = 64 * 1024
MAX_BODY = 64 * 1024 * 1024


@dataclass
class Tally:
    """What one label (one benchmark run) delivered."""

    label: str = ""
    ids: set[str] = field(default_factory=set)
    seqs: set[int] = field(default_factory=set)
    events: int = 0
    requests: int = 0
    statuses: dict[int, int] = field(default_factory=dict)
    paths: dict[str, int] = field(default_factory=dict)
    first_at: float | None = None
    last_new_at: float | None = None

    def as_json(self) -> dict[str, Any]:
        return {
            "label": self.label,
            "unique_ids": len(self.ids),
            "seqs": len(self.seqs),
            "events": self.events,
            "requests": self.requests,
            "statuses": {str(k): v for k, v in sorted(self.statuses.items())},
            "paths": self.paths,
            "first_at": self.first_at,
            "last_new_at": self.last_new_at,
            "now": time.monotonic(),
        }


@dataclass
class Faults:
    outage_until: float = 0.0
    flaky_rate: float = 0.0
    rng: random.Random = field(default_factory=lambda: random.Random(1))


# -- the peers' wire formats ---------------------------------------------------------------

Events = list[tuple[Any, Any]]  # (id, n) per event


def _json_events(body: bytes, list_key: str, id_key: str) -> Events:
    doc = orjson.loads(body)
    items = doc.get(list_key) if isinstance(doc, dict) else doc
    return [(e.get(id_key), (e.get("properties") or {}).get("n")) for e in items or ()]


def _orb(body: bytes) -> Events:
    return _json_events(body, "events", "idempotency_key")


def _segment(body: bytes) -> Events:
    return _json_events(body, "batch", "messageId")


def _posthog(body: bytes) -> Events:
    return _json_events(body, "batch", "uuid")


def _mixpanel(body: bytes) -> Events:
    """Form-encoded ``data=`` holding a JSON list (older versions: base64 of it)."""
    data = body
    if body[:1] not in (b"[", b"{"):
        fields = parse_qs(body.decode("latin-1"), keep_blank_values=True)
        raw = (fields.get("data") or [""])[0]
        data = raw.encode() if raw[:1] in "[{" else base64.b64decode(raw)
    doc = orjson.loads(data)
    items = doc if isinstance(doc, list) else [doc]
    out: Events = []
    for e in items:
        props = e.get("properties") or {}
        out.append((props.get("$insert_id"), props.get("n")))
    return out


Route = tuple[Callable[[bytes], Events], bytes]
ROUTES: dict[str, Route] = {
    "/v1/ingest": (_orb, b'{"validation_failed":[]}'),
    "/ingest": (_orb, b'{"validation_failed":[]}'),
    "/v1/batch": (_segment, b'{"success":true}'),
    "/batch": (_posthog, b'{"status":1}'),
    "/batch/": (_posthog, b'{"status":1}'),
    "/track": (_mixpanel, b'{"status":1,"error":null}'),
    "/engage": (_mixpanel, b'{"status":1,"error":null}'),
    "/groups": (_mixpanel, b'{"status":1,"error":null}'),
    "/import": (_mixpanel, b'{"code":200,"num_records_imported":1,"status":1}'),
}

_REASONS = {200: "OK", 400: "Bad Request", 404: "Not Found", 500: "Internal Server Error"}
_REASONS |= {204: "No Content", 401: "Unauthorized", 415: "Unsupported Media Type"}
_REASONS |= {503: "Service Unavailable", 411: "Length Required", 413: "Payload Too Large"}


class Sink:
    """The counting state and the request handler, shared by every connection."""

    def __init__(self) -> None:
        self.tally = Tally()
        self.faults = Faults()
        self.vendor: str | None = None  # None: every peer's route (ROUTES)
        self.sessions = vendors.Sessions()

    def handle(
        self, method: str, target: str, headers: dict[str, str], body: bytes
    ) -> tuple[int, bytes]:
        parts = urlsplit(target)
        path = parts.path
        if path.startswith("/_ctl/"):
            return self._control(method, path, parts.query, body)
        if self.vendor is not None:
            return self._vendor(method, path, headers, body)
        tally = self.tally
        route = ROUTES.get(path)
        if method != "POST" or route is None:
            tally.paths[path] = tally.paths.get(path, 0) + 1
            return 200 if method == "GET" else 404, b"{}"
        tally.requests += 1
        now = time.monotonic()
        if tally.first_at is None:
            tally.first_at = now
        faults = self.faults
        if now < faults.outage_until:
            return self._status(503, b'{"detail":"outage"}')
        lost_success = False
        if faults.flaky_rate:
            draw = faults.rng.random()
            if draw < faults.flaky_rate / 2:
                return self._status(500, b'{"detail":"flaky, not counted"}')
            lost_success = draw < faults.flaky_rate
        if headers.get("content-encoding", "").lower() == "gzip":
            body = gzip.decompress(body)
        parse, answer = route
        try:
            events = parse(body)
        except (ValueError, TypeError, AttributeError, KeyError):
            return self._status(400, b'{"detail":"unparseable body"}')
        self._record(events)
        if lost_success:
            return self._status(500, b'{"detail":"flaky, counted"}')
        return self._status(200, answer)

    def _record(self, events: Events) -> None:
        tally = self.tally
        ids, seqs = tally.ids, tally.seqs
        before = len(ids)
        for key, n in events:
            ids.add(key)
            if n is not None:
                seqs.add(n)
        tally.events += len(events)
        if len(ids) != before:
            tally.last_new_at = time.monotonic()

    def _vendor(
        self, method: str, path: str, headers: dict[str, str], body: bytes
    ) -> tuple[int, bytes]:
        """One request in vendor mode: only ``self.vendor``'s paths count (no faults)."""
        tally = self.tally
        if method == "POST" and self.vendor == "stripe" and path == vendors.STRIPE_SESSION:
            tally.paths[path] = tally.paths.get(path, 0) + 1
            return self._status(*self.sessions.open(headers))
        route = vendors.ROUTES[self.vendor or ""].get(path)
        if method != "POST" or route is None:
            tally.paths[path] = tally.paths.get(path, 0) + 1
            return self._status(404, b'{"detail":"not an ingest path of this vendor"}')
        tally.requests += 1
        if tally.first_at is None:
            tally.first_at = time.monotonic()
        refused = vendors.refusal(route, headers, self.sessions)
        if refused is not None:
            return self._status(*refused)
        if headers.get("content-encoding", "").lower() == "gzip":
            body = gzip.decompress(body)
        try:
            events = route.parse(body)
        except (ValueError, TypeError, AttributeError, KeyError):
            return self._status(400, b'{"detail":"not this vendor\'s body"}')
        self._record(events)
        return self._status(route.status, route.answer)

    def _status(self, status: int, body: bytes) -> tuple[int, bytes]:
        statuses = self.tally.statuses
        statuses[status] = statuses.get(status, 0) + 1
        return status, body

    def _control(self, method: str, path: str, query: str, body: bytes) -> tuple[int, bytes]:
        if path == "/_ctl/counts":
            return 200, orjson.dumps(self.tally.as_json())
        if path == "/_ctl/reset" and method == "POST":
            fields = parse_qs(query)
            label = (fields.get("label") or [""])[0]
            vendor = fields["vendor"][0] if "vendor" in fields else None
            if vendor is not None and vendor not in vendors.ROUTES:
                return 400, b'{"detail":"unknown vendor"}'
            self.tally = Tally(label=label)
            self.faults = Faults()
            self.vendor = vendor
            self.sessions = vendors.Sessions()
            return 200, b"{}"
        if path == "/_ctl/fault" and method == "POST":
            spec = orjson.loads(body or b"{}")
            faults = Faults(rng=random.Random(spec.get("seed", 1)))
            if spec.get("outage_seconds"):
                faults.outage_until = time.monotonic() + float(spec["outage_seconds"])
            faults.flaky_rate = float(spec.get("flaky_rate", 0.0))
            self.faults = faults
            return 200, orjson.dumps({"outage_until": faults.outage_until, "now": time.monotonic()})
        return 404, b"{}"


class HttpProtocol(asyncio.Protocol):
    """HTTP/1.1 with keep-alive and pipelining; one buffer, parsed as bytes arrive."""

    def __init__(self, sink: Sink) -> None:
        self._sink = sink
        self._buf = bytearray()
        self._transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self._transport = transport

    def data_received(self, data: bytes) -> None:
        self._buf += data
        while self._transport is not None and self._one_request():
            pass

    def _one_request(self) -> bool:
        """Answer the first complete request in the buffer; False when there is none."""
        buf = self._buf
        end = buf.find(b"\r\n\r\n")
        if end < 0:
            if len(buf) > MAX_HEAD:
                self._reply(400, b"{}", close=True)
            return False
        lines = bytes(buf[:end]).decode("latin-1").split("\r\n")
        method, target, version = [*lines[0].split(" "), "", "", ""][:3]
        headers: dict[str, str] = {}
        for line in lines[1:]:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
        start = end + 4
        if "chunked" in headers.get("transfer-encoding", "").lower():
            decoded = _dechunk(buf, start)
            if decoded is None:
                return False
            body, consumed = decoded
        else:
            length = int(headers.get("content-length") or 0)
            if length > MAX_BODY:
                self._reply(413, b"{}", close=True)
                return False
            if len(buf) < start + length:
                if headers.get("expect", "").lower() == "100-continue" and len(buf) == start:
                    assert self._transport is not None
                    self._transport.write(b"HTTP/1.1 100 Continue\r\n\r\n")
                return False
            body, consumed = bytes(buf[start : start + length]), start + length
        del buf[:consumed]
        status, answer = self._sink.handle(method, target, headers, body)
        close = headers.get("connection", "").lower() == "close" or version == "HTTP/1.0"
        self._reply(status, answer, close=close)
        return True

    def _reply(self, status: int, body: bytes, *, close: bool = False) -> None:
        assert self._transport is not None
        length = "" if status == 204 else f"Content-Length: {len(body)}\r\n"  # 204: none
        head = (
            f"HTTP/1.1 {status} {_REASONS.get(status, 'Status')}\r\n"
            f"Content-Type: application/json\r\n{length}"
            f"{'Connection: close' if close else 'Connection: keep-alive'}\r\n\r\n"
        )
        self._transport.write(head.encode("latin-1") + body)
        if close:
            self._transport.close()
            self._transport = None

    def connection_lost(self, exc: Exception | None) -> None:
        self._transport = None


def _dechunk(buf: bytearray, pos: int) -> tuple[bytes, int] | None:
    """A chunked body and the bytes it used, or None while it is incomplete."""
    out = bytearray()
    while True:
        eol = buf.find(b"\r\n", pos)
        if eol < 0:
            return None
        size = int(bytes(buf[pos:eol]).split(b";")[0], 16)
        pos = eol + 2
        if size == 0:
            trailer_end = buf.find(b"\r\n", pos)
            return (bytes(out), trailer_end + 2) if trailer_end >= 0 else None
        if len(buf) < pos + size + 2:
            return None
        out += buf[pos : pos + size]
        pos += size + 2


async def serve(host: str, port: int) -> None:
    sink = Sink()
    loop = asyncio.get_running_loop()
    server = await loop.create_server(lambda: HttpProtocol(sink), host, port, backlog=1024)
    bound = server.sockets[0].getsockname()[1]
    print(f"sink listening on {host}:{bound}", flush=True)
    async with server:
        await server.serve_forever()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--cpu", type=int, default=None, help="pin the sink to this CPU")
    args = parser.parse_args()
    if args.cpu is not None and hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {args.cpu})
    try:
        asyncio.run(serve("127.0.0.1", args.port))
    except KeyboardInterrupt:
        pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
