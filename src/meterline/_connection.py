"""The connections under ``HttpxTransport``: an httpcore pool on a network backend of our
choosing (through the environment's HTTP(S) proxy, if it names one), seen by httpx through
``CoreTransport``, the bounded reading of an answer's body, and what a failed request is
called in a message.

Imported with the transport, at import time: nothing here is imported by a first request
on a worker thread (see ``_transport`` on fork safety).
"""

from __future__ import annotations

import urllib.request
import zlib
from collections.abc import Iterable, Iterator
from typing import cast

import httpcore
import httpx

__all__ = ["MAX_RESPONSE_BYTES", "CoreTransport", "decode", "describe", "pool", "read_at_most"]

MAX_RESPONSE_BYTES = 1024 * 1024  # of a body, raw and decoded; the rest is not read


class CoreTransport(httpx.BaseTransport):
    """httpx's ``HTTPTransport`` reduced to what meterline uses, over a pool of our choosing.

    ``httpx.HTTPTransport`` builds its httpcore pool itself and takes no network backend;
    rather than replacing its private ``_pool``, this maps a request to httpcore and back
    through public APIs only. httpcore's exceptions pass through unmapped:
    ``HttpxTransport.send()`` turns them and httpx's alike into ``TransportError``.
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


def pool(
    url: httpx.URL | None, backend: httpcore.NetworkBackend, *, other_origins: bool = False
) -> httpcore.ConnectionPool:
    """A pool for ``url`` (through the environment's proxy for it, if any) on ``backend``;
    ``other_origins``: requests may go elsewhere too (a session endpoint)."""
    # SSL_CERT_FILE or SSL_CERT_DIR, else certifi's; loading them takes about 20 ms of CPU,
    # so not for a plain-HTTP endpoint (a local relay, a test server), which never uses it.
    tls = url is None or url.scheme != "http" or other_origins
    ssl_context = httpx.create_ssl_context() if tls else None
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


def read_at_most(chunks: Iterator[bytes], limit: int) -> bytes:
    """The first ``limit`` bytes of ``chunks``; the rest is never read."""
    parts: list[bytes] = []
    size = 0
    for chunk in chunks:
        parts.append(chunk[: limit - size])
        size += len(parts[-1])
        if size >= limit:
            break
    return b"".join(parts)


def decode(raw: bytes, coding: str) -> bytes:
    """``raw`` decoded per its Content-Encoding, to at most ``MAX_RESPONSE_BYTES``.

    The request asks for ``identity``; a server that compresses anyway is decoded for gzip
    and deflate (a truncated body yields what it holds) and passed on as is otherwise.
    """
    if coding.strip().lower() not in ("gzip", "x-gzip", "deflate"):
        return raw
    decoder = zlib.decompressobj(zlib.MAX_WBITS | 32)  # a gzip or zlib header, detected
    return decoder.decompress(raw, MAX_RESPONSE_BYTES)


def describe(exc: Exception, connect_bound: float, bound: float) -> tuple[str, str]:
    """The name and text of a message for ``exc`` that quote no header (the caller still
    redacts its secrets from the text): h11 and the codecs quote what they refused."""
    name = type(exc).__name__
    if isinstance(exc, (httpx.ConnectTimeout, httpcore.ConnectTimeout)):
        text = f"no connection within {connect_bound:g} s"
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
    return name, text
