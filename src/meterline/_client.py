"""The public ``Client``, the process-wide default client, and the exit hook.

Why this module is long: ``Client`` is the public API, and each public method keeps its
whole signature and docstring here, where ``help(Client)`` and a reader look for them; the
work is elsewhere (``_pipeline`` for ``report()``, ``_send`` for ``send()``,
``_entitlements`` for ``can()``). ``report()``
and ``send()`` each validate inline rather than through a shared helper, because one more
call on ``report()``'s path is measurable in ``make bench``.
"""

from __future__ import annotations

import asyncio
import atexit
import os
import threading
import time
import weakref
from collections.abc import Callable, Mapping
from datetime import datetime
from types import TracebackType
from typing import Any

from ._config import Config
from ._endpoint import transport_factory
from ._entitlements import Answer, Entitlements
from ._errors import ClientClosedError, ConfigError
from ._event import Pending, validate
from ._pipeline import Pipeline, close_all, open_pipelines
from ._send import Receipt, Sender
from ._stats import DropReport, FlushResult, ReplayResult, Stats
from ._transport import Transport
from .destinations import Destination
from .destinations.kafka import Kafka
from .destinations.orb import Orb
from .journal import Journal, ready_count

__all__ = ["Answer", "Client", "Receipt", "close", "configure", "flush", "report"]

Properties = Mapping[str, str | int | float | bool]


class Client:
    """Reports usage events to an ingest API from a background thread.

    ``report()`` validates and enqueues in microseconds; a daemon thread, started on first
    use, batches, sends, retries, journals what it cannot deliver and replays it later.
    """

    def __init__(
        self,
        api_key: str | None = None,
        *,
        destination: str | Destination | None = None,
        base_url: str | None = None,
        journal_dir: str | os.PathLike[str] | None = None,
        transport: Transport | None = None,
        on_error: Callable[[BaseException, dict[str, object]], None] | None = None,
        on_drop: Callable[[DropReport], None] | None = None,
        **options: Any,
    ) -> None:
        config = Config.from_env(api_key, base_url, journal_dir, destination=destination, **options)
        dest = config.destination
        if config.api_key is None and transport is None and not isinstance(dest, Kafka):
            raise ConfigError("no API key: pass api_key= or set METERLINE_API_KEY")
        if transport is not None and not isinstance(transport, Transport):
            raise ConfigError("transport must have send(events, *, timeout=None) and close()")
        directory = config.resolved_journal_dir()
        Journal.check_directory(directory)
        self._config = config
        self._max_event_bytes = config.max_event_bytes
        self._rules = dest.check if dest.has_rules else None
        self._measure: Callable[[Pending], int] | None = None
        wire = dest.downstream if isinstance(dest, Kafka) else dest
        if not isinstance(wire, Orb):  # the estimate and the exact size are Orb's otherwise

            def measure(event: Pending) -> int:
                return len(dest.serialize_many([event])[0])

            self._measure = measure

        made = transport_factory(config) if transport is None else None

        def make_transport() -> Transport:
            if made is None:
                assert transport is not None
                return transport
            return made()

        def make_journal() -> Journal:
            return Journal(
                directory,
                max_bytes=config.journal_max_bytes,
                max_age=config.journal_max_age,
                min_free_bytes=config.journal_min_free_bytes,
                fingerprint=config.journal_fingerprint,
                key_field=config.destination.key_field,
            )

        self._journal_dir = directory
        self._pipeline = pipeline = Pipeline(
            config,
            transport_factory=make_transport,
            journal_factory=make_journal,
            on_error=on_error,
            on_drop=on_drop,
        )
        self._check_fork = pipeline.check_fork
        self._sender = Sender(
            config,
            transport_factory=make_transport,
            owns_transport=transport is None,
            stopping=pipeline.retry_stop,
        )
        self._submit = pipeline.submit
        self._entitlements = Entitlements(config, self.report)
        # A client dropped without close() still delivers: its pipeline closes itself in
        # the background (threads end), or at the exit with every other open pipeline.
        weakref.finalize(self, pipeline.orphan).atexit = False

    def __repr__(self) -> str:
        c = self._config
        return (
            f"Client(destination={c.destination.name!r}, base_url={c.base_url!r}, "
            f"journal_dir={str(self._journal_dir)!r}, "
            f"durability={c.durability!r})"
        )

    @property
    def config(self) -> Config:
        """The client's frozen configuration (its repr hides the API key)."""
        return self._config

    def report(
        self,
        customer: str,
        event_name: str,
        properties: Properties | None = None,
        *,
        timestamp: datetime | str | None = None,
        idempotency_key: str | None = None,
    ) -> str:
        """Enqueue one usage event and return its idempotency key.

        Raises ``InvalidEventError`` for a bad event and ``ClientClosedError`` after
        ``close()``; never raises or blocks for delivery problems.
        """
        if self._pipeline.pid != os.getpid():  # check_fork(), inlined: it runs per event
            self._check_fork()  # before validate(): a forked child must draw keys of its own
        event = validate(
            customer,
            event_name,
            properties,
            timestamp,
            idempotency_key,
            self._max_event_bytes,
            self._measure,
        )
        if self._rules is not None:
            self._rules(event)
        self._submit(event)
        return event[0]

    def send(
        self,
        customer: str,
        event_name: str,
        properties: Properties | None = None,
        *,
        timestamp: datetime | str | None = None,
        idempotency_key: str | None = None,
        timeout: float | None = None,
    ) -> Receipt:
        """Send one event now, outside the batch queue, and wait for the server's answer.

        Validates like ``report()``; retries transient failures within ``timeout`` seconds
        (default ``retry_deadline``). Returns a ``Receipt``, or raises ``EventRejectedError``
        (the server's ``reasons``), ``DeliveryTimeoutError`` or ``EndpointRefusedError``;
        on any raise the event is not journaled: the caller decides. Counted in ``stats()``
        as ``sent_confirmed`` or ``send_failed``. ``ClientClosedError`` after ``close()``.
        """
        if self._pipeline.closed:
            raise ClientClosedError("send() after close(); create a new Client")
        _check_timeout(timeout)
        self._check_fork()
        event = validate(
            customer,
            event_name,
            properties,
            timestamp,
            idempotency_key,
            self._max_event_bytes,
            self._measure,
        )
        if self._rules is not None:
            self._rules(event)
        return self._sender.send(event, timeout)

    async def asend(
        self,
        customer: str,
        event_name: str,
        properties: Properties | None = None,
        *,
        timestamp: datetime | str | None = None,
        idempotency_key: str | None = None,
        timeout: float | None = None,
    ) -> Receipt:
        """``send()`` in a worker thread, without blocking the event loop; ``timeout`` counts
        from this call, time spent waiting for a free worker thread included."""
        _check_timeout(timeout)
        budget = self._config.retry_deadline if timeout is None else float(timeout)
        start = time.monotonic()

        def run() -> Receipt:
            left = budget - (time.monotonic() - start)
            return self.send(
                customer,
                event_name,
                properties,
                timestamp=timestamp,
                idempotency_key=idempotency_key,
                timeout=max(left, 1e-3),
            )

        return await asyncio.to_thread(run)

    def can(
        self,
        customer: str,
        feature: str,
        *,
        timeout: float | None = None,
        fail_open: bool | None = None,
    ) -> Answer:
        """May ``customer`` use ``feature`` now? One request to the destination's entitlement
        API (orb: ``meterline serve --plans``; openmeter), within ``timeout`` seconds.

        Returns an ``Answer`` (``ok``, ``limit``, ``used``, ``remaining``; ``report(n=1)``
        reports the use). Without an answer, ``error`` says why and ``ok`` is ``fail_open``
        (default: the ``can_fail_open`` option, True). ``ConfigError`` for a destination
        without an entitlement API; ``ClientClosedError`` after ``close()``.
        """
        if self._pipeline.closed:
            raise ClientClosedError("can() after close(); create a new Client")
        return self._entitlements.can(customer, feature, timeout, fail_open)

    def flush(self, timeout: float | None = None) -> FlushResult:
        """Send what is queued now and wait until it is delivered or journaled (at most
        ``timeout`` seconds). An older journal backlog is not waited for: see ``replay()``."""
        return self._pipeline.flush(timeout)

    def close(self, timeout: float | None = None) -> FlushResult:
        """Stop accepting events; for at most ``timeout`` (default ``shutdown_timeout``)
        seconds send what is queued and, while the endpoint answers, the journal backlog;
        journal the rest and stop the threads. Idempotent."""
        try:
            return self._pipeline.close(timeout)
        finally:
            self._sender.close()
            self._entitlements.close()

    def replay(self, timeout: float | None = None) -> ReplayResult:
        """Replay the journal now and wait until nothing is left that this client may send,
        another process is the one replaying, or ``timeout`` passes."""
        before = self._pipeline.counters.snapshot()
        remaining, aside, _ = self._pipeline.replay(timeout)
        after = self._pipeline.counters.snapshot()
        return ReplayResult(
            replayed=after["replayed"] - before["replayed"],
            rejected=after["rejected_on_replay"] - before["rejected_on_replay"],
            expired=after["expired"] - before["expired"],
            remaining_batches=remaining,
            set_aside=aside,
        )

    def stats(self) -> Stats:
        """A read-only snapshot of the counters since the client started."""
        pipeline = self._pipeline
        data = pipeline.counters.snapshot()
        data["reported"] = pipeline.reported()
        data["dropped"] = sum(data["dropped_by_reason"].values())
        data["queue_events"] = pipeline.unsettled()
        data.update(self._sender.counts())  # send(): outside the reported/settled sum
        journal = pipeline.delivery.journal
        try:
            ready = journal.replayable() if journal is not None else None
        except OSError:
            ready = None
        data["journal_ready_batches"] = (
            ready if ready is not None else ready_count(self._journal_dir)
        )
        return Stats(data)

    async def aflush(self, timeout: float | None = None) -> FlushResult:
        """``flush()`` without blocking the event loop."""
        return await asyncio.to_thread(self.flush, timeout)

    async def aclose(self, timeout: float | None = None) -> FlushResult:
        """``close()`` without blocking the event loop."""
        return await asyncio.to_thread(self.close, timeout)

    def __enter__(self) -> Client:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


def _check_timeout(timeout: object) -> None:
    if timeout is not None and (
        isinstance(timeout, bool) or not isinstance(timeout, (int, float)) or not timeout > 0
    ):  # NaN is not > 0 either
        raise ValueError(f"timeout must be a positive number of seconds or None, not {timeout!r}")


# -- the process-wide default client -------------------------------------------------------

_default: Client | None = None
_default_lock = threading.Lock()


def configure(**kwargs: Any) -> Client:
    """Create (or replace) the default client used by ``meterline.report()`` and friends.

    The swap is atomic: a ``meterline.report()`` that raced with it is sent through the new
    client, never refused by the old one, which then closes within its bound."""
    global _default
    new = Client(**kwargs)
    with _default_lock:
        old, _default = _default, new
    if old is not None:
        old.close()
    return new


def _get_default() -> Client:
    global _default
    client = _default
    if client is None:
        with _default_lock:
            if _default is None:
                _default = Client()
            client = _default
    return client


def report(
    customer: str,
    event_name: str,
    properties: Properties | None = None,
    *,
    timestamp: datetime | str | None = None,
    idempotency_key: str | None = None,
) -> str:
    """``report()`` on the default client (created from the environment on first use)."""
    while True:
        client = _get_default()
        try:
            return client.report(
                customer,
                event_name,
                properties,
                timestamp=timestamp,
                idempotency_key=idempotency_key,
            )
        except ClientClosedError:
            if _default is client:  # closed, not replaced: the caller's bug
                raise
            # configure() replaced it meanwhile: the report goes to the new default client


def flush(timeout: float | None = None) -> FlushResult:
    """``flush()`` on the default client; a no-op result when there is none."""
    client = _default
    return client.flush(timeout) if client is not None else FlushResult()


def close(timeout: float | None = None) -> FlushResult:
    """Close the default client; the next ``meterline.report()`` creates a new one."""
    global _default
    with _default_lock:
        client, _default = _default, None
    return client.close(timeout) if client is not None else FlushResult()


@atexit.register
def _close_all_at_exit() -> None:
    # Runs before daemon threads are stopped: every open pipeline, whether or not its
    # Client is still referenced, closes within one shutdown_timeout for all together.
    close_all(open_pipelines(), None)
