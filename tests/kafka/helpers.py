"""Reading a Kafka topic and a journal directory from a test, with deadlines."""

from __future__ import annotations

import time
import uuid
from collections import Counter
from pathlib import Path
from typing import Any

from confluent_kafka import Consumer, KafkaError, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

from meterline.destinations.kafka import KEY_HEADER
from meterline.journal import inspect_file

__all__ = [
    "ensure_topic",
    "header",
    "journal_events",
    "journal_keys",
    "read_topic",
    "topic_keys",
    "wait_for",
]


def read_topic(address: str, topic: str, *, expect: int = 0, deadline: float = 20.0) -> list[Any]:
    """Every message of every partition of ``topic`` from offset 0: until each partition is
    read to its end and at least ``expect`` messages came, or the deadline passed.

    Partitions are assigned, not subscribed: no consumer group rebalance to wait for.
    """
    consumer = Consumer(
        {
            "bootstrap.servers": address,
            "group.id": f"reader-{uuid.uuid4().hex[:8]}",
            "enable.auto.commit": False,
            "enable.partition.eof": True,
            "fetch.wait.max.ms": 50,
            "log_level": 0,
        }
    )
    found: list[Any] = []
    end = time.monotonic() + deadline
    try:
        metadata = consumer.list_topics(topic, timeout=10)
        partitions = sorted(metadata.topics[topic].partitions)
        consumer.assign([TopicPartition(topic, p, 0) for p in partitions])
        at_end: set[int] = set()
        while time.monotonic() < end:
            for msg in consumer.consume(1000, timeout=0.2):
                err = msg.error()
                if err is None:
                    found.append(msg)
                    at_end.discard(msg.partition())
                elif err.code() == KafkaError._PARTITION_EOF:
                    at_end.add(msg.partition())
                else:
                    raise RuntimeError(err.str())
            if len(at_end) == len(partitions) and len(found) >= expect:
                break
    finally:
        consumer.close()
    return found


def header(msg: Any, name: str) -> bytes | None:
    for key, value in msg.headers() or []:
        if key == name:
            return bytes(value)
    return None


def topic_keys(messages: list[Any]) -> Counter[str]:
    """How many messages carry each idempotency key (from the header)."""
    return Counter((header(m, KEY_HEADER) or b"").decode() for m in messages)


def ensure_topic(address: str, name: str, partitions: int = 4) -> None:
    """Create ``name`` unless it exists (a producer's metadata request may have made it)."""
    admin = AdminClient({"bootstrap.servers": address, "socket.timeout.ms": 2000})
    futures = admin.create_topics([NewTopic(name, num_partitions=partitions)])
    for future in futures.values():
        try:
            future.result(timeout=10)
        except Exception as exc:
            err = exc.args[0] if exc.args else None
            if not (isinstance(err, KafkaError) and err.code() == KafkaError.TOPIC_ALREADY_EXISTS):
                raise
    del admin


def journal_events(journal_dir: Path, which: str = "ready") -> list[dict[str, Any]]:
    """The events of every batch file in ``journal_dir/which`` (each decoded JSON object,
    with ``_reasons`` for a rejected one), read as an operator's tool would."""
    out: list[dict[str, Any]] = []
    for path in sorted((journal_dir / which).glob("*.mlj")):
        info = inspect_file(path)
        assert info["ok"], info
        events = info["events"]
        reasons = info["reasons"] or [None] * len(events)  # type: ignore[arg-type]
        for event, why in zip(events, reasons, strict=True):  # type: ignore[call-overload]
            out.append({**event, "_reasons": why})
    return out


def journal_keys(
    journal_dir: Path, which: str = "ready", field: str = "idempotency_key"
) -> list[str]:
    return [e[field] for e in journal_events(journal_dir, which)]


def wait_for(predicate: Any, timeout: float, what: str) -> None:
    end = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > end:
            raise AssertionError(f"not within {timeout} s: {what}")
        time.sleep(0.02)
