"""The spooler thread: cuts batches off the queue, serializes them, and journals what must
be journaled (memory pressure, an open circuit, write-ahead). It never waits on the network,
so a hung or slow endpoint cannot stop events from reaching the disk."""

from __future__ import annotations

import logging
import random
from typing import TYPE_CHECKING

from meterline._delivery import Batch
from meterline._errors import JournalError
from meterline._event import top_up_keys
from meterline._outcomes import I_BODY
from meterline._pipeline._batches import cut
from meterline._stats import logger

if TYPE_CHECKING:
    from meterline._pipeline._pipeline import Pipeline

__all__ = ["Spooler"]

_WAL_GROUP = 8  # batches per write-ahead file at most
_SHARE = 0.75  # beyond this share of the memory bounds, new batches go to disk
_CONFLICT = "conflicting_duplicate_key: the same idempotency_key was reported with other content"


class Spooler:
    """The spooler of one pipeline."""

    def __init__(self, pipe: Pipeline) -> None:
        self._pipe = pipe
        config = pipe.config
        self._interval = config.flush_interval
        self._wal = config.durability == "write_ahead"
        # Write-ahead journals whatever is queued in one file per fsync (a burst of many
        # batches would otherwise wait a whole series of fsyncs before it is on disk); the
        # sender still sends it in batches of the destination's size.
        group = _WAL_GROUP if self._wal else 1
        self._cut_limits = (config.max_batch_events * group, config.max_batch_bytes * group)

    def run(self) -> None:
        pipe = self._pipe
        clock = pipe.clock
        wake = pipe.spool_wake.event
        next_flush = clock() + self._interval * random.uniform(0.9, 1.1)
        pipe.open_journal()
        while not pipe.spooler_stop.is_set():
            wait = next_flush - clock()
            if wait > 0 and not (self._wal and len(pipe.queue)):
                wake.wait(wait)
            wake.clear()
            if pipe.orphaned:
                pipe.close_orphan()
                return
            if pipe.spooler_stop.is_set():
                return
            now = clock()
            timer = now >= next_flush
            if timer:
                next_flush = now + self._interval * random.uniform(0.9, 1.1)
            flush, pipe.flush_wanted = pipe.flush_wanted, False
            try:
                self.step(everything=timer or flush or self._wal)
            except BaseException:  # noqa: BLE001 - step() keeps its batches; a bug must not stop us
                logger.exception("meterline: the spooler failed; going on")

    def step(self, *, everything: bool, to_outbox: bool = False) -> None:
        """Take full batches (or ``everything`` queued) and place them; ``to_outbox``: hand
        every batch to the sender, journal nothing (close() journals what is left)."""
        pipe = self._pipe
        config = pipe.config
        queue = pipe.queue
        settlement = pipe.settlement
        with pipe.spool_lock:
            top_up_keys()
            while True:
                if (
                    not everything
                    and not queue.pressure
                    and not (
                        len(queue) >= config.max_batch_events
                        or queue.queued_bytes() >= config.max_batch_bytes
                    )
                ):
                    return
                with settlement.lock:
                    before = queue.out_bytes
                    entries = queue.take(*self._cut_limits)
                    if not entries:
                        queue.reset_pressure()
                        return
                    first = settlement.admit(len(entries), queue.out_bytes - before)
                self._place_cut(entries, first, to_outbox)
                if queue.pressure and not self._pressed():
                    queue.reset_pressure()

    def _place_cut(self, entries: list[object], first: int, to_outbox: bool) -> None:
        pipe = self._pipe
        config = pipe.config
        delivery = pipe.delivery
        made = cut(
            entries,
            first,
            config.destination.serialize_many,
            config.max_batch_events,
            config.max_batch_bytes,
        )
        placed = 0
        try:
            if made.duplicates:
                pipe.settle(made.duplicates, "deduplicated", "")
            if made.conflicts:
                delivery.keep_rejected([(it, [_CONFLICT]) for it in made.conflicts], None)
                pipe.settle(made.conflicts, "rejected", "")
            delivery.drop(made.unserializable, "unserializable", "the serializer refused it")
            delivery.drop(made.turned_away, "queue_full", "memory queue full")
            if self._wal and len(made.batches) > 1:  # one file, one fsync, for the group
                made.batches = [Batch([it for batch in made.batches for it in batch.items])]
            for batch in made.batches:
                self._place(batch, to_outbox)
                placed += 1
        except BaseException:
            for batch in made.batches[placed:]:  # kept in memory: the sender or close() has them
                pipe.outbox.append(batch)
            raise
        finally:
            pipe.send_wake()

    def _place(self, batch: Batch, to_outbox: bool) -> None:
        pipe = self._pipe
        delivery = pipe.delivery
        journal = delivery.journal
        if self._wal and journal is not None:
            try:
                batch.claim = journal.spill_held([it[I_BODY] for it in batch.items])
            except (JournalError, ValueError) as exc:
                pipe.log.log(
                    logging.ERROR, "wal", "meterline: write-ahead journaling failed: %s", exc
                )
        if not to_outbox and self._pressed():
            if batch.claim is not None and journal is not None:  # on disk already: let it be
                claim, batch.claim = batch.claim, None
                delivery.quietly(journal.release, claim)
                delivery.backlog = True
                pipe.settle(batch.items, "journaled", "")
                return
            # When the disk refuses, the batch goes back to memory, in the outbox.
            pipe.queue.disk_refuses = not delivery.spill(batch.items)
            return
        pipe.outbox.append(batch)

    def _pressed(self) -> bool:
        """Whether new batches should go to disk rather than wait in memory for the sender."""
        pipe = self._pipe
        config = pipe.config
        held = pipe.settlement
        circuit = pipe.delivery.circuit
        return (
            pipe.queue.pressure
            or held.held_events >= _SHARE * config.max_queue_events
            or held.held_bytes + pipe.queue.queued_bytes() >= _SHARE * config.max_queue_bytes
            or (circuit.is_open and not circuit.allow())
        )
