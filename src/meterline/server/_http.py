"""The standard-library HTTP layer: keep-alive, body limits, gzip, and a clean stop.

The server remembers every open connection so that ``stop()`` can cut idle keep-alive
connections and wait for requests in progress before the database closes. Its accept loop
sleeps in a selector that ``stop_serving()`` wakes at once, instead of polling.
"""

from __future__ import annotations

import json
import logging
import selectors
import socket
import socketserver
import threading
import time
import zlib
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from meterline.server._app import App
from meterline.server._messages import Request, Response
from meterline.server._problem import Problem, bad_request

logger = logging.getLogger("meterline.server")


class HttpServer(ThreadingHTTPServer):
    """A threading HTTP server bound at construction, serving :class:`App`."""

    daemon_threads = True
    block_on_close = False
    allow_reuse_address = True  # a restart may rebind the port while old sockets linger
    timeout = 0.0  # handle_request() is only called once the selector saw a connection

    def __init__(self, host: str, port: int, app: App, max_body_bytes: int) -> None:
        self.address_family = socket.AF_INET6 if ":" in host else socket.AF_INET
        self.app = app
        self.max_body_bytes = max_body_bytes
        self._open: set[Any] = set()
        self._idle = threading.Condition()
        self._wake_r, self._wake_w = socket.socketpair()
        self._stopping = False
        self._stopped = threading.Event()
        try:
            super().__init__((host, port), _Handler)
        except BaseException:
            self._wake_r.close()
            self._wake_w.close()
            raise

    def serve(self) -> None:
        """Accept connections until :meth:`stop_serving`; each is served by a new thread."""
        try:
            with selectors.DefaultSelector() as selector:
                selector.register(self, selectors.EVENT_READ)
                selector.register(self._wake_r, selectors.EVENT_READ)
                while not self._stopping:
                    for key, _ in selector.select():
                        if key.fileobj is self and not self._stopping:
                            self.handle_request()
        finally:
            self._stopped.set()

    def stop_serving(self, timeout: float) -> None:
        """Make :meth:`serve` return and wait for it, then close the listening socket."""
        self._stopping = True
        self._wake_w.send(b"x")
        self._stopped.wait(timeout)
        self.server_close()
        self._wake_r.close()
        self._wake_w.close()

    def server_bind(self) -> None:
        """Bind with SO_REUSEADDR, minus the reverse DNS lookup of ``HTTPServer``."""
        socketserver.TCPServer.server_bind(self)
        self.server_name = str(self.server_address[0])
        self.server_port = int(self.server_address[1])

    def process_request(self, request: Any, client_address: Any) -> None:
        """Remember the connection, then serve it in its own thread."""
        with self._idle:
            self._open.add(request)
        super().process_request(request, client_address)

    def shutdown_request(self, request: Any) -> None:
        """Forget the connection once its thread is done with it."""
        with self._idle:
            self._open.discard(request)
            self._idle.notify_all()
        super().shutdown_request(request)

    def close_connections(self, timeout: float) -> bool:
        """Cut every open connection and wait for their threads; False on timeout."""
        with self._idle:
            for connection in list(self._open):
                try:
                    connection.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass  # the peer already closed it
            deadline = time.monotonic() + timeout
            return self._idle.wait_for(lambda: not self._open, deadline - time.monotonic())

    def handle_error(self, request: Any, client_address: Any) -> None:
        """Log an exception that escaped a handler instead of printing it."""
        logger.debug("connection from %s ended with an error", client_address, exc_info=True)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive; every response carries Content-Length
    server_version = "meterline-reference-server"
    sys_version = ""
    timeout = 120.0  # an idle keep-alive connection frees its thread after this
    # Headers and body leave in one write (handle_one_request flushes), without Nagle's
    # delay: two small writes would meet the peer's delayed ACK and cost ~40 ms a request.
    wbufsize = -1
    disable_nagle_algorithm = True
    server: HttpServer
    _body_read = False

    def do_GET(self) -> None:
        """Every method goes through the App, which answers 405 where needed."""
        self._body_read = False
        headers = {name.lower(): value for name, value in self.headers.items()}
        request = Request(self.command, self.path, headers, self._read_body)
        self._send(self.server.app.handle(request))

    do_POST = do_PUT = do_DELETE = do_PATCH = do_HEAD = do_OPTIONS = do_TRACE = do_GET

    def _read_body(self) -> bytes:
        if self._body_read:
            raise RuntimeError("the body was already read")
        self._body_read = True
        limit = self.server.max_body_bytes
        transfer = (self.headers.get("Transfer-Encoding") or "").strip().lower()
        if transfer:
            if transfer != "chunked":
                self.close_connection = True
                raise bad_request(f"Transfer-Encoding {transfer!r} is not supported; use chunked")
            return self._decoded(self._read_chunked(limit), limit)
        try:
            length = int(self.headers.get("Content-Length") or 0)
        except ValueError:
            length = -1
        if length < 0:
            self.close_connection = True
            raise bad_request("Content-Length is not a valid length")
        if length > limit:
            self.close_connection = True
            raise _too_large(limit)
        raw = self.rfile.read(length)
        if len(raw) < length:
            self.close_connection = True
            raise bad_request("the body is shorter than its Content-Length")
        return self._decoded(raw, limit)

    def _decoded(self, raw: bytes, limit: int) -> bytes:
        """The body after its Content-Encoding (identity or gzip; others are a 400)."""
        encoding = (self.headers.get("Content-Encoding") or "identity").strip().lower()
        if encoding == "gzip":
            return _gunzip(raw, limit)
        if encoding != "identity":
            raise bad_request(f"Content-Encoding {encoding!r} is not supported; use gzip")
        return raw

    def _read_chunked(self, limit: int) -> bytes:
        """A chunked body, refusing one larger than ``limit``; trailers are skipped."""
        body = bytearray()
        while True:
            line = self.rfile.readline(1026)
            try:
                size = int(line.split(b";", 1)[0].strip(), 16)
            except ValueError:
                self.close_connection = True
                raise bad_request("the chunked body is malformed") from None
            if size < 0 or len(body) + size > limit:
                self.close_connection = True
                raise _too_large(limit)
            if size == 0:
                while self.rfile.readline(1026) not in (b"\r\n", b"\n", b""):
                    pass  # trailer fields
                return bytes(body)
            chunk = self.rfile.read(size + 2)
            if len(chunk) < size + 2:
                self.close_connection = True
                raise bad_request("the chunked body ended early")
            body += chunk[:size]

    def _send(self, response: Response) -> None:
        payload = json.dumps(_finite(response.body), separators=(",", ":")).encode()
        if not self._body_read and (
            self.headers.get("Transfer-Encoding") or self.headers.get("Content-Length", "0") != "0"
        ):
            self.close_connection = True  # an unread body would be taken for the next request
        self.send_response(response.status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(payload)))
        for name, value in response.headers.items():
            self.send_header(name, value)
        if self.close_connection:
            self.send_header("Connection", "close")
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(payload)

    def send_error(self, code: int, message: str | None = None, explain: str | None = None) -> None:
        """Answer protocol errors found by http.server (bad request line, 501...) in JSON."""
        title = message or HTTPStatus(code).phrase
        self.close_connection = True
        self._body_read = True
        self._send(Response(code, Problem(code, title, explain or title).body(), {}))

    def log_request(self, code: int | str = "-", size: int | str = "-") -> None:
        """An access log line (no headers, so no API key) at INFO, shown with --verbose."""
        logger.info('%s "%s" %s', self.address_string(), self.requestline, code)

    def log_message(self, format: str, *args: Any) -> None:
        """http.server's own messages (timeouts, malformed requests) at DEBUG."""
        logger.debug("%s %s", self.address_string(), format % args)


def _too_large(limit: int) -> Problem:
    return Problem(413, "Request too large", f"the body exceeds {limit} bytes")


def _gunzip(data: bytes, limit: int) -> bytes:
    """Decompress one or more gzip members, refusing output larger than ``limit``."""
    out = bytearray()
    while data:
        decoder = zlib.decompressobj(wbits=16 + zlib.MAX_WBITS)
        try:
            out += decoder.decompress(data, limit + 1 - len(out))
        except zlib.error as exc:
            raise bad_request(f"the gzip body is corrupt: {exc}") from None
        if len(out) > limit:
            raise _too_large(limit)
        if not decoder.eof:
            raise bad_request("the gzip body is truncated")
        data = decoder.unused_data
    return bytes(out)


def _finite(value: object) -> object:
    """``value`` with every non-finite float made finite (JSON has no Infinity or NaN: a
    strict client could not read the answer): infinities clamp, NaN becomes null."""
    if isinstance(value, float):
        if value != value:
            return None
        return max(-1.7976931348623157e308, min(1.7976931348623157e308, value))
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_finite(v) for v in value]
    return value
