"""What becomes of the events of a batch once a send is over: the settling half of delivery.

Each event ends in one counted state: sent, rejected (kept in the journal's ``rejected/``
with the server's reasons), journaled, parked in memory (the journal cannot take it now)
or dropped with a reason. The journal is brought up to date before an event is settled,
so that once ``flush()`` sees it settled, its file is already acknowledged or written.
``Delivery`` (``_delivery``) is the sending half and builds on this class.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Final, Literal

from ._errors import JournalError, JournalFullError
from ._stats import Counters, DropReport, RateLimitedLog, logger

if TYPE_CHECKING:
    from .journal import Claim, Journal

__all__ = ["DONE", "PARKED", "RECOVERED", "Batch", "Item", "Outcomes", "Result"]


# One serialized event: (idx, size, key, body). ``idx`` orders it in its client's queue (-1:
# a replayed one), ``size`` is its estimated size in the memory bounds, ``body`` its exact
# bytes. A plain tuple, not a NamedTuple: CPython's collector stops tracking an exact tuple
# of atoms once it has survived a collection, and a burst holds one per event until it
# settles (as a NamedTuple, 0.3 µs of collection work per event in the steady benchmark).
Item = tuple[int, int, str, bytes]
I_IDX: Final[Literal[0]] = 0
I_SIZE: Final[Literal[1]] = 1
I_KEY: Final[Literal[2]] = 2
I_BODY: Final[Literal[3]] = 3


class Batch:
    """Events sent together, and in write-ahead mode the journal file that holds them."""

    __slots__ = ("claim", "items")

    def __init__(self, items: list[Item], claim: Claim | None = None) -> None:
        self.items = items
        self.claim = claim


Settle = Callable[[Sequence[Item], str, str], None]  # items, outcome, drop reason
Park = Callable[[Batch], None]
ErrorHook = Callable[[BaseException, dict[str, object]], None]
DropHook = Callable[[DropReport], None]

DONE, RECOVERED, PARKED = "done", "recovered", "parked"


@dataclass
class Result:
    """What one send (with its splits) did to a batch."""

    delivered: list[Item] = field(default_factory=list)
    rejected: list[tuple[Item, list[str]]] = field(default_factory=list)
    pending: list[Item] = field(default_factory=list)
    delay: float | None = None
    error: str = ""
    refused: bool = False  # 401/403/other 4xx: the endpoint refuses us; do not hammer it

    def merge(self, other: Result) -> None:
        self.delivered += other.delivered
        self.rejected += other.rejected
        self.pending += other.pending
        self.delay = other.delay if other.delay is not None else self.delay
        self.error = other.error or self.error
        self.refused = self.refused or other.refused


class Outcomes:
    """Settles the events of finished sends for one pipeline, and tells the callbacks."""

    def __init__(
        self,
        *,
        counters: Counters,
        settle: Settle,
        park: Park,
        not_abandoned: Callable[[list[Item]], list[Item]] | None = None,
        on_error: ErrorHook | None = None,
        on_drop: DropHook | None = None,
    ) -> None:
        self.journal: Journal | None = None
        self._counters = counters
        self._settle = settle
        self._park = park
        self._not_abandoned = not_abandoned
        self._on_error = on_error
        self._on_drop = on_drop
        self._log = RateLimitedLog()
        self.backlog = True  # the journal may hold ready batches (unknown at start)

    def _keep(self, batch: Batch, result: Result, *, quiet: bool = False) -> str:
        """Settle every event of a finished batch: sent, rejected, journaled or parked.

        The journal is brought up to date first, so that once ``flush()`` sees an event
        settled its file is already acknowledged, settled or written.
        """
        claim = batch.claim
        batch.claim = None
        outcome = DONE
        if result.rejected:
            self._reject(result.rejected, claim if not result.pending else None)
            if not result.pending:
                claim = None
        if result.pending:
            if not quiet:
                self.report_failure(result, len(batch.items))
            if claim is not None:
                self._keep_claimed(claim, result)
            else:
                # close() may have journaled this batch while the send hung: no second copy
                pending = result.pending
                if self._not_abandoned is not None:
                    pending = self._not_abandoned(pending)
                if pending and not self.spill(pending):
                    outcome = PARKED
        elif claim is not None and self.journal is not None:
            self.quietly(self.journal.ack, claim)
        if result.delivered:
            self._settle(result.delivered, "sent", "")
        return outcome

    def _keep_claimed(self, claim: Claim, result: Result) -> None:
        assert self.journal is not None
        if result.delivered or result.rejected:
            try:
                self.journal.settle(claim, remaining=[it[I_BODY] for it in result.pending])
            except JournalError as exc:
                self._log.log(logging.ERROR, "settle", "meterline: journal settle failed: %s", exc)
                self.quietly(self.journal.release, claim)
        else:
            self.quietly(self.journal.release, claim)
        self.backlog = True
        self._settle(result.pending, "journaled", "")

    def _reject(self, rejected: list[tuple[Item, list[str]]], claim: Claim | None) -> None:
        items = [it for it, _ in rejected]
        self._log.log(
            logging.WARNING,
            "rejected",
            "meterline: the server rejected %d event(s), e.g. %s: %s",
            len(items),
            items[0][I_KEY],
            "; ".join(rejected[0][1]),
        )
        self.call_on_error(
            ValueError("events rejected by the server"),
            {"rejected": {it[I_KEY]: reasons for it, reasons in rejected}},
        )
        self.keep_rejected(rejected, claim)
        self._settle(items, "rejected", "")

    def keep_rejected(self, rejected: list[tuple[Item, list[str]]], claim: Claim | None) -> None:
        """Write rejected events with their reasons to ``rejected/`` (settling ``claim``)."""
        pairs = [(it[I_BODY], reasons) for it, reasons in rejected]
        if self.journal is None:
            return
        try:
            if claim is None:
                claim = self.journal.spill_held([it[I_BODY] for it, _ in rejected])
            self.journal.settle(claim, rejected=pairs)
        except (JournalError, ValueError) as exc:
            self._log.log(
                logging.ERROR, "rejectlog", "meterline: could not keep rejected events: %s", exc
            )

    def spill(self, items: list[Item], *, final: bool = False) -> bool:
        """Journal events without sending them; False when the journal cannot take them
        now and they went back to memory (``final``: dropped, counted, instead)."""
        journal = self.journal
        try:
            if journal is None:
                raise JournalError("no usable journal")
            journal.spill([it[I_BODY] for it in items])
        except JournalFullError as exc:
            return self._cannot_journal(items, "journal_full", str(exc), final)
        except JournalError as exc:
            return self._cannot_journal(items, "journal_unavailable", str(exc), final)
        except ValueError as exc:  # the journal refused the bytes themselves: a bug, not a disk
            logger.exception("meterline: the journal refused a batch")
            self.drop(items, "unjournalable", str(exc))
            return True
        self.backlog = True
        self._settle(items, "journaled", "")
        return True

    def _cannot_journal(self, items: list[Item], reason: str, why: str, final: bool) -> bool:
        if final:
            self.drop(items, reason, why)
            return True
        self._log.log(
            logging.ERROR,
            "park",
            "meterline: cannot journal %d event(s) (%s); keeping them in memory",
            len(items),
            why,
        )
        self._park(Batch(list(items)))
        return False

    def drop(self, items: Sequence[Item], reason: str, detail: str) -> None:
        """Give events up, counted with ``reason`` and reported to ``on_drop``."""
        if not items:
            return
        self._log.log(
            logging.ERROR,
            f"drop:{reason}",
            "meterline: dropped %d event(s): %s (%s)",
            len(items),
            reason,
            detail,
        )
        self._settle(items, "dropped", reason)
        self.report_drop(
            DropReport(
                reason,
                len(items),
                tuple(it[I_KEY] for it in items),
                tuple(it[I_BODY] for it in items),
            )
        )

    def report_drop(self, report: DropReport) -> None:
        if self._on_drop is None:
            return
        try:
            self._on_drop(report)
        except BaseException:  # noqa: BLE001 - a user callback must not cost events or a thread
            logger.exception("meterline: on_drop callback raised")

    def report_failure(self, result: Result, n: int) -> None:
        """Log (rate-limited) and tell ``on_error`` that events could not be delivered."""
        level = logging.ERROR if result.refused else logging.WARNING
        self._log.log(
            level,
            "refused" if result.refused else "failed",
            "meterline: could not deliver %d event(s): %s; journaling them",
            n,
            result.error or "unknown error",
        )
        self.call_on_error(
            ConnectionError(result.error or "delivery failed"),
            {"events": len(result.pending), "refused": result.refused},
        )

    def call_on_error(self, exc: BaseException, info: dict[str, object]) -> None:
        if self._on_error is None:
            return
        try:
            self._on_error(exc, info)
        except BaseException:  # noqa: BLE001 - a user callback must not cost events or a thread
            logger.exception("meterline: on_error callback raised")

    def quietly(self, fn: Callable[[Claim], None], claim: Claim) -> None:
        try:
            fn(claim)
        except JournalError as exc:
            self._log.log(logging.ERROR, "journal", "meterline: journal operation failed: %s", exc)
