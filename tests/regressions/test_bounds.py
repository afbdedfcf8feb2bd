"""A slow, trickling or failing endpoint against the memory and disk bounds: no needless drop.

Scenarios 11, 12, 13 and 14 of the regression issue.
"""

from __future__ import annotations

from pathlib import Path

import orjson

from meterline import DropReport
from meterline.testing import wait_until
from tests.regressions.helpers import journal_keys
from tests.support.fault_server import FaultServer, Step


def test_slow_endpoint_and_a_small_queue_spill_instead_of_dropping(
    server: FaultServer, make_client, journal_dir: Path
):
    """max_queue_events=500, an endpoint taking 300 ms per request, 20,000 reports in a tight
    loop: at most 1% dropped, every other event sent or journaled, and after replay each
    arrives exactly once."""
    server.delay = 0.3
    client = make_client(max_queue_events=500, max_batch_events=100)
    keys = [client.report("cust_1", "api_call", {"i": i}) for i in range(20_000)]
    client.flush(timeout=30)
    stats = client.stats()
    assert stats["dropped"] <= 200, f"{stats['dropped']} of 20,000 dropped: {stats}"
    assert stats["sent"] + stats["journaled"] + stats["dropped"] == 20_000, stats
    server.delay = 0.0
    assert client.replay(timeout=20)
    assert journal_keys(journal_dir) == []
    assert len(server.keys() & set(keys)) == 20_000 - stats["dropped"]
    assert all(n == 1 for n in server.deliveries.values())


def test_a_trickled_answer_cannot_hold_the_pipeline_past_the_timeout(
    server: FaultServer, make_client, journal_dir: Path
):
    """An answer trickled one byte every 0.5 s with timeout=1: no request holds the
    pipeline longer than ~1.5 s, and of 5,851 events reported meanwhile none is dropped;
    each one is delivered or journaled."""
    server.always = Step(
        200, body={"validation_failed": [], "debug": "." * 120}, trickle=0.5
    )  # ~150 bytes: 75 s at that pace
    client = make_client(timeout=1, retry_attempts=2, retry_deadline=3, probe_interval=30)
    keys = [client.report("cust_1", "api_call", {"i": i}) for i in range(500)]
    wait_until(lambda: server.requests, timeout=5)  # the first send is trickling now
    keys += [client.report("cust_1", "api_call", {"i": i}) for i in range(500, 5851)]
    result = client.flush(timeout=10)
    stats = client.stats()
    assert stats["dropped"] == 0, stats
    assert result, result
    on_disk = set(journal_keys(journal_dir))
    assert set(keys) <= on_disk | server.keys()
    wait_until(lambda: all(r.ended is not None for r in server.requests), timeout=5)
    held = max(r.held or 0.0 for r in server.requests)
    assert held <= 1.6, f"a request held the pipeline for {held:.2f} s"


def test_a_refusing_journal_and_a_short_blip_drop_nothing_memory_can_hold(
    server: FaultServer, make_client
):
    """With a journal that refuses every spill (free-space reserve far above the disk) and
    a 1.5 s 503 blip, none of 1,000 events is dropped: memory had room, and all are
    delivered after the blip."""
    server.blip(503, 1.5)
    client = make_client(
        journal_min_free_bytes=1 << 60, retry_attempts=2, retry_deadline=0.5, probe_interval=0.2
    )
    keys = [client.report("cust_1", "api_call", {"i": i}) for i in range(1000)]
    try:
        wait_until(lambda: set(keys) <= server.keys(), timeout=8)
    finally:
        stats = client.stats()
    assert stats["dropped"] == 0, stats
    assert set(keys) <= server.keys()


def test_queue_full_drop_reports_add_up_and_carry_every_key_and_body(
    server: FaultServer, make_client
):
    """Tiny memory bounds, a hung endpoint and a journal that refuses every spill force
    queue_full drops: the DropReport counts for that reason sum to
    stats()["dropped_by_reason"]["queue_full"], and every report carries as many keys and
    event bodies as its count."""
    server.always = Step(hang=True)
    reports: list[DropReport] = []
    client = make_client(
        on_drop=reports.append,
        max_batch_events=10,
        max_queue_events=50,
        max_event_bytes=1024,
        max_batch_bytes=2048,
        max_queue_bytes=8192,
        journal_min_free_bytes=1 << 60,
    )
    keys = [client.report("cust_1", "api_call", {"i": i}) for i in range(2000)]
    client.close(timeout=1)
    queue_full = client.stats()["dropped_by_reason"].get("queue_full", 0)
    assert queue_full > 0

    def reported() -> int:
        return sum(r.count for r in list(reports) if r.reason == "queue_full")

    try:
        wait_until(lambda: reported() >= queue_full, timeout=5)
    except TimeoutError:
        pass
    assert reported() == queue_full
    for report in reports:
        reason, count = report.reason, report.count
        keys_in, bodies = list(report.idempotency_keys), list(report.events)
        what = f"a {reason} report of {count} carries {len(keys_in)} keys, {len(bodies)} bodies"
        assert (len(keys_in), len(bodies)) == (count, count), what
        decoded = [orjson.loads(b) if isinstance(b, bytes) else b for b in bodies]
        assert [b["idempotency_key"] for b in decoded] == keys_in, what
        assert set(keys_in) <= set(keys), what
