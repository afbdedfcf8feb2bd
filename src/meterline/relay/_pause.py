"""A rate limit shared by the whole consumer group: one member's 429 slows every member.

The billing platform's limit is per account, so when one relay process is told to slow down
(429 with ``Retry-After``), the others are about to be told too. The member that saw it
publishes ``{"group", "until"}`` on a one-partition control topic, ``<topic>.meterline-pause``;
every member reads that topic (from its end, outside the group) and sends nothing before
``until``. Wall-clock time, capped at ``retry_after_max``; a member that cannot create or
read the control topic works alone (each member still honours its own 429s) and says so.
"""

from __future__ import annotations

import hashlib
import logging
import time
import uuid
from collections.abc import Callable, Mapping
from typing import Any

import orjson
from confluent_kafka import (
    OFFSET_END,
    Consumer,
    KafkaError,
    KafkaException,
    Producer,
    TopicPartition,
)
from confluent_kafka.admin import AdminClient, NewTopic  # type: ignore[attr-defined]

__all__ = ["GroupPause", "client_settings", "pause_topic"]

_LOG = logging.getLogger("meterline.relay")
_CLIENT_PREFIXES = ("security.", "sasl.", "ssl.", "socket.", "client.", "broker.")


def pause_topic(topic: str) -> str:
    """``<topic>.meterline-pause``; for a name too long for that, a hash of it (never a cut,
    which could be the billing topic itself or another's)."""
    name = f"{topic}.meterline-pause"
    if len(name) <= 249:
        return name
    return f"meterline-pause.{hashlib.sha256(topic.encode()).hexdigest()[:32]}"


def client_settings(settings: Mapping[str, Any]) -> dict[str, Any]:
    """The connection settings of a consumer configuration (security, sockets) that the
    relay's other clients need too."""
    return {k: v for k, v in settings.items() if k.startswith(_CLIENT_PREFIXES)}


class GroupPause:
    """Publishes and reads pauses of one group on ``<topic>.meterline-pause``."""

    def __init__(
        self,
        bootstrap: str,
        topic: str,
        group: str,
        settings: Mapping[str, Any],
        *,
        cap: float,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.topic = pause_topic(topic)
        self._group = group
        self._cap = cap
        self._clock = clock
        self.until = 0.0
        self._member = uuid.uuid4().hex
        self.published = 0
        self.heard = 0
        base = {**client_settings(settings), "bootstrap.servers": bootstrap, "logger": _LOG}
        self._producer: Any = None
        self._consumer: Any = None
        try:
            self._create(base)
            self._producer = Producer({**base, "linger.ms": 0})
            self._consumer = Consumer(
                {
                    **base,
                    "group.id": f"{group}.meterline-pause.{uuid.uuid4().hex[:8]}",
                    "enable.auto.commit": False,
                    "enable.partition.eof": False,
                }
            )
            self._consumer.assign([TopicPartition(self.topic, 0, OFFSET_END)])
        except Exception as exc:  # noqa: BLE001 - without it the member still works alone
            _LOG.warning(
                "meterline relay: no group-wide pause (%s); each member honours its own 429s",
                str(exc) or type(exc).__name__,
            )
            self.close()

    @property
    def enabled(self) -> bool:
        return self._consumer is not None

    def _create(self, base: Mapping[str, Any]) -> None:
        admin = AdminClient(dict(base))
        futures = admin.create_topics(
            [NewTopic(self.topic, num_partitions=1, replication_factor=-1)]
        )
        for future in futures.values():
            try:
                future.result(timeout=5)
            except KafkaException as exc:
                err = exc.args[0] if exc.args else None
                if not (
                    isinstance(err, KafkaError) and err.code() == KafkaError.TOPIC_ALREADY_EXISTS
                ):
                    raise
        del admin

    def publish(self, delay: float) -> None:
        """Every member of the group: send nothing for ``delay`` seconds."""
        until = self._clock() + min(max(delay, 0.0), self._cap)
        self.until = max(self.until, until)
        if self._producer is None:
            return
        try:
            doc = {"group": self._group, "until": until, "member": self._member}
            self._producer.produce(self.topic, orjson.dumps(doc))
            self._producer.poll(0)
            self.published += 1
        except (BufferError, KafkaException) as exc:
            _LOG.warning("meterline relay: could not publish a pause: %s", exc)

    def poll(self) -> None:
        """Take in the pauses other members published (never blocks)."""
        if self._consumer is None:
            return
        try:
            messages = self._consumer.consume(100, timeout=0)
        except KafkaException:
            return
        now = self._clock()
        for msg in messages:
            if msg.error() is not None:
                continue
            try:
                doc = orjson.loads(msg.value() or b"")
            except orjson.JSONDecodeError:
                continue
            if not isinstance(doc, dict) or doc.get("group") != self._group:
                continue
            if doc.get("member") == self._member:  # its own pause, already in force
                continue
            until = doc.get("until")
            if isinstance(until, (int, float)) and until > now:
                self.until = max(self.until, min(float(until), now + self._cap))
                self.heard += 1

    def remaining(self) -> float:
        return max(0.0, self.until - self._clock())

    def close(self) -> None:
        consumer, self._consumer = self._consumer, None
        producer, self._producer = self._producer, None
        if consumer is not None:
            try:
                consumer.close()
            except (KafkaException, RuntimeError):
                pass
        if producer is not None:
            producer.flush(1.0)
