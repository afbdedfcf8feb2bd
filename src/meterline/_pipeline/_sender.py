"""The sender thread: sends the batches the spooler handed over (with retries), journals what
the budget could not deliver, and replays the journal backlog when the endpoint answers."""

from __future__ import annotations

from typing import TYPE_CHECKING

from meterline._outcomes import PARKED, RECOVERED, Batch
from meterline._replay import FAILED, MORE, NOT_LEADER
from meterline._stats import logger

if TYPE_CHECKING:
    from meterline._pipeline._pipeline import Pipeline

__all__ = ["Sender"]

_REPLAY_SLICE = 0.25  # seconds of replay between looks at live traffic
_PARKED_WAIT = 1.0  # a batch neither sent nor journaled is tried again after this


class Sender:
    """The sender of one pipeline."""

    def __init__(self, pipe: Pipeline) -> None:
        self._pipe = pipe

    def run(self) -> None:
        pipe = self._pipe
        try:
            self._loop()
        finally:
            pipe.sender_done()

    def _loop(self) -> None:
        pipe = self._pipe
        config = pipe.config
        clock = pipe.clock
        delivery = pipe.delivery
        circuit = delivery.circuit
        wake = pipe.send_wake.event
        next_replay = clock()
        while not pipe.sender_stop.is_set():
            batch = pipe.take_batch()
            if batch is not None:
                outcome = self._deliver(batch)
                if outcome == RECOVERED:
                    next_replay = clock()
                elif outcome == PARKED:
                    wake.wait(min(_PARKED_WAIT, circuit.seconds_to_probe() or _PARKED_WAIT))
                    wake.clear()
                continue
            now = clock()
            if pipe.closing:
                if not pipe.backlog_done:
                    status = self._replay(budget=_REPLAY_SLICE)
                    if status != MORE:
                        pipe.backlog_done = True
                    continue
                wait = 0.05
            elif pipe.replay_wanted or now >= next_replay or self._probe_due():
                pipe.replay_wanted = False
                status = self._replay(budget=_REPLAY_SLICE)
                if status == MORE:
                    next_replay = now
                elif status == NOT_LEADER:  # waits on its timers: it must never spin
                    next_replay = now + config.replay_interval
                    circuit.postpone(config.probe_interval)
                elif status == FAILED and circuit.is_open:
                    next_replay = now + (circuit.seconds_to_probe() or config.probe_interval)
                else:  # EMPTY, FAILED
                    next_replay = now + config.replay_interval
                continue
            else:
                wait = next_replay - now
                probe = circuit.seconds_to_probe()
                if probe is not None and delivery.backlog:
                    wait = min(wait, probe)
            if wait > 0:
                wake.wait(wait)
            wake.clear()

    def _probe_due(self) -> bool:
        """An open circuit with a backlog on disk: the first replay batch is the probe."""
        delivery = self._pipe.delivery
        return delivery.circuit.is_open and delivery.backlog and delivery.circuit.allow()

    def _deliver(self, batch: Batch) -> str:
        pipe = self._pipe
        try:
            return pipe.delivery.deliver(batch)
        except BaseException:  # noqa: BLE001 - a bug must not cost the batch or the thread
            logger.exception("meterline: delivering a batch failed; journaling it")
            pipe.keep_unsent(batch)
            return PARKED

    def _replay(self, *, budget: float) -> str:
        pipe = self._pipe
        if pipe.delivery.journal is None and not pipe.open_journal():
            status = FAILED
        else:
            try:
                status = pipe.replayer.replay(budget=budget, should_yield=pipe.has_batches)
            except BaseException:  # noqa: BLE001 - a bug in replay must not stop live sends
                logger.exception("meterline: replay failed; trying again later")
                status = FAILED
        pipe.replay_status = status
        return status
