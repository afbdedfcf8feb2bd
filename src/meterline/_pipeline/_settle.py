"""Settlement: every event the spooler took off the queue comes back here exactly once.

An event is *held* from the moment the spooler takes it off the memory queue until it is
settled as sent, journaled, rejected, deduplicated or dropped. ``flush()`` and ``close()``
wait here (one ``Waiter`` each) for the events that were unsettled when they were called;
the held counts are the memory the pipeline answers for beyond the queue itself.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from operator import itemgetter

from meterline._delivery import Item
from meterline._outcomes import I_IDX, I_SIZE
from meterline._stats import FlushResult

__all__ = ["OUTCOMES", "Settlement", "Waiter"]

_idx = itemgetter(I_IDX)
_size = itemgetter(I_SIZE)

OUTCOMES = ("sent", "journaled", "rejected", "dropped", "deduplicated")


class Waiter:
    """One ``flush()``/``close()`` call waiting for the events queued before it."""

    __slots__ = ("counts", "remaining", "target")

    def __init__(self, target: int, remaining: int) -> None:
        self.target = target  # events with a smaller index were reported before the call
        self.remaining = remaining
        self.counts = dict.fromkeys(OUTCOMES, 0)

    def result(self) -> FlushResult:
        return FlushResult(pending=max(0, self.remaining), **self.counts)


class Settlement:
    """Indexes, held counts and waiters of one pipeline; every method takes ``lock``."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.settled = threading.Condition(self.lock)
        self.next_idx = 0  # events taken off the queue so far (the next one's index)
        self.held_events = 0  # taken off the queue and not yet settled
        self.held_bytes = 0
        self._waiters: list[Waiter] = []
        # Journaled by close() while a send still had them: their send's outcome, should
        # it ever come, is not counted a second time.
        self._abandoned: set[int] = set()

    def admit(self, events: int, size: int) -> int:
        """Count events just taken off the queue (caller holds ``lock``); their first index."""
        first = self.next_idx
        self.next_idx += events
        self.held_events += events
        self.held_bytes += size
        return first

    def waiter(self, queued: int) -> Waiter:
        """A waiter for everything unsettled now, ``queued`` events still on the queue
        included (caller holds ``lock``)."""
        waiter = Waiter(self.next_idx + queued, self.held_events + queued)
        self._waiters.append(waiter)
        return waiter

    def wait(self, waiter: Waiter, timeout: float | None) -> FlushResult:
        with self.lock:
            self.settled.wait_for(lambda: waiter.remaining <= 0, timeout)
            if waiter in self._waiters:
                self._waiters.remove(waiter)
            return waiter.result()

    def abandon(self, items: Sequence[Item]) -> list[Item]:
        """Mark items as taken over by close(); return those not settled or taken before."""
        with self.lock:
            fresh = [it for it in items if it[I_IDX] >= 0 and it[I_IDX] not in self._abandoned]
            self._abandoned.update(it[I_IDX] for it in fresh)
            return fresh

    def not_abandoned(self, items: list[Item]) -> list[Item]:
        """``items`` without those close() already journaled (a send that outlived close():
        its failure must not write a second copy)."""
        if not self._abandoned:
            return items
        with self.lock:
            return [it for it in items if it[I_IDX] < 0 or it[I_IDX] not in self._abandoned]

    def settle(self, items: Sequence[Item], outcome: str, *, abandoned: bool = False) -> int:
        """Record the outcome of items (replayed items, index -1, are not held); return how
        many were settled now (not before, by close())."""
        if not items:
            return 0
        if min(map(_idx, items)) >= 0:
            live = items  # a live batch: every event is held
        else:
            live = [it for it in items if it[I_IDX] >= 0]
            if not live:
                return 0
        with self.lock:
            if self._abandoned and not abandoned:
                live = [it for it in live if it[I_IDX] not in self._abandoned]
                if not live:
                    return 0
            self.held_events -= len(live)
            self.held_bytes -= sum(map(_size, live))
            done = False
            for waiter in self._waiters:
                target = waiter.target
                k = (
                    len(live)
                    if max(map(_idx, live)) < target
                    else sum(1 for it in live if it[I_IDX] < target)
                )
                if k:
                    waiter.counts[outcome] += k
                    waiter.remaining -= k
                    done = done or waiter.remaining <= 0
            if done:
                self.settled.notify_all()
            return len(live)
