"""close(): deliver within the bound, journal the rest, stop the threads.

A ``Closing`` is one close() in progress on one pipeline: it refuses new events, hands
everything queued to the sender, and is looked at every few milliseconds until what it
waits for is settled, or the bound is near and it journals what is not delivered (the
batch in flight included). ``close_all`` closes several pipelines within one bound (the
interpreter's exit): the whole takes as long as the longest bound, not their sum.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterable
from typing import TYPE_CHECKING

from meterline._delivery import Batch
from meterline._errors import JournalError
from meterline._outcomes import I_BODY, I_KEY
from meterline._stats import DropReport, FlushResult, logger

if TYPE_CHECKING:
    from meterline._pipeline._pipeline import Pipeline
    from meterline._pipeline._settle import Waiter

__all__ = ["close_all"]

_STEP = 0.005  # how often close() looks at its pipelines
_STUCK = 0.5  # a send at close taking longer than this (or a quarter of the bound): journal


def close_all(pipelines: Iterable[Pipeline], timeout: float | None) -> list[FlushResult]:
    """Close pipelines together, each within its bound (``timeout``, else its own
    ``shutdown_timeout``): the whole takes as long as the longest bound, not their sum."""
    pipelines = list(pipelines)
    now = time.monotonic()
    active = []
    for pipe in pipelines:
        bound = pipe.config.shutdown_timeout if timeout is None else max(0.0, timeout)
        closing = _begin_close(pipe, pipe.clock() + bound)
        if closing is not None:
            active.append(closing)
        else:
            _wait_for_other_close(pipe, now + bound)
    pause = threading.Event()
    while active:
        active = [closing for closing in active if not _step(closing)]
        if active:
            pause.wait(_STEP)
    return [FlushResult() if p.close_result is None else p.close_result for p in pipelines]


def _begin_close(pipe: Pipeline, deadline: float) -> Closing | None:
    """Refuse new events and hand everything queued to the sender; None if another
    close() has it (or had it)."""
    with pipe.close_lock:
        if pipe.closing:
            return None
        pipe.closing = True
        pipe.closed = True
    closing = Closing(pipe, deadline)
    closing.begin()
    return closing


def _step(closing: Closing) -> bool:
    try:
        return closing.step()
    except BaseException:  # noqa: BLE001 - one client's failure must not hold the others
        logger.exception("meterline: closing a client failed")
        try:
            closing.journal_rest()
        finally:
            closing.finish()
        return True


def _wait_for_other_close(pipe: Pipeline, deadline: float) -> None:
    pause = threading.Event()
    while pipe.close_result is None and time.monotonic() < deadline and pipe.closing:
        pause.wait(_STEP)


class Closing:
    """One close() of one pipeline, from the refusal of new events to the stopped threads."""

    def __init__(self, pipe: Pipeline, deadline: float) -> None:
        self.pipe = pipe
        with pipe.settlement.lock:
            self.waiter: Waiter = pipe.settlement.waiter(len(pipe.queue))
        self.deadline = deadline
        self.bound = max(0.0, deadline - pipe.clock())
        self.inline = False

    def begin(self) -> None:
        pipe = self.pipe
        pipe.delivery.deadline = self.deadline - self._reserve()
        pipe.retry_stop.set()
        pipe.delivery.circuit.probe_now()  # the endpoint may be back: try once before giving up
        pipe.spooler_stop.set()
        pipe.spool_wake()
        pipe.open_journal()
        self.inline = not pipe.threads or not pipe.threads[1].is_alive()
        pipe.spool(to_outbox=True)
        pipe.send_wake()

    def _reserve(self) -> float:
        """Seconds to keep, before the bound, for journaling what is still unsettled."""
        n = self.pipe.unsettled()
        batches = n // self.pipe.config.max_batch_events + 1
        return 0.02 + n * 10e-6 + batches * 0.004

    def step(self) -> bool:
        """One look at a closing pipeline; True when it is done."""
        pipe = self.pipe
        now = pipe.clock()
        waiter = self.waiter
        if len(pipe.queue):  # reported in the instant close() began
            pipe.spool(to_outbox=True)
        reserve = self._reserve()
        pipe.delivery.deadline = self.deadline - reserve
        settled = waiter.remaining <= 0 and not pipe.outbox
        if settled and (pipe.backlog_done or self.inline or not pipe.delivery.backlog):
            self.finish()
            return True
        if now >= self.deadline - reserve:
            self.journal_rest()
            self.finish()
            return True
        # A first send opens the connection (TLS, or a Kafka producer's id: about a second):
        # it gets half the bound before it counts as stuck, later sends 0.5 s.
        stuck = min(_STUCK, self.bound / 4) if pipe.delivery.answered else self.bound / 2
        if pipe.delivery.in_flight is not None and now - pipe.delivery.in_flight_since > stuck:
            self._journal_waiting()  # the endpoint is slow or hung: what waits goes to disk now
        if self.inline:  # no sender thread (interpreter shutdown): send from here
            batch = pipe.take_batch()
            if batch is not None:
                pipe.delivery.deliver(batch, final=True)
            elif settled:
                self.finish()
                return True
        return False

    def _journal_waiting(self, *, final: bool = False) -> None:
        """Journal the batches still waiting for the sender (not the one in flight);
        ``final``: what the disk refuses is dropped, counted."""
        pipe = self.pipe
        delivery = pipe.delivery
        journal = delivery.journal
        while (batch := pipe.take_batch()) is not None:
            if batch.claim is not None and journal is not None:
                claim, batch.claim = batch.claim, None
                delivery.quietly(journal.release, claim)
                pipe.settle(batch.items, "journaled")
            elif not delivery.spill(batch.items, final=final):
                return  # the disk refuses: it went back to the outbox; the end will decide

    def journal_rest(self) -> None:
        """The bound is near: journal what is not delivered, the batch in flight included."""
        pipe = self.pipe
        pipe.delivery.deadline = pipe.clock()  # no new send starts
        pipe.final = True
        pipe.spool(to_outbox=True)
        pipe.delivery.journal_in_flight(self._journal_copy)
        self._journal_waiting(final=True)

    def _journal_copy(self, batch: Batch) -> None:
        """close() gave up waiting for a send (a hung endpoint): journal a copy of that
        batch and settle it, so that the exit loses nothing. Should the send still land,
        the replayed copy is a duplicate the server ignores by its key."""
        pipe = self.pipe
        items = pipe.settlement.abandon(batch.items)
        if not items:
            return
        journal = pipe.delivery.journal
        if batch.claim is None:  # in write-ahead mode the file is in ready/ already
            try:
                if journal is None:
                    raise JournalError("no usable journal")
                journal.spill([it[I_BODY] for it in items])
            except (JournalError, ValueError) as exc:
                n = pipe.settlement.settle(items, "dropped", abandoned=True)
                pipe.counters.drop("journal_unavailable", n)
                pipe.delivery.report_drop(
                    DropReport(
                        "journal_unavailable",
                        n,
                        tuple(it[I_KEY] for it in items),
                        tuple(it[I_BODY] for it in items),
                    )
                )
                logger.error("meterline: could not journal %d event(s) at close: %s", n, exc)
                return
        n = pipe.settlement.settle(items, "journaled", abandoned=True)
        pipe.counters.add("journaled", n)
        pipe.delivery.backlog = True

    def finish(self) -> None:
        pipe = self.pipe
        waiter = self.waiter
        pipe.sender_stop.set()
        pipe.send_wake()
        sender = pipe.threads[1] if pipe.threads else None
        if sender is not None and sender.is_alive() and not pipe.on_own_thread():
            sender.join(max(0.0, min(0.2, self.deadline - pipe.clock())))
        pipe.close_result = waiter.result()
        pipe.final_done = True
        if sender is None or not sender.is_alive():  # else the sender does it on its way out
            pipe.delivery.close()
            pipe.close_journal()
        pipe.unregister()
