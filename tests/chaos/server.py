"""The chaos ingest endpoint: a vendor's ingest API on 127.0.0.1 under a seeded schedule.

It speaks Orb's ``POST /v1/ingest`` by default, or another vendor's (``dialect=``, see
``dialects``): then a batch that holds a rejected key is refused whole (their 200 cannot
name events), and Stripe's stream is authenticated by session tokens that the server
grants, and sometimes expires mid-stream (``expired``), as Stripe does.

The schedule is a cycle of phases (healthy, flaky, outage, portal, hangs, slow, storm429),
each a weighted mix of answer kinds; every request draws its kind and parameters from the
server's own seeded generator, and ``heal()`` switches to the healthy mix for recovery.

Answer kinds, and whether the events count as stored (what Orb would bill):

=============  ===============================================================  ======
ok             200 ``{"validation_failed": [...]}`` naming the rejected keys     stored
ok400          400 naming the rejected keys when the batch holds one (atomic)    no (*)
s500/502/503   a JSON problem body                                               no
stored_503     the events are stored, then the answer is a 503 (a lost 200)      stored
stored_reset   the events are stored, then a TCP reset                           stored
r429           429 with ``Retry-After`` (s) or ``retry-after-ms``                no
reset          a TCP reset before anything is stored                             no
trickle        stored, then the 200 trickles one byte every few tens of ms       stored
html200        a portal's HTML page with status 200                              no
html400        a proxy's HTML page with status 400                               no
slow           stored after a delay, then 200                                    stored
hang           held for a while, then 200 if stored at arrival, else a reset        drawn
=============  ===============================================================  ======

(*) a batch without rejected keys is answered and stored like ``ok``.

``lie_every=n`` breaks the endpoint on purpose: every n-th ``ok`` answer stores nothing
(``lie200``), which a sound checker must report as lost events.

Rejection is a pure function of the key (``rejects(key)``), so a checker knows which keys
the server will refuse whatever the timing. Every arrival of every key is recorded with the
answer kind, the status, whether it was stored then and its ``Authorization`` header; the
first body of each key is kept and any later arrival with another body is a conflict.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import random
import socket
import struct
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from tests.chaos.dialects import DIALECTS, Dialect

PHASES: dict[str, dict[str, int]] = {
    "healthy": {"ok": 9, "ok400": 1},
    "flaky": {
        "ok": 5,
        "expired": 1,
        "ok400": 1,
        "s500": 1,
        "s502": 1,
        "s503": 1,
        "reset": 1,
        "stored_503": 1,
        "stored_reset": 1,
        "r429": 1,
        "slow": 1,
    },
    "outage": {"s503": 5, "s502": 2, "s500": 1, "reset": 2},
    "portal": {"html200": 6, "html400": 3, "ok": 1},
    "hangs": {"hang": 4, "trickle": 3, "ok": 2, "slow": 1},
    "slow": {"slow": 6, "trickle": 2, "ok": 2},
    "storm429": {"r429": 8, "ok": 2},
}

STORING = frozenset({"ok", "stored_503", "stored_reset", "trickle", "slow"})
HTML_PAGE = b"<!doctype html><html><head><title>Sign in</title></head><body>portal</body></html>"


def rejects(key: str, salt: str, permille: int) -> bool:
    """Whether the server names ``key`` in ``validation_failed`` (a pure function of it)."""
    if permille <= 0:
        return False
    digest = hashlib.sha256(f"{salt}:{key}".encode()).digest()
    return int.from_bytes(digest[:4], "big") % 1000 < permille


def canonical(event: dict[str, Any]) -> str:
    return json.dumps(event, sort_keys=True, separators=(",", ":"))


@dataclass(frozen=True)
class Arrival:
    """One arrival of one key: the answer kind, its status, stored now, and the credential."""

    kind: str
    status: int
    stored: bool
    auth: str | None
    at: float


@dataclass
class KeyRecord:
    body: dict[str, Any]
    canonical: str
    arrivals: list[Arrival] = field(default_factory=list)
    stored: bool = False
    conflicts: list[str] = field(default_factory=list)  # canonical bodies that differed


@dataclass
class Answer:
    """What one request is answered with (drawn from the schedule)."""

    kind: str
    delay: float = 0.0
    hang: float = 0.0
    hang_stores: bool = True
    trickle: float = 0.0
    retry_after: dict[str, str] = field(default_factory=dict)


class ChaosServer:
    """A threaded HTTP ingest endpoint whose answers follow a seeded, changing schedule."""

    def __init__(
        self,
        *,
        seed: int,
        phases: list[tuple[str, float]],
        api_keys: set[str],
        reject_salt: str = "",
        reject_permille: int = 0,
        lie_every: int = 0,
        dialect: str = "orb",
    ) -> None:
        self.dialect: Dialect = DIALECTS[dialect]
        self.sessions: dict[str, str] = {}  # Stripe: token -> "Bearer <api key>" it was granted to
        self.session_grants = 0
        self.lock = threading.Lock()
        self.lie_every = lie_every  # a broken endpoint, to prove the checker sees losses
        self._oks = 0
        self.rng = random.Random(seed)
        self.phases = list(phases) or [("healthy", 1.0)]
        self.api_keys = set(api_keys)
        self.reject_salt = reject_salt
        self.reject_permille = reject_permille
        self.keys: dict[str, KeyRecord] = {}
        self.requests: list[tuple[float, str, int, int]] = []  # at, kind, status, events
        self.kind_counts: dict[str, int] = {}
        self.malformed: list[str] = []  # complete bodies that are not an ingest request
        self.aborted = 0  # requests whose body never arrived whole
        self.handler_errors: list[str] = []
        self.healed = False
        self._t0 = time.monotonic()
        self._stop = threading.Event()
        self.httpd = _Server(("127.0.0.1", 0), _make_handler(self), self)
        self.port = self.httpd.server_address[1]
        self.base_url = f"http://127.0.0.1:{self.port}{self.dialect.prefix}"
        self._thread = threading.Thread(
            target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )
        self._thread.start()

    # -- control ------------------------------------------------------------------------

    def heal(self) -> None:
        """From now on answer with the healthy mix (rejections still apply)."""
        with self.lock:
            self.healed = True

    def stop(self) -> None:
        """Stop serving; hung and trickling answers end at once."""
        if self._stop.is_set():
            return
        self._stop.set()
        self.httpd.shutdown()
        self.httpd.server_close()
        self._thread.join(timeout=5)

    def rejects(self, key: str) -> bool:
        return rejects(key, self.reject_salt, self.reject_permille)

    def phase_now(self) -> str:
        if self.healed:
            return "healthy"
        cycle = sum(d for _, d in self.phases)
        t = (time.monotonic() - self._t0) % cycle
        for name, duration in self.phases:
            if t < duration:
                return name
            t -= duration
        return self.phases[-1][0]

    def _draw(self) -> Answer:
        """The next answer (caller holds ``lock``)."""
        mix = PHASES[self.phase_now()]
        rng = self.rng
        kind = rng.choices(list(mix), weights=list(mix.values()))[0]
        if kind == "expired" and self.dialect.session_path is None:
            kind = "ok"  # only a session can expire
        answer = Answer(kind)
        if kind == "slow":
            answer.delay = rng.uniform(0.05, 0.6)
        elif kind == "hang":
            answer.hang = rng.uniform(0.3, 2.5)
            answer.hang_stores = rng.random() < 0.6
        elif kind == "trickle":
            answer.trickle = rng.choice([0.005, 0.02, 0.06])
        elif kind == "r429":
            if rng.random() < 0.5:
                answer.retry_after = {"Retry-After": rng.choice(["0", "1"])}
            else:
                answer.retry_after = {"retry-after-ms": str(rng.randint(20, 400))}
        return answer

    # -- recording ----------------------------------------------------------------------

    def _record(
        self,
        events: list[dict[str, Any]],
        answer: Answer,
        status: int,
        store: set[str],
        auth: str | None,
    ) -> None:
        now = time.monotonic()
        field = self.dialect.key_field
        for event in events:
            key = event[field]
            text = canonical(event)
            rec = self.keys.get(key)
            if rec is None:
                body = {**event, "properties": self.dialect.properties(event)}
                rec = self.keys[key] = KeyRecord(body, text)
            elif text != rec.canonical:
                rec.conflicts.append(text)
            stored_now = key in store
            if stored_now:
                rec.stored = True
            rec.arrivals.append(Arrival(answer.kind, status, stored_now, auth, now))
        self.requests.append((now, answer.kind, status, len(events)))
        self.kind_counts[answer.kind] = self.kind_counts.get(answer.kind, 0) + 1

    def snapshot(self) -> dict[str, KeyRecord]:
        with self.lock:
            return dict(self.keys)


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False
    request_queue_size = 128

    def __init__(self, address: tuple[str, int], handler: Any, chaos: ChaosServer) -> None:
        self.chaos = chaos
        super().__init__(address, handler)

    def handle_error(self, request: Any, client_address: Any) -> None:
        import sys

        exc = sys.exc_info()[1]
        if isinstance(exc, (ConnectionError, BrokenPipeError, TimeoutError, OSError)):
            return  # a client that went away (a timeout, a kill -9) is part of the game
        with self.chaos.lock:
            self.chaos.handler_errors.append(f"{type(exc).__name__}: {exc}")


def _make_handler(chaos: ChaosServer) -> type[BaseHTTPRequestHandler]:
    stop = chaos._stop

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, format: str, *args: Any) -> None:
            pass

        def _head(
            self, status: int, length: int, content_type: str, extra: dict[str, str]
        ) -> bytes:
            reason = self.responses.get(status, ("",))[0]
            lines = [f"HTTP/1.1 {status} {reason}", f"Content-Type: {content_type}"]
            lines.append(f"Content-Length: {length}")
            lines.extend(f"{k}: {v}" for k, v in extra.items())
            return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")

        def _send(
            self, status: int, body: bytes, content_type: str = "application/json", **extra: str
        ) -> None:
            self.wfile.write(self._head(status, len(body), content_type, extra) + body)
            self.wfile.flush()

        def _reset(self) -> None:
            self.close_connection = True
            linger = struct.pack("ii", 1, 0)
            self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, linger)
            self.connection.close()

        def do_GET(self) -> None:
            self._send(405, b'{"status":405,"title":"Method Not Allowed"}', Allow="POST")

        requests_on_connection = 0

        def do_POST(self) -> None:
            self.requests_on_connection += 1
            length = int(self.headers.get("Content-Length") or 0)
            raw = self.rfile.read(length)
            if len(raw) < length:  # the client died or gave up in the middle of its body
                with chaos.lock:
                    chaos.aborted += 1
                self.close_connection = True
                return
            dialect = chaos.dialect
            if dialect.session_path is not None and self.path.rstrip("/") == dialect.session_path:
                self._session()
                return
            if self.path.rstrip("/") != dialect.path:
                self._send(404, b'{"status":404,"title":"Not Found"}')
                return
            try:
                if self.headers.get("Content-Encoding") == "gzip":
                    raw = gzip.decompress(raw)
                events = dialect.events(json.loads(raw))
            except (ValueError, KeyError, TypeError, OSError) as exc:
                with chaos.lock:
                    chaos.malformed.append(
                        f"{type(exc).__name__}: {exc} (Content-Length {length}, "
                        f"{len(raw)} bytes read: {raw[:60]!r}, "
                        f"request {self.requests_on_connection} on its connection)"
                    )
                self._send(400, b'{"status":400,"title":"malformed body"}')
                return
            auth = self.headers.get("Authorization")
            with chaos.lock:
                answer = chaos._draw()
                if dialect.session_path is not None:  # the account the session belongs to
                    token = (auth or "").removeprefix("Bearer ")
                    auth = chaos.sessions.get(token, f"unknown session {token[:12]}")
                    if answer.kind == "expired":
                        chaos.sessions.pop(token, None)
            keys = [e[dialect.key_field] for e in events]
            bad = [k for k in keys if chaos.rejects(k)]
            kind = answer.kind
            if auth not in {f"Bearer {k}" for k in chaos.api_keys}:
                answer = Answer("unauthorized")
                kind = answer.kind
            if answer.delay:
                stop.wait(answer.delay)
            atomic = bool(bad) and not dialect.partial_ok and kind not in ("ok400", "expired")
            if atomic and (kind in STORING or kind == "hang"):
                kind = answer.kind = "ok400"  # the vendor refuses a batch with a bad event
            store: set[str] = set()
            status = 200
            if kind in STORING or (kind == "hang" and answer.hang_stores):
                store = set(keys) - set(bad)
            elif kind == "ok400" and not bad:
                store = set(keys)
            status = {
                "unauthorized": 401,
                "ok400": 400 if bad else 200,
                "expired": 400,
                "s500": 500,
                "s502": 502,
                "s503": 503,
                "stored_503": 503,
                "r429": 429,
                "html400": 400,
                "reset": 0,
                "stored_reset": 0,
            }.get(kind, 200)
            if kind == "hang" and not answer.hang_stores:
                status = 0  # reset after the hang
            with chaos.lock:
                if chaos.lie_every and kind == "ok":
                    chaos._oks += 1
                    if chaos._oks % chaos.lie_every == 0:
                        store = set()  # acknowledged and forgotten
                        answer.kind = "lie200"
                chaos._record(events, answer, status, store, auth)
            ok_status, ok_body, ok_headers = dialect.ok(bad if dialect.partial_ok else [])
            if kind in ("reset", "stored_reset"):
                self._reset()
            elif kind == "unauthorized":
                self._send(401, dialect.unauthorized())
            elif kind == "expired":
                self._send(400, dialect.session_expired())
            elif kind in ("s500", "s502", "s503", "stored_503"):
                self._send(status, json.dumps({"status": status, "title": "unavailable"}).encode())
            elif kind == "r429":
                body, headers = dialect.rate_limited(answer.retry_after)
                self._send(429, body, **headers)
            elif kind == "html200":
                self._send(200, HTML_PAGE, "text/html; charset=utf-8")
            elif kind == "html400":
                self._send(400, HTML_PAGE, "text/html; charset=utf-8")
            elif kind == "ok400" and bad:
                status, body, headers = dialect.refuse(keys, bad)
                self._send_with(status, body, headers)
            elif kind == "hang":
                stop.wait(answer.hang)
                if stop.is_set() or not answer.hang_stores:
                    self._reset()  # what was not stored is never answered as accepted
                    return
                self._send_with(ok_status, ok_body, ok_headers)
            elif kind == "trickle":
                self._trickle(ok_status, ok_body, answer.trickle)
            else:
                self._send_with(ok_status, ok_body, ok_headers)

        def _send_with(self, status: int, body: bytes, headers: dict[str, str]) -> None:
            extra = dict(headers)
            content_type = extra.pop("Content-Type", "application/json")
            self._send(status, body, content_type, **extra)

        def _session(self) -> None:
            """Stripe's meter event session: a token for the account whose key is sent."""
            auth = self.headers.get("Authorization")
            with chaos.lock:
                answer = chaos._draw()
                ok = auth in {f"Bearer {k}" for k in chaos.api_keys}
                if ok and answer.kind not in ("s500", "s502", "s503", "reset"):
                    chaos.session_grants += 1
                    token = f"ek_chaos_{chaos.session_grants}_{chaos.rng.getrandbits(48):x}"
                    chaos.sessions[token] = str(auth)
                    # Some sessions end soon, so that renewal before expiry is exercised.
                    life = chaos.rng.choice([900.0, 900.0, 61.5])
                else:
                    token = ""
            if not ok:
                self._send(401, chaos.dialect.unauthorized())
            elif answer.kind == "reset":
                self._reset()
            elif not token:
                self._send(503, b'{"error":{"message":"unavailable"}}')
            else:
                expires = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(time.time() + life))
                body = {
                    "object": "v2.billing.meter_event_session",
                    "id": f"mes_{chaos.session_grants}",
                    "authentication_token": token,
                    "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                    "expires_at": expires,
                    "livemode": False,
                }
                self._send(200, json.dumps(body).encode())

        def _trickle(self, status: int, body: bytes, every: float) -> None:
            self.wfile.write(self._head(status, len(body), "application/json", {}))
            self.wfile.flush()
            for i in range(len(body)):
                if stop.wait(every):
                    self.close_connection = True
                    return
                self.connection.sendall(body[i : i + 1])

    return Handler
