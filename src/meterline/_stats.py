"""What a client tells about itself: counters, flush results, drop reports, and quiet logging."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

__all__ = [
    "Counters",
    "DropReport",
    "FlushResult",
    "RateLimitedLog",
    "ReplayResult",
    "Stats",
    "logger",
]

logger = logging.getLogger("meterline")
logger.addHandler(logging.NullHandler())


class Stats(Mapping[str, Any]):
    """A read-only snapshot of a client's counters since it started.

    ``reported`` = every key ``report()`` returned; each such event ends as ``sent``,
    ``journaled`` (then possibly ``replayed`` or ``expired``), ``rejected``, ``deduplicated``
    or ``dropped`` (with a reason in ``dropped_by_reason``), or is still counted in
    ``queue_events``. ``replayed``, ``expired`` and ``rejected_on_replay`` count what became
    of journaled batches (this process's or an earlier one's), so they are not part of that
    sum. ``sent_confirmed`` and ``send_failed`` count ``send()``/``asend()`` calls (a receipt
    returned, an exception raised): those events never enter the queue, so they are not part
    of ``reported`` or ``sent``.
    """

    __slots__ = ("_data",)

    def __init__(self, data: Mapping[str, Any]) -> None:
        self._data = MappingProxyType(dict(data))

    def __getitem__(self, key: str) -> Any:
        return self._data[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self._data)

    def __len__(self) -> int:
        return len(self._data)

    def __getattr__(self, name: str) -> Any:
        try:
            return self._data[name]
        except KeyError:
            raise AttributeError(name) from None

    def __repr__(self) -> str:
        return f"Stats({dict(self._data)!r})"


@dataclass(frozen=True)
class FlushResult:
    """How the events unsettled when ``flush()`` began ended up; truthy when all are settled
    and none was dropped."""

    sent: int = 0
    journaled: int = 0
    rejected: int = 0
    dropped: int = 0
    pending: int = 0
    deduplicated: int = 0

    def __bool__(self) -> bool:
        return self.pending == 0 and self.dropped == 0


@dataclass(frozen=True)
class DropReport:
    """Events meterline gave up on, passed to ``on_drop``: why, how many, and their keys."""

    reason: str
    count: int
    idempotency_keys: tuple[str, ...] = ()
    events: tuple[bytes, ...] = field(default=(), repr=False)


class Counters:
    """The worker's counters; written by the worker thread, read by ``stats()``."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.sent = 0
        self.retried = 0
        self.journaled = 0
        self.replayed = 0
        self.rejected = 0
        self.deduplicated = 0
        self.expired = 0
        self.rejected_on_replay = 0
        self.bytes_sent = 0
        self.dropped_by_reason: dict[str, int] = {}

    def add(self, name: str, n: int) -> None:
        with self.lock:
            setattr(self, name, getattr(self, name) + n)

    def drop(self, reason: str, n: int) -> None:
        with self.lock:
            self.dropped_by_reason[reason] = self.dropped_by_reason.get(reason, 0) + n

    def snapshot(self) -> dict[str, Any]:
        with self.lock:
            return {
                "sent": self.sent,
                "retried": self.retried,
                "journaled": self.journaled,
                "replayed": self.replayed,
                "rejected": self.rejected,
                "deduplicated": self.deduplicated,
                "expired": self.expired,
                "rejected_on_replay": self.rejected_on_replay,
                "bytes_sent": self.bytes_sent,
                "dropped_by_reason": dict(self.dropped_by_reason),
            }


class RateLimitedLog:
    """Logs a repeated message at most once per ``period`` seconds, counting the rest."""

    def __init__(self, period: float = 60.0, clock: Any = time.monotonic) -> None:
        self._period = period
        self._clock = clock
        self._last: dict[str, tuple[float, int]] = {}
        self._lock = threading.Lock()

    def log(self, level: int, topic: str, msg: str, *args: object) -> None:
        now = self._clock()
        with self._lock:
            last, suppressed = self._last.get(topic, (float("-inf"), 0))
            if now - last < self._period:
                self._last[topic] = (last, suppressed + 1)
                return
            self._last[topic] = (now, 0)
        if suppressed:
            msg += " (%d similar messages suppressed)"
            args = (*args, suppressed)
        logger.log(level, msg, *args)


@dataclass(frozen=True)
class ReplayResult:
    """What ``replay()`` achieved; truthy when the journal has no batch left to send and
    nothing expired meanwhile.

    ``set_aside`` counts batches this client leaves in place and never sends: written by a
    newer meterline, or for another destination, endpoint or credential.
    """

    replayed: int = 0
    rejected: int = 0
    expired: int = 0
    remaining_batches: int = 0
    set_aside: int = 0

    def __bool__(self) -> bool:
        return self.remaining_batches == 0 and self.expired == 0
