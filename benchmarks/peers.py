"""One adapter per shipper, each with its default settings, pointed at the sink.

Every adapter exposes ``send(customer, event_name, properties)`` (as close to the library's
own call as the signatures allow: meterline's ``report`` and Mixpanel's ``track`` are used
as they are), ``flush(timeout)`` (the library's documented way to deliver what it holds,
cut off after ``timeout`` seconds) and ``close(timeout)``. Libraries are imported inside
their adapter so a run loads only the one it measures.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Callable
from datetime import datetime, timezone
from typing import Any, ClassVar, Protocol

PEERS = ("meterline", "meterline-wal", "segment", "posthog", "mixpanel", "orb-billing", "raw")
EVENT_NAME = "api_call"
BATCH = 500  # the raw limit's batch size, also meterline's default max_batch_events

Send = Callable[[str, str, dict[str, Any]], Any]


class Peer(Protocol):
    name: str
    send: Send

    def flush(self, timeout: float) -> dict[str, Any]: ...

    def close(self, timeout: float) -> None: ...


def bounded(fn: Callable[[], object], timeout: float) -> bool:
    """Run ``fn`` in a daemon thread for at most ``timeout`` s; True if it returned."""
    done = threading.Event()
    failure: list[BaseException] = []

    def target() -> None:
        try:
            fn()
        except Exception as exc:
            failure.append(exc)
        finally:
            done.set()

    threading.Thread(target=target, daemon=True, name="bench-bounded").start()
    finished = done.wait(timeout)
    return finished and not failure


class Meterline:
    """meterline with its defaults and a journal in ``journal_dir``."""

    name = "meterline"
    options: ClassVar[dict[str, Any]] = {}
    send: Send

    def __init__(self, sink_url: str, journal_dir: str) -> None:
        import meterline

        self.client = meterline.Client(
            api_key="bench-key", base_url=f"{sink_url}/v1", journal_dir=journal_dir, **self.options
        )
        self.send = self.client.report

    def flush(self, timeout: float) -> dict[str, Any]:
        """``flush()``, then ``replay()`` for whatever an outage left in the journal."""
        end = time.monotonic() + timeout
        result = self.client.flush(timeout)
        replayed = None
        if self.client.stats().journal_ready_batches:
            replayed = self.client.replay(max(0.0, end - time.monotonic()))
        return {"flush": repr(result), "replay": repr(replayed), **self.stats()}

    def stats(self) -> dict[str, Any]:
        stats = dict(self.client.stats())
        stats["dropped_by_reason"] = dict(stats["dropped_by_reason"])
        return {"stats": stats}

    def close(self, timeout: float) -> None:
        self.client.close(timeout)


class MeterlineWriteAhead(Meterline):
    """meterline with ``durability="write_ahead"``: every event journaled within a few
    milliseconds, whatever the network does; otherwise its defaults."""

    name = "meterline-wal"
    options: ClassVar[dict[str, Any]] = {"durability": "write_ahead"}


class Segment:
    """``segment-analytics-python``: ``analytics.Client(write_key, host=...)`` and ``track``."""

    name = "segment"
    send: Send

    def __init__(self, sink_url: str, journal_dir: str) -> None:
        from segment import analytics

        self.client = analytics.Client("bench-write-key", host=sink_url)
        track = self.client.track

        def send(customer: str, event_name: str, properties: dict[str, Any]) -> Any:
            return track(user_id=customer, event=event_name, properties=properties)

        self.send = send

    def flush(self, timeout: float) -> dict[str, Any]:
        return {"flushed": bounded(self.client.flush, timeout)}

    def close(self, timeout: float) -> None:
        bounded(self.client.shutdown, timeout)


class PostHog:
    """``posthog``: ``Posthog(api_key, host=...)`` and ``capture``."""

    name = "posthog"
    send: Send

    def __init__(self, sink_url: str, journal_dir: str) -> None:
        from posthog import Posthog

        self.client = Posthog("phc_bench", host=sink_url)
        capture = self.client.capture

        def send(customer: str, event_name: str, properties: dict[str, Any]) -> Any:
            return capture(event_name, distinct_id=customer, properties=properties)

        self.send = send

    def flush(self, timeout: float) -> dict[str, Any]:
        return {"flushed": bounded(lambda: self.client.flush(timeout_seconds=timeout), timeout)}

    def close(self, timeout: float) -> None:
        bounded(self.client.shutdown, timeout)


class Mixpanel:
    """``mixpanel`` with a ``BufferedConsumer``; ``track`` runs on the caller's thread.

    ``BufferedConsumer(api_host=...)`` only builds ``https://`` URLs, so the endpoints are
    given as ``http://`` URLs instead, and the consumer's retrying adapter (urllib3
    ``Retry`` on 5xx, mounted for ``https://`` only) is mounted for ``http://`` too, so the
    library retries exactly as it would against the real API.
    """

    name = "mixpanel"
    send: Send

    def __init__(self, sink_url: str, journal_dir: str) -> None:
        from mixpanel import BufferedConsumer
        from mixpanel import Mixpanel as Client

        self.consumer = BufferedConsumer(
            events_url=f"{sink_url}/track",
            people_url=f"{sink_url}/engage",
            import_url=f"{sink_url}/import",
            groups_url=f"{sink_url}/groups",
        )
        session = self.consumer._consumer._session
        session.mount("http://", session.get_adapter("https://api.mixpanel.com"))
        self.client = Client("bench-token", consumer=self.consumer)
        self.send = self.client.track

    def flush(self, timeout: float) -> dict[str, Any]:
        return {"flushed": bounded(self.consumer.flush, timeout)}

    def close(self, timeout: float) -> None:
        self.flush(timeout)


class OrbBilling:
    """The official ``orb-billing`` SDK: one synchronous ``events.ingest`` per event."""

    name = "orb-billing"
    send: Send

    def __init__(self, sink_url: str, journal_dir: str) -> None:
        from orb import Orb

        self.client = Orb(api_key="bench-key", base_url=f"{sink_url}/v1")
        ingest = self.client.events.ingest

        def send(customer: str, event_name: str, properties: dict[str, Any]) -> Any:
            event = {
                "idempotency_key": str(uuid.uuid4()),
                "external_customer_id": customer,
                "event_name": event_name,
                "timestamp": datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ"),
                "properties": properties,
            }
            return ingest(events=[event])  # type: ignore[list-item]

        self.send = send

    def flush(self, timeout: float) -> dict[str, Any]:
        return {}

    def close(self, timeout: float) -> None:
        self.client.close()


class RawLimit:
    """The limit of a synchronous shipper: UUID4 keys, orjson batches of 500, one
    keep-alive httpx connection, all on the caller's thread; no retries, no journal."""

    name = "raw"
    send: Send

    def __init__(self, sink_url: str, journal_dir: str) -> None:
        import httpx
        import orjson

        self._dumps = orjson.dumps
        self._http = httpx.Client(
            base_url=sink_url,
            headers={"Authorization": "Bearer bench-key", "Content-Type": "application/json"},
            limits=httpx.Limits(max_connections=1, max_keepalive_connections=1),
        )
        self._batch: list[dict[str, Any]] = []
        self.send = self._append

    def _append(self, customer: str, event_name: str, properties: dict[str, Any]) -> None:
        batch = self._batch
        batch.append(
            {
                "idempotency_key": str(uuid.uuid4()),
                "external_customer_id": customer,
                "event_name": event_name,
                "timestamp": datetime.now(timezone.utc),
                "properties": properties,
            }
        )
        if len(batch) >= BATCH:
            self._post()

    def _post(self) -> None:
        batch, self._batch = self._batch, []
        if batch:
            self._http.post("/v1/ingest", content=self._dumps({"events": batch}))

    def flush(self, timeout: float) -> dict[str, Any]:
        self._post()
        return {}

    def close(self, timeout: float) -> None:
        self._post()
        self._http.close()


_FACTORIES: dict[str, Callable[[str, str], Peer]] = {
    "meterline": Meterline,
    "meterline-wal": MeterlineWriteAhead,
    "segment": Segment,
    "posthog": PostHog,
    "mixpanel": Mixpanel,
    "orb-billing": OrbBilling,
    "raw": RawLimit,
}


def make(name: str, sink_url: str, journal_dir: str) -> Peer:
    """The adapter called ``name`` (one of ``PEERS``)."""
    return _FACTORIES[name](sink_url, journal_dir)


def versions() -> dict[str, str]:
    """Installed versions of meterline and every peer library."""
    from importlib.metadata import PackageNotFoundError, version

    out = {}
    for dist in (
        "meterline",
        "segment-analytics-python",
        "posthog",
        "mixpanel",
        "orb-billing",
        "httpx",
        "orjson",
        "requests",
        "gunicorn",
    ):
        try:
            out[dist] = version(dist)
        except PackageNotFoundError:
            out[dist] = "not installed"
    return out
