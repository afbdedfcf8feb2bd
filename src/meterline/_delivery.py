"""Send, else spill: the one place that decides what happens to a batch.

A live batch is sent with the retry policy; what the server accepted is settled as sent,
what it named invalid as rejected (kept in the journal's ``rejected/``), and what is still
undelivered when the budget runs out goes to the journal. ``_replay`` drains the journal
through the same ``send_once``.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, NamedTuple

from ._errors import JournalError, JournalFullError
from ._retry import Circuit, RetryableError, is_retryable_status, make_retrying, retry_after
from ._stats import Counters, DropReport, RateLimitedLog, logger
from ._transport import Response, Transport, TransportError, rejected_keys

if TYPE_CHECKING:
    from ._config import Config
    from ._journal import Claim, Journal

__all__ = ["Delivery", "Item"]


class Item(NamedTuple):
    """One serialized event in flight; ``idx`` orders it in its client's queue (-1: replay)."""

    idx: int
    size: int
    key: str
    body: bytes


Settle = Callable[[Sequence[Item], str], None]
ErrorHook = Callable[[BaseException, dict[str, object]], None]
DropHook = Callable[[DropReport], None]


@dataclass
class _Result:
    """What one send (with its splits) did to a batch."""

    delivered: list[Item] = field(default_factory=list)
    rejected: list[tuple[Item, list[str]]] = field(default_factory=list)
    pending: list[Item] = field(default_factory=list)
    delay: float | None = None
    error: str = ""
    refused: bool = False  # 401/403/other 4xx: the endpoint refuses us; do not hammer it

    def merge(self, other: _Result) -> None:
        self.delivered += other.delivered
        self.rejected += other.rejected
        self.pending += other.pending
        self.delay = other.delay if other.delay is not None else self.delay
        self.error = other.error or self.error
        self.refused = self.refused or other.refused


class Delivery:
    """Delivers batches for one worker; every method runs on the worker thread."""

    def __init__(
        self,
        config: Config,
        *,
        transport_factory: Callable[[], Transport],
        journal: Journal | None,
        counters: Counters,
        settle: Settle,
        stopping: threading.Event,
        sleep: Callable[[float], None],
        on_error: ErrorHook | None = None,
        on_drop: DropHook | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._config = config
        self._transport_factory = transport_factory
        self._transport: Transport | None = None
        self.journal = journal
        self._counters = counters
        self._settle = settle
        self._stopping = stopping
        self._sleep = sleep
        self._on_error = on_error
        self._on_drop = on_drop
        self._clock = clock
        self.circuit = Circuit(clock)
        self.parked: list[Item] = []
        self._log = RateLimitedLog()
        self.deadline: float | None = None  # set by close(): no send may outlive it
        self.backlog = True  # the journal may hold ready batches (unknown at start)

    # -- live path ---------------------------------------------------------------------

    def deliver(self, items: list[Item], *, final: bool = False) -> bool:
        """Send a batch, else journal it; True when this send showed the endpoint recovered."""
        claim = self._write_ahead(items)
        if not self.circuit.allow() or (final and self.circuit.is_open):
            self._keep(items, claim, _Result(pending=list(items)), quiet=True)
            return False
        probing = self.circuit.is_open
        result = self._send_with_retries(items, single=probing or final)
        recovered = False
        if not result.pending:
            recovered = self.circuit.succeed()
        elif result.refused:
            self.circuit.fail(self._config.auth_probe_interval)
        else:
            self.circuit.fail(self._config.probe_interval)
        self._keep(items, claim, result)
        return recovered

    def _write_ahead(self, items: list[Item]) -> Claim | None:
        if self._config.durability != "write_ahead" or self.journal is None:
            return None
        try:
            return self.journal.spill_held([it.body for it in items])
        except JournalError as exc:
            self._log.log(logging.ERROR, "wal", "meterline: write-ahead journaling failed: %s", exc)
            return None

    def _send_with_retries(self, items: list[Item], *, single: bool) -> _Result:
        total = _Result()
        pending = list(items)
        retrying = make_retrying(
            attempts=1 if single else self._config.retry_attempts,
            deadline=self._config.retry_deadline,
            retry_after_cap=self._config.retry_after_max,
            stop_event=self._stopping,
            sleep=self._sleep,
        )
        first = True

        def attempt() -> None:
            nonlocal pending, first
            if not first:
                self._counters.add("retried", len(pending))
            first = False
            result = self.send_once(pending)
            total.delivered += result.delivered
            total.rejected += result.rejected
            total.error, total.refused, total.delay = result.error, result.refused, result.delay
            pending = result.pending
            if pending and not result.refused:
                raise RetryableError(result.error, result.delay)

        try:
            retrying(attempt)
        except RetryableError:
            pass
        total.pending = pending
        return total

    def send_once(self, items: list[Item]) -> _Result:
        """One request, split as the server asks (413, a 400 naming or not naming keys)."""
        timeout = None
        if self.deadline is not None:
            timeout = self.deadline - self._clock()
            if timeout <= 0:
                return _Result(pending=items, error="shutdown deadline reached")
        if self._transport is None:
            self._transport = self._transport_factory()
        try:
            response = self._transport.send([it.body for it in items], timeout=timeout)
        except TransportError as exc:
            return _Result(pending=items, error=str(exc))
        except Exception as exc:  # noqa: BLE001 - a third-party transport must not kill the worker
            logger.exception("meterline: transport raised an unexpected error")
            return _Result(pending=items, error=f"{type(exc).__name__}: {exc}")
        status = response.status
        if 200 <= status < 300:
            return self._accepted(items, response)
        if is_retryable_status(status):
            return _Result(pending=items, delay=retry_after(response.headers), error=_why(response))
        if status == 413:
            if len(items) == 1:
                return _Result(rejected=[(items[0], ["413: event too large for the server"])])
            return self._halves(items)
        if status == 400:
            return self._bad_request(items, response)
        # 401, 403, 404, ...: the endpoint refuses us; keep everything, tell loudly, probe slowly.
        return _Result(pending=items, error=_why(response), refused=True)

    def _accepted(self, items: list[Item], response: Response) -> _Result:
        self._counters.add("bytes_sent", sum(len(it.body) for it in items))
        bad = rejected_keys(response) if response.status == 200 else {}
        if not bad:
            return _Result(delivered=items)
        result = _Result()
        for it in items:
            if it.key in bad:
                result.rejected.append((it, bad[it.key]))
            else:
                result.delivered.append(it)
        return result

    def _bad_request(self, items: list[Item], response: Response) -> _Result:
        named = rejected_keys(response)
        bad = [(it, named[it.key]) for it in items if it.key in named]
        if bad:
            result = _Result(rejected=bad)
            rest = [it for it in items if it.key not in named]
            if rest:
                result.merge(self.send_once(rest))
            return result
        if len(items) == 1:
            return _Result(rejected=[(items[0], [_why(response)])])
        return self._halves(items)

    def _halves(self, items: list[Item]) -> _Result:
        mid = len(items) // 2
        result = self.send_once(items[:mid])
        result.merge(self.send_once(items[mid:]))
        return result

    def _keep(
        self, items: list[Item], claim: Claim | None, result: _Result, *, quiet: bool = False
    ) -> None:
        """Settle every event of a finished batch: sent, rejected, journaled or parked.

        The journal is brought up to date first, so that once ``flush()`` sees an event
        settled its file is already acknowledged, settled or written.
        """
        if result.rejected:
            self._reject(result.rejected, claim if not result.pending else None)
            if not result.pending:
                claim = None
        if result.pending:
            if not quiet:
                self.report_failure(result, len(items))
            if claim is not None:
                self._keep_claimed(claim, result)
            else:
                self._spill(result.pending)
        elif claim is not None and self.journal is not None:
            self.quietly(self.journal.ack, claim)
        if result.delivered:
            self._counters.add("sent", len(result.delivered))
            self._settle(result.delivered, "sent")

    def _keep_claimed(self, claim: Claim, result: _Result) -> None:
        assert self.journal is not None
        if result.delivered or result.rejected:
            try:
                self.journal.settle(claim, remaining=[it.body for it in result.pending])
            except JournalError as exc:
                self._log.log(logging.ERROR, "settle", "meterline: journal settle failed: %s", exc)
                self.quietly(self.journal.release, claim)
        else:
            self.quietly(self.journal.release, claim)
        self.backlog = True
        self._counters.add("journaled", len(result.pending))
        self._settle(result.pending, "journaled")

    def _reject(self, rejected: list[tuple[Item, list[str]]], claim: Claim | None) -> None:
        items = [it for it, _ in rejected]
        self._counters.add("rejected", len(items))
        self._log.log(
            logging.WARNING,
            "rejected",
            "meterline: the server rejected %d event(s), e.g. %s: %s",
            len(items),
            items[0].key,
            "; ".join(rejected[0][1]),
        )
        self._call_on_error(
            ValueError("events rejected by the server"),
            {"rejected": {it.key: reasons for it, reasons in rejected}},
        )
        pairs = [(it.body, reasons) for it, reasons in rejected]
        if self.journal is not None:
            try:
                if claim is None:
                    claim = self.journal.spill_held([it.body for it in items])
                self.journal.settle(claim, rejected=pairs)
            except JournalError as exc:
                self._log.log(
                    logging.ERROR, "rejectlog", "meterline: could not keep rejected events: %s", exc
                )
        self._settle(items, "rejected")

    def _spill(self, items: list[Item]) -> None:
        if self.journal is None:
            self._park(items, "no usable journal")
            return
        try:
            self.journal.spill([it.body for it in items])
        except JournalFullError as exc:
            self.drop(items, "journal_full", str(exc))
            return
        except JournalError as exc:
            self._park(items, str(exc))
            return
        except ValueError as exc:  # the journal refused the bytes themselves: a bug, not a disk
            logger.exception("meterline: the journal refused a batch")
            self.drop(items, "unjournalable", str(exc))
            return
        self.backlog = True
        self._counters.add("journaled", len(items))
        self._settle(items, "journaled")

    def spill_now(self, items: list[Item]) -> None:
        """Journal a batch without trying to send it (memory pressure, or past the deadline)."""
        self._spill(items)

    def _park(self, items: list[Item], why: str) -> None:
        self._log.log(
            logging.ERROR,
            "park",
            "meterline: cannot journal %d event(s) (%s); keeping them in memory",
            len(items),
            why,
        )
        self.parked.extend(items)

    def retry_parked(self, *, final: bool = False) -> None:
        """Try again with events that could neither be sent nor journaled."""
        items, self.parked = self.parked, []
        for start in range(0, len(items), self._config.max_batch_events):
            self.deliver(items[start : start + self._config.max_batch_events], final=final)

    def drop_parked(self, reason: str) -> None:
        items, self.parked = self.parked, []
        if items:
            self.drop(items, reason, "still unjournaled at close")

    def drop(self, items: Sequence[Item], reason: str, detail: str) -> None:
        logger.error("meterline: dropped %d event(s): %s (%s)", len(items), reason, detail)
        self._counters.drop(reason, len(items))
        self._settle(items, "dropped")
        if self._on_drop is not None:
            report = DropReport(
                reason, len(items), tuple(it.key for it in items), tuple(it.body for it in items)
            )
            try:
                self._on_drop(report)
            except Exception:  # noqa: BLE001 - a user callback must not kill the worker
                logger.exception("meterline: on_drop callback raised")

    def report_failure(self, result: _Result, n: int) -> None:
        """Log (rate-limited) and tell ``on_error`` that events could not be delivered."""
        level = logging.ERROR if result.refused else logging.WARNING
        self._log.log(
            level,
            "refused" if result.refused else "failed",
            "meterline: could not deliver %d event(s): %s; journaling them",
            n,
            result.error or "unknown error",
        )
        self._call_on_error(
            ConnectionError(result.error or "delivery failed"),
            {"events": len(result.pending), "refused": result.refused},
        )

    def _call_on_error(self, exc: BaseException, info: dict[str, object]) -> None:
        if self._on_error is None:
            return
        try:
            self._on_error(exc, info)
        except Exception:  # noqa: BLE001 - a user callback must not kill the worker
            logger.exception("meterline: on_error callback raised")

    def quietly(self, fn: Callable[[Claim], None], claim: Claim) -> None:
        try:
            fn(claim)
        except JournalError as exc:
            self._log.log(logging.ERROR, "journal", "meterline: journal operation failed: %s", exc)

    def close(self) -> None:
        if self._transport is not None:
            try:
                self._transport.close()
            except Exception:  # noqa: BLE001 - closing must not raise at exit
                logger.debug("meterline: transport close failed", exc_info=True)
            self._transport = None

    def forget_after_fork(self) -> None:
        """In a forked child: drop the parent's connection and parked events without I/O."""
        self._transport = None
        self.parked = []
        if self.journal is not None:
            self.journal.after_fork_in_child()


def _why(response: Response) -> str:
    doc = response.json()
    detail = ""
    if isinstance(doc, dict):
        detail = str(doc.get("detail") or doc.get("title") or "")
    return f"HTTP {response.status}" + (f": {detail[:200]}" if detail else "")
