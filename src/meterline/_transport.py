"""How a batch reaches the ingest API: the ``Transport`` protocol and Orb's wire format over httpx.

A transport takes the already-serialized events of one batch and returns the server's
``Response``; a connection problem or timeout raises ``TransportError``. It never retries,
never journals and never decides what a status means: that is the delivery module's job.

``HttpxTransport`` bounds each request as a whole: its ``timeout`` (or a shorter one passed
to ``send()``) covers connecting, sending and reading the whole answer, because its httpcore
pool runs on ``DeadlineBackend``, which clamps every socket operation to the time left.
At most ``MAX_RESPONSE_BYTES`` of an answer's body are read.

Fork safety: everything the send path needs is imported here, at import time, never by
the first request on a worker thread. A fork (``os.fork()`` or uWSGI's, from C) while
another thread imports a module leaves that module's import lock held in the child for
ever; ``tests/unit/test_transport_imports.py`` checks that a send imports nothing.
"""

from __future__ import annotations

import encodings.idna  # noqa: F401 - socket.getaddrinfo encodes host names with it
import gzip as _gzip
import re
import urllib.request
import zlib
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Protocol, cast, runtime_checkable

import certifi
import h11  # noqa: F401 - httpcore's HTTP/1.1 state machine, imported before any fork
import httpcore
import httpx
import idna  # noqa: F401 - httpx encodes non-ASCII host names with it
import orjson

from ._deadline import DeadlineBackend, within
from ._version import __version__

__all__ = [
    "HttpxTransport",
    "Response",
    "Transport",
    "TransportError",
    "encode_batch",
    "rejected_keys",
]

USER_AGENT = f"meterline/{__version__}"
MAX_RESPONSE_BYTES = 1024 * 1024  # of a body, raw and decoded; the rest is not read

# ``certifi.where()`` imports from importlib.resources on its first call, which would
# otherwise happen when the first transport is built, on a worker thread.
certifi.where()

# What h11 accepts in a header value, checked here so that an invalid one is refused with
# our message instead of h11's, which quotes the value (the API key).
_HEADER_VALUE = re.compile(r"[\x21-\x7e]([\x20-\x7e\t]*[\x21-\x7e])?")

# What a request can end with when no usable answer came back: all become TransportError.
_FAILURES: tuple[type[Exception], ...] = (
    httpx.HTTPError,
    httpx.InvalidURL,
    httpx.StreamError,
    httpcore.TimeoutException,  # httpcore's errors reach send() unmapped (_CoreTransport)
    httpcore.NetworkError,
    httpcore.ProtocolError,
    httpcore.ProxyError,
    httpcore.UnsupportedProtocol,
    OSError,
    ValueError,  # UnicodeError included
    zlib.error,
)


class TransportError(Exception):
    """The request got no usable HTTP answer (refused, reset, timed out, not HTTP, not
    sendable); worth retrying. Its message names no header and no secret."""


@dataclass(frozen=True)
class Response:
    """An HTTP answer: status, headers with lower-case names, and the raw body."""

    status: int
    headers: Mapping[str, str] = field(default_factory=dict)
    body: bytes = b""

    def json(self) -> object:
        """The body decoded as JSON, or ``None`` when it is not JSON."""
        try:
            return orjson.loads(self.body)
        except orjson.JSONDecodeError:
            return None


@runtime_checkable
class Transport(Protocol):
    """Sends one batch of serialized events and returns the server's answer."""

    def send(self, events: Sequence[bytes], *, timeout: float | None = None) -> Response:
        """POST the batch within ``timeout`` seconds (None: the transport's own); raise
        ``TransportError`` when no HTTP answer came back."""
        ...

    def close(self) -> None:
        """Release connections; the transport is not used again."""
        ...


def encode_batch(events: Sequence[bytes]) -> bytes:
    """Orb's ``IngestRequestBody``: ``{"events": [...]}`` from the events' exact bytes."""
    return b'{"events":[' + b",".join(events) + b"]}"


def rejected_keys(response: Response) -> dict[str, list[str]]:
    """Keys the server named as invalid, with its reasons (200 or 400 bodies alike).

    Orb answers 200 with ``validation_failed: [{idempotency_key, validation_errors}]``; a
    400 may carry the same entries in ``validation_errors``. Anything else yields ``{}``.
    """
    doc = response.json()
    if not isinstance(doc, dict):
        return {}
    found: dict[str, list[str]] = {}
    for name in ("validation_failed", "validation_errors"):
        entries = doc.get(name)
        if not isinstance(entries, list):
            continue
        for entry in entries:
            if isinstance(entry, dict) and isinstance(entry.get("idempotency_key"), str):
                reasons = entry.get("validation_errors")
                texts = [str(r) for r in reasons] if isinstance(reasons, list) else []
                found.setdefault(entry["idempotency_key"], []).extend(texts or ["invalid"])
    return found


class HttpxTransport:
    """``POST {base_url}/ingest`` over one keep-alive ``httpx.Client``, each request bounded
    as a whole by ``timeout`` (connecting by ``connect_timeout`` too).

    Construction never raises for what only a request can report: an API key no header can
    carry, an invalid URL or an unusable proxy make every ``send()`` raise
    ``TransportError`` instead. HTTP(S) proxies come from the environment (``HTTPS_PROXY``,
    ``HTTP_PROXY``, ``ALL_PROXY``, ``NO_PROXY``), as the standard library reads them.
    """

    def __init__(
        self,
        url: str,
        api_key: str | None,
        *,
        timeout: float,
        connect_timeout: float,
        gzip: bool = False,
    ) -> None:
        self._url = url
        self._gzip = gzip
        self._timeout = timeout
        self._connect_timeout = connect_timeout
        self._secrets = [f"Bearer {api_key}", api_key] if api_key else []
        self._problem: str | None = None
        headers = {
            "User-Agent": USER_AGENT,
            "Content-Type": "application/json",
            # The answer is a small JSON document: nothing to gain from compression, and
            # an encoding decoded by httpx would not be bounded by MAX_RESPONSE_BYTES.
            "Accept-Encoding": "identity",
        }
        if api_key:
            if _HEADER_VALUE.fullmatch(api_key) is None:
                self._problem = "the API key cannot be sent in an HTTP header"
            else:
                headers["Authorization"] = f"Bearer {api_key}"
        if gzip:
            headers["Content-Encoding"] = "gzip"
        try:
            pool = _pool(httpx.URL(url), DeadlineBackend())
        except _FAILURES as exc:
            self._problem = self._describe(exc, timeout)
            pool = _pool(None, DeadlineBackend())
        self._client = httpx.Client(
            transport=_CoreTransport(pool),
            headers=headers,
            timeout=httpx.Timeout(timeout, connect=connect_timeout),
            follow_redirects=False,
            trust_env=False,  # proxies are resolved above; nothing else is wanted from it
        )

    def __repr__(self) -> str:
        return f"HttpxTransport(url={self._url!r}, gzip={self._gzip})"

    def send(self, events: Sequence[bytes], *, timeout: float | None = None) -> Response:
        bound = self._timeout if timeout is None else min(timeout, self._timeout)
        error = self._problem
        if error is None:
            try:
                with within(bound):
                    return self._post(encode_batch(events), bound)
            except _FAILURES as exc:
                error = self._describe(exc, bound)
        # Raised here, outside the handler, so the exception carries no context: httpx's
        # exceptions hold the request, and the request holds the Authorization header.
        raise TransportError(error)

    def close(self) -> None:
        self._client.close()

    def _post(self, body: bytes, bound: float) -> Response:
        if self._gzip:
            body = _gzip.compress(body, compresslevel=5)
        limits = httpx.Timeout(bound, connect=min(self._connect_timeout, bound))
        request = self._client.build_request("POST", self._url, content=body, timeout=limits)
        answer = self._client.send(request, stream=True)
        try:
            raw = _read_at_most(answer.iter_raw(), MAX_RESPONSE_BYTES)
        finally:
            answer.close()  # an unread rest closes the connection instead of being drained
        headers = {k.lower(): v for k, v in answer.headers.items()}
        content = _decode(raw, headers.get("content-encoding", ""))
        return Response(answer.status_code, headers, content)

    def _describe(self, exc: Exception, bound: float) -> str:
        """A message for ``exc`` that names no header and no secret."""
        name = type(exc).__name__
        if isinstance(exc, (httpx.ConnectTimeout, httpcore.ConnectTimeout)):
            text = f"no connection within {min(self._connect_timeout, bound):g} s"
        elif isinstance(exc, (httpx.TimeoutException, httpcore.TimeoutException)):
            text = f"no complete answer within {bound:g} s"
        elif isinstance(exc, (httpx.LocalProtocolError, httpcore.LocalProtocolError)):
            text = "the request could not be written as HTTP/1.1"  # h11 quotes the header
        elif isinstance(exc, (httpx.RemoteProtocolError, httpcore.RemoteProtocolError)):
            text = "the server closed the connection or did not answer in HTTP/1.1"
        elif isinstance(exc, zlib.error):
            name, text = "DecodingError", "the answer's body does not decode as it says"
        elif isinstance(exc, UnicodeError):
            text = "a header or the URL is not ASCII"  # the message quotes the character
        else:
            text = str(exc) or "no answer"
        for secret in self._secrets:
            text = text.replace(secret, "[redacted]")
        return f"{name}: {text}"


class _CoreTransport(httpx.BaseTransport):
    """httpx's ``HTTPTransport`` reduced to what meterline uses, over a pool of our choosing.

    ``httpx.HTTPTransport`` builds its httpcore pool itself and takes no network backend;
    rather than replacing its private ``_pool``, this maps a request to httpcore and back
    through public APIs only. httpcore's exceptions pass through unmapped: ``send()``
    turns them and httpx's alike into ``TransportError``.
    """

    def __init__(self, pool: httpcore.ConnectionPool) -> None:
        self._pool = pool

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        answer = self._pool.handle_request(
            httpcore.Request(
                method=request.method,
                url=httpcore.URL(
                    scheme=request.url.raw_scheme,
                    host=request.url.raw_host,
                    port=request.url.port,
                    target=request.url.raw_path,
                ),
                headers=request.headers.raw,
                content=request.stream,
                extensions=request.extensions,
            )
        )
        return httpx.Response(
            status_code=answer.status,
            headers=answer.headers,
            stream=_CoreStream(cast("Iterable[bytes]", answer.stream)),
            extensions=answer.extensions,
        )

    def close(self) -> None:
        self._pool.close()


class _CoreStream(httpx.SyncByteStream):
    """An httpcore response body as httpx wants it; closing it releases the connection."""

    def __init__(self, stream: Iterable[bytes]) -> None:
        self._stream = stream

    def __iter__(self) -> Iterator[bytes]:
        yield from self._stream

    def close(self) -> None:
        close = getattr(self._stream, "close", None)
        if close is not None:
            close()


def _pool(url: httpx.URL | None, backend: httpcore.NetworkBackend) -> httpcore.ConnectionPool:
    """A pool for ``url`` (through the environment's proxy for it, if any) on ``backend``."""
    ssl_context = httpx.create_ssl_context()  # SSL_CERT_FILE or SSL_CERT_DIR, else certifi's
    proxy = None if url is None else _environment_proxy(url)
    if proxy is None:
        return httpcore.ConnectionPool(
            ssl_context=ssl_context,
            max_connections=4,
            max_keepalive_connections=2,
            keepalive_expiry=5.0,
            network_backend=backend,
        )
    return httpcore.HTTPProxy(
        proxy_url=httpcore.URL(
            scheme=proxy.url.raw_scheme,
            host=proxy.url.raw_host,
            port=proxy.url.port,
            target=proxy.url.raw_path,
        ),
        proxy_auth=proxy.raw_auth,
        proxy_headers=proxy.headers.raw,
        proxy_ssl_context=proxy.ssl_context,
        ssl_context=ssl_context,
        max_connections=4,
        max_keepalive_connections=2,
        keepalive_expiry=5.0,
        network_backend=backend,
    )


def _environment_proxy(url: httpx.URL) -> httpx.Proxy | None:
    """The HTTP(S) proxy the environment names for ``url``, or None."""
    proxies = urllib.request.getproxies()
    address = proxies.get(url.scheme) or proxies.get("all")
    if not address or urllib.request.proxy_bypass(url.host):
        return None
    if "://" not in address:
        address = f"http://{address}"
    proxy = httpx.Proxy(address)
    if proxy.url.scheme not in ("http", "https"):
        raise ValueError(f"unsupported proxy scheme {proxy.url.scheme!r} (http or https only)")
    return proxy


def _read_at_most(chunks: Iterator[bytes], limit: int) -> bytes:
    """The first ``limit`` bytes of ``chunks``; the rest is never read."""
    parts: list[bytes] = []
    size = 0
    for chunk in chunks:
        parts.append(chunk[: limit - size])
        size += len(parts[-1])
        if size >= limit:
            break
    return b"".join(parts)


def _decode(raw: bytes, coding: str) -> bytes:
    """``raw`` decoded per its Content-Encoding, to at most ``MAX_RESPONSE_BYTES``.

    The request asks for ``identity``; a server that compresses anyway is decoded for gzip
    and deflate (a truncated body yields what it holds) and passed on as is otherwise.
    """
    if coding.strip().lower() not in ("gzip", "x-gzip", "deflate"):
        return raw
    decoder = zlib.decompressobj(zlib.MAX_WBITS | 32)  # a gzip or zlib header, detected
    return decoder.decompress(raw, MAX_RESPONSE_BYTES)
