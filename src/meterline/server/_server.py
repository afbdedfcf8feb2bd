"""``ReferenceServer``: the reference ingest server in a daemon thread, for tests and demos."""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable, Iterable
from types import TracebackType
from typing import Any

from meterline.server._app import App
from meterline.server._http import HttpServer
from meterline.server._messages import RequestRecord
from meterline.server._metrics import Metric, MetricRegistry, MetricSource, as_metrics
from meterline.server._plans import Plans, load_plans, parse_plans
from meterline.server._problem import Problem
from meterline.server._store import Store
from meterline.server._time import parse_duration

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8787
DEFAULT_GRACE_PERIOD = 12 * 3600.0
DEFAULT_MAX_BODY_BYTES = 5 * 1024 * 1024
DEFAULT_REQUEST_LOG_SIZE = 1000


class ReferenceServer:
    """A local, Orb-compatible ingest server serving ``/v1`` from a daemon thread.

    ``port=0`` picks a free port on the first ``start()``; later starts (``restart()``)
    reuse it, so a client keeps its base URL. ``db=":memory:"`` starts empty each time;
    a file keeps its events across restarts. ``clock`` returns Unix seconds and decides
    which timestamps are too old or too far ahead. ``metrics`` (a ``.toml``/``.json`` file
    or ``Metric`` objects and mappings) are the billable metrics ``/v1/usage`` reports.
    ``plans`` (a plans file, its parsed dict, or ``Plans``) gives the entitlements
    ``GET /v1/entitlements/{customer}/{feature}`` answers; a bad one raises ``PlansError``
    (a ``ValueError``) naming the key.
    """

    def __init__(
        self,
        host: str = DEFAULT_HOST,
        port: int = 0,
        db: str | os.PathLike[str] = ":memory:",
        api_keys: Iterable[str] = (),
        grace_period: float | str = DEFAULT_GRACE_PERIOD,
        clock: Callable[[], float] = time.time,
        *,
        max_body_bytes: int = DEFAULT_MAX_BODY_BYTES,
        request_log_size: int = DEFAULT_REQUEST_LOG_SIZE,
        metrics: MetricSource = (),
        plans: Plans | dict[str, Any] | str | os.PathLike[str] | None = None,
    ) -> None:
        if max_body_bytes <= 0:
            raise ValueError("max_body_bytes must be positive")
        self.host = host
        self.db = os.fspath(db)
        self.grace_period = parse_duration(grace_period)
        self.max_body_bytes = max_body_bytes
        self._port = port
        self._app = App(
            api_keys=api_keys,
            grace_period=self.grace_period,
            clock=clock,
            request_log_size=request_log_size,
        )
        if isinstance(plans, dict):
            plans = parse_plans(plans)
        elif plans is not None and not isinstance(plans, Plans):
            plans = load_plans(plans)
        self._app.plans = plans  # GET /v1/entitlements/{customer}/{feature}
        self._app.metrics = MetricRegistry(as_metrics(metrics))  # /v1/metrics, /v1/usage
        self._lifecycle = threading.Lock()
        self._httpd: HttpServer | None = None
        self._thread: threading.Thread | None = None

    def __repr__(self) -> str:
        state = "running" if self.running else "stopped"
        return f"<ReferenceServer {self.url} db={self.db!r} {state}>"

    @property
    def port(self) -> int:
        """The bound port once started (the configured one before)."""
        return self._port

    @property
    def url(self) -> str:
        """The base URL clients use, ``http://HOST:PORT/v1``."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self._port}/v1"

    @property
    def running(self) -> bool:
        """Whether the server is accepting connections."""
        return self._httpd is not None

    def start(self) -> ReferenceServer:
        """Open the database, listen, and serve in a daemon thread; returns when listening."""
        with self._lifecycle:
            if self._httpd is not None:
                raise RuntimeError("the server is already running")
            store = Store(self.db)
            try:
                httpd = HttpServer(self.host, self._port, self._app, self.max_body_bytes)
            except BaseException:
                store.close()
                raise
            self._app.store = store
            self._port = httpd.server_port
            self._thread = threading.Thread(
                target=httpd.serve,
                name=f"meterline-reference-server:{self._port}",
                daemon=True,
            )
            self._httpd = httpd
            self._thread.start()
        return self

    def stop(self, timeout: float = 5.0) -> None:
        """Stop listening, cut open connections, finish requests in flight, close the db."""
        with self._lifecycle:
            httpd, thread = self._httpd, self._thread
            if httpd is None or thread is None:
                return
            httpd.stop_serving(timeout)
            httpd.close_connections(timeout)
            thread.join(timeout)
            store, self._app.store = self._app.store, None
            if store is not None:
                store.close()
            self._httpd = self._thread = None

    def restart(self) -> ReferenceServer:
        """``stop()`` then ``start()`` on the same port and database."""
        self.stop()
        return self.start()

    def __enter__(self) -> ReferenceServer:
        if not self.running:
            self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    # -- reading what arrived -------------------------------------------------------------

    def _store(self) -> Store:
        store = self._app.store
        if store is None:
            raise RuntimeError("start() the server first")
        return store

    def event_count(self, customer: str | None = None) -> int:
        """How many events count for billing (live, not deprecated), optionally per customer.

        Events of a backfill count once it is closed, by a call or at its ``close_time``."""
        store = self._store()
        self._app.settle()
        return store.count(customer)

    def events(
        self, customer: str | None = None, *, include_deprecated: bool = False
    ) -> list[dict[str, Any]]:
        """Current versions as Orb ``Event`` objects (``id`` is the idempotency key)."""
        store = self._store()
        self._app.settle()
        return store.events(customer, include_deprecated=include_deprecated)

    def versions(self, event_id: str) -> list[dict[str, Any]]:
        """The audit trail of one event, oldest first, each with ``version`` and ``status``."""
        return self._store().versions(event_id)

    def define_metric(self, metric: Metric | dict[str, Any]) -> bool:
        """Add a billable metric as ``POST /v1/metrics`` does; False if it exists, the same.

        A different metric of that name raises ``MetricError`` (a ``ValueError``)."""
        if not isinstance(metric, Metric):
            metric = Metric.from_mapping(metric)
        return self._app.metrics.define(metric)

    def metrics(self) -> list[Metric]:
        """The billable metrics ``GET /v1/usage`` reports, sorted by name."""
        return self._app.metrics.all()

    @property
    def requests(self) -> list[RequestRecord]:
        """The most recent requests (up to ``request_log_size``), oldest first."""
        return self._app.records()

    def clear_requests(self) -> None:
        """Empty the request log."""
        self._app.clear_records()

    def wait_for_events(self, count: int, timeout: float = 5.0) -> bool:
        """Block until at least ``count`` events count for billing; False on timeout."""
        deadline = time.monotonic() + timeout
        with self._app.changed:
            return self._app.changed.wait_for(
                lambda: self.event_count() >= count, deadline - time.monotonic()
            )

    def fail_next(self, status: int, *, times: int = 1, retry_after: float | None = None) -> None:
        """Answer the next ``times`` ingest requests with ``status`` and store nothing.

        The body is the problem object Orb sends for that status; ``retry_after`` adds a
        ``Retry-After`` header (seconds). Useful for testing a client's retries.
        """
        if not 400 <= status <= 599:
            raise ValueError("status must be a 4xx or 5xx code")
        headers = {"Retry-After": f"{retry_after:g}"} if retry_after is not None else {}
        for _ in range(times):
            problem = Problem(
                status,
                "Injected failure",
                "ReferenceServer.fail_next() asked for this response",
                headers=headers,
            )
            self._app.add_fault(problem)
