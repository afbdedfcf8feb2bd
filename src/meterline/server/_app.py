"""Routing and the endpoints of the reference server, independent of the HTTP plumbing.

``App.handle`` turns a :class:`Request` into a :class:`Response` and never raises: a bad
request becomes a 4xx problem body, a bug becomes a logged 500.
"""

from __future__ import annotations

import hmac
import logging
import threading
from collections import deque
from collections.abc import Callable, Iterable
from typing import Any
from urllib.parse import unquote

from meterline.server._backfill_api import backfill_routes, open_window
from meterline.server._backfill_store import settle
from meterline.server._backfills import VOLUME_PARAMS, limit_and_cursor, volume, volume_window
from meterline.server._entitlements import Plans, entitlement_routes
from meterline.server._messages import Request, RequestRecord, Response
from meterline.server._metric_api import metric_routes, metric_values
from meterline.server._metrics import MetricRegistry
from meterline.server._problem import Problem, bad_request
from meterline.server._queries import (
    flag,
    query_params,
    refused_batch,
    search_criteria,
    usage_query,
)
from meterline.server._rules import (
    AMEND_EVENT_KEYS,
    ValidEvent,
    check_event,
    ingest_events,
    parse_json,
    shape_errors,
    unique_events,
)
from meterline.server._store import Store, StoreClosedError
from meterline.server._time import format_instant, parse_instant

logger = logging.getLogger("meterline.server")

_NO_PARAMS: frozenset[str] = frozenset()
SEARCH_DEFAULT_US = 7 * 86400 * 1_000_000


class _Trace:
    events = 0
    keys: tuple[str, ...] = ()


Endpoint = Callable[[Request, dict[str, str], _Trace], object]


class App:
    """The endpoints; ``store`` is attached while the server runs."""

    def __init__(
        self,
        *,
        api_keys: Iterable[str],
        grace_period: float,
        clock: Callable[[], float],
        request_log_size: int,
    ) -> None:
        self._keys = tuple(key.encode() for key in api_keys)
        self._grace_us = round(grace_period * 1e6)
        self._clock = clock
        self.store: Store | None = None
        self.metrics = MetricRegistry()  # billable metrics: --metrics FILE, /v1/metrics
        self.plans: Plans | None = None  # the entitlements of `meterline serve --plans`
        self.changed = threading.Condition()
        self._log: deque[RequestRecord] = deque(maxlen=request_log_size)
        self._faults: deque[Problem] = deque()

    # -- helpers for ReferenceServer ------------------------------------------------------

    def records(self) -> list[RequestRecord]:
        """A copy of the request log, oldest first."""
        with self.changed:
            return list(self._log)

    def clear_records(self) -> None:
        """Forget the request log."""
        with self.changed:
            self._log.clear()

    def add_fault(self, problem: Problem) -> None:
        """Answer the next ingest request with ``problem`` instead of storing it."""
        with self.changed:
            self._faults.append(problem)

    def _store(self) -> Store:
        store = self.store
        if store is None:
            raise StoreClosedError("the server is stopping")
        return store

    def _now_us(self) -> int:
        return round(self._clock() * 1e6)

    # -- dispatch -------------------------------------------------------------------------

    def handle(self, request: Request) -> Response:
        """Answer ``request``; never raises."""
        trace = _Trace()
        path, _, query = request.target.partition("?")
        headers: dict[str, str] = {}
        try:
            status, body = 200, self._dispatch(request, path, query, trace)
        except Problem as problem:
            status, body, headers = problem.status, problem.body(), problem.headers
        except StoreClosedError:
            status, body = 503, Problem(503, "Unavailable", "the server is stopping").body()
        except Exception:
            logger.exception("internal error while handling %s %s", request.method, path)
            status, body = 500, Problem(500, "Internal error", "see the server's log").body()
        gzip = request.headers.get("content-encoding", "").strip().lower() == "gzip"
        record = RequestRecord(request.method, path, status, trace.events, trace.keys, gzip)
        with self.changed:
            self._log.append(record)
            self.changed.notify_all()
        return Response(status, body, headers)

    def _dispatch(self, request: Request, path: str, query: str, trace: _Trace) -> object:
        methods, allowed_params = self._route(path)
        endpoint = methods.get(request.method)
        if endpoint is None:
            allow = ", ".join(sorted(methods))
            raise Problem(
                405,
                "Method not allowed",
                f"{path} accepts {allow}",
                headers={"Allow": allow},
            )
        if allowed_params is None:  # the health check: no key, no parameters
            return endpoint(request, {}, trace)
        self._authorize(request.headers.get("authorization", ""))
        return endpoint(request, query_params(query, allowed_params), trace)

    def _route(self, path: str) -> tuple[dict[str, Endpoint], frozenset[str] | None]:
        """The endpoints by method at ``path`` and the query parameters they accept."""
        parts = path.split("/")
        rest = parts[2:] if parts[:2] == ["", "v1"] else []
        if rest == ["health"]:
            return {"GET": self._health}, None
        if rest == ["ingest"]:
            return {"POST": self._ingest}, frozenset({"backfill_id", "debug"})
        if rest == ["usage"]:
            return {"GET": self._usage}, frozenset({"start", "end", "customer"})
        if rest == ["metrics"]:
            return metric_routes(self.metrics)
        if rest[:2] == ["events", "backfills"]:
            found = backfill_routes(rest[2:], self._store, self._now_us)
            if found is not None:
                return found
        if rest[:1] == ["entitlements"]:
            return entitlement_routes(rest[1:], self.plans, self._store, self._now_us, path)
        if len(rest) in (2, 3) and rest[0] == "events" and rest[1]:
            event_id = unquote(rest[1])
            if len(rest) == 3 and rest[2] == "deprecate":
                return {"PUT": lambda r, p, t: self._deprecate(r, event_id)}, _NO_PARAMS
            if len(rest) == 2:
                methods: dict[str, Endpoint] = {"PUT": lambda r, p, t: self._amend(r, event_id)}
                if rest[1] == "search":
                    methods["POST"] = self._search
                if rest[1] == "volume":  # GET only: PUT still amends an event named "volume"
                    methods["GET"] = self._volume
                    return methods, VOLUME_PARAMS
                return methods, _NO_PARAMS
        raise Problem(404, "Not found", f"no endpoint at {path}; the API lives under /v1")

    def _authorize(self, header: str) -> None:
        scheme, _, token = header.partition(" ")
        token = token.strip()
        if scheme.lower() != "bearer" or not token:
            raise Problem(
                401,
                "Authentication required",
                "send the header `Authorization: Bearer <api key>`",
                headers={"WWW-Authenticate": "Bearer"},
            )
        if self._keys and not any(hmac.compare_digest(token.encode(), k) for k in self._keys):
            raise Problem(
                401,
                "Invalid API key",
                "the bearer token is not one of this server's API keys",
                headers={"WWW-Authenticate": 'Bearer error="invalid_token"'},
            )

    # -- endpoints ------------------------------------------------------------------------

    def _health(self, request: Request, params: dict[str, str], trace: _Trace) -> object:
        return {"status": "ok"}

    def _ingest(self, request: Request, params: dict[str, str], trace: _Trace) -> object:
        debug = flag("debug", params.get("debug", "false"))
        events = ingest_events(parse_json(request.read_body()))
        trace.events = len(events)
        trace.keys = tuple(event["idempotency_key"] for event in events)
        with self.changed:
            fault = self._faults.popleft() if self._faults else None
        if fault is not None:
            raise fault
        unique = unique_events(events)
        now_us = self._now_us()
        backfill_id = params.get("backfill_id") or None
        window = None
        if backfill_id is not None:
            window = self._store().run(lambda db: open_window(db, backfill_id, now_us))
        valid: list[ValidEvent] = []
        failed: dict[str, list[str]] = {}
        for key, event in unique.items():
            result = check_event(event, key, now_us, self._grace_us, window)
            if isinstance(result, list):
                failed[key] = result
            else:
                valid.append(result)
        outcome = self._store().ingest(valid, list(failed), format_instant(now_us), backfill_id)
        if outcome.refused:
            raise refused_batch(unique, failed, outcome.deprecated, outcome.duplicate)
        if outcome.ingested:
            with self.changed:
                self.changed.notify_all()
        body: dict[str, object] = {"validation_failed": []}
        if debug:
            body["debug"] = {"duplicate": outcome.duplicate, "ingested": outcome.ingested}
        return body

    def _amend(self, request: Request, event_id: str) -> object:
        body = parse_json(request.read_body())
        if isinstance(body, dict) and "idempotency_key" in body:
            raise bad_request("idempotency_key is not accepted: the event id in the URL names it")
        errors: list[Any] = shape_errors(body, AMEND_EVENT_KEYS, "body")
        if errors:
            raise bad_request("; ".join(errors), errors)
        result = check_event(body, event_id, None, self._grace_us)
        if isinstance(result, list):
            raise bad_request("; ".join(result), list(result))
        if self._store().amend(result, format_instant(self._now_us())):
            with self.changed:
                self.changed.notify_all()
        return {"amended": event_id}

    def _deprecate(self, request: Request, event_id: str) -> object:
        request.read_body()  # Orb takes no body; read it so the connection stays usable
        self._store().deprecate(event_id, format_instant(self._now_us()))
        with self.changed:
            self.changed.notify_all()
        return {"deprecated": event_id}

    def _search(self, request: Request, params: dict[str, str], trace: _Trace) -> object:
        wanted, start, end = search_criteria(parse_json(request.read_body()))
        now_us = self._now_us()
        self._settle(now_us)
        if end is None:  # Orb's default timeframe: the week up to now
            end = now_us
        if start is None:
            start = end - SEARCH_DEFAULT_US
        found = self._store().find(wanted)
        data = []
        for event_id in wanted:
            event = found.get(event_id)
            if event is None:
                continue
            ts_us = parse_instant(event["timestamp"], require_utc=True)
            if start <= ts_us < end:
                data.append(event)
        return {"data": data, "pagination_metadata": {"has_more": False, "next_cursor": None}}

    def _volume(self, request: Request, params: dict[str, str], trace: _Trace) -> object:
        now_us = self._now_us()
        first, end = volume_window(params, now_us)
        limit, after = limit_and_cursor(params)
        self._settle(now_us)
        return self._store().run(lambda db: volume(db, first, end, limit, after))

    def settle(self) -> None:
        """Reflect the backfills whose close_time has passed by the server's clock."""
        self._settle(self._now_us())

    def _settle(self, now_us: int) -> None:
        """Reflect the backfills whose close_time has passed, before counting anything."""
        self._store().run(lambda db: settle(db, now_us))

    def _usage(self, request: Request, params: dict[str, str], trace: _Trace) -> object:
        start_us, end_us, customer = usage_query(params)
        metrics = self.metrics.all()
        self._settle(self._now_us())
        return {
            "start": format_instant(start_us),
            "end": format_instant(end_us),
            "usage": self._store().usage(start_us, end_us, customer),
            "metrics": self._store().run(
                lambda db: metric_values(db, metrics, start_us, end_us, customer)
            ),
        }
