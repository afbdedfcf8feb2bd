"""The background thread: the in-memory queue, batch cutting, flush/close, and fork safety.

The caller's side (``submit``) takes one lock for a few counters and a deque append, and
sets the wake event only when a full batch is waiting. The worker thread waits on that one
event with the flush timer as its timeout, cuts batches in queue order, serializes them and
hands them to the delivery. Every event it took from the queue comes back through
``_settle`` exactly once, which is how ``flush()`` knows when the events it waits for ended.
"""

from __future__ import annotations

import encodings.idna  # noqa: F401 - see below
import logging
import os
import random
import sys
import threading
import time
import weakref
from collections import deque
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

from ._delivery import Delivery, Item
from ._errors import ClientClosedError, MeterlineError
from ._event import KEY, SIZE, Pending, forget_keys, serialize_many, top_up_keys
from ._replay import Replayer
from ._stats import Counters, DropReport, FlushResult, logger

if TYPE_CHECKING:
    from ._config import Config
    from ._journal import Journal
    from ._transport import Transport

__all__ = ["Worker"]

# The idna codec is imported above, not by the worker's first getaddrinfo(): a fork while a
# thread is inside that import leaves the child's codec registry with "unknown encoding:
# idna" for good, and no request from the child would ever reach the endpoint.

_MAX_DROP_KEYS = 10_000
_REPLAY_SLICE = 0.25  # seconds of replay between looks at live traffic


class _Waiter:
    """One ``flush()``/``close()`` call waiting for the events queued before it."""

    __slots__ = ("counts", "remaining", "target")

    def __init__(self, target: int, remaining: int) -> None:
        self.target = target
        self.remaining = remaining
        self.counts = {"sent": 0, "journaled": 0, "rejected": 0, "dropped": 0}

    def result(self) -> FlushResult:
        return FlushResult(pending=self.remaining, **self.counts)


class Worker:
    """Owns the queue and the thread of one client."""

    def __init__(
        self,
        config: Config,
        *,
        transport_factory: Callable[[], Transport],
        journal_factory: Callable[[], Journal],
        on_error: Callable[[BaseException, dict[str, object]], None] | None = None,
        on_drop: Callable[[DropReport], None] | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._config = config
        self._transport_factory = transport_factory
        self._journal_factory = journal_factory
        self._on_error = on_error
        self._on_drop = on_drop
        self._clock = clock
        self._wal = config.durability == "write_ahead"
        self._init_state()
        self._closed = False
        self._close_result: FlushResult | None = None
        ref = weakref.ref(self)
        if hasattr(os, "register_at_fork"):
            os.register_at_fork(after_in_child=lambda: _after_fork(ref))

    def _init_state(self) -> None:
        self._pid = os.getpid()
        self._lock = threading.Lock()
        self._settled = threading.Condition(self._lock)
        self._wake = threading.Event()
        self._stopping = threading.Event()
        self._queue: deque[Pending] = deque()
        self._queued_bytes = 0
        self._mem_events = 0  # accepted and not yet settled: queued, in flight or parked
        self._mem_bytes = 0
        self._accepted = 0
        self._next_idx = 0
        self._drop_keys: list[str] = []
        self._in_flight: dict[int, Item] = {}  # the live batch being sent, until settled
        self._abandoned: set[int] = set()  # journaled by close() while still being sent
        self._waiters: list[_Waiter] = []
        self._flush_wanted = False
        self._replay_wanted = False
        self._thread: threading.Thread | None = None
        self._thread_id: int | None = None
        self.counters = Counters()
        self._delivery = Delivery(
            self._config,
            transport_factory=self._transport_factory,
            journal=None,
            counters=self.counters,
            settle=self._settle,
            stopping=self._stopping,
            sleep=self._nap,
            on_error=self._on_error,
            on_drop=self._on_drop,
            clock=self._clock,
        )
        self._replayer = Replayer(
            self._config,
            self._delivery,
            counters=self.counters,
            stopping=self._stopping,
            sleep=self._nap,
            clock=self._clock,
        )

    # -- the caller's side -----------------------------------------------------------------

    def check_fork(self) -> None:
        """Start empty if this process was forked without Python's hooks (uWSGI).

        ``Client.report()`` calls it before validating, so that the event's key is not drawn
        from a key pool the child shares with its parent."""
        if self._pid != os.getpid():
            self._reset_after_fork()

    def submit(self, event: Pending) -> None:
        """Enqueue one validated event (after ``check_fork()``); never blocks on I/O, never
        raises for delivery."""
        config = self._config
        with self._lock:
            if self._closed:
                raise ClientClosedError("report() after close(); create a new Client")
            if (
                self._mem_events >= config.max_queue_events
                or self._mem_bytes + event[SIZE] > config.max_queue_bytes
            ):
                self.counters.drop("queue_full", 1)
                if len(self._drop_keys) < _MAX_DROP_KEYS:
                    self._drop_keys.append(event[KEY])
                if not self._wake.is_set():
                    self._wake.set()
                return
            self._queue.append(event)
            self._accepted += 1
            self._mem_events += 1
            self._mem_bytes += event[SIZE]
            self._queued_bytes += event[SIZE]
            n = len(self._queue)
            full = n >= config.max_batch_events or self._queued_bytes >= config.max_batch_bytes
        if self._thread is None:
            self._start()
        elif (full or (self._wal and n == 1)) and not self._wake.is_set():
            self._wake.set()

    def reported(self) -> int:
        """Events ``report()`` accepted: queued ones plus those the full queue turned away."""
        return self._accepted + self.counters.dropped_by_reason.get("queue_full", 0)

    def queue_events(self) -> int:
        return self._mem_events

    def flush(self, timeout: float | None) -> FlushResult:
        """Send what is queued now and wait until it is settled or ``timeout`` passes."""
        self._refuse_from_worker("flush")
        self.check_fork()
        with self._lock:
            if self._mem_events == 0 and not self._drop_keys:
                return FlushResult()
            waiter = _Waiter(self._accepted, self._mem_events)
            self._waiters.append(waiter)
            self._flush_wanted = True
        if not self._start():
            self._drain_inline(self._clock() + (timeout if timeout is not None else 1e9))
        self._wake.set()
        return self._wait(waiter, timeout)

    def request_replay(self) -> None:
        self._replay_wanted = True
        self._start()
        self._wake.set()

    def close(self, timeout: float | None) -> FlushResult:
        """Stop accepting events, deliver within the bound, journal the rest, stop the thread."""
        self._refuse_from_worker("close")
        self.check_fork()
        with self._lock:
            if self._closed:
                return self._close_result or FlushResult()
            self._closed = True
            waiter = _Waiter(self._accepted, self._mem_events)
            self._waiters.append(waiter)
        bound = self._config.shutdown_timeout if timeout is None else timeout
        deadline = self._clock() + bound
        # Sends stop a little before the bound, keeping time to journal what is left, so
        # that the whole close (and so the interpreter's exit) stays within the bound.
        self._delivery.deadline = deadline - min(0.5, bound / 4)
        self._stopping.set()
        self._wake.set()
        thread = self._thread
        if thread is not None and thread.is_alive():
            try:
                thread.join(max(0.0, deadline - self._clock()))
            except BaseException:
                # A second Ctrl-C (or a host's signal handler) cut the wait short: journal
                # what is still queued before the interpreter stops the daemon thread.
                self._delivery.deadline = self._clock()
                self._journal_in_flight()
                self._drain_inline(self._clock(), steal=True)
                raise
            if thread.is_alive():
                logger.warning("meterline: worker still busy at close; journaling what is queued")
                self._journal_in_flight()
                self._drain_inline(self._clock(), steal=True)
        else:
            self._drain_inline(self._delivery.deadline)
        result = self._wait(waiter, 0)
        self._close_result = result
        return result

    def _wait(self, waiter: _Waiter, timeout: float | None) -> FlushResult:
        with self._lock:
            self._settled.wait_for(lambda: waiter.remaining <= 0, timeout)
            if waiter in self._waiters:
                self._waiters.remove(waiter)
            return waiter.result()

    def _refuse_from_worker(self, name: str) -> None:
        if self._thread_id is not None and threading.get_ident() == self._thread_id:
            raise RuntimeError(f"{name}() cannot be called from a meterline callback")

    def _start(self) -> bool:
        """Start the thread if it is not running; False when it cannot be (at shutdown)."""
        if self._thread is not None:
            return True
        with self._lock:
            return self._start_locked()

    def _start_locked(self) -> bool:
        if self._thread is None:
            if sys.is_finalizing():
                return False
            thread = threading.Thread(target=self._run, name="meterline-worker", daemon=True)
            try:
                thread.start()
            except RuntimeError:  # "can't create new thread at interpreter shutdown"
                return False
            self._thread = thread
        return True

    # -- the worker's side -----------------------------------------------------------------

    def _run(self) -> None:
        self._thread_id = threading.get_ident()
        try:
            while True:
                try:
                    self._loop()
                    return
                except Exception:  # noqa: BLE001 - a bug must not stop delivery for good
                    logger.exception("meterline: worker loop failed; restarting it in 1 s")
                    self._stopping.wait(1.0)
        finally:
            self._final_drain()

    def _loop(self) -> None:
        self._open_journal()
        interval = self._config.flush_interval
        next_flush = self._clock() + interval * random.uniform(0.9, 1.1)
        next_replay = self._clock()
        while not self._stopping.is_set():
            now = self._clock()
            wait = min(next_flush, next_replay) - now
            delivery = self._delivery
            probe = delivery.circuit.seconds_to_probe()
            if probe is not None and (self._queue or delivery.parked or delivery.backlog):
                wait = min(wait, probe)
            if wait > 0:
                self._wake.wait(wait)
            self._wake.clear()
            if self._stopping.is_set():
                break
            now = self._clock()
            timer = now >= next_flush
            if timer:
                next_flush = now + interval * random.uniform(0.9, 1.1)
            flush, self._flush_wanted = self._flush_wanted, False
            if self._pump(everything=timer or flush or self._wal):
                next_replay = now
            probe_due = delivery.circuit.is_open and delivery.circuit.allow() and delivery.backlog
            if self._replay_wanted or now >= next_replay or probe_due:
                self._replay_wanted = False
                if self._delivery.journal is None:
                    self._open_journal()
                more = self._replayer.replay(budget=_REPLAY_SLICE, should_yield=self._full_waiting)
                next_replay = self._clock() + (0.0 if more else self._config.replay_interval)

    def _pump(self, *, everything: bool) -> bool:
        """Deliver full batches (or everything queued now); True if the endpoint recovered."""
        top_up_keys()
        self._emit_queue_drops()
        delivery = self._delivery
        recovered = False
        if delivery.parked and delivery.circuit.allow():
            delivery.retry_parked()
        budget = len(self._queue) if everything else 0
        while True:
            self._relieve_pressure()
            batch = self._cut(everything=budget > 0)
            if not batch:
                return recovered
            budget -= len(batch)
            for chunk in self._serialize(batch):
                if not self._wal:  # write-ahead batches are on disk before they are sent
                    with self._lock:
                        self._in_flight = {it.idx: it for it in chunk}
                recovered = delivery.deliver(chunk) or recovered

    def _full_waiting(self) -> bool:
        config = self._config
        return len(self._queue) >= config.max_batch_events or (
            self._queued_bytes >= config.max_batch_bytes
        )

    def _cut(self, *, everything: bool) -> list[Pending]:
        config = self._config
        with self._lock:
            if not self._queue or not (everything or self._full_waiting()):
                return []
            batch: list[Pending] = []
            size = 0
            queue = self._queue
            while queue and len(batch) < config.max_batch_events:
                if batch and size + queue[0][SIZE] > config.max_batch_bytes:
                    break
                event = queue.popleft()
                size += event[SIZE]
                batch.append(event)
            self._queued_bytes -= size
            return batch

    def _serialize(self, batch: list[Pending]) -> list[list[Item]]:
        """Exact bytes per event; duplicate keys dropped; chunks kept under the byte limit."""
        field = self._config.customer_field
        limit = self._config.max_batch_bytes - 16
        with self._lock:
            first = self._next_idx
            self._next_idx += len(batch)
        chunks: list[list[Item]] = [[]]
        seen: set[str] = set()
        duplicates: list[Item] = []
        size = 0
        new_item = tuple.__new__  # Item(...) without its Python-level __new__
        bodies = serialize_many(batch, field)
        for i, (event, body) in enumerate(zip(batch, bodies, strict=True)):
            key = event[KEY]
            item: Item = new_item(Item, (first + i, event[SIZE], key, body))
            if key in seen:
                duplicates.append(item)
                continue
            seen.add(key)
            if chunks[-1] and size + len(body) + 1 > limit:
                chunks.append([])
                size = 0
            chunks[-1].append(item)
            size += len(body) + 1
        if duplicates:
            self._delivery.drop(duplicates, "duplicate_key", "same key twice in one batch")
        return [c for c in chunks if c]

    def _nap(self, seconds: float) -> None:
        """Tenacity's sleep: wakes for close(), and journals overflow while it waits."""
        end = self._clock() + seconds
        while not self._stopping.is_set():
            left = end - self._clock()
            if left <= 0:
                return
            if self._wake.wait(left):
                self._wake.clear()
                self._relieve_pressure(0.5)
                if self._wal:  # write-ahead: what arrives during a backoff is journaled now
                    self._journal_queued()

    def _relieve_pressure(self, share: float = 0.75) -> None:
        """Journal full batches while more than ``share`` of the memory bound is in use, so a
        burst or an outage spills to disk instead of dropping (half while backing off)."""
        config = self._config
        journal = self._delivery.journal
        while journal is not None and (
            self._mem_events >= share * config.max_queue_events
            or self._mem_bytes >= share * config.max_queue_bytes
        ):
            batch = self._cut(everything=False)
            if not batch:
                return
            for chunk in self._serialize(batch):
                self._delivery.spill_now(chunk)

    def _journal_queued(self) -> None:
        """Journal every queued event without sending it; replay delivers it later."""
        if self._delivery.journal is None:
            return
        while batch := self._cut(everything=True):
            for chunk in self._serialize(batch):
                self._delivery.spill_now(chunk)

    def _journal_in_flight(self) -> None:
        """close() gave up waiting for a send (a hung endpoint): journal a copy of that batch
        and settle it, so that the exit loses nothing. Should the send still land, the
        replayed copy is a duplicate that the server ignores by its key."""
        journal = self._delivery.journal
        with self._lock:
            items = list(self._in_flight.values())
            self._in_flight = {}
            if journal is None or not items:
                return
            self._abandoned.update(it.idx for it in items)
        try:
            journal.spill([it.body for it in items])
        except (MeterlineError, OSError) as exc:
            logger.error("meterline: could not journal %d event(s) at close: %s", len(items), exc)
            with self._lock:  # they stay the worker's to settle
                self._abandoned.difference_update(it.idx for it in items)
            return
        self.counters.add("journaled", len(items))
        self._settle(items, "journaled", abandoned=True)

    def _settle(self, items: Sequence[Item], outcome: str, *, abandoned: bool = False) -> None:
        live = [it for it in items if it.idx >= 0]
        if not live:
            return
        with self._lock:
            if self._in_flight:
                for it in live:
                    self._in_flight.pop(it.idx, None)
            if self._abandoned and not abandoned:  # close() settled these already
                live = [it for it in live if it.idx not in self._abandoned]
            self._mem_events -= len(live)
            self._mem_bytes -= sum(it.size for it in live)
            done = False
            for waiter in self._waiters:
                k = sum(1 for it in live if it.idx < waiter.target)
                if k:
                    waiter.counts[outcome] += k
                    waiter.remaining -= k
                    done = done or waiter.remaining <= 0
            if done:
                self._settled.notify_all()

    def _emit_queue_drops(self) -> None:
        if not self._drop_keys:
            return
        with self._lock:
            keys, self._drop_keys = self._drop_keys, []
        logger.error("meterline: memory queue full; dropped %d event(s)", len(keys))
        if self._on_drop is not None:
            try:
                self._on_drop(DropReport("queue_full", len(keys), tuple(keys)))
            except Exception:  # noqa: BLE001 - a user callback must not stop the worker
                logger.exception("meterline: on_drop callback raised")

    def _open_journal(self) -> None:
        if self._delivery.journal is not None:
            return
        try:
            journal = self._journal_factory()
            journal.open()
        except (MeterlineError, OSError) as exc:
            logger.error("meterline: journal unavailable (%s); events stay in memory", exc)
            return
        self._delivery.journal = journal

    def _final_drain(self) -> None:
        self._drain_inline(self._delivery.deadline or self._clock())

    def _drain_inline(self, deadline: float, *, steal: bool = False) -> None:
        """Send what is queued until ``deadline``, then journal the rest."""
        delivery = self._delivery
        self._open_journal()
        self._emit_queue_drops()
        while True:
            batch = self._cut(everything=True)
            if not batch:
                break
            for chunk in self._serialize(batch):
                if steal or self._clock() >= deadline:
                    delivery.spill_now(chunk)
                else:
                    delivery.deliver(chunk, final=True)
        if delivery.parked:
            delivery.retry_parked(final=True)
        if self._closed:
            delivery.drop_parked("journal_unavailable")
            delivery.close()
            if delivery.journal is not None:
                delivery.journal.close()

    # -- fork ------------------------------------------------------------------------------

    def _reset_after_fork(self) -> None:
        """In a forked child: start empty; the parent keeps and sends what it had."""
        if self._pid == os.getpid():
            return
        forget_keys()  # uWSGI forks without the hook that empties the parent's key pool
        delivery = self._delivery
        delivery.forget_after_fork()
        journal = delivery.journal
        closed = self._closed
        self._init_state()
        self._delivery.journal = journal
        self._closed = closed


def _after_fork(ref: weakref.ReferenceType[Worker]) -> None:
    worker = ref()
    if worker is not None:
        try:
            worker._reset_after_fork()
        except Exception:
            logging.getLogger("meterline").exception("meterline: reset after fork failed")
