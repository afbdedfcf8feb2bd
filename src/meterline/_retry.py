"""When to try a batch again: the tenacity policy, ``Retry-After``, and the circuit breaker."""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Callable

from tenacity import (
    RetryCallState,
    Retrying,
    retry_if_exception_type,
    stop_after_attempt,
    stop_before_delay,
    stop_when_event_set,
    wait_random_exponential,
)
from tenacity.wait import wait_base

from meterline._response import RETRYABLE_STATUSES, is_retryable_status, retry_after

__all__ = [
    "RETRYABLE_STATUSES",
    "Circuit",
    "RetryableError",
    "is_retryable_status",
    "make_retrying",
    "retry_after",
]


class RetryableError(Exception):
    """A transient failure; ``delay`` is the server's ``Retry-After`` in seconds, if it gave one."""

    def __init__(self, reason: str, delay: float | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.delay = delay


class wait_retry_after(wait_base):
    """The server's ``Retry-After`` (capped) when it gave one, else full-jitter backoff."""

    def __init__(self, cap: float, fallback: wait_base) -> None:
        self.cap = cap
        self.fallback = fallback

    def __call__(self, retry_state: RetryCallState) -> float:
        outcome = retry_state.outcome
        exc = outcome.exception() if outcome is not None else None
        if isinstance(exc, RetryableError) and exc.delay is not None:
            return min(exc.delay, self.cap)
        return self.fallback(retry_state)


def make_retrying(
    *,
    attempts: int,
    deadline: float,
    retry_after_cap: float,
    stop_event: threading.Event,
    sleep: Callable[[float], None],
) -> Retrying:
    """The bounded policy of one batch: attempts, seconds, and ``close()`` all end it."""
    return Retrying(
        stop=(
            stop_after_attempt(attempts)
            | stop_before_delay(deadline)
            | stop_when_event_set(stop_event)
        ),
        wait=wait_retry_after(retry_after_cap, wait_random_exponential(multiplier=0.5, max=30)),
        retry=retry_if_exception_type(RetryableError),
        sleep=sleep,
        reraise=True,
    )


class Circuit:
    """Stops live sends after repeated failure; lets one probe through per period.

    Closed: every batch is sent. Open: batches go straight to the journal, and ``allow()``
    says yes once per ``interval`` (±10% jitter) so one probe tests the endpoint.
    """

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._open = False
        self._next_probe = 0.0

    @property
    def is_open(self) -> bool:
        return self._open

    def allow(self) -> bool:
        """True when a send may go out now (closed, or open and a probe is due)."""
        return not self._open or self._clock() >= self._next_probe

    def seconds_to_probe(self) -> float | None:
        return max(0.0, self._next_probe - self._clock()) if self._open else None

    def succeed(self) -> bool:
        """Close the circuit; True when it was open (the endpoint has recovered)."""
        was_open = self._open
        self._open = False
        return was_open

    def probe_now(self) -> None:
        """Let the next send through as a probe (close(): one last chance to deliver)."""
        self._next_probe = self._clock()

    def postpone(self, interval: float) -> None:
        """Move the next probe ``interval`` seconds on, open or not (nothing to probe with)."""
        self._next_probe = self._clock() + interval * random.uniform(0.9, 1.1)

    def fail(self, interval: float) -> None:
        """Open (or keep open) the circuit and schedule the next probe."""
        self._open = True
        self._next_probe = self._clock() + interval * random.uniform(0.9, 1.1)
