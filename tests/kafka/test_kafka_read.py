"""The Kafka destination as a value: reading delivery reports, URLs, settings; one real
oversized message through a real broker."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime, timezone
from pathlib import Path

import orjson
import pytest

import meterline
from meterline import ConfigError
from meterline._event import validate
from meterline._response import Response
from meterline.destinations import Kafka
from meterline.destinations._base import ACCEPTED, REFUSED, RETRY
from meterline.destinations.kafka import parse_kafka_url
from meterline.destinations.orb import Orb
from tests.kafka.helpers import journal_events, read_topic, topic_keys
from tests.support.kafka import Broker, free_port

KEYS = ["key-0", "key-1", "key-2"]


def report(*failed: list[object]) -> Response:
    return Response(207, body=orjson.dumps({"failed": list(failed)}))


# -- read() ----------------------------------------------------------------------------------


def test_every_message_acknowledged_is_accepted() -> None:
    answer = Kafka().read(Response(200), KEYS)
    assert answer.kind == ACCEPTED
    assert not answer.rejected
    assert not answer.retry


def test_a_message_error_rejects_it_a_transient_one_retries_it_the_rest_delivered() -> None:
    answer = Kafka().read(
        report([0, "MSG_SIZE_TOO_LARGE", False, "too big"], [1, "_MSG_TIMED_OUT", True, "x"]),
        KEYS,
    )
    assert answer.kind == ACCEPTED
    assert dict(answer.rejected) == {"key-0": ["kafka MSG_SIZE_TOO_LARGE: too big"]}
    assert answer.retry == frozenset({"key-1"})
    assert "key-2" not in answer.retry
    assert "key-2" not in answer.rejected
    assert "_MSG_TIMED_OUT" in answer.detail


def test_a_retriable_size_error_is_retried_not_rejected() -> None:
    answer = Kafka().read(report([2, "MSG_SIZE_TOO_LARGE", True, "maybe"]), KEYS)
    assert answer.kind == ACCEPTED
    assert not answer.rejected
    assert answer.retry == frozenset({"key-2"})


def test_every_message_rejected_is_still_an_accepted_answer() -> None:
    answer = Kafka().read(report(*[[i, "INVALID_RECORD", False, "bad"] for i in range(3)]), KEYS)
    assert answer.kind == ACCEPTED
    assert set(answer.rejected) == set(KEYS)
    assert not answer.retry


def test_topic_not_writable_for_every_message_is_refused() -> None:
    answer = Kafka().read(
        report(*[[i, "TOPIC_AUTHORIZATION_FAILED", True, "denied"] for i in range(3)]), KEYS
    )
    assert answer.kind == REFUSED
    assert "TOPIC_AUTHORIZATION_FAILED" in answer.detail


@pytest.mark.parametrize(
    "name", ["UNKNOWN_TOPIC_OR_PART", "_UNKNOWN_TOPIC", "SASL_AUTHENTICATION_FAILED"]
)
def test_other_refusals_for_every_message_are_refused(name: str) -> None:
    answer = Kafka().read(report(*[[i, name, True, "no"] for i in range(3)]), KEYS)
    assert answer.kind == REFUSED


def test_a_refusal_for_some_messages_only_retries_those() -> None:
    answer = Kafka().read(report([1, "TOPIC_AUTHORIZATION_FAILED", True, "denied"]), KEYS)
    assert answer.kind == ACCEPTED
    assert answer.retry == frozenset({"key-1"})
    assert not answer.rejected


def test_an_unreadable_report_is_retried_never_delivered() -> None:
    bodies = (
        b"<html>",
        b"{}",
        b'{"failed": 3}',
        b'{"failed": []}',  # a 207 naming no failure is not a delivery either
        b'{"failed": [[9, "X", true, "index out of the batch"]]}',
        b'{"failed": [["0", "X", true, "index not an int"]]}',
        b'{"failed": [[0, "X"]]}',
    )
    for body in bodies:
        answer = Kafka().read(Response(207, body=body), KEYS)
        assert answer.kind == RETRY, body


def test_the_transport_reports_every_message_it_could_not_deliver() -> None:
    """No broker at all: no message may read as delivered (each must be retried)."""
    from meterline._kafka import KafkaTransport

    url = f"kafka://127.0.0.1:{free_port()}/nowhere"
    transport = KafkaTransport(url, Kafka(), timeout=1, connect_timeout=1)
    try:
        when = datetime(2026, 1, 2, tzinfo=timezone.utc)
        events = [validate("c", "e", {"i": i}, when, f"key-{i}", 32 * 1024) for i in range(5)]
        keys = [f"key-{i}" for i in range(5)]
        response = transport.send(Kafka().serialize_many(events))
        answer = Kafka().read(response, keys)
        assert answer.retry == frozenset(keys) or answer.kind != ACCEPTED, (
            response,
            response.body,
        )
    finally:
        transport.close()


# -- parse_kafka_url() -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "brokers", "topic"),
    [
        ("kafka://127.0.0.1:9092/usage", ("127.0.0.1:9092",), "usage"),
        ("kafka://a:1,b:2/t.x_y-z", ("a:1", "b:2"), "t.x_y-z"),
        ("kafka://a:1, b:2/t", ("a:1", "b:2"), "t"),
        ("kafka://[::1]:9092/t", ("[::1]:9092",), "t"),
        ("kafka://broker.example:65535", ("broker.example:65535",), None),
        ("kafka://h:1/", ("h:1",), None),
    ],
)
def test_parse_kafka_url(url: str, brokers: tuple[str, ...], topic: str | None) -> None:
    parsed = parse_kafka_url(url)
    assert parsed.brokers == brokers
    assert parsed.topic == topic
    assert parsed.bootstrap == ",".join(brokers)


@pytest.mark.parametrize(
    "url",
    [
        "http://h:1/t",
        "KAFKA://h:1/t",
        " kafka://h:1/t",
        "kafka://",
        "kafka:///t",
        "kafka://h/t",
        "kafka://h:0/t",
        "kafka://h:65536/t",
        "kafka://h:1,x/t",
        "kafka://h:port/t",
        "kafka://u:secretpw@h:1/t",
        "kafka://h:1/t?security.protocol=SASL_SSL",
        "kafka://h:1/t#frag",
        "kafka://h:1/a/b",
        "kafka://h:1/a b",
        "kafka://h:1/" + "t" * 250,
        None,
        9092,
        b"kafka://h:1/t",
    ],
)
def test_parse_kafka_url_refuses(url: object) -> None:
    with pytest.raises(ConfigError) as info:
        parse_kafka_url(url, what="relay --from")
    assert "secretpw" not in str(info.value)


def test_a_credential_is_never_echoed() -> None:
    for url in ("kafka://u:secretpw@h:1/t", "http://u:secretpw@h:1/t"):
        with pytest.raises(ConfigError) as info:
            parse_kafka_url(url)
        assert "secretpw" not in str(info.value)


# -- the destination value -------------------------------------------------------------------


def test_topic_precedence_in_the_ingest_url() -> None:
    assert Kafka().ingest_url("kafka://h:1/usage") == "kafka://h:1/usage"
    assert Kafka(topic="mine").ingest_url("kafka://h:1/usage") == "kafka://h:1/mine"
    assert Kafka().ingest_url("kafka://h:1,g:2") == "kafka://h:1,g:2/meterline-usage"


@pytest.mark.parametrize(
    "kwargs",
    [
        {"downstream": "kafka"},
        {"downstream": "nosuch"},
        {"topic": "a b"},
        {"topic": ""},
        {"producer_config": {"linger.ms": [5]}},
        {"producer_config": {"linger.ms": None}},
        {"producer_config": {"delivery.timeout.ms": 1}},
        {"producer_config": {"on_delivery": "x"}},
    ],
)
def test_bad_destination_arguments(kwargs: dict[str, object]) -> None:
    with pytest.raises(ConfigError):
        Kafka(**kwargs)  # type: ignore[arg-type]


def test_guarantees_are_fixed_and_secrets_hidden() -> None:
    dest = Kafka(producer_config={"sasl.password": "pw1", "sasl.oauthbearer.client.secret": "pw2"})
    settings = dest.settings()
    assert settings["enable.idempotence"] is True
    assert settings["acks"] == "all"
    assert sorted(dest.secrets()) == ["pw1", "pw2"]
    assert "pw1" not in repr(dest)
    assert "pw2" not in repr(dest)
    assert Kafka(producer_config={"linger.ms": 5}) == Kafka(producer_config={"linger.ms": 5})
    assert Kafka(downstream="lago") != Kafka()


def test_route_reads_key_and_customer_of_each_format() -> None:
    when = datetime(2026, 1, 2, tzinfo=timezone.utc)
    event = validate("cust_9", "api_call", {"n": 1}, when, "key-9", 32 * 1024)
    for downstream, customer in [
        ("orb", "cust_9"),
        (Orb(customer_field="customer_id"), "cust_9"),
        ("lago", "cust_9"),
        ("metronome", "cust_9"),
        ("openmeter", "cust_9"),
        ("stripe", "cust_9"),
    ]:
        dest = Kafka(downstream=downstream)
        body = dest.serialize_many([event])[0]
        assert dest.route(body) == ("key-9", customer), downstream


# -- a message over the producer's size limit, on a real broker -------------------------------


def test_message_over_the_size_limit_is_rejected_the_rest_delivered(
    broker: Broker, topic: str, kafka_client: Callable[..., meterline.Client], journal_dir: Path
) -> None:
    client = kafka_client(
        broker.url(topic), destination=Kafka(producer_config={"message.max.bytes": 2000})
    )
    small = [client.report("c", "e", {"i": i}) for i in range(10)]
    big = client.report("c", "e", {"blob": "x" * 5000})
    small += [client.report("c", "e", {"i": i}) for i in range(10, 20)]
    result = client.flush(timeout=20)
    # Whatever librdkafka does with it (refused at produce() or in its report), the event is
    # counted once, kept on disk with the reason, and costs the others nothing.
    assert (result.sent, result.rejected, result.pending) == (20, 1, 0), result
    stats = client.stats()
    assert (stats.sent, stats.rejected, stats.journaled, stats.dropped) == (20, 1, 0, 0)
    rejected = journal_events(journal_dir, "rejected")
    assert [e["idempotency_key"] for e in rejected] == [big]
    assert "MSG_SIZE_TOO_LARGE" in " ".join(rejected[0]["_reasons"])
    assert journal_events(journal_dir, "ready") == []
    counts = topic_keys(read_topic(broker.address, topic, expect=20))
    assert set(counts) == set(small)
    assert big not in counts
