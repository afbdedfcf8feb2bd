"""One client's pipeline: the queue, the spooler and sender threads, flush, close and fork.

``report()`` appends to the queue (no lock, no I/O). The *spooler* cuts batches, serializes
them and journals what must be journaled; it never waits on the network. The *sender* sends,
retries and replays. Every event the spooler takes off the queue is settled exactly once
(``_settle``), which is how ``flush()`` and ``close()`` know when the events they wait for
ended. The close sequence itself is in ``_close``.

Why this module is long: ``Pipeline`` is one object whose state (the queue, the flags the
two threads read, the delivery and its journal) every method shares, and fork resets all of
it at once. The jobs that have their own state are modules of their own (queue, batches,
spooler, sender, settlement, close); what is left would only be split into classes that
reach into each other's attributes.
"""

from __future__ import annotations

import encodings.idna  # noqa: F401 - see below
import logging
import os
import sys
import threading
import time
import weakref
from collections import deque
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

from meterline._delivery import Batch, Delivery, Item
from meterline._errors import ClientClosedError, ConfigError, JournalError
from meterline._event import Pending, forget_keys
from meterline._pipeline._close import close_all
from meterline._pipeline._queue import Queue, Wake
from meterline._pipeline._sender import Sender
from meterline._pipeline._settle import Settlement
from meterline._pipeline._spooler import Spooler
from meterline._replay import NOT_LEADER, Replayer
from meterline._stats import Counters, DropReport, FlushResult, RateLimitedLog, logger

if TYPE_CHECKING:
    from meterline._config import Config
    from meterline._transport import Transport
    from meterline.journal import Journal

__all__ = ["Pipeline", "open_pipelines"]

# The idna codec is imported above, not by the sender's first getaddrinfo(): a fork while a
# thread is inside that import leaves the child's codec registry with "unknown encoding:
# idna" for good, and no request from the child would ever reach the endpoint.

_JOURNAL_RETRY = 5.0  # seconds between attempts to open a journal that failed to open

# Every pipeline that has started its threads and is not closed, referenced strongly: the
# exit closes them all, whether or not their Client objects are still alive.
_open: set[Pipeline] = set()
_open_lock = threading.Lock()


def open_pipelines() -> list[Pipeline]:
    with _open_lock:
        return list(_open)


class Pipeline:
    """Owns the queue and the threads of one client."""

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
        self.config = config
        self.clock = clock
        self._transport_factory = transport_factory
        self._journal_factory = journal_factory
        self._on_error = on_error
        self._on_drop = on_drop
        self.closed = False
        self.close_result: FlushResult | None = None
        self._init_state()
        ref = weakref.ref(self)
        if hasattr(os, "register_at_fork"):
            os.register_at_fork(after_in_child=lambda: _after_fork(ref))

    def _init_state(self) -> None:
        config = self.config
        self.pid = os.getpid()  # report() compares it with os.getpid() on every call
        self.log = RateLimitedLog()
        self.counters = Counters()
        self.settlement = Settlement()
        self.spool_wake = Wake()
        self.send_wake = Wake()
        self.spool_lock = threading.Lock()
        self._start_lock = threading.Lock()
        self.close_lock = threading.Lock()
        self._thread_ids: set[int] = set()
        self.queue = Queue(
            self.settlement,
            max_events=config.max_queue_events,
            max_bytes=config.max_queue_bytes,
            batch_events=config.max_batch_events,
            batch_bytes=config.max_batch_bytes,
            eager=config.durability == "write_ahead",
            wake=self.spool_wake,
            own_thread=self.on_own_thread,
        )
        self.outbox: deque[Batch] = deque()
        self.retry_stop = threading.Event()  # close(): no more backoffs, failures to disk
        self.sender_stop = threading.Event()
        self.spooler_stop = threading.Event()
        self.flush_wanted = False
        self.replay_wanted = False
        self.replay_status: str | None = None
        self.closing = False
        self.backlog_done = False
        self.orphaned = False
        self.final_done = False
        self.final = False  # close() is journaling what is left: nothing goes back to memory
        self.threads: list[threading.Thread] = []
        self._journal_tried = -_JOURNAL_RETRY
        self._journal_lock = threading.Lock()
        self.delivery = Delivery(
            config,
            transport_factory=self._transport_factory,
            counters=self.counters,
            settle=self.settle,
            park=self._park,
            not_abandoned=self.settlement.not_abandoned,
            stopping=self.retry_stop,
            sleep=self._nap,
            on_error=self._on_error,
            on_drop=self._on_drop,
            clock=self.clock,
        )
        self.replayer = Replayer(
            config,
            self.delivery,
            counters=self.counters,
            stopping=self.sender_stop,
            sleep=self._pace,
            clock=self.clock,
        )
        self._spooler = Spooler(self)

    def _nap(self, seconds: float) -> None:
        """A retry backoff that close() cuts short."""
        self.retry_stop.wait(seconds)

    def _pace(self, seconds: float) -> None:
        """Replay pacing that the end of close() cuts short."""
        self.sender_stop.wait(seconds)

    # -- the caller's side -----------------------------------------------------------------

    def check_fork(self) -> None:
        """Start empty if this process was forked without Python's hooks (uWSGI)."""
        if self.pid != os.getpid():
            self._reset_after_fork()

    def submit(self, event: Pending) -> None:
        """Enqueue one validated event; never blocks on I/O, never raises for delivery."""
        if self.closed:
            raise ClientClosedError("report() after close(); create a new Client")
        self.queue.put(event)
        if not self.threads:
            self._start()
        if self.final_done:  # close() finished in the instant between the check and put
            self._withdraw(event)

    def _withdraw(self, event: Pending) -> None:
        entries = self.queue.entries
        for entry in (event, (event,)):
            try:
                entries.remove(entry)
            except ValueError:
                continue
            raise ClientClosedError("report() after close(); create a new Client")

    def reported(self) -> int:
        """Keys ``report()`` returned: taken by the spooler, or still on the queue."""
        return self.settlement.next_idx + len(self.queue)

    def unsettled(self) -> int:
        return self.settlement.held_events + len(self.queue)

    def on_own_thread(self) -> bool:
        return threading.get_ident() in self._thread_ids

    def flush(self, timeout: float | None) -> FlushResult:
        """Send what is queued now and wait until it is settled or ``timeout`` passes."""
        self._refuse_from_callback("flush")
        self.check_fork()
        settlement = self.settlement
        with settlement.lock:
            queued = len(self.queue)
            if settlement.held_events == 0 and queued == 0:
                return FlushResult()
            waiter = settlement.waiter(queued)
        self.flush_wanted = True
        if not self._start():
            self._run_inline(self.clock() + (timeout if timeout is not None else 1e9))
        self.spool_wake()
        self.send_wake()
        return settlement.wait(waiter, timeout)

    def replay(self, timeout: float | None) -> tuple[int, int, str | None]:
        """Ask the sender to replay now; wait until nothing is left this process may send,
        another process leads, or ``timeout``. Returns (remaining, set aside, status)."""
        self._refuse_from_callback("replay")
        self.check_fork()
        deadline = None if timeout is None else self.clock() + timeout
        self.replay_status = None
        pause = threading.Event()
        while True:
            remaining, aside = self.journal_counts()
            if remaining == 0 or self.replay_status == NOT_LEADER or self.closed:
                return remaining, aside, self.replay_status
            self.replay_wanted = True
            if not self._start():
                return remaining, aside, self.replay_status
            self.send_wake()
            left = None if deadline is None else deadline - self.clock()
            if left is not None and left <= 0:
                return remaining, aside, self.replay_status
            pause.wait(0.05 if left is None else min(0.05, left))

    def journal_counts(self) -> tuple[int, int]:
        """(batches this process would replay, batches it sets aside) in ready/."""
        journal = self.delivery.journal
        if journal is None and not self.open_journal():
            return 0, 0
        journal = self.delivery.journal
        assert journal is not None
        try:
            return journal.replayable(), journal.set_aside()
        except (JournalError, OSError):
            return 0, 0

    def _refuse_from_callback(self, name: str) -> None:
        if self.on_own_thread():
            raise RuntimeError(f"{name}() cannot be called from a meterline callback")

    # -- threads ---------------------------------------------------------------------------

    def _start(self) -> bool:
        """Start both threads if they are not running; False when they cannot be."""
        if self.threads:
            return True
        if not self._start_lock.acquire(blocking=False):
            return True  # another thread (or the code this signal handler interrupted) is
        try:
            if self.threads:
                return True
            if sys.is_finalizing() or self.closing:
                return False
            threads = [
                threading.Thread(target=self._run_spooler, name="meterline-spooler", daemon=True),
                threading.Thread(target=Sender(self).run, name="meterline-sender", daemon=True),
            ]
            with _open_lock:
                _open.add(self)
            try:
                for thread in threads:
                    thread.start()
                    self._thread_ids.add(thread.ident or 0)
            except RuntimeError:  # "can't create new thread at interpreter shutdown"
                return False
            self.threads = threads
            return True
        finally:
            self._start_lock.release()

    def _run_spooler(self) -> None:
        self._thread_ids.add(threading.get_ident())
        self._spooler.run()

    def sender_done(self) -> None:
        """The sender's last act: release the connection; after close(), the journal too
        (its claims and the replay lock, which another client may be waiting for)."""
        self.delivery.close()
        if self.final_done:
            self.close_journal()

    def close_journal(self) -> None:
        journal = self.delivery.journal
        if journal is not None:
            try:
                journal.close()
            except (JournalError, OSError):
                logger.debug("meterline: closing the journal failed", exc_info=True)

    def _journal_opened(self) -> bool:
        return self.delivery.journal is not None

    def open_journal(self) -> bool:
        """Open the journal if it is not (at most every few seconds after a failure)."""
        if self.delivery.journal is not None:
            return True
        with self._journal_lock:
            if self._journal_opened():  # another thread opened it meanwhile
                return True
            now = self.clock()
            if now - self._journal_tried < _JOURNAL_RETRY:
                return False
            self._journal_tried = now
            try:
                journal = self._journal_factory()
                journal.open()
            except (JournalError, ConfigError, OSError) as exc:
                self.log.log(
                    logging.ERROR,
                    "journal-open",
                    "meterline: journal unavailable (%s); events stay in memory",
                    exc,
                )
                return False
            self.delivery.journal = journal
            return True

    def take_batch(self) -> Batch | None:
        try:
            return self.outbox.popleft()
        except IndexError:
            return None

    def has_batches(self) -> bool:
        return bool(self.outbox)

    def settle(self, items: Sequence[Item], outcome: str, reason: str = "") -> None:
        """The one way an event is settled: counted in stats and for its waiters."""
        n = self.settlement.settle(items, outcome)
        if n:
            if outcome == "dropped":
                self.counters.drop(reason, n)
            else:
                self.counters.add(outcome, n)

    def _park(self, batch: Batch) -> None:
        """Neither sent nor journaled: back to memory, unless close() is past its last look
        (then dropped, counted, so that nothing outlives its accounting)."""
        if self.final:
            self.delivery.spill(batch.items, final=True)
        else:
            self.outbox.append(batch)

    def keep_unsent(self, batch: Batch) -> None:
        """A send raised something unexpected: journal the batch, or keep it in memory."""
        journal = self.delivery.journal
        if batch.claim is not None and journal is not None:
            self.delivery.quietly(journal.release, batch.claim)
            self.settle(batch.items, "journaled")
            return
        self.delivery.spill(batch.items)

    # -- close -----------------------------------------------------------------------------

    def close(self, timeout: float | None) -> FlushResult:
        """Stop accepting events, deliver within the bound, journal the rest, stop threads."""
        self._refuse_from_callback("close")
        self.check_fork()
        return close_all([self], timeout)[0]

    def orphan(self) -> None:
        """The Client was garbage-collected: close in the background, never in the caller."""
        if self.closed:
            return
        if not self.threads:
            self.closed = True
            return
        self.orphaned = True
        self.spool_wake()

    def close_orphan(self) -> None:
        try:
            close_all([self], None)
        except BaseException:  # noqa: BLE001 - the last act of a thread nobody waits for
            logger.exception("meterline: closing a collected client failed")

    def spool(self, *, to_outbox: bool) -> None:
        try:
            self._spooler.step(everything=True, to_outbox=to_outbox)
        except BaseException:  # noqa: BLE001 - what stays queued is journaled at the end
            logger.exception("meterline: spooling at close failed")

    def _run_inline(self, deadline: float) -> None:
        """Threads cannot start (interpreter shutdown): deliver from the caller's thread."""
        self.open_journal()
        self.spool(to_outbox=True)
        while (batch := self.take_batch()) is not None:
            if self.clock() >= deadline:
                self.delivery.spill(batch.items, final=True)
            else:
                self.delivery.deliver(batch, final=True)

    def unregister(self) -> None:
        """Closed: the exit has nothing more to close here."""
        with _open_lock:
            _open.discard(self)

    # -- fork ------------------------------------------------------------------------------

    def _reset_after_fork(self) -> None:
        """In a forked child: start empty; the parent keeps and sends what it had."""
        if self.pid == os.getpid():
            return
        forget_keys()  # uWSGI forks without the hook that empties the parent's key pool
        delivery = self.delivery
        delivery.forget_after_fork()
        journal = delivery.journal
        self._init_state()
        self.delivery.journal = journal
        with _open_lock:
            _open.discard(self)


def _after_fork(ref: weakref.ReferenceType[Pipeline]) -> None:
    pipe = ref()
    if pipe is not None:
        try:
            pipe._reset_after_fork()
        except Exception:
            logging.getLogger("meterline").exception("meterline: reset after fork failed")
