"""The shipper end to end against a real HTTP server on 127.0.0.1 with programmable faults."""

from __future__ import annotations

import logging
import threading
import time

import pytest

from meterline.testing import wait_until
from tests.support.fault_server import FaultServer, Step


def test_ten_thousand_events_arrive_once_with_exact_fields(server, make_client):
    """10,000 reported events reach the server exactly once, each with the fields reported."""
    client = make_client(flush_interval=0.2)
    sent = {}
    for i in range(10_000):
        key = client.report(f"cust_{i % 50}", "api_call", {"tokens": i, "model": "small"})
        sent[key] = i
    result = client.flush(timeout=20)
    assert result
    assert result.pending == 0  # those settled before flush() began are not in its result
    stats = client.stats()
    assert stats["sent"] + stats["journaled"] == 10_000
    assert client.replay(timeout=20)  # what a burst spilled past the memory bound
    assert server.count() == 10_000
    assert all(n == 1 for n in server.deliveries.values())
    for event in server.events():
        i = sent[event["idempotency_key"]]
        assert event["external_customer_id"] == f"cust_{i % 50}"
        assert event["event_name"] == "api_call"
        assert event["properties"] == {"tokens": i, "model": "small"}
        assert set(event) == {
            "idempotency_key",
            "external_customer_id",
            "event_name",
            "timestamp",
            "properties",
        }
    stats = client.stats()
    assert stats["reported"] == stats["sent"] + stats["replayed"] == 10_000
    assert stats["dropped"] == 0
    assert stats["queue_events"] == 0
    assert max(len(r.keys) for r in server.requests) <= 500


def test_customer_field_can_send_orbs_own_customer_id(server, make_client):
    """customer_field="customer_id" sends Orb's customer ids instead of external ones."""
    client = make_client(customer_field="customer_id")
    client.report("orb_cust_1", "api_call")
    assert client.flush(timeout=5)
    (event,) = server.events()
    assert event["customer_id"] == "orb_cust_1"
    assert "external_customer_id" not in event


def test_server_errors_are_retried_with_the_same_key_and_bytes(server, make_client):
    """Two 503s then success: delivered once, same keys each try, counted as retried."""
    server.push(503, 502)
    client = make_client()
    keys = {client.report("c", "e", {"n": i}) for i in range(10)}
    assert client.flush(timeout=20)
    assert server.keys() == keys
    assert server.statuses()[:3] == [503, 502, 200]
    assert [set(r.keys) for r in server.requests[:3]] == [keys] * 3
    assert client.stats()["retried"] == 20


def test_a_lost_success_is_not_counted_twice(server, make_client):
    """A 500 sent after the server stored the batch leads to a resend it de-duplicates."""
    server.push(Step(500, count_events=True))
    client = make_client()
    keys = {client.report("c", "e", {"n": i}) for i in range(5)}
    assert client.flush(timeout=20)
    assert server.keys() == keys
    assert all(server.deliveries[k] == 2 for k in keys)
    assert server.count() == 5


def test_retry_after_is_honoured(server, make_client):
    """A 429 with Retry-After: 1 delays the next attempt by at least that second."""
    server.push(Step(429, headers={"Retry-After": "1"}))
    client = make_client()
    client.report("c", "e")
    assert client.flush(timeout=20)
    first, second = server.requests[0], server.requests[1]
    assert (first.status, second.status) == (429, 200)
    assert second.at - first.at >= 0.95


def test_partial_validation_failure_rejects_only_named_keys(server, make_client, journal_dir):
    """Keys the server names in validation_failed are rejected and kept on disk; the rest land."""
    client = make_client()
    bad = client.report("c", "e", {"n": 0}, idempotency_key="bad-key")
    server.reject[bad] = ["timestamp is too old"]
    good = {client.report("c", "e", {"n": i}) for i in range(1, 6)}
    result = client.flush(timeout=10)
    assert (result.sent, result.rejected, result.pending) == (5, 1, 0)
    assert server.keys() == good
    assert client.stats()["rejected"] == 1
    wait_until(lambda: list((journal_dir / "rejected").iterdir()))
    assert b"bad-key" in b"".join(p.read_bytes() for p in (journal_dir / "rejected").iterdir())


def test_bad_request_without_detail_is_bisected(server, make_client):
    """A 400 that names no key is split until the one bad event is isolated and rejected."""
    client = make_client(flush_interval=5)
    keys = [client.report("c", "e", {"n": i}) for i in range(64)]
    server.bad_request_keys = {keys[37]}
    result = client.flush(timeout=10)
    assert (result.sent, result.rejected) == (63, 1)
    assert server.keys() == set(keys) - {keys[37]}
    assert len(server.requests) <= 2 * 7 + 1


def test_too_large_is_split_in_halves(server, make_client):
    """A 413 splits the batch until every piece fits; everything arrives once."""
    server.max_body_bytes = 4_000
    client = make_client(flush_interval=5)
    keys = {client.report("c", "e", {"pad": "x" * 100}) for _ in range(100)}
    assert client.flush(timeout=10)
    assert server.keys() == keys
    assert 413 in server.statuses()


def test_unauthorized_journals_everything_and_logs_without_the_key(
    server, make_client, journal_dir, caplog
):
    """401: nothing dropped, every event journaled, an ERROR log that never shows the key."""
    server.api_key = "the-right-key"
    secret = "sk_live_do_not_log_me"
    client = make_client(api_key=secret)
    with caplog.at_level(logging.DEBUG, logger="meterline"):
        for i in range(20):
            client.report("c", "e", {"n": i})
        result = client.flush(timeout=10)
    assert (result.journaled, result.dropped, result.pending) == (20, 0, 0)
    assert server.count() == 0
    assert any(r.levelno == logging.ERROR and "401" in r.getMessage() for r in caplog.records)
    assert secret not in caplog.text
    assert secret not in repr(client)
    assert secret not in repr(client.config)
    for path in journal_dir.rglob("*"):
        if path.is_file():
            assert secret.encode() not in path.read_bytes()


def test_connection_refused_journals_then_replays_when_the_endpoint_returns(
    server, make_client, journal_dir
):
    """With nothing listening the batch is journaled; a new client replays it once the
    endpoint listens again, and a client of another endpoint never sends it."""
    import socket

    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    sock.close()
    dead_url = f"http://127.0.0.1:{port}/v1"
    down = make_client(base_url=dead_url, retry_attempts=2)
    keys = {down.report("c", "e", {"n": i}) for i in range(30)}
    result = down.close(timeout=10)
    assert (result.journaled, result.pending, result.dropped) == (30, 0, 0)
    assert list((journal_dir / "ready").iterdir())
    other = make_client()  # another endpoint on the same journal_dir: leaves them alone
    replay = other.replay(timeout=10)
    assert (replay.remaining_batches, replay.set_aside, server.count()) == (0, 1, 0)
    revived = FaultServer(port=port).start()
    try:
        up = make_client(base_url=dead_url)
        assert up.replay(timeout=10)
        assert revived.keys() == keys
        assert up.stats()["replayed"] == 30
    finally:
        up.close(timeout=2)
        revived.stop()


def test_sixteen_threads_reporting_at_once(server, make_client):
    """16 threads x 1,000 reports: every event arrives once, none lost or doubled."""
    client = make_client(max_queue_events=32_000)  # room for the whole burst: this is about threads
    barrier = threading.Barrier(16)
    keys: list[set[str]] = [set() for _ in range(16)]

    def work(n: int) -> None:
        barrier.wait()
        for i in range(1000):
            keys[n].add(client.report(f"c{n}", "e", {"i": i}))

    threads = [threading.Thread(target=work, args=(n,)) for n in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert client.flush(timeout=20)
    assert client.replay(timeout=20)  # a burst past 3/4 of the memory bound detours via disk
    stats = client.stats()
    assert stats["dropped"] == 0
    assert stats["reported"] == 16_000
    assert server.keys() == set().union(*keys)
    assert server.count() == 16_000


def test_a_burst_beyond_the_memory_bound_is_journaled_or_dropped_with_its_keys(server, make_client):
    """Far more events than max_queue_events at once: each one ends delivered (directly or
    through the journal) or dropped with its key given to on_drop; none vanishes."""
    drops = []
    client = make_client(
        max_queue_events=1_000, max_batch_events=100, flush_interval=5, on_drop=drops.append
    )
    keys = {client.report("c", "e", {"i": i}) for i in range(5_000)}
    assert client.flush(timeout=30).pending == 0
    assert client.replay(timeout=30)
    stats = client.stats()
    dropped = {k for d in drops for k in d.idempotency_keys}
    assert {d.reason for d in drops} <= {"queue_full"}
    assert stats["reported"] == 5_000
    assert stats["dropped"] == len(dropped) == stats["dropped_by_reason"].get("queue_full", 0)
    assert server.keys() | dropped == keys
    assert not server.keys() & dropped
    assert stats["sent"] + stats["replayed"] + stats["dropped"] == 5_000


def test_flush_and_close_honour_their_timeouts(server, make_client):
    """A server slower than the timeout does not hold flush() or close() past their bounds."""
    server.delay = 3.0
    client = make_client(timeout=10.0)
    client.report("c", "e")
    t0 = time.monotonic()
    result = client.flush(timeout=0.3)
    assert time.monotonic() - t0 < 1.0
    assert result.pending == 1
    assert not result
    client.report("c", "e")
    t0 = time.monotonic()
    client.close(timeout=0.5)
    assert time.monotonic() - t0 < 2.5


def test_flush_is_cheap_when_nothing_is_pending(make_client):
    """flush() with an empty queue returns at once, truthy, without starting a thread."""
    client = make_client()
    t0 = time.perf_counter()
    for _ in range(1000):
        assert client.flush(timeout=1)
    assert time.perf_counter() - t0 < 0.5
    assert not [t for t in threading.enumerate() if t.name.startswith("meterline")]


def test_report_after_close_raises(make_client):
    """report() after close() raises ClientClosedError; close() is idempotent."""
    from meterline import ClientClosedError

    client = make_client()
    client.report("c", "e")
    first = client.close(timeout=5)
    assert client.close(timeout=5) == first
    with pytest.raises(ClientClosedError):
        client.report("c", "e")


def test_gzip_bodies_are_accepted(server, make_client):
    """With gzip=True the body is compressed and the server still counts every event."""
    client = make_client(gzip=True)
    keys = {client.report("c", "e", {"n": i}) for i in range(50)}
    assert client.flush(timeout=5)
    assert server.keys() == keys
    assert server.requests[0].headers["content-encoding"] == "gzip"


def test_headers_identify_the_client_and_authenticate(server, make_client):
    """Requests carry Bearer auth, a JSON content type and a meterline User-Agent."""
    import meterline

    client = make_client(api_key="abc123")
    client.report("c", "e")
    assert client.flush(timeout=5)
    headers = server.requests[0].headers
    assert headers["authorization"] == "Bearer abc123"
    assert headers["content-type"] == "application/json"
    assert headers["user-agent"] == f"meterline/{meterline.__version__}"
