"""The relay's small parts: its figures, the batch it holds, the transport that tells the
group about a 429, and the checks of its consumer settings."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from confluent_kafka import Consumer, KafkaException

from meterline._errors import ConfigError
from meterline._outcomes import Item
from meterline._response import Response, retry_after
from meterline._transport import Transport
from meterline.destinations.kafka import secret_setting

from ._messages import Unreadable

__all__ = ["Batch", "RelayStats", "Watched", "check_consumer_settings"]

_OWNED = frozenset(
    {
        "bootstrap.servers",
        "group.id",
        "enable.auto.commit",
        "auto.commit.enable",
        "metadata.broker.list",
        "enable.auto.offset.store",
        "on_commit",
        "isolation.level",
    }
)


@dataclass(frozen=True)
class RelayStats:
    """What a relay member did since it started, and where it stands now.

    Every message consumed is ``delivered``, ``rejected`` (kept in ``rejected/``), a
    ``duplicate`` of another in the same batch (same idempotency key), or still ``holding``
    (waiting for the destination, not committed); ``handed_over`` counts held events of
    partitions the member lost in a rebalance (their new owner sends them).
    """

    consumed: int = 0
    delivered: int = 0
    rejected: int = 0
    duplicates: int = 0
    handed_over: int = 0
    committed: int = 0  # messages whose offsets were committed
    retried: int = 0
    holding: int = 0
    lag: int | None = None  # messages in its partitions not yet committed (None: unknown)
    partitions: tuple[int, ...] = ()
    paused_for: float = 0.0
    pauses_published: int = 0
    pauses_heard: int = 0
    last_error: str = ""
    per_partition_lag: Mapping[int, int] = field(default_factory=dict)


def check_consumer_settings(settings: Mapping[str, Any], group: str) -> None:
    """``ConfigError`` now for settings the relay owns, incremental rebalancing, and what
    librdkafka refuses (a consumer with no broker does no I/O)."""
    owned = sorted(set(settings) & _OWNED)
    if owned:
        raise ConfigError(f"consumer_config may not set {', '.join(owned)}: the relay does")
    strategy = str(settings.get("partition.assignment.strategy", "")).lower()
    protocol = str(settings.get("group.protocol", "classic")).strip().lower()
    if "cooperative" in strategy or protocol != "classic":
        raise ConfigError(
            "the relay takes whole assignments (range or roundrobin): incremental "
            "(cooperative) rebalancing is not supported"
        )
    try:
        probe = Consumer(
            {
                "session.timeout.ms": 10_000,  # the relay's defaults, so clashes show now
                "heartbeat.interval.ms": 1_000,
                **settings,
                "group.id": group,
                "bootstrap.servers": "",
                "log_level": 0,
            }
        )
    except (KafkaException, TypeError, ValueError) as exc:
        text = str(exc)
        for name, value in settings.items():
            if secret_setting(name) and len(str(value)) >= 3:
                text = text.replace(str(value), "***")
        raise ConfigError(f"consumer_config refused by librdkafka: {text}") from None
    probe.close()


class Watched:
    """The destination's transport, telling the group pause about every 429."""

    def __init__(self, inner: Transport, on_slow: Callable[[float], None]) -> None:
        self._inner = inner
        self._on_slow = on_slow

    @property
    def secrets(self) -> list[str]:
        return list(getattr(self._inner, "secrets", ()) or ())

    def send(self, events: Any, *, timeout: float | None = None) -> Response:
        response = self._inner.send(events, timeout=timeout)
        if response.status == 429:
            self._on_slow(retry_after(response.headers) or 1.0)
        return response

    def close(self) -> None:
        self._inner.close()


class Batch:
    """The messages of one consume(): events to send, their partitions, the offsets."""

    def __init__(self) -> None:
        self.items: list[Item] = []
        self.partition_of: dict[str, int] = {}
        self.unreadable: list[tuple[Unreadable, int]] = []
        self.next_offset: dict[int, int] = {}
        self.counts: dict[int, int] = {}
        self.count = 0
