"""HttpxTransport against hostile servers on 127.0.0.1: every request ends within its bound,
reads a bounded answer, and fails only with a TransportError that names no secret."""

from __future__ import annotations

import gzip
import socket
import threading
import time
import tracemalloc
from collections.abc import Callable, Iterator

import pytest

from meterline._transport import MAX_RESPONSE_BYTES, HttpxTransport, TransportError
from meterline.destinations import Orb

KEY = "sk-test-0123456789abcdef"
MARGIN = 0.2  # what a bounded request may take beyond its bound
TRICKLE = 0.5  # seconds between two bytes of a trickling server
OK = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 2\r\n\r\n{}"


class RawServer:
    """A TCP server on 127.0.0.1 that hands each connection to ``handler`` on a thread."""

    def __init__(self, handler: Callable[[RawServer, socket.socket], None]) -> None:
        self.handler = handler
        self.sock = socket.socket()
        # A small receive window (inherited by accepted sockets): a server that does not
        # read blocks the client's writes after a few hundred KiB, not many MiB.
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 16384)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.url = f"http://127.0.0.1:{self.sock.getsockname()[1]}/v1/ingest"
        self.stopped = threading.Event()
        self.accepted: list[socket.socket] = []
        self.requests: list[bytes] = []
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.accepted.append(conn)
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _serve(self, conn: socket.socket) -> None:
        try:
            self.handler(self, conn)
        except OSError:
            pass
        finally:
            conn.close()

    def read_request(self, conn: socket.socket) -> bytes:
        """One whole request (head and Content-Length body), recorded; b"" at EOF."""
        data = b""
        while b"\r\n\r\n" not in data:
            chunk = conn.recv(65536)
            if not chunk:
                return b""
            data += chunk
        head, _, body = data.partition(b"\r\n\r\n")
        length = 0
        for line in head.split(b"\r\n")[1:]:
            name, _, value = line.partition(b":")
            if name.strip().lower() == b"content-length":
                length = int(value)
        while len(body) < length:
            chunk = conn.recv(65536)
            if not chunk:
                break
            body += chunk
        self.requests.append(head + b"\r\n\r\n" + body)
        return head + b"\r\n\r\n" + body

    def trickle(self, conn: socket.socket, data: bytes) -> None:
        """Send ``data`` one byte every TRICKLE seconds until done or stopped."""
        for i in range(len(data)):
            conn.sendall(data[i : i + 1])
            if self.stopped.wait(TRICKLE):
                return

    def stop(self) -> None:
        self.stopped.set()
        try:
            self.sock.shutdown(socket.SHUT_RDWR)  # wakes the blocked accept()
        except OSError:
            pass
        self.sock.close()
        for conn in self.accepted:
            conn.close()


@pytest.fixture
def serve() -> Iterator[Callable[[Callable[[RawServer, socket.socket], None]], RawServer]]:
    servers: list[RawServer] = []

    def start(handler: Callable[[RawServer, socket.socket], None]) -> RawServer:
        servers.append(RawServer(handler))
        return servers[-1]

    yield start
    for server in servers:
        server.stop()


@pytest.fixture
def transport() -> Iterator[Callable[..., HttpxTransport]]:
    made: list[HttpxTransport] = []

    def make(url: str, **options: object) -> HttpxTransport:
        options.setdefault("timeout", 1.0)
        options.setdefault("connect_timeout", 1.0)
        options.setdefault("envelope", Orb().envelope)
        api_key = options.pop("api_key", KEY)
        made.append(HttpxTransport(url, api_key, **options))  # type: ignore[arg-type]
        return made[-1]

    yield make
    for t in made:
        t.close()


def timed_failure(t: HttpxTransport, **send: float) -> tuple[float, TransportError]:
    started = time.monotonic()
    with pytest.raises(TransportError) as info:
        t.send([b'{"n":1}'], **send)
    return time.monotonic() - started, info.value


def assert_clean(error: TransportError) -> None:
    """The error names no secret and carries no exception that holds the request."""
    assert KEY not in str(error)
    assert "Bearer" not in str(error)
    assert error.__cause__ is None
    assert error.__context__ is None


# --- the whole-request bound ------------------------------------------------------------


def test_trickled_headers_end_the_request_at_its_timeout(serve, transport):
    """A status line and headers trickled one byte per half second end the send at timeout."""

    def handler(server: RawServer, conn: socket.socket) -> None:
        server.read_request(conn)
        server.trickle(conn, OK)

    t = transport(serve(handler).url, timeout=1.0)
    elapsed, error = timed_failure(t)
    assert elapsed < 1.0 + MARGIN
    assert str(error) == "ReadTimeout: no complete answer within 1 s"
    assert_clean(error)


def test_trickled_body_ends_the_request_at_its_timeout(serve, transport):
    """Headers at once and a body trickled one byte per half second end the send at timeout."""

    def handler(server: RawServer, conn: socket.socket) -> None:
        server.read_request(conn)
        conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 40\r\n\r\n")
        server.trickle(conn, b"{" + b" " * 38 + b"}")

    t = transport(serve(handler).url, timeout=1.0)
    elapsed, error = timed_failure(t)
    assert elapsed < 1.0 + MARGIN
    assert error.args[0].startswith("ReadTimeout:")


def test_a_server_that_never_answers_ends_the_request_at_its_timeout(serve, transport):
    """A server that reads the request and stays silent ends the send at timeout."""

    def handler(server: RawServer, conn: socket.socket) -> None:
        server.read_request(conn)
        server.stopped.wait()

    t = transport(serve(handler).url, timeout=0.5)
    elapsed, error = timed_failure(t)
    assert elapsed < 0.5 + MARGIN
    assert error.args[0].startswith("ReadTimeout:")


def test_the_send_timeout_argument_bounds_the_whole_request(serve, transport):
    """``send(timeout=)``, a shutdown deadline, bounds a trickled answer as a whole too."""

    def handler(server: RawServer, conn: socket.socket) -> None:
        server.read_request(conn)
        server.trickle(conn, OK)

    t = transport(serve(handler).url, timeout=10.0)
    elapsed, error = timed_failure(t, timeout=0.6)
    assert elapsed < 0.6 + MARGIN
    assert error.args[0] == "ReadTimeout: no complete answer within 0.6 s"


def test_the_send_timeout_argument_never_lengthens_the_transports_own(serve, transport):
    """A ``send(timeout=)`` longer than the transport's timeout leaves the shorter bound."""

    def handler(server: RawServer, conn: socket.socket) -> None:
        server.read_request(conn)
        server.stopped.wait()

    t = transport(serve(handler).url, timeout=0.5)
    elapsed, _ = timed_failure(t, timeout=30.0)
    assert elapsed < 0.5 + MARGIN


def test_a_deadline_already_past_fails_at_once(serve, transport):
    """A send whose deadline has already passed raises without waiting on the network."""
    t = transport(serve(lambda s, c: s.stopped.wait()).url)
    elapsed, error = timed_failure(t, timeout=-1.0)
    assert elapsed < MARGIN
    assert "Timeout" in error.args[0]


@pytest.fixture
def full_backlog() -> Iterator[str]:
    """A listener whose accept queue is full, so that a new connect hangs in SYN-SENT."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(0)
    port = listener.getsockname()[1]
    fillers: list[socket.socket] = []
    while True:  # fill the queue until a connect no longer completes
        filler = socket.socket()
        filler.settimeout(0.2)
        fillers.append(filler)
        try:
            filler.connect(("127.0.0.1", port))
        except TimeoutError:
            break
        if len(fillers) > 64:
            pytest.skip("this system never refuses a connection to a full accept queue")
    yield f"http://127.0.0.1:{port}/v1/ingest"
    for filler in fillers:
        filler.close()
    listener.close()


def test_a_slow_connect_ends_at_the_connect_timeout(full_backlog, transport):
    """A connection the server never completes ends the send at ``connect_timeout``."""
    t = transport(full_backlog, timeout=5.0, connect_timeout=0.5)
    elapsed, error = timed_failure(t)
    assert elapsed < 0.5 + MARGIN
    assert error.args[0] == "ConnectTimeout: no connection within 0.5 s"
    assert_clean(error)


def test_a_slow_connect_ends_at_a_shorter_send_timeout(full_backlog, transport):
    """A shutdown deadline shorter than ``connect_timeout`` bounds the connect as well."""
    t = transport(full_backlog, timeout=5.0, connect_timeout=5.0)
    elapsed, error = timed_failure(t, timeout=0.4)
    assert elapsed < 0.4 + MARGIN
    assert error.args[0] == "ConnectTimeout: no connection within 0.4 s"


def test_a_server_that_never_reads_ends_a_large_upload_at_its_timeout(serve, transport):
    """A request body the server never reads ends the send at timeout, not per write."""

    def handler(server: RawServer, conn: socket.socket) -> None:
        server.stopped.wait()

    t = transport(serve(handler).url, timeout=0.7)
    started = time.monotonic()
    with pytest.raises(TransportError) as info:
        t.send([b'{"x":"' + b"a" * (1 << 20) + b'"}'] * 8)  # more than the socket buffers
    assert time.monotonic() - started < 0.7 + MARGIN
    assert info.value.args[0].startswith("WriteTimeout:")


# --- bounded answers --------------------------------------------------------------------


BLOCK = b"x" * 65536


@pytest.mark.parametrize(
    ("head", "block"),
    [
        pytest.param(
            b"HTTP/1.1 200 OK\r\nContent-Length: 100000000000\r\n\r\n", BLOCK, id="length"
        ),
        pytest.param(
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n",
            b"10000\r\n" + BLOCK + b"\r\n",
            id="chunked",
        ),
    ],
)
def test_a_huge_body_is_truncated_in_bounded_memory_and_time(serve, transport, head, block):
    """An endless answer yields its status and the first MiB of body, fast, in bounded memory."""

    def handler(server: RawServer, conn: socket.socket) -> None:
        server.read_request(conn)
        conn.sendall(head)
        while not server.stopped.is_set():
            conn.sendall(block)

    t = transport(serve(handler).url, timeout=5.0)
    tracemalloc.start()
    started = time.monotonic()
    try:
        response = t.send([b'{"n":1}'])
        elapsed = time.monotonic() - started
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert response.status == 200
    assert len(response.body) == MAX_RESPONSE_BYTES
    assert elapsed < 2.0
    assert peak < 8 * MAX_RESPONSE_BYTES


def test_a_compressed_answer_is_decoded_to_at_most_a_mib(serve, transport):
    """A gzip bomb the server sends unasked is decoded to the first MiB, in bounded memory."""
    bomb = gzip.compress(b"\0" * (32 << 20), compresslevel=1)  # 32 MiB in ~150 KiB

    def handler(server: RawServer, conn: socket.socket) -> None:
        server.read_request(conn)
        head = f"HTTP/1.1 200 OK\r\nContent-Encoding: gzip\r\nContent-Length: {len(bomb)}\r\n\r\n"
        conn.sendall(head.encode() + bomb)

    t = transport(serve(handler).url)
    tracemalloc.start()
    try:
        response = t.send([b'{"n":1}'])
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert response.body == b"\0" * MAX_RESPONSE_BYTES
    assert peak < 8 * MAX_RESPONSE_BYTES


def test_a_small_compressed_answer_is_decoded(serve, transport):
    """A gzip-encoded JSON answer reaches the caller decoded, as httpx would have done."""
    body = gzip.compress(b'{"validation_failed":[]}')

    def handler(server: RawServer, conn: socket.socket) -> None:
        server.read_request(conn)
        head = f"HTTP/1.1 200 OK\r\nContent-Encoding: gzip\r\nContent-Length: {len(body)}\r\n\r\n"
        conn.sendall(head.encode() + body)

    response = transport(serve(handler).url).send([b'{"n":1}'])
    assert response.json() == {"validation_failed": []}
    assert response.headers["content-encoding"] == "gzip"


def test_a_corrupt_compressed_answer_is_a_transport_error(serve, transport):
    """An answer whose body does not decode as its Content-Encoding says raises TransportError."""

    def handler(server: RawServer, conn: socket.socket) -> None:
        server.read_request(conn)
        conn.sendall(
            b"HTTP/1.1 200 OK\r\nContent-Encoding: gzip\r\nContent-Length: 9\r\n\r\nnot gzip!"
        )

    _, error = timed_failure(transport(serve(handler).url))
    assert error.args[0].startswith("DecodingError:")
    assert_clean(error)


# --- ordinary answers still work ------------------------------------------------------


def test_an_ordinary_answer_comes_back_whole_on_one_kept_alive_connection(serve, transport):
    """Two sends get the status, lower-cased headers and body, over one reused connection."""

    def handler(server: RawServer, conn: socket.socket) -> None:
        while server.read_request(conn):
            conn.sendall(OK.replace(b"Content-Type", b"X-Meter"))

    server = serve(handler)
    t = transport(server.url, gzip=True)
    for _ in range(2):
        response = t.send([b'{"n":1}', b'{"n":2}'])
        assert (response.status, response.body) == (200, b"{}")
        assert response.headers["x-meter"] == "application/json"
    assert len(server.accepted) == 1
    head, _, body = server.requests[0].partition(b"\r\n\r\n")
    assert gzip.decompress(body) == b'{"events":[{"n":1},{"n":2}]}'
    assert f"Authorization: Bearer {KEY}".encode() in head.split(b"\r\n")
    assert b"Accept-Encoding: identity" in head.split(b"\r\n")


def test_an_error_status_is_an_answer_not_an_error(serve, transport):
    """A 503 with a body is returned as a Response: the transport never judges statuses."""

    def handler(server: RawServer, conn: socket.socket) -> None:
        server.read_request(conn)
        conn.sendall(b"HTTP/1.1 503 Service Unavailable\r\nContent-Length: 4\r\n\r\nbusy")

    response = transport(serve(handler).url).send([b'{"n":1}'])
    assert (response.status, response.body) == (503, b"busy")


def test_a_proxy_from_the_environment_is_used(serve, transport, monkeypatch):
    """``HTTP_PROXY`` routes the request through that proxy, as httpx did by default."""

    def proxy(server: RawServer, conn: socket.socket) -> None:
        server.read_request(conn)
        conn.sendall(OK)

    proxy_server = serve(proxy)
    monkeypatch.setenv("HTTP_PROXY", proxy_server.url.rsplit("/v1", 1)[0])
    monkeypatch.delenv("NO_PROXY", raising=False)
    monkeypatch.delenv("no_proxy", raising=False)
    response = transport("http://127.0.0.1:9/v1/ingest").send([b'{"n":1}'])
    assert response.status == 200
    assert proxy_server.requests[0].startswith(b"POST http://127.0.0.1:9/v1/ingest HTTP/1.1")


# --- only TransportError, never a secret ------------------------------------------------


@pytest.mark.parametrize(
    ("answer", "kind"),
    [
        pytest.param(b"NOT HTTP AT ALL\r\n\r\n", "RemoteProtocolError", id="garbage"),
        pytest.param(b"", "RemoteProtocolError", id="closed"),
        pytest.param(
            b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\n{}",
            "RemoteProtocolError",
            id="short-body",
        ),
        pytest.param(
            b"HTTP/1.1 200 OK\r\n" + b"X: " + b"y" * 200_000 + b"\r\n\r\n",
            "RemoteProtocolError",
            id="huge-header",
        ),
    ],
)
def test_a_broken_answer_is_a_transport_error(serve, transport, answer, kind):
    """Anything that is not a usable HTTP/1.1 answer raises TransportError, nothing else."""

    def handler(server: RawServer, conn: socket.socket) -> None:
        server.read_request(conn)
        conn.sendall(answer)

    _, error = timed_failure(transport(serve(handler).url))
    assert error.args[0].startswith(f"{kind}:")
    assert_clean(error)


def test_a_server_echoing_the_request_never_puts_the_key_in_the_error(serve, transport):
    """A server that sends the request back as its answer does not get the key into the error."""

    def handler(server: RawServer, conn: socket.socket) -> None:
        request = server.read_request(conn)
        head = request.partition(b"\r\n\r\n")[0]
        conn.sendall(b"HTTP/1.1 200 OK\r\n" + head.replace(b"\r\n", b"\r\n ") + b"\r\n\r\n")

    _, error = timed_failure(transport(serve(handler).url))
    assert_clean(error)


def test_a_refused_connection_is_a_transport_error(transport):
    """A port nobody listens on raises TransportError naming the errno."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    _, error = timed_failure(transport(f"http://127.0.0.1:{port}/v1/ingest"))
    assert error.args[0].startswith("ConnectError:")
    assert "111" in error.args[0] or "refused" in error.args[0].lower()
    assert_clean(error)


@pytest.mark.parametrize(
    "api_key",
    [
        pytest.param(KEY + "é", id="non-ascii"),
        pytest.param(KEY + "\n", id="newline"),
        pytest.param(KEY + "\r\nX-Injected: 1", id="header-injection"),
        pytest.param(KEY + "\0", id="nul"),
    ],
)
def test_an_unsendable_api_key_fails_each_send_without_naming_it(serve, transport, api_key):
    """A key no header can carry builds a transport whose sends raise TransportError, keyless."""
    server = serve(lambda s, c: c.sendall(OK))
    _, error = timed_failure(transport(server.url, api_key=api_key))
    assert error.args[0] == "the API key cannot be sent in an HTTP header"
    assert_clean(error)
    assert server.accepted == []


@pytest.mark.parametrize(
    "url",
    [
        pytest.param("http://127.0.0.1:notaport/v1/ingest", id="port"),
        pytest.param("ftp://127.0.0.1/v1/ingest", id="scheme"),
        pytest.param("/v1/ingest", id="relative"),
        pytest.param("http://[::1/v1/ingest", id="bracket"),
        pytest.param("http://exa mple.invalid/v1/ingest", id="space"),
    ],
)
def test_an_invalid_url_fails_each_send_with_a_transport_error(transport, url):
    """A URL httpx cannot use builds a transport whose sends raise TransportError."""
    _, error = timed_failure(transport(url))
    assert_clean(error)


def test_an_unsupported_proxy_fails_each_send_with_a_transport_error(transport, monkeypatch):
    """A SOCKS proxy in the environment, which this transport cannot use, fails each send."""
    monkeypatch.setenv("ALL_PROXY", "socks5://127.0.0.1:9")
    _, error = timed_failure(transport("http://127.0.0.1:9/v1/ingest"))
    assert "proxy" in error.args[0]
    assert_clean(error)
