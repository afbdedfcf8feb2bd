"""A whole-request deadline for httpcore: every connect, TLS handshake, read and write is
clamped to the time left, so a server that trickles its answer cannot hold a request.

httpx's timeouts apply to each socket operation: a server sending one byte every half
second never trips a one-second read timeout. ``DeadlineBackend`` wraps httpcore's
``SyncBackend`` and gives each operation at most the time left before the deadline of
the request running on the calling thread (``within(seconds)``), raising httpcore's own
timeout errors once it has passed. Outside ``within`` it changes nothing.

The deadline is thread-local because a synchronous httpcore request does all its I/O on
the thread that sends it, while the connections themselves are pooled and shared.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING

import httpcore

if TYPE_CHECKING:
    import ssl

__all__ = ["DeadlineBackend", "within"]

# A large write is re-clamped every this many bytes, so a server that stops reading cannot
# stretch a large body. (httpcore waits up to the given timeout for each socket send, so a
# piece the kernel takes in several sends can still overrun a little; smaller pieces cost a
# system call each, and 64 KiB keeps a usual batch to one write, as before.)
WRITE_PIECE = 64 * 1024

_local = threading.local()


@contextmanager
def within(seconds: float) -> Iterator[None]:
    """Bound every httpcore operation on this thread to end ``seconds`` from now."""
    previous: float | None = getattr(_local, "deadline", None)
    _local.deadline = time.monotonic() + seconds
    try:
        yield
    finally:
        _local.deadline = previous


def _clamp(timeout: float | None, error: type[httpcore.TimeoutException]) -> float | None:
    """The operation's own timeout, shortened to the time left; raise once none is left."""
    deadline: float | None = getattr(_local, "deadline", None)
    if deadline is None:
        return timeout
    left = deadline - time.monotonic()
    if left <= 0:
        raise error("the request's deadline passed")
    return left if timeout is None else min(timeout, left)


class DeadlineStream(httpcore.NetworkStream):
    """A network stream whose every operation ends by the calling thread's deadline."""

    def __init__(self, inner: httpcore.NetworkStream) -> None:
        self._inner = inner

    def read(self, max_bytes: int, timeout: float | None = None) -> bytes:
        return self._inner.read(max_bytes, _clamp(timeout, httpcore.ReadTimeout))

    def write(self, buffer: bytes, timeout: float | None = None) -> None:
        if len(buffer) <= WRITE_PIECE:  # most requests: one piece, no copy
            self._inner.write(buffer, _clamp(timeout, httpcore.WriteTimeout))
            return
        view = memoryview(buffer)
        for start in range(0, len(view), WRITE_PIECE):
            piece = bytes(view[start : start + WRITE_PIECE])
            self._inner.write(piece, _clamp(timeout, httpcore.WriteTimeout))

    def close(self) -> None:
        self._inner.close()

    def start_tls(
        self,
        ssl_context: ssl.SSLContext,
        server_hostname: str | None = None,
        timeout: float | None = None,
    ) -> httpcore.NetworkStream:
        # The ssl module bounds a whole handshake by the socket timeout, not each read.
        limit = _clamp(timeout, httpcore.ConnectTimeout)
        return DeadlineStream(self._inner.start_tls(ssl_context, server_hostname, limit))

    def get_extra_info(self, info: str) -> object:
        return self._inner.get_extra_info(info)


class DeadlineBackend(httpcore.NetworkBackend):
    """httpcore's ``SyncBackend`` with connects and streams bounded by the deadline."""

    def __init__(self, inner: httpcore.NetworkBackend | None = None) -> None:
        self._inner = httpcore.SyncBackend() if inner is None else inner

    def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: Iterable[httpcore.SOCKET_OPTION] | None = None,
    ) -> httpcore.NetworkStream:
        limit = _clamp(timeout, httpcore.ConnectTimeout)
        stream = self._inner.connect_tcp(host, port, limit, local_address, socket_options)
        return DeadlineStream(stream)

    def connect_unix_socket(
        self,
        path: str,
        timeout: float | None = None,
        socket_options: Iterable[httpcore.SOCKET_OPTION] | None = None,
    ) -> httpcore.NetworkStream:
        limit = _clamp(timeout, httpcore.ConnectTimeout)
        return DeadlineStream(self._inner.connect_unix_socket(path, limit, socket_options))

    def sleep(self, seconds: float) -> None:
        limit = _clamp(seconds, httpcore.ConnectTimeout)
        self._inner.sleep(seconds if limit is None else limit)
