"""The retry policy: which failures retry, Retry-After, full jitter, and the bounds."""

from __future__ import annotations

import threading
from datetime import datetime, timedelta, timezone
from email.utils import format_datetime

import pytest

from meterline._retry import (
    Circuit,
    RetryableError,
    is_retryable_status,
    make_retrying,
    retry_after,
)


@pytest.mark.parametrize("status", [408, 409, 429, 500, 502, 503, 504, 599])
def test_transient_statuses_retry(status):
    """408, 409, 429 and every 5xx are retried."""
    assert is_retryable_status(status)


@pytest.mark.parametrize("status", [200, 400, 401, 403, 404, 413, 422])
def test_final_statuses_do_not_retry(status):
    """Client errors other than 408/409/429 are final."""
    assert not is_retryable_status(status)


def test_retry_after_forms():
    """retry-after-ms wins; Retry-After takes seconds or an HTTP date; junk is ignored."""
    now = datetime(2026, 11, 22, 12, 0, 0, tzinfo=timezone.utc)
    clock = now.timestamp
    assert retry_after({"retry-after-ms": "1500", "retry-after": "9"}) == 1.5
    assert retry_after({"retry-after": "7"}) == 7.0
    date = format_datetime(now + timedelta(seconds=30), usegmt=True)
    assert retry_after({"retry-after": date}, now=clock) == pytest.approx(30.0)
    past = format_datetime(now - timedelta(seconds=30), usegmt=True)
    assert retry_after({"retry-after": past}, now=clock) == 0.0
    assert retry_after({"retry-after": "soon"}) is None
    assert retry_after({"retry-after": "-3"}) is None
    assert retry_after({"retry-after-ms": "nan"}) is None
    assert retry_after({}) is None


def _policy(sleeps, attempts=4, deadline=30.0, cap=60.0, event=None):
    return make_retrying(
        attempts=attempts,
        deadline=deadline,
        retry_after_cap=cap,
        stop_event=event or threading.Event(),
        sleep=sleeps.append,
    )


def test_backoff_is_full_jitter_and_bounded_by_attempts():
    """Without Retry-After the waits are random within an exponential window; 4 attempts max."""
    sleeps: list[float] = []
    calls = []

    def fail():
        calls.append(1)
        raise RetryableError("503")

    with pytest.raises(RetryableError):
        _policy(sleeps)(fail)
    assert len(calls) == 4
    assert len(sleeps) == 3
    for i, s in enumerate(sleeps):
        assert 0 <= s <= 0.5 * 2 ** (i + 1)


def test_retry_after_is_used_and_capped():
    """A server's Retry-After is the wait, up to the cap."""
    sleeps: list[float] = []
    errors = iter([RetryableError("429", 2.5), RetryableError("429", 500.0)])

    def fail():
        exc = next(errors, None)
        if exc:
            raise exc
        return "ok"

    assert _policy(sleeps, cap=60.0, deadline=100.0)(fail) == "ok"
    assert sleeps == [2.5, 60.0]


def test_a_retry_after_beyond_the_deadline_stops_retrying():
    """A wait that would pass the seconds budget ends the retries at once."""
    sleeps: list[float] = []

    def fail():
        raise RetryableError("429", 45.0)

    with pytest.raises(RetryableError):
        _policy(sleeps, deadline=30.0)(fail)
    assert sleeps == []


def test_close_interrupts_retrying():
    """Once the stop event is set no further attempt is made."""
    sleeps: list[float] = []
    event = threading.Event()
    calls = []

    def fail():
        calls.append(1)
        event.set()
        raise RetryableError("503")

    with pytest.raises(RetryableError):
        _policy(sleeps, event=event)(fail)
    assert len(calls) == 1


def test_circuit_opens_and_allows_one_probe_per_period():
    """An open circuit refuses sends until its probe time, then allows one."""
    now = [100.0]
    circuit = Circuit(clock=lambda: now[0])
    assert circuit.allow()
    assert not circuit.is_open
    circuit.fail(10.0)
    assert circuit.is_open
    assert not circuit.allow()
    now[0] += 11.1
    assert circuit.allow()
    assert circuit.succeed() is True
    assert circuit.allow()
    assert not circuit.is_open
