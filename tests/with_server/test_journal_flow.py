"""The journal behind the client: outages, shutdown with the endpoint down, bounds, bad disks."""

from __future__ import annotations

import threading

from meterline.testing import wait_until
from tests.support.journal import ready_events


def test_outage_is_journaled_then_replayed_in_process_when_the_endpoint_recovers(
    server, make_client
):
    """During a 503 outage batches go to disk; once a probe succeeds the backlog is
    replayed by the same process without any call from the application."""
    server.outage_status = 503
    client = make_client(retry_attempts=2, probe_interval=0.2, replay_interval=60)
    keys = {client.report("c", "e", {"i": i}) for i in range(300)}
    result = client.flush(timeout=10)
    assert result.journaled == 300
    assert result.pending == 0
    assert server.count() == 0
    server.outage_status = None
    more = {client.report("c", "e", {"i": i}) for i in range(300, 310)}
    wait_until(lambda: server.count() == 310, timeout=15)
    assert server.keys() == keys | more
    assert all(n == 1 for n in server.deliveries.values())
    wait_until(lambda: client.stats()["journal_ready_batches"] == 0, timeout=5)
    assert client.stats()["replayed"] + client.stats()["sent"] == 310


def test_close_with_the_endpoint_down_leaves_everything_in_ready(server, make_client, journal_dir):
    """close() with the server failing returns within its bound with every event on disk."""
    server.outage_status = 503
    client = make_client()
    for i in range(1234):
        client.report("c", "e", {"i": i})
    result = client.close(timeout=2)
    assert result.pending == 0
    assert result.dropped == 0
    assert result.sent + result.journaled == 1234
    assert ready_events(journal_dir) == 1234 - server.count()


def test_a_second_client_replays_what_the_first_journaled(server, make_client, journal_dir):
    """A later process (here: client) on the same journal delivers the backlog exactly once."""
    server.outage_status = 500
    first = make_client(retry_attempts=1)
    keys = {first.report("c", "e", {"i": i}) for i in range(700)}
    first.close(timeout=2)
    server.outage_status = None
    second = make_client()
    second.report("c", "e")  # starting the worker is enough: it replays on start
    wait_until(lambda: server.keys() >= keys, timeout=15)
    assert all(server.deliveries[k] == 1 for k in keys)


def test_full_journal_keeps_events_in_memory_then_drops_them_at_close_with_a_reason(
    server, make_client
):
    """With the journal at its byte limit, undeliverable batches wait in memory (the queue
    had room); only a close() with the endpoint still down drops them, counted and passed
    to on_drop with their keys and bodies."""
    server.outage_status = 503
    drops = []
    client = make_client(journal_max_bytes=1, retry_attempts=1, on_drop=drops.append)
    keys = {client.report("c", "e", {"i": i}) for i in range(20)}
    result = client.flush(timeout=1)
    assert (result.dropped, result.pending) == (0, 20)
    assert client.stats()["queue_events"] == 20
    closed = client.close(timeout=1)
    assert closed.dropped == 20
    assert not closed
    assert client.stats()["dropped_by_reason"] == {"journal_full": 20}
    assert {k for d in drops for k in d.idempotency_keys} == keys
    assert all(d.reason == "journal_full" and len(d.events) == d.count for d in drops)


def test_unusable_journal_keeps_events_in_memory_and_accounts_for_them_at_close(
    server, make_client, tmp_path
):
    """A journal dir that cannot be created: events wait in memory; if the endpoint never
    comes back they are dropped at close with reason journal_unavailable, never silently."""
    blocker = tmp_path / "a-file"
    server.outage_status = 503
    drops = []
    client = make_client(
        journal_dir=blocker / "journal", retry_attempts=1, probe_interval=0.1, on_drop=drops.append
    )
    blocker.write_text("the disk went bad after the client was created")
    keys = {client.report("c", "e", {"i": i}) for i in range(10)}
    result = client.flush(timeout=1)
    assert result.pending == 10
    assert client.stats()["queue_events"] == 10
    closed = client.close(timeout=1)
    assert closed.dropped == 10
    assert client.stats()["dropped_by_reason"] == {"journal_unavailable": 10}
    assert {k for d in drops for k in d.idempotency_keys} == keys


def test_parked_events_are_sent_when_the_endpoint_returns(server, make_client, tmp_path):
    """Events kept in memory for lack of a journal are delivered once the endpoint is back."""
    blocker = tmp_path / "a-file"
    server.outage_status = 503
    client = make_client(journal_dir=blocker / "j", retry_attempts=1, probe_interval=0.1)
    blocker.write_text("x")
    keys = {client.report("c", "e", {"i": i}) for i in range(10)}
    assert client.flush(timeout=1).pending == 10
    server.outage_status = None
    client.report("c", "e")  # wakes the worker
    wait_until(lambda: server.keys() >= keys, timeout=10)
    assert client.flush(timeout=5)


def test_write_ahead_mode_delivers_and_leaves_nothing_behind(server, make_client, journal_dir):
    """In write_ahead mode every batch passes through the journal and is removed on success."""
    client = make_client(durability="write_ahead")
    barrier = threading.Barrier(4)
    keys: set[str] = set()
    lock = threading.Lock()

    def work() -> None:
        barrier.wait()
        for i in range(500):
            k = client.report("c", "e", {"i": i})
            with lock:
                keys.add(k)

    threads = [threading.Thread(target=work) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert client.flush(timeout=20)
    assert server.keys() == keys
    assert ready_events(journal_dir) == 0
