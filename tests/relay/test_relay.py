"""The relay in this process against a real broker and a real Orb-compatible server: every
event consumed ends delivered or in rejected/, offsets are committed only after that, and
while the destination is down the events stay in Kafka."""

from __future__ import annotations

import time
from pathlib import Path

import orjson

from meterline.server import ReferenceServer
from tests.support.kafka import Broker, committed, free_port

from .conftest import (
    API_KEY,
    fill,
    high_watermarks,
    journal_events,
    orb_event,
    orb_headers,
    produce_raw,
    wait_for,
)

NONE = -1001  # a partition the group never committed


def server_keys(srv: ReferenceServer) -> set[str]:
    return {e["id"] for e in srv.events()}


def all_committed(broker: Broker, topic: str, group: str) -> bool:
    high = high_watermarks(broker, topic)
    return committed(broker, topic, group, high) == high


def ready_files(journal_dir: Path) -> list[Path]:
    return sorted((journal_dir / "ready").glob("*.mlj")) if (journal_dir / "ready").exists() else []


def test_every_event_delivered_once_and_committed_to_the_end(
    broker, topic, group, srv, relays, tmp_path
):
    n = 5000
    keys = fill(broker, topic, n, tmp_path / "producer")
    running = relays(broker.url(topic), group, base_url=srv.url)
    wait_for(lambda: running.latest().committed == n, 40, "5000 committed")
    wait_for(lambda: running.latest().lag == 0, 10, "lag 0")

    stats = running.stats()
    assert (stats.consumed, stats.delivered, stats.committed) == (n, n, n), stats
    assert (stats.rejected, stats.duplicates, stats.holding, stats.handed_over) == (0, 0, 0, 0)
    assert stats.partitions == (0, 1, 2, 3)
    assert stats.per_partition_lag == {0: 0, 1: 0, 2: 0, 3: 0}
    assert stats.last_error == ""
    assert server_keys(srv) == set(keys)
    assert srv.event_count() == n
    sent = [k for r in srv.requests if r.path.endswith("/ingest") for k in r.idempotency_keys]
    assert len(sent) == n, "each event sent once"
    high = high_watermarks(broker, topic)
    assert sum(high.values()) == n
    assert committed(broker, topic, group, high) == high

    running.stop()
    final = running.result[0]
    assert final.committed == n
    assert final.delivered == n
    assert not (tmp_path / "relay-journal-0" / "rejected").exists() or not journal_events(
        tmp_path / "relay-journal-0", "rejected"
    )


def test_while_the_destination_is_down_events_stay_in_kafka(broker, topic, group, relays, tmp_path):
    n = 300
    keys = fill(broker, topic, n, tmp_path / "producer")
    port = free_port()
    journal = tmp_path / "relay-journal"
    running = relays(
        broker.url(topic),
        group,
        base_url=f"http://127.0.0.1:{port}/v1",
        journal_dir=journal,
        probe_interval=0.3,
        retry_attempts=2,
        retry_deadline=1.0,
        timeout=2.0,
    )
    # Several progress reports while holding: the relay has probed the dead port a few times.
    wait_for(
        lambda: sum(1 for s in running.progress if s.holding > 0) >= 6,
        30,
        "holding through several progress reports",
    )
    stats = running.stats()
    assert (stats.delivered, stats.committed) == (0, 0), stats
    assert stats.holding > 0, stats
    assert stats.last_error, stats
    assert committed(broker, topic, group, range(4)) == dict.fromkeys(range(4), NONE)
    assert ready_files(journal) == [], "held events are not journaled: they stay in Kafka"
    assert not running.error

    srv = ReferenceServer(port=port, api_keys=[API_KEY]).start()
    try:
        wait_for(lambda: srv.event_count() == n, 30, "all delivered once the server is up")
        wait_for(lambda: running.latest().committed == n, 20, "all committed")
        assert server_keys(srv) == set(keys)
        assert all_committed(broker, topic, group)
        stats = running.stats()
        assert (stats.holding, stats.delivered) == (0, n), stats
        assert ready_files(journal) == []
        running.stop()
    finally:
        srv.stop()


def test_events_the_server_rejects_end_in_rejected_with_reasons(
    broker, topic, group, srv, relays, tmp_path
):
    good = fill(broker, topic, 200, tmp_path / "producer")
    future = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(time.time() + 86_400))
    bad = {
        "bad-future": orb_event("bad-future", timestamp=future),
        "bad-name": orb_event("bad-name", event_name=""),
        "bad-customer": orb_event("bad-customer", external_customer_id=""),
    }
    produce_raw(broker, topic, [(body, orb_headers(key)) for key, body in bad.items()])
    more = fill(broker, topic, 50, tmp_path / "producer2")
    journal = tmp_path / "relay-journal"
    running = relays(broker.url(topic), group, base_url=srv.url, journal_dir=journal)
    total = 253
    wait_for(lambda: running.latest().committed == total, 40, "every message committed")

    stats = running.stats()
    assert (stats.delivered, stats.rejected, stats.consumed) == (250, 3, total), stats
    assert server_keys(srv) == set(good) | set(more)
    assert all_committed(broker, topic, group)
    rejected = {e["idempotency_key"]: e for e in journal_events(journal, "rejected")}
    assert set(rejected) == set(bad)
    assert "future" in " ".join(rejected["bad-future"]["_reasons"])
    assert "event_name" in " ".join(rejected["bad-name"]["_reasons"])
    assert "customer" in " ".join(rejected["bad-customer"]["_reasons"])
    for key, body in bad.items():  # kept as the exact event, not the relay's rewrite
        kept = {k: v for k, v in rejected[key].items() if k != "_reasons"}
        assert kept == orjson.loads(body)
    assert ready_files(journal) == []
    running.stop()


def test_unreadable_messages_are_rejected_naming_their_place_and_committed_past(
    broker, topic, group, srv, relays, tmp_path
):
    messages = [
        (orb_event("good-1"), orb_headers("good-1")),
        (b"not json", orb_headers("k-notjson")),
        (b"[1, 2, 3]", orb_headers("k-array")),
        (orb_event("good-2"), orb_headers("good-2")),
        (b'{"event_name": "api_call"}', []),  # no idempotency_key, no header
        (orb_event("body-key"), orb_headers("header-key")),  # header and body disagree
        (None, orb_headers("k-none")),
        (b"", []),
        (orb_event("good-3"), orb_headers("good-3")),
    ]
    offsets = produce_raw(broker, topic, messages, partition=2)
    journal = tmp_path / "relay-journal"
    running = relays(broker.url(topic), group, base_url=srv.url, journal_dir=journal)
    wait_for(lambda: running.latest().committed == len(messages), 30, "all committed")

    stats = running.stats()
    assert (stats.delivered, stats.rejected) == (3, 6), stats
    assert server_keys(srv) == {"good-1", "good-2", "good-3"}
    assert committed(broker, topic, group, [2]) == {2: offsets[-1] + 1}
    rejected = journal_events(journal, "rejected")
    assert len(rejected) == 6, rejected
    reasons = {
        offset: " ".join(e["_reasons"])
        for e in rejected
        for offset in offsets
        if f"{topic}[2]@{offset}" in " ".join(e["_reasons"])
    }
    expected = {
        offsets[1]: "not JSON",
        offsets[2]: "not a JSON object",
        offsets[4]: "no idempotency_key",
        offsets[5]: "header key differs",
        offsets[6]: "no value",
        offsets[7]: "no value",
    }
    assert set(reasons) == set(expected), reasons
    for offset, why in expected.items():
        assert why in reasons[offset], (offset, reasons[offset])
    by_key = {e["idempotency_key"]: e for e in rejected}
    assert by_key["k-notjson"]["meterline_relay_unreadable"] == "not json"
    assert "header-key" in by_key  # kept under the message's own key
    assert f"kafka:{topic}[2]@{offsets[4]}" in by_key  # no key at all: its place
    running.stop()
