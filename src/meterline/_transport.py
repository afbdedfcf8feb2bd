"""How a batch reaches the ingest API: the ``Transport`` protocol and an httpx transport.

A transport takes the already-serialized events of one batch and returns the server's
``Response``; a connection problem or timeout raises ``TransportError``. It never retries,
never journals and never decides what a status means: that is the delivery module's job.
It knows no vendor: the envelope, the headers and, for a destination with session tokens
(Stripe), how to open a session are handed to it by the client from the destination.

``HttpxTransport`` bounds each request as a whole: its ``timeout`` (or a shorter one passed
to ``send()``) covers connecting, sending and reading the whole answer, because its httpcore
pool runs on ``DeadlineBackend``, which clamps every socket operation to the time left.
At most ``MAX_RESPONSE_BYTES`` of an answer's body are read. The pool, the proxy and the
bounded reading of a body are in ``_connection``.

Fork safety: everything the send path needs is imported here, at import time, never by
the first request on a worker thread. A fork (``os.fork()`` or uWSGI's, from C) while
another thread imports a module leaves that module's import lock held in the child for
ever; ``tests/unit/test_transport_imports.py`` checks that a send imports nothing.

Why this module is long: the session handling (open, renew before expiry, renew and resend
once on expiry or refusal, scrub every live credential from answers) shares the client, the
lock and the secrets of the request path it wraps; the pool, the proxy and the bounded body
reading are already ``_connection``.
"""

from __future__ import annotations

import encodings.idna  # noqa: F401 - socket.getaddrinfo encodes host names with it
import gzip as _gzip
import re
import threading
import time
import zlib
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Protocol, runtime_checkable

import certifi
import h11  # noqa: F401 - httpcore's HTTP/1.1 state machine, imported before any fork
import httpcore
import httpx
import idna  # noqa: F401 - httpx encodes non-ASCII host names with it

from ._connection import MAX_RESPONSE_BYTES, CoreTransport, decode, describe, pool, read_at_most
from ._deadline import DeadlineBackend, within
from ._response import Response, Session, SessionGrant
from ._version import __version__

__all__ = [
    "HttpxTransport",
    "Response",
    "Transport",
    "TransportError",
]

USER_AGENT = f"meterline/{__version__}"
SESSION_MARGIN = 60.0  # seconds before a session's expiry when a new one is opened

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
    httpcore.TimeoutException,  # httpcore's errors reach send() unmapped (CoreTransport)
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


Envelope = Callable[[Sequence[bytes]], bytes]


class HttpxTransport:
    """``POST url`` over one keep-alive ``httpx.Client``, each request bounded as a whole by
    ``timeout`` (connecting by ``connect_timeout`` too).

    ``envelope`` makes a request body from a batch's events; ``auth`` holds the headers
    that authenticate it (None: ``Authorization: Bearer <api_key>``); ``session``, when
    given, opens short-lived sessions whose headers are sent instead, renewed before they
    expire and when an answer says one has, the same bytes then sent once more.

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
        envelope: Envelope,
        gzip: bool = False,
        content_type: str = "application/json",
        auth: Mapping[str, str] | None = None,
        session: Session | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._url = url
        self._api_key = api_key
        self._gzip = gzip
        self._envelope = envelope
        self._timeout = timeout
        self._connect_timeout = connect_timeout
        self._session = session
        self._grant: SessionGrant | None = None
        self._session_lock = threading.Lock()
        self._clock = clock
        self._secrets = [f"Bearer {api_key}", api_key] if api_key else []
        self._problem: str | None = None
        headers = {
            "User-Agent": USER_AGENT,
            "Content-Type": content_type,
            # The answer is a small JSON document: nothing to gain from compression, and
            # an encoding decoded by httpx would not be bounded by MAX_RESPONSE_BYTES.
            "Accept-Encoding": "identity",
        }
        if api_key and _HEADER_VALUE.fullmatch(api_key) is None:
            self._problem = "the API key cannot be sent in an HTTP header"
        elif session is None:
            given = (
                auth
                if auth is not None
                else ({"Authorization": f"Bearer {api_key}"} if api_key else {})
            )
            for name, value in given.items():
                if _HEADER_VALUE.fullmatch(value) is None:
                    self._problem = f"the {name} header cannot be sent in HTTP"
                headers[name] = value
                self._secrets.extend(_credentials([(name, value)]))
        if gzip:
            headers["Content-Encoding"] = "gzip"
        self._secrets.sort(key=len, reverse=True)  # longest first: "Bearer k" before "k"
        self._key_secrets = tuple(self._secrets)  # a session's are added per grant
        try:
            connections = pool(httpx.URL(url), DeadlineBackend(), other_origins=session is not None)
        except _FAILURES as exc:
            self._problem = self._describe(exc, timeout)
            connections = pool(None, DeadlineBackend())
        self._client = httpx.Client(
            transport=CoreTransport(connections),
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
                    body = self._envelope(events)
                    if self._session is None:
                        return self._post(self._url, body, None, bound)
                    return self._send_in_session(body, bound)
            except _FAILURES as exc:
                error = self._describe(exc, bound)
            except _SessionFailed as exc:
                error = str(exc)
        # Raised here, outside the handler, so the exception carries no context: httpx's
        # exceptions hold the request, and the request holds the Authorization header.
        raise TransportError(error)

    def close(self) -> None:
        self._client.close()

    # -- sessions (Stripe's meter event stream) ----------------------------------------

    def _send_in_session(self, body: bytes, bound: float) -> Response:
        assert self._session is not None
        grant = self._current_grant(bound, renew=False)
        if isinstance(grant, Response):
            return grant  # the session request was refused: that is the batch's answer
        answer = self._post(self._url, body, grant.headers, bound)
        # Expired, or refused (a revoked token: the key itself just opened a session): a
        # new session, and the same bytes once more.
        if answer.status not in (401, 403) and not self._session.expired(answer):
            return answer
        grant = self._current_grant(bound, renew=True, stale=grant)
        if isinstance(grant, Response):
            return grant
        return self._post(self._url, body, grant.headers, bound)  # the same bytes, once more

    def _current_grant(
        self, bound: float, *, renew: bool, stale: SessionGrant | None = None
    ) -> SessionGrant | Response:
        """The session to send with: the one held, unless it is near its end (or ``renew``
        and it is still ``stale``); else a new one. A refusal (401/403, or 404/405: a wrong
        base_url) is returned as the answer; any other failure raises ``_SessionFailed``
        (transient), as does waiting longer than ``bound`` for another send's session."""
        assert self._session is not None
        if not self._session_lock.acquire(timeout=max(0.0, bound)):
            raise _SessionFailed(f"another send was opening a session for more than {bound:g} s")
        try:
            grant = self._grant
            fresh = grant is not None and self._clock() < grant.expires_at - SESSION_MARGIN
            if fresh and not (renew and grant is stale):
                assert grant is not None
                return grant
            self._grant, previous = None, grant
            url, body, headers = self._session.request(self._api_key)
            answer = self._post(url, body, headers, bound)
            if answer.status in (401, 403, 404, 405):  # a wrong key or base_url: refused
                return answer
            if not 200 <= answer.status < 300:
                raise _SessionFailed(f"the session request was answered HTTP {answer.status}")
            try:
                grant = self._session.grant(answer)
            except Exception:  # noqa: BLE001 - a destination's parser must not leak a raise
                grant = None
            if grant is None:
                raise _SessionFailed("the session answer holds no usable session")
            for value in grant.headers.values():
                if _HEADER_VALUE.fullmatch(value) is None:
                    raise _SessionFailed("the session's token cannot be sent in an HTTP header")
            # The key's, the replaced session's (answers still in flight) and the new one's:
            # not every token ever granted, which would grow for as long as the process runs.
            old = previous.headers.items() if previous is not None else ()
            new = _credentials(grant.headers.items())
            held = {*self._key_secrets, *_credentials(old), *new}
            self._secrets = sorted(held, key=len, reverse=True)
            self._grant = grant
            return grant

        finally:
            self._session_lock.release()

    def _post(
        self, url: str, body: bytes, headers: Mapping[str, str] | None, bound: float
    ) -> Response:
        if self._gzip:
            body = _gzip.compress(body, compresslevel=5)
        limits = httpx.Timeout(bound, connect=min(self._connect_timeout, bound))
        request = self._client.build_request(
            "POST", url, content=body, headers=headers, timeout=limits
        )
        answer = self._client.send(request, stream=True)
        try:
            raw = read_at_most(answer.iter_raw(), MAX_RESPONSE_BYTES)
        finally:
            answer.close()  # an unread rest closes the connection instead of being drained
        names = {k.lower(): v for k, v in answer.headers.items()}
        content = decode(raw, names.get("content-encoding", ""))
        content = self._scrub(content)
        return Response(answer.status_code, names, content)

    @property
    def secrets(self) -> tuple[str, ...]:
        """The credentials this transport sends (key, session tokens), longest first: what
        no text derived from an answer may show."""
        return tuple(self._secrets)

    def _scrub(self, content: bytes) -> bytes:
        """An answer's body without a session token or key a server echoed."""
        for secret in self._secrets:
            raw = secret.encode()
            if raw in content:
                content = content.replace(raw, b"[redacted]")
        return content

    def _describe(self, exc: Exception, bound: float) -> str:
        """A message for ``exc`` that names no header and no secret."""
        name, text = describe(exc, min(self._connect_timeout, bound), bound)
        for secret in self._secrets:
            text = text.replace(secret, "[redacted]")
        return f"{name}: {text}"


def _credentials(headers: Iterable[tuple[str, str]]) -> list[str]:
    """The values of the headers that carry a credential, and the credential inside each
    (``Bearer tok`` holds ``tok``): a server may quote either."""
    found = []
    for name, value in headers:
        if not any(mark in name.lower() for mark in _CREDENTIAL_HEADERS):
            continue
        found.append(value)
        scheme, _, rest = value.partition(" ")
        if rest and scheme.isalpha():
            found.append(rest.strip())
    return [v for v in found if v]


_CREDENTIAL_HEADERS = ("auth", "key", "token", "secret", "session")


class _SessionFailed(Exception):
    """No session could be opened (a message without secrets); a transient failure."""
