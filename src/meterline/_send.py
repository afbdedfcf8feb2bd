"""``Client.send()``: one event sent now and confirmed, or an exception that says why.

The awaited path (Per's ``await addActivity``) beside the batch pipeline, never inside it:
the event is not queued, batched or journaled. It is sent alone, through the client's
destination (its envelope, headers or session, and its ``read()`` of the answer), with the
pipeline's retry policy (tenacity: ``retry_attempts``, the server's ``Retry-After`` capped
by ``retry_after_max``, full-jitter backoff), all within one budget: ``timeout``, else
``retry_deadline``. Each request is clamped to what is left of it.

It has a transport of its own (made by the same factory as the pipeline's, on first use), so a
confirmed send never waits behind a batch that is retrying or hung, and the pipeline never waits
behind it; ``report()`` takes no lock a send holds. A transport given to the ``Client`` is
shared instead (it must be safe to call from two threads, as ``meterline.testing``'s are).

What an answer means for the one event (``destinations._base.Answer``):

* accepted, the event not named → ``Receipt(status="delivered")``; accepted on a non-2xx
  answer (Lago's 422 ``value_already_exist`` for every event) → ``status="duplicate"``. Only
  destinations that say so can tell: Orb, Metronome, OpenMeter and Stripe answer a repeated key
  like a new one, so their receipts always say ``delivered`` (the vendor counts it once).
* accepted naming it, invalid, or 413 → ``EventRejectedError`` with the server's reasons;
* retry (408/409/429/5xx) or no answer → tried again; ``DeliveryTimeoutError`` when the budget
  or the attempts are spent, or the client closes meanwhile;
* refused (401/403/404...) or foreign (a 2xx or 400 that is not the vendor's body: an HTML page
  from a proxy, a portal, a wrong ``base_url``) → ``EndpointRefusedError`` at once: waiting
  would not change a misconfiguration, and the caller is waiting.

Every message is cleaned of the API key and any session token, as the delivery module cleans its
own. Nothing is journaled on any raise: the caller decides (``report()`` the event, say).
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

from ._errors import DeliveryTimeoutError, EndpointRefusedError, EventRejectedError
from ._retry import RetryableError, make_retrying
from ._transport import Transport, TransportError
from .destinations._base import (
    ACCEPTED,
    FOREIGN,
    INVALID,
    INVALID_BATCH,
    REFUSED,
    RETRY,
    TOO_LARGE,
    reasons,
)

if TYPE_CHECKING:
    from ._config import Config
    from ._event import Pending

__all__ = ["Receipt", "Sender"]


@dataclass(frozen=True, slots=True)
class Receipt:
    """What ``send()`` returns: the event's idempotency key, ``status`` (``"delivered"``, or
    ``"duplicate"`` when the destination said it already held that key), and how many requests
    it took."""

    idempotency_key: str
    status: Literal["delivered", "duplicate"]
    attempts: int = 1


class Sender:
    """Sends single events for one client; safe from any number of threads at once."""

    def __init__(
        self,
        config: Config,
        *,
        transport_factory: Callable[[], Transport],
        owns_transport: bool,
        stopping: threading.Event,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._config = config
        self._destination = config.destination
        self._factory = transport_factory
        self._owns = owns_transport
        self._stopping = stopping
        self._clock = clock
        # Re-entrant: a send() from a signal handler that interrupted this thread inside
        # counts() or _count() must not wait on itself.
        self._lock = threading.RLock()
        self._transport: Transport | None = None
        self._pid = os.getpid()
        self._counts = {"sent_confirmed": 0, "send_failed": 0}

    def counts(self) -> dict[str, int]:
        """``sent_confirmed`` (receipts returned) and ``send_failed`` (``DeliveryError`` raised)."""
        if self._pid != os.getpid():
            return {name: 0 for name in self._counts}  # a forked child has sent nothing yet
        with self._lock:
            return dict(self._counts)

    def send(self, event: Pending, timeout: float | None) -> Receipt:
        """Send one validated event now; a ``Receipt``, or a ``DeliveryError`` subclass."""
        try:
            receipt = self._send(event, timeout)
        except (EventRejectedError, DeliveryTimeoutError, EndpointRefusedError):
            self._count("send_failed")
            raise
        self._count("sent_confirmed")
        return receipt

    def close(self) -> None:
        """Release this sender's own connections (a shared transport is the pipeline's)."""
        with self._lock:
            transport, self._transport = self._transport, None
        if transport is not None and self._owns:
            try:
                transport.close()
            except Exception:  # noqa: BLE001, S110 - closing must not raise at close()
                pass

    # -- one event ------------------------------------------------------------------------

    def _send(self, event: Pending, timeout: float | None) -> Receipt:
        config = self._config
        key = event[0]
        body = self._destination.serialize_many([event])[0]
        budget = config.retry_deadline if timeout is None else max(0.0, timeout)
        end = self._clock() + budget
        transport = self._transport_now()
        retrying = make_retrying(
            attempts=config.retry_attempts,
            deadline=budget,
            retry_after_cap=config.retry_after_max,
            stop_event=self._stopping,
            sleep=self._pause,
        )
        attempts = 0

        def attempt() -> Receipt:
            nonlocal attempts
            left = end - self._clock()
            if left <= 0 or self._stopping.is_set():
                raise _Spent
            attempts += 1
            return self._attempt(transport, key, body, left, attempts)

        asked: float | None = None
        try:
            return retrying(attempt)
        except RetryableError as exc:
            why, asked = exc.reason, exc.delay
            if asked is not None and asked > end - self._clock():
                why += f" (the server asked to wait {asked:g} s, more than the time left)"
        except _Spent:
            why = "no time left"
        if self._stopping.is_set():
            why = f"the client closed ({why})"
        error = DeliveryTimeoutError(
            f"event {key} not confirmed after {attempts} attempt(s) within {budget:g} s: {why}",
            idempotency_key=key,
            attempts=attempts,
        )
        error.retry_after = asked  # the server's last Retry-After, if it gave one
        raise error

    def _attempt(
        self, transport: Transport, key: str, body: bytes, left: float, attempts: int
    ) -> Receipt:
        try:
            response = transport.send([body], timeout=min(left, self._config.timeout))
            status = response.status
            if type(status) is not int:
                raise TypeError(f"the transport's answer has a status of type {type(status)}")
            answer = self._destination.read(response, [key])
            del response  # its body may quote a credential: not in the frame an error records
        except TransportError as exc:
            raise RetryableError(self._clean(str(exc), transport)) from None
        except Exception as exc:  # noqa: BLE001 - a transport's or a reader's bug is transient
            raise RetryableError(self._clean(f"{type(exc).__name__}: {exc}", transport)) from None
        # Everything read from the answer is cleaned here, and the answer let go: a frame an
        # error tracker records must hold no credential a server echoed.
        detail = self._clean(answer.detail or f"HTTP {status}", transport)[:300]
        kind, delay, mentioned = answer.kind, answer.delay, key in answer.rejected
        named = answer.rejected.get(key)
        why_named = None if named is None else [self._clean(r, transport) for r in reasons(named)]
        del answer, named
        if kind == ACCEPTED and not mentioned:
            duplicate = not 200 <= status < 300
            return Receipt(key, "duplicate" if duplicate else "delivered", attempts)
        if kind == RETRY:
            raise RetryableError(detail, delay)
        if kind in (ACCEPTED, INVALID, INVALID_BATCH, TOO_LARGE):
            if kind == TOO_LARGE:
                why = ["413: event too large for the server"]
            elif why_named is not None:
                why = why_named
            else:
                why = [detail]
            raise EventRejectedError(
                f"event {key} rejected by the server: {'; '.join(why)}"[:600],
                idempotency_key=key,
                reasons=why,
                status=status,
                attempts=attempts,
            )
        if kind == FOREIGN:
            detail += ": a proxy, a portal or a wrong base_url?"
        elif kind != REFUSED:
            detail = f"{detail} (an answer of unknown kind {kind!r})"
        raise EndpointRefusedError(
            f"event {key} not sent: {detail}",
            idempotency_key=key,
            status=status,
            attempts=attempts,
        )

    def _transport_now(self) -> Transport:
        if self._pid != os.getpid():  # a forked child: not the parent's sockets, nor its lock
            self._lock = threading.RLock()  # (a parent's thread may have held it at the fork)
            self._pid, self._transport = os.getpid(), None
            self._counts = dict.fromkeys(self._counts, 0)
        with self._lock:
            if self._transport is None:
                self._transport = self._factory()
            return self._transport

    def _clean(self, text: str, transport: Transport) -> str:
        """``text`` without the API key or a session token (``Delivery.clean``'s rule: the
        key, then every credential the transport holds)."""
        secret = self._config.api_key
        if secret and secret in text:
            text = text.replace(secret, "***")
        for held in getattr(transport, "secrets", None) or ():
            if held and held in text:
                text = text.replace(held, "***")
        return text

    def _pause(self, seconds: float) -> None:
        self._stopping.wait(seconds)  # close() ends a backoff at once

    def _count(self, name: str) -> None:
        with self._lock:
            self._counts[name] += 1


class _Spent(Exception):
    """The budget ran out (or the client closed) before another request could go out."""
