"""Send, else spill: the one place that decides what happens to a batch.

A live batch is sent with the retry policy; what the server accepted is settled as sent, what it
named invalid as rejected (kept in the journal's ``rejected/``), and what is still undelivered when
the budget runs out goes to the journal. Only the destination's own answer counts (its
``read()`` says what an answer means): a 2xx that is not its success body, or a 400/422 that is
not its error body (an HTML page from a proxy, a portal or a catch-all route), is a transient
failure, never a delivery and never a rejection. Whatever raises on the way (a transport, a
response without a status, a callback), the batch in hand is journaled or kept. ``_replay``
drains the journal through the same ``send_once``.

Why this module is long: sending with retries, splitting (413, bisection of a refused batch,
chunks of a write-ahead group) and acting on each ``Answer`` kind are one recursion over the
same batch and the same accounting; settling the outcome is already ``_outcomes``.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Mapping
from operator import itemgetter
from typing import TYPE_CHECKING

from ._outcomes import (
    DONE,
    I_BODY,
    I_KEY,
    RECOVERED,
    Batch,
    DropHook,
    ErrorHook,
    Item,
    Outcomes,
    Park,
    Result,
    Settle,
)
from ._response import Response
from ._retry import Circuit, RetryableError, make_retrying
from ._stats import Counters, logger
from ._transport import Transport, TransportError
from .destinations._base import (
    ACCEPTED,
    FOREIGN,
    INVALID,
    INVALID_BATCH,
    RETRY,
    TOO_LARGE,
    Answer,
    reasons,
)

if TYPE_CHECKING:
    from ._config import Config

__all__ = ["Batch", "Delivery", "Item"]

_key = itemgetter(I_KEY)
_body = itemgetter(I_BODY)


def _body_bytes(items: list[Item]) -> int:
    return sum(map(len, map(_body, items)))


class Delivery(Outcomes):
    """Delivers batches for one pipeline: the sender sends; the spooler and close() spill."""

    def __init__(
        self,
        config: Config,
        *,
        transport_factory: Callable[[], Transport],
        counters: Counters,
        settle: Settle,
        park: Park,
        not_abandoned: Callable[[list[Item]], list[Item]] | None = None,
        stopping: threading.Event,
        sleep: Callable[[float], None],
        on_error: ErrorHook | None = None,
        on_drop: DropHook | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        super().__init__(
            counters=counters,
            settle=settle,
            park=park,
            not_abandoned=not_abandoned,
            on_error=on_error,
            on_drop=on_drop,
        )
        self._config = config
        self._destination = config.destination
        self._transport_factory = transport_factory
        self._transport: Transport | None = None
        self._stopping = stopping
        self._sleep = sleep
        self._clock = clock
        self._secret = config.api_key
        self.circuit = Circuit(clock)
        self.deadline: float | None = None  # set by close(): no send may outlive it
        self.in_flight: Batch | None = None  # the live batch being sent (close copies it)
        # Held while the batch in flight is settled, and while close() journals a copy of
        # it: one or the other, never both (re-entrant: a callback runs under it).
        self.handoff = threading.RLock()
        self.in_flight_since = 0.0
        self.answered = False  # a send got an answer: the connection is no longer cold

    # -- live path ---------------------------------------------------------------------

    def deliver(self, batch: Batch, *, final: bool = False) -> str:
        """Send a batch, else journal it; RECOVERED when this send showed the endpoint is
        back, PARKED when it could neither be sent nor journaled and waits in memory."""
        self.in_flight_since = self._clock()
        self.in_flight = batch  # until settled: close() journals a copy if it must not wait
        try:
            return self._deliver(batch, final)
        finally:
            self.in_flight = None

    def _deliver(self, batch: Batch, final: bool) -> str:
        items = batch.items
        if not self.circuit.allow() or (final and self.circuit.is_open):
            return self._keep_live(batch, Result(pending=list(items)), quiet=True)
        probing = self.circuit.is_open
        result = self._send_with_retries(items, single=probing or final)
        recovered = False
        if not result.pending:
            recovered = self.circuit.succeed()
        elif result.refused:
            self.circuit.fail(self._config.auth_probe_interval)
        else:
            self.circuit.fail(self._config.probe_interval)
        outcome = self._keep_live(batch, result)
        return RECOVERED if recovered and outcome == DONE else outcome

    def _keep_live(self, batch: Batch, result: Result, *, quiet: bool = False) -> str:
        """Settle the batch in flight under ``handoff``. close() journals a copy of a batch
        whose send hangs (``journal_in_flight``); taking the same lock, it either does so
        before this begins (the events are then abandoned: nothing here journals or counts
        them again) or finds nothing in flight, everything already settled or on disk."""
        with self.handoff:
            self.in_flight = None
            return self._keep(batch, result, quiet=quiet)

    def journal_in_flight(self, copy: Callable[[Batch], None]) -> None:
        """close(): ``copy(batch)`` for the batch in flight, if its send has not ended."""
        with self.handoff:
            batch = self.in_flight
            if batch is not None:
                copy(batch)

    def try_send(self, items: list[Item], *, single: bool = False) -> Result:
        """Send with the retry policy (one attempt when ``single``) and settle nothing: the
        caller acts on the result (the relay, which keeps undelivered events in Kafka)."""
        return self._send_with_retries(items, single=single)

    def _send_with_retries(self, items: list[Item], *, single: bool) -> Result:
        total = Result()
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

    def send_once(self, items: list[Item]) -> Result:
        """One request per chunk of the destination's batch limits (a write-ahead group
        holds several), each split as the server asks; after a chunk that failed, the rest
        wait for the next attempt."""
        chunks = self._chunks(items)
        if len(chunks) == 1:
            return self._request(items)
        total = Result()
        for i, chunk in enumerate(chunks):
            result = self._request(chunk)
            total.merge(result)
            if result.pending:
                total.pending += [it for later in chunks[i + 1 :] for it in later]
                break
        return total

    def _chunks(self, items: list[Item]) -> list[list[Item]]:
        config = self._config
        limit = config.max_batch_bytes - 16
        if len(items) <= config.max_batch_events and _body_bytes(items) + len(items) <= limit:
            return [items]  # one request: a live batch, cut to these limits already
        chunks: list[list[Item]] = [[]]
        size = 0
        for it in items:
            if chunks[-1] and (
                len(chunks[-1]) >= config.max_batch_events or size + len(it[I_BODY]) + 1 > limit
            ):
                chunks.append([])
                size = 0
            chunks[-1].append(it)
            size += len(it[I_BODY]) + 1
        return chunks

    def _request(self, items: list[Item]) -> Result:
        """One request, split as the server asks (413, a 400 naming or not naming keys)."""
        timeout = None
        if self.deadline is not None:
            timeout = self.deadline - self._clock()
            if timeout <= 0:
                return Result(pending=items, error="shutdown deadline reached")
        try:
            if self._transport is None:
                self._transport = self._transport_factory()
            response = self._transport.send(list(map(_body, items)), timeout=timeout)
            self.answered = True
            status = response.status
            if type(status) is not int:
                raise TypeError(f"the transport's answer has a status of type {type(status)}")
            return self._classify(items, response, status)
        except TransportError as exc:
            return Result(pending=items, error=self.clean(str(exc)))
        except BaseException as exc:  # noqa: BLE001 - a transport or a bug must not cost a batch
            self._log.log(
                logging.ERROR,
                "transport",
                "meterline: sending a batch failed unexpectedly (%s); keeping it",
                self.clean(f"{type(exc).__name__}: {exc}"),
            )
            return Result(pending=items, error=self.clean(f"{type(exc).__name__}: {exc}"))

    def _classify(self, items: list[Item], response: Response, status: int) -> Result:
        """Act on what the destination makes of the answer (``destinations._base.Answer``)."""
        answer = self._destination.read(response, list(map(_key, items)))
        kind = answer.kind
        if kind == ACCEPTED:
            if answer.retry:
                return self._partly(items, answer, status)
            return self._accepted(items, answer.rejected)
        if kind == RETRY:
            return Result(pending=items, delay=answer.delay, error=self._why(answer, status))
        if kind == TOO_LARGE:  # a proxy's size limit is real whoever answers: split
            if len(items) == 1:
                return Result(rejected=[(items[0], ["413: event too large for the server"])])
            return self._halves(items)
        if kind == INVALID and answer.rejected:
            return self._invalid(items, answer.rejected)
        if kind in (INVALID, INVALID_BATCH):  # refused as a whole, no event named: bisect
            if len(items) == 1:
                return Result(rejected=[(items[0], [self._why(answer, status)])])
            return self._halves(items)
        if kind == FOREIGN:
            return self._foreign(items, response, status)
        # refused (401, 403, 404...): keep everything, tell loudly, probe slowly
        return Result(pending=items, error=self._why(answer, status), refused=True)

    def _foreign(self, items: list[Item], response: Response, status: int) -> Result:
        kind = response.headers.get("content-type", "no content type").split(";")[0]
        kind = self.clean(kind)[:80]
        error = f"HTTP {status} ({kind}) is not an ingest answer"
        self._log.log(
            logging.ERROR,
            "foreign",
            "meterline: %s from %s: a proxy, portal or wrong base_url? Keeping the events",
            error,
            self._config.ingest_url,
        )
        return Result(pending=items, error=error)

    def _accepted(self, items: list[Item], bad: Mapping[str, list[str]]) -> Result:
        self._counters.add("bytes_sent", _body_bytes(items))
        if not bad:
            return Result(delivered=items)
        result = Result()
        for it in items:
            if it[I_KEY] in bad:
                result.rejected.append((it, [self.clean(r) for r in reasons(bad[it[I_KEY]])]))
            else:
                result.delivered.append(it)
        return result

    def _partly(self, items: list[Item], answer: Answer, status: int) -> Result:
        """Delivered but for the events in ``answer.retry``, which wait for the next try."""
        again = answer.retry
        result = self._accepted([it for it in items if it[I_KEY] not in again], answer.rejected)
        result.pending = [it for it in items if it[I_KEY] in again]
        result.delay, result.error = answer.delay, self._why(answer, status)
        return result

    def _invalid(self, items: list[Item], named: Mapping[str, list[str]]) -> Result:
        """The batch was refused for the events it names: those are rejected, the rest
        (not delivered) sent again at once."""
        bad = [
            (it, [self.clean(r) for r in reasons(named[it[I_KEY]])])
            for it in items
            if it[I_KEY] in named
        ]
        if not bad:  # it named none of ours: find the bad ones by bisection
            if len(items) == 1:
                return Result(rejected=[(items[0], ["refused by the server"])])
            return self._halves(items)
        result = Result(rejected=bad)
        rest = [it for it in items if it[I_KEY] not in named]
        if rest:
            result.merge(self._request(rest))
        return result

    def _halves(self, items: list[Item]) -> Result:
        mid = len(items) // 2
        result = self._request(items[:mid])
        result.merge(self._request(items[mid:]))
        return result

    def clean(self, text: str) -> str:
        """``text`` without the API key or a session token, whatever a server or a library
        echoed (a body scrubbed as bytes can still hold one JSON-escaped: decoded, it is
        whole again, so the decoded text is scrubbed here too)."""
        secret = self._secret
        if secret and secret in text:
            text = text.replace(secret, "***")
        live = getattr(self._transport, "secrets", None)
        if live:
            for held in live:
                if held and held in text:
                    text = text.replace(held, "***")
        return text

    def _why(self, answer: Answer, status: int) -> str:
        detail = answer.detail or f"HTTP {status}"
        return self.clean(detail)[:300]  # redact first: a cut could split the key

    def close(self) -> None:
        transport, self._transport = self._transport, None
        if transport is not None:
            try:
                transport.close()
            except BaseException:  # noqa: BLE001 - closing must not raise at exit
                logger.debug("meterline: transport close failed", exc_info=True)

    def forget_after_fork(self) -> None:
        """In a forked child: drop the parent's connection without I/O."""
        self._transport = None
        self.in_flight = None
        self.answered = False
        if self.journal is not None:
            self.journal.after_fork_in_child()
