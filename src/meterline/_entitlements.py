"""``Client.can()``: is a customer entitled to a feature now (Tier's ``can()``), and
``Answer.report()`` to report its use.

One ``GET`` per call, not retried (the caller is waiting), bounded as a whole by ``timeout``
(default: the client's ``timeout``), its body read to at most ``MAX_ANSWER_BYTES``. It goes to
the destination's entitlement API:

* ``orb`` (meterline's reference server, ``meterline serve --plans``):
  ``GET {base_url}/entitlements/{customer}/{feature}`` → ``ok``, ``limit``, ``used``,
  ``remaining``. Orb itself has no entitlement API: against Orb's cloud the check fails.
* ``openmeter``: ``GET {base_url}/api/v1/subjects/{customer}/entitlements/{feature}/value`` →
  ``EntitlementValue``: ``ok`` is ``hasAccess``, ``used`` its ``usage``, ``remaining`` its
  ``balance``, ``limit`` its ``totalAvailableGrantAmount`` (None for boolean and static
  entitlements). A 404 problem (no such entitlement for the subject) is a definite no.

When no usable answer comes (no connection, a timeout, a 401, a 5xx, a body that is not the
vendor's), the ``Answer`` carries ``error`` and ``ok`` is the fail-open choice: ``True`` by
default (``can_fail_open``), as Tier's SDK does, so an outage of the billing side never
locks customers out; ``can_fail_open=False`` (or ``can(..., fail_open=False)``) refuses then.
Errors never quote the API key.
"""

from __future__ import annotations

import os
import threading
import zlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING
from urllib.parse import quote

import httpcore
import httpx
import orjson

from ._connection import CoreTransport, decode, describe, pool, read_at_most
from ._deadline import DeadlineBackend, within
from ._errors import ConfigError
from ._version import __version__

if TYPE_CHECKING:
    from ._config import Config

__all__ = ["MAX_ANSWER_BYTES", "SUPPORTED", "Answer", "Entitlements"]

MAX_ANSWER_BYTES = 64 * 1024  # an entitlement answer is a few hundred bytes
Number = int | float

_FAILURES: tuple[type[Exception], ...] = (
    httpx.HTTPError,
    httpx.InvalidURL,
    httpx.StreamError,
    httpcore.TimeoutException,
    httpcore.NetworkError,
    httpcore.ProtocolError,
    httpcore.ProxyError,
    httpcore.UnsupportedProtocol,
    OSError,
    ValueError,
    zlib.error,
)


@dataclass(frozen=True)
class Answer:
    """The answer to ``can(customer, feature)``.

    ``ok``: may the customer use the feature now. ``limit``, ``used``, ``remaining``: the
    numbers behind it when the server gives them (None otherwise, and ``limit`` None with an
    ``ok`` answer means unlimited). ``error``: why no answer came (then ``ok`` is the
    fail-open choice), None when the server answered.
    """

    customer: str
    feature: str
    ok: bool
    limit: Number | None = None
    used: Number | None = None
    remaining: Number | None = None
    error: str | None = None
    _report: Callable[..., str] | None = field(default=None, repr=False, compare=False)

    def __bool__(self) -> bool:
        return self.ok

    def report(
        self,
        n: Number = 1,
        *,
        timestamp: datetime | str | None = None,
        idempotency_key: str | None = None,
    ) -> str:
        """Report ``n`` units of this feature's use by this customer through the client that
        answered (``report(customer, feature, {"quantity": n})``); returns the event's key."""
        if self._report is None:
            raise ConfigError("this Answer was not made by a Client: it cannot report")
        if isinstance(n, bool) or not isinstance(n, (int, float)):
            raise TypeError(f"n must be a number, got {type(n).__name__}")
        if not n >= 0:
            raise ValueError(f"n must be a number >= 0 of units used, got {n!r}")
        return self._report(
            self.customer,
            self.feature,
            {"quantity": n},
            timestamp=timestamp,
            idempotency_key=idempotency_key,
        )


Reading = tuple[bool, Number | None, Number | None, Number | None]


def reference_url(base_url: str, customer: str, feature: str) -> str:
    """The reference server's entitlement endpoint for ``customer`` and ``feature``."""
    return f"{base_url}/entitlements/{_segment(customer)}/{_segment(feature)}"


def openmeter_url(base_url: str, customer: str, feature: str) -> str:
    """OpenMeter's entitlement value endpoint (the subject is the customer)."""
    subject, key = _segment(customer), _segment(feature)
    return f"{base_url}/api/v1/subjects/{subject}/entitlements/{key}/value"


def read_reference(body: object) -> Reading | None:
    """``(ok, limit, used, remaining)`` from the reference server's answer, else None."""
    if not isinstance(body, dict) or not isinstance(body.get("ok"), bool):
        return None
    numbers = [body.get(name) for name in ("limit", "used", "remaining")]
    if not all(value is None or _number(value) for value in numbers):
        return None
    return body["ok"], numbers[0], numbers[1], numbers[2]


def read_openmeter(body: object) -> Reading | None:
    """``(ok, limit, used, remaining)`` from an ``EntitlementValue``, else None."""
    if not isinstance(body, dict) or not isinstance(body.get("hasAccess"), bool):
        return None
    names = ("totalAvailableGrantAmount", "usage", "balance")
    numbers = [body.get(name) for name in names]
    if not all(value is None or _number(value) for value in numbers):
        return None
    limit, used, remaining = numbers
    if limit is None and used is not None and remaining is not None:
        limit = used + remaining
    return body["hasAccess"], limit, used, remaining


# destination name → (the URL, the reader, whether a 404 problem means "not entitled")
SUPPORTED: Mapping[
    str, tuple[Callable[[str, str, str], str], Callable[[object], Reading | None], bool]
] = {
    "orb": (reference_url, read_reference, False),
    "openmeter": (openmeter_url, read_openmeter, True),
}


def _segment(text: str) -> str:
    """One path segment; ``.`` and ``..`` escaped too (a client would resolve them as dot
    segments and ask another endpoint)."""
    quoted = quote(text, safe="")
    return quoted.replace(".", "%2E") if quoted in (".", "..") else quoted


def _number(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


class Entitlements:
    """``can()`` for one client: its own small connection pool, made on first use."""

    def __init__(self, config: Config, report: Callable[..., str]) -> None:
        self._config = config
        self._report = report
        self._lock = threading.Lock()
        self._http: httpx.Client | None = None
        self._pid = os.getpid()
        key = config.api_key
        self._secrets = sorted(
            {s for s in (key, f"Bearer {key}" if key else None) if s}, key=len, reverse=True
        )

    def can(
        self, customer: str, feature: str, timeout: float | None, fail_open: bool | None
    ) -> Answer:
        """Ask the destination; an ``Answer`` always (``error`` set when none came)."""
        for what, value in (("customer", customer), ("feature", feature)):
            if not isinstance(value, str) or not value:
                raise TypeError(f"{what} must be a non-empty string")
        config = self._config
        name = config.destination.name
        found = SUPPORTED.get(name)
        if found is None:
            raise ConfigError(
                f"can() needs an entitlement API: the {name} destination has none; "
                f"supported: {', '.join(sorted(SUPPORTED))} (orb: meterline serve --plans)"
            )
        url_for, read, no_on_404 = found
        if timeout is not None and (
            isinstance(timeout, bool)
            or not isinstance(timeout, (int, float))
            or not 0 < timeout < float("inf")
        ):
            raise ValueError(f"timeout must be a positive number of seconds, got {timeout!r}")
        # Clamped: a socket deadline past time_t's range raises OverflowError.
        bound = config.timeout if timeout is None else min(float(timeout), 1e6)
        opened = config.can_fail_open if fail_open is None else bool(fail_open)

        def answer(
            ok: bool, numbers: tuple[Number | None, ...] = (), error: str | None = None
        ) -> Answer:
            limit, used, remaining = (*numbers, None, None, None)[:3]
            return Answer(customer, feature, ok, limit, used, remaining, error, self._report)

        try:
            with within(bound):
                status, body = self._get(url_for(config.base_url, customer, feature), bound)
        except _FAILURES as exc:
            error_name, text = describe(exc, min(config.connect_timeout, bound), bound)
            return answer(opened, error=self._clean(f"{error_name}: {text}"))
        parsed: object = None
        try:
            parsed = orjson.loads(body) if body else None
        except orjson.JSONDecodeError:
            parsed = None
        if status == 200:
            reading = read(parsed)
            if reading is not None:
                return answer(reading[0], reading[1:])
            why = "HTTP 200 but not an entitlement answer: a proxy, a portal or a wrong base_url?"
            return answer(opened, error=why)
        if status == 404 and no_on_404 and isinstance(parsed, dict) and "status" in parsed:
            return answer(False)  # the vendor says: no such entitlement for this customer
        detail = parsed.get("detail") if isinstance(parsed, dict) else None
        text = f"HTTP {status}" + (f": {detail}" if isinstance(detail, str) else "")
        return answer(opened, error=self._clean(text)[:300])

    def close(self) -> None:
        """Close the connections (``Client.close()``)."""
        with self._lock:
            http, self._http = self._http, None
        if http is not None:
            http.close()

    def _get(self, url: str, bound: float) -> tuple[int, bytes]:
        http = self._client()
        limits = httpx.Timeout(bound, connect=min(self._config.connect_timeout, bound))
        request = http.build_request("GET", url, timeout=limits)
        response = http.send(request, stream=True)
        try:
            raw = read_at_most(response.iter_raw(), MAX_ANSWER_BYTES)
        finally:
            response.close()
        return response.status_code, decode(raw, response.headers.get("content-encoding", ""))

    def _client(self) -> httpx.Client:
        if self._pid != os.getpid():  # a forked child: new sockets and a new lock
            self._lock, self._http, self._pid = threading.Lock(), None, os.getpid()
        with self._lock:
            if self._http is None:
                config = self._config
                headers = {
                    "User-Agent": f"meterline/{__version__}",
                    "Accept": "application/json",
                    "Accept-Encoding": "identity",
                    **config.destination.headers(config.api_key),
                }
                self._http = httpx.Client(
                    transport=CoreTransport(pool(httpx.URL(config.base_url), DeadlineBackend())),
                    headers=headers,
                    timeout=httpx.Timeout(config.timeout, connect=config.connect_timeout),
                    follow_redirects=False,
                    trust_env=False,
                )
            return self._http

    def _clean(self, text: str) -> str:
        for secret in self._secrets:
            text = text.replace(secret, "***")
        return text
