"""Replay: drain the journal backlog through the delivery's send path, oldest first.

Only the process that leads the journal (holds ``locks/replay.lock``) replays. Each batch
is claimed, read (a damaged one is quarantined by the journal), paced by
``replay_rate``, sent once with the same splitting rules as live traffic, and then
acknowledged, settled as new files, or released for a later try. The first replay batch
after an outage is also the circuit's probe.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from datetime import datetime
from typing import TYPE_CHECKING

import orjson

from ._delivery import Delivery, Item
from ._errors import JournalCorruptError, JournalError, JournalForeignError
from ._outcomes import I_BODY, I_KEY, Result
from ._stats import Counters, DropReport, RateLimitedLog

if TYPE_CHECKING:
    from ._config import Config
    from .journal import BatchRef, Journal

__all__ = ["EMPTY", "FAILED", "MORE", "NOT_LEADER", "Replayer"]

MORE, EMPTY, NOT_LEADER, FAILED = "more", "empty", "not leader", "failed"


class Replayer:
    """Replays journal batches for one pipeline; every method runs on the sender thread."""

    def __init__(
        self,
        config: Config,
        delivery: Delivery,
        *,
        counters: Counters,
        stopping: threading.Event,
        sleep: Callable[[float], None],
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._config = config
        self._key_field = config.destination.key_field
        dest = config.destination
        window = getattr(dest, "max_event_age", None)
        self._window: float | None = float(window) if isinstance(window, (int, float)) else None
        self._too_old = (
            f"older than {dest.name} accepts ({(window or 0) / 86_400:g} days) when replayed: "
            "not sent"
        )
        self._wall = time.time
        self._delivery = delivery
        self._counters = counters
        self._stopping = stopping
        self._sleep = sleep
        self._clock = clock
        self._log = RateLimitedLog()
        self._next_at = 0.0

    def replay(self, *, budget: float, should_yield: Callable[[], bool]) -> str:
        """Replay journal batches for up to ``budget`` seconds. MORE: batches are waiting;
        EMPTY: nothing left this process may send; NOT_LEADER: another process replays;
        FAILED: the endpoint failed (the circuit says when to try again)."""
        delivery = self._delivery
        journal = delivery.journal
        if journal is None:
            return FAILED
        try:
            if not journal.try_lead():
                return NOT_LEADER
            journal.expire(on_expired=self._expired)  # needs no network: even while it is down
            if not delivery.circuit.allow():
                return FAILED
            refs = journal.ready()
        except JournalError as exc:
            self._log.log(logging.ERROR, "replay", "meterline: cannot read the journal: %s", exc)
            return FAILED
        if not refs:
            delivery.backlog = False
            return EMPTY
        end = self._clock() + budget
        for ref in refs:
            if self._stopping.is_set() or should_yield() or self._clock() >= end:
                return MORE
            if not self._replay_one(journal, ref):
                return FAILED
        return MORE

    def _expired(self, bodies: list[bytes]) -> None:
        """Batches older than ``journal_max_age`` left ready/ unsent: count and report."""
        self._counters.add("expired", len(bodies))
        self._log.log(
            logging.ERROR,
            "expired",
            "meterline: %d journaled event(s) passed journal_max_age and moved to expired/ "
            "(send them with a backfill)",
            len(bodies),
        )
        self._delivery.report_drop(
            DropReport(
                "expired",
                len(bodies),
                tuple(_key_of(b, self._key_field) for b in bodies),
                tuple(bodies),
            )
        )

    def _replay_one(self, journal: Journal, ref: BatchRef) -> bool:
        """One batch; False when the endpoint failed and replay should stop for now."""
        delivery = self._delivery
        claim = journal.claim(ref)
        if claim is None:
            return True
        try:
            bodies = journal.read(claim)
        except JournalCorruptError as exc:
            self._log.log(logging.WARNING, "corrupt", "meterline: quarantined a batch: %s", exc)
            return True
        except JournalForeignError as exc:  # left in place for the client it belongs to
            self._log.log(logging.WARNING, "foreign", "meterline: %s", exc)
            return True
        except JournalError as exc:
            self._log.log(logging.ERROR, "replay", "meterline: cannot replay a batch: %s", exc)
            delivery.quietly(journal.release, claim)
            return True
        self._pace(len(bodies))
        field = self._key_field
        items: list[Item] = [(-1, 0, _key_of(body, field), body) for body in bodies]
        stale, items = self._past_window(items)
        result = delivery.send_once(items) if items else Result()
        result.rejected += stale
        if result.rejected:
            delivery.call_on_error(
                ValueError("replayed events rejected by the server"),
                {"rejected": {it[I_KEY]: reasons for it, reasons in result.rejected}},
            )
        if result.delivered:
            self._counters.add("replayed", len(result.delivered))
        if result.rejected:
            # journaled (and counted so) earlier, maybe by another process
            self._counters.add("rejected_on_replay", len(result.rejected))
        try:
            if not result.pending and not result.rejected:
                journal.ack(claim)
            elif result.delivered or result.rejected:
                journal.settle(
                    claim,
                    remaining=[it[I_BODY] for it in result.pending],
                    rejected=[(it[I_BODY], reasons) for it, reasons in result.rejected],
                )
            else:
                journal.release(claim)
        except JournalError as exc:
            self._log.log(logging.ERROR, "replay", "meterline: journal update failed: %s", exc)
        if result.pending:
            interval = (
                self._config.auth_probe_interval if result.refused else self._config.probe_interval
            )
            delivery.circuit.fail(interval)
            delivery.report_failure(result, len(items))
            return False
        if items:  # an answer was had: the endpoint is back
            delivery.circuit.succeed()
        return True

    def _past_window(self, items: list[Item]) -> tuple[list[tuple[Item, list[str]]], list[Item]]:
        """Events older than the destination accepts (Stripe: 35 days), split off: sent,
        they would be refused, or with Stripe dropped unseen after a 200. They are kept in
        rejected/ with the reason instead."""
        window = self._window
        if window is None:
            return [], items
        limit = self._wall() - window + _WINDOW_MARGIN
        stale: list[tuple[Item, list[str]]] = []
        fresh: list[Item] = []
        for it in items:
            when = _event_time(it[I_BODY])
            if when is not None and when < limit:
                stale.append((it, [self._too_old]))
            else:
                fresh.append(it)
        return stale, fresh

    def _pace(self, n: int) -> None:
        """Keep replay under ``replay_rate`` events per second."""
        now = self._clock()
        if self._next_at > now:
            self._sleep(self._next_at - now)
        self._next_at = max(now, self._next_at) + n / self._config.replay_rate


_WINDOW_MARGIN = 600.0  # s: an event this close to the window's edge may cross it in transit


def _event_time(body: bytes) -> float | None:
    """The ``timestamp`` of an event's bytes (RFC 3339 UTC, as meterline writes it), in
    seconds since the epoch; None when it has none it can read."""
    try:
        doc = orjson.loads(body)
    except orjson.JSONDecodeError:
        return None
    text = doc.get("timestamp") if isinstance(doc, dict) else None
    if not isinstance(text, str):
        return None
    try:
        return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()
    except ValueError:
        return None


def _key_of(body: bytes, field: str) -> str:
    """The idempotency key in an event's bytes, from the destination's field ("" if none)."""
    try:
        doc = orjson.loads(body)
    except orjson.JSONDecodeError:
        return ""
    key = doc.get(field) if isinstance(doc, dict) else None
    return key if isinstance(key, str) else ""
