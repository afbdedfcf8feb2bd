"""The memory queue: where ``report()`` puts an event, and where one is turned away.

The caller's side takes no lock at all, so ``report()`` is safe from a signal handler that
interrupts another ``report()`` on the same thread (a lock there deadlocks). It relies on
what CPython's GIL guarantees: ``deque.append``/``popleft`` and ``len`` are atomic, and an
integer ``+=`` on an attribute runs without a thread switch or a signal handler in between
(both happen only at calls and backward jumps).

When memory is full the caller first gives the spooler time to move batches to disk (it
never waits on the network): at most 100 ms, and no more than 50 ms once nothing makes room
(neither the spooler taking events nor anything settling: one fsync can take tens of ms).
Then it turns the event away: it stays on the queue as a one-element entry, so that the
spooler reports it, body included, to ``on_drop`` and counts it as dropped with reason
``queue_full``, in order with everything else.

Long before that, a caller that runs several batches ahead of delivery (a loop reporting
as fast as it can) lets meterline's threads run once every 256 reports: ``time.sleep(0)``,
which releases the GIL and costs that one call a thread switch, never I/O.
"""

from __future__ import annotations

import threading
import time
from bisect import bisect_right
from collections import deque
from collections.abc import Callable
from itertools import accumulate, islice, repeat
from operator import itemgetter
from typing import Any

from meterline._event import SIZE, Pending
from meterline._pipeline._settle import Settlement

__all__ = ["Queue", "Wake"]

_ROOM_WAIT = 0.1  # the longest a full queue holds report() back, in seconds
# ...but no longer than this once the pipeline stops making room: the spooler taking
# events or anything settling (one fsync on a busy disk can take tens of milliseconds).
_NO_PROGRESS = 0.05
_ROOM_POLL = 0.0002
_NO_ROOM_BACKOFF = 0.1  # with the journal refusing, drop at once for this long after a wait
_size = itemgetter(SIZE)
# A caller this many batches ahead of delivery (queued and held) pauses for a thread switch
# once every _PACE_EVERY reports. Without it a tight loop keeps the GIL for whole switch
# intervals (5 ms) while the sender waits for it between a request's system calls, and a
# 50,000-event burst ended 20,000 events ahead, holding 20 MB (6 MB with it).
_PACE_BEHIND = 4
_PACE_EVERY = 256


class Wake:
    """``threading.Event.set()`` made safe against re-entry from a signal handler (the
    event's own lock is not re-entrant); the thread waiting on it is never left asleep."""

    __slots__ = ("_setting", "event")

    def __init__(self) -> None:
        self.event = threading.Event()
        self._setting = False

    def __call__(self) -> None:
        if self._setting or self.event.is_set():
            return  # whoever is setting it now (this thread, interrupted) wakes the waiter
        self._setting = True
        try:
            self.event.set()
        finally:
            self._setting = False


class Queue:
    """Events accepted and not yet taken by the spooler, with the memory bounds."""

    def __init__(
        self,
        settlement: Settlement,
        *,
        max_events: int,
        max_bytes: int,
        batch_events: int,
        batch_bytes: int,
        eager: bool,
        wake: Wake,
        own_thread: Callable[[], bool],
    ) -> None:
        self.entries: deque[Any] = deque()  # Pending, or (Pending,) for one turned away
        self.in_bytes = 0  # written by callers only
        self.out_bytes = 0  # written by the spooler only
        self.pressure = False  # a caller found memory full: the spooler journals at once
        self.disk_refuses = False  # the journal refused the spooler's last spill
        self._settlement = settlement
        self._max_events = max_events
        self._max_bytes = max_bytes
        self._batch_events = 1 if eager else batch_events
        self._far_behind = _PACE_BEHIND * batch_events
        self._ahead = 0  # reports made while far behind, since the last pause
        self._batch_bytes = batch_bytes
        self._wake = wake
        self._own_thread = own_thread
        self._no_room_until = 0.0
        self._waiting: set[int] = set()  # threads waiting for room now

    def __len__(self) -> int:
        return len(self.entries)

    def queued_bytes(self) -> int:
        return self.in_bytes - self.out_bytes

    def put(self, event: Pending) -> None:
        """Enqueue one validated event, or turn it away when memory stays full."""
        entries = self.entries
        size = event[SIZE]
        held = self._settlement
        queued = self.in_bytes - self.out_bytes  # _full(size), inlined: this runs per event
        if (
            len(entries) + held.held_events >= self._max_events
            or queued + held.held_bytes + size > self._max_bytes
        ) and not self._wait_for_room(size):
            entries.append((event,))
            self._wake()
            return
        entries.append(event)
        self.in_bytes += size
        if len(entries) >= self._batch_events or queued + size >= self._batch_bytes:
            self._wake()
        if len(entries) + held.held_events >= self._far_behind:
            self._pace()

    def _pace(self) -> None:
        """The caller is several batches ahead of delivery: once every ``_PACE_EVERY``
        reports, let meterline's threads have the GIL (a thread switch, no I/O)."""
        self._ahead += 1
        if self._ahead >= _PACE_EVERY and not self._own_thread():
            self._ahead = 0
            time.sleep(0)  # releases the GIL; returns at once if no thread is waiting for it

    def _full(self, size: int) -> bool:
        held = self._settlement
        return (
            len(self.entries) + held.held_events >= self._max_events
            or self.in_bytes - self.out_bytes + held.held_bytes + size > self._max_bytes
        )

    def _wait_for_room(self, size: int) -> bool:
        """Let the spooler journal for at most a few ms; never on a meterline thread."""
        me = threading.get_ident()
        if me in self._waiting or self._own_thread():
            return False  # a report() from a signal handler that interrupted a wait: no nesting
        now = time.monotonic()
        if now < self._no_room_until:
            return False
        self._waiting.add(me)
        try:
            self.pressure = True
            self._wake()
            deadline = now + _ROOM_WAIT
            held = self._settlement
            progress, seen, holding = now, held.next_idx, held.held_bytes
            while (now := time.monotonic()) < deadline and now - progress < _NO_PROGRESS:
                time.sleep(_ROOM_POLL)  # gives the spooler the GIL
                if not self._full(size):
                    return True
                if held.next_idx != seen or held.held_bytes < holding:  # making room: wait on
                    progress, seen, holding = now, held.next_idx, held.held_bytes
            if self.disk_refuses:  # the spooler cannot make room: do not hold every report back
                self._no_room_until = time.monotonic() + _NO_ROOM_BACKOFF
            return False
        finally:
            self._waiting.discard(me)

    def take(self, max_events: int, max_bytes: int) -> list[Any]:
        """Up to ``max_events`` entries, cut by estimated bytes (spooler; under the
        settlement lock, so that indexes follow queue order)."""
        entries = self.entries
        head = list(islice(entries, max_events))
        if not head:
            return head
        if min(map(len, head)) == 1:  # something turned away among them: one by one
            return self._take_one_by_one(max_events, max_bytes)
        ends = list(accumulate(map(_size, head)))
        k = max(1, bisect_right(ends, max_bytes))  # the most that fit; at least one
        # Only the spooler pops, and callers only append: the first k are still ``head``.
        taken = list(map(deque.popleft, repeat(entries, k)))
        self.out_bytes += ends[k - 1]
        return taken

    def _take_one_by_one(self, max_events: int, max_bytes: int) -> list[Any]:
        entries = self.entries
        out: list[Any] = []
        size = 0
        while entries and len(out) < max_events:
            entry = entries[0]
            if len(entry) != 1:
                if out and size + entry[SIZE] > max_bytes:
                    break
                size += entry[SIZE]
            out.append(entries.popleft())
        self.out_bytes += size
        return out

    def reset_pressure(self) -> None:
        self.pressure = False
