"""A caller far ahead of delivery lets meterline's threads have the GIL, now and then.

``Queue.put`` calls ``time.sleep(0)`` once every 256 reports while the queued and held
events exceed four batches; never below that, never on a meterline thread (a callback
that reports), and in write-ahead mode the threshold is still four real batches.
"""

from __future__ import annotations

import sys
from typing import Any

import pytest

from meterline._event import validate
from meterline._pipeline._queue import Queue, Wake
from meterline._pipeline._settle import Settlement


def _queue(*, held: int, own: bool = False, eager: bool = False) -> Queue:
    settlement = Settlement()
    settlement.held_events = held
    return Queue(
        settlement,
        max_events=1_000_000,
        max_bytes=1 << 40,
        batch_events=500,
        batch_bytes=1 << 40,
        eager=eager,
        wake=Wake(),
        own_thread=lambda: own,
    )


@pytest.fixture
def naps(monkeypatch: pytest.MonkeyPatch) -> list[float]:
    seen: list[float] = []
    module = sys.modules[Queue.__module__]  # the package re-exports a name over it
    monkeypatch.setattr(module.time, "sleep", seen.append)
    return seen


def _report(queue: Queue, n: int) -> None:
    event: Any = validate("cust", "api_call", {"n": 1}, None, None, 1 << 20)
    for _ in range(n):
        queue.put(event)


def test_far_behind_yields_once_every_256_reports(naps: list[float]) -> None:
    _report(_queue(held=2_000), 1_024)
    assert naps == [0, 0, 0, 0]


def test_close_to_delivery_never_yields(naps: list[float]) -> None:
    _report(_queue(held=0), 1_499)  # 1,499 queued + 0 held: under four batches of 500
    assert naps == []


def test_a_meterline_thread_never_yields(naps: list[float]) -> None:
    _report(_queue(held=5_000, own=True), 1_024)
    assert naps == []


def test_write_ahead_counts_real_batches(naps: list[float]) -> None:
    # write-ahead wakes the spooler for every event; pacing still waits for 2,000 behind
    _report(_queue(held=0, eager=True), 1_999)
    assert naps == []
    _report(_queue(held=1_999, eager=True), 256)
    assert naps == [0]
