"""OpenMeter: the CloudEvents mapping, how its answers are read, and its semantics against
a programmable server on 127.0.0.1 (a 400 problem bisected, a 429's Retry-After)."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime, timezone

import orjson
import pytest

import meterline
from meterline._event import validate
from meterline._response import Response
from meterline.destinations import OpenMeter, resolve
from meterline.testing import RecordingTransport, accepted
from tests.destinations.vendor_servers_b import EVENTS, OpenMeterServer, Reply, problem

PROBLEM = {"content-type": "application/problem+json"}


def _pending(**kw: object):
    return validate(
        kw.get("customer", "cust_1"),
        kw.get("name", "api_call"),
        kw.get("props", {"tokens": 3, "model": "small", "ok": True, "x": 1.5}),
        kw.get("ts"),
        kw.get("key", "key-1"),
        32 * 1024,
    )


def test_an_event_maps_to_a_cloudevent():
    """Key, customer, name, properties and time land in id, subject, type, data and time."""
    ts = datetime(2026, 1, 2, 3, 4, 5, 600000, tzinfo=timezone.utc)
    [raw] = OpenMeter(source="billing-api").serialize_many([_pending(ts=ts)])
    assert orjson.loads(raw) == {
        "specversion": "1.0",
        "id": "key-1",
        "source": "billing-api",
        "type": "api_call",
        "subject": "cust_1",
        "time": "2026-01-02T03:04:05.600000Z",
        "data": {"tokens": 3, "model": "small", "ok": True, "x": 1.5},
    }


def test_the_batch_is_a_json_array_of_cloudevents_sent_with_a_bearer_key():
    """The envelope is a bare array under the CloudEvents batch media type."""
    dest = OpenMeter()
    body = dest.envelope(dest.serialize_many([_pending(key="a"), _pending(key="b")]))
    assert [e["id"] for e in orjson.loads(body)] == ["a", "b"]
    assert dest.content_type == "application/cloudevents-batch+json"
    assert dest.headers("om_key") == {"Authorization": "Bearer om_key"}
    assert dest.ingest_url("https://openmeter.cloud") == "https://openmeter.cloud/api/v1/events"
    assert (dest.key_field, dest.has_rules, dest.session("x")) == ("id", False, None)


def test_the_name_resolves_to_the_default_source_and_an_invalid_source_is_refused():
    """destination="openmeter" is OpenMeter(source="meterline"); a source that is not a URI
    reference is a ConfigError at construction."""
    assert resolve("openmeter") == OpenMeter(source="meterline")
    assert repr(OpenMeter(source="urn:app:x")) == "OpenMeter(source='urn:app:x')"
    for bad in ("", "has space", "a\nb", "x" * 513):
        with pytest.raises(meterline.ConfigError):
            OpenMeter(source=bad)


@pytest.mark.parametrize(
    ("response", "kind"),
    [
        (Response(204), "accepted"),
        (Response(200), "foreign"),  # only a 204 is OpenMeter's acceptance
        (Response(200, {"content-type": "text/html"}, b"<html>portal</html>"), "foreign"),
        (Response(400, PROBLEM, orjson.dumps(problem(400, "Bad Request", "bad"))), "invalid_batch"),
        (Response(400, {"content-type": "text/html"}, b"<html/>"), "foreign"),
        (Response(401, PROBLEM, orjson.dumps(problem(401, "Unauthorized", "no"))), "refused"),
        (Response(412, PROBLEM, b"{}"), "refused"),
        (Response(413), "too_large"),
        (Response(429, {"retry-after": "2"}), "retry"),
        (Response(503, PROBLEM, orjson.dumps(problem(503, "Unavailable", "later"))), "retry"),
    ],
)
def test_answers_are_read_as_openmeter_means_them(response, kind):
    """204 is delivery; a 400 problem refuses the batch without naming events; the rest
    follow the shared statuses."""
    answer = OpenMeter().read(response, ["k"])
    assert answer.kind == kind
    if response.status == 429:
        assert answer.delay == 2.0


def test_the_testing_helpers_answer_as_openmeter(tmp_path):
    """accepted("openmeter") is the 204 an accepted batch gets, and reads as delivery."""
    assert accepted("openmeter").status == 204
    assert OpenMeter().read(accepted("openmeter"), ["k"]).kind == "accepted"
    transport = RecordingTransport("openmeter")
    with meterline.Client(destination="openmeter", transport=transport, journal_dir=tmp_path) as c:
        key = c.report("cust_1", "api_call", {"n": 1})
        assert c.flush(timeout=5).sent == 1
    assert transport.keys() == {key}


@pytest.fixture
def server() -> Iterator[OpenMeterServer]:
    with OpenMeterServer() as srv:
        yield srv  # type: ignore[misc]


@pytest.fixture
def client(server: OpenMeterServer, tmp_path) -> Iterator[meterline.Client]:
    with meterline.Client(
        api_key=server.api_key,
        destination="openmeter",
        base_url=server.url,
        journal_dir=tmp_path / "j",
        flush_interval=5,
    ) as c:
        yield c


def test_a_batch_is_delivered_once_with_the_exact_fields(server, client):
    """Every event arrives once at /api/v1/events, as a CloudEvent with the bearer key."""
    keys = {client.report(f"cust_{i % 3}", "api_call", {"i": i}) for i in range(250)}
    assert client.flush(timeout=10).sent == 250
    assert set(server.received) == keys
    assert set(server.deliveries.values()) == {1}
    seen = server.seen(EVENTS)
    assert all(len(r.keys) <= 100 for r in seen)
    assert {r.headers["content-type"] for r in seen} == {"application/cloudevents-batch+json"}
    event = next(iter(server.received.values()))
    assert (event["specversion"], event["source"]) == ("1.0", "meterline")


def test_a_400_problem_for_one_bad_event_is_bisected_and_the_rest_delivered(server, client):
    """One event the server refuses is isolated by bisection and rejected; the 63 others
    are delivered, and no more requests are made than a bisection needs."""
    keys = [client.report("cust", "api_call", {"n": i}) for i in range(64)]
    server.bad_ids = {keys[37]}
    result = client.flush(timeout=10)
    assert (result.sent, result.rejected, result.pending) == (63, 1, 0)
    assert set(server.received) == set(keys) - {keys[37]}
    assert len(server.seen(EVENTS)) <= 2 * 7 + 1


def test_a_429_with_retry_after_delays_the_next_attempt(server, client):
    """A 429 problem with Retry-After: 1 is retried no sooner than a second later."""
    server.push(
        EVENTS,
        Reply(429, problem(429, "Too Many Requests", "slow down"), {"Retry-After": "1"}),
    )
    key = client.report("cust", "api_call")
    assert client.flush(timeout=20).sent == 1
    first, second = server.seen(EVENTS)
    assert (first.status, second.status) == (429, 204)
    assert second.at - first.at >= 0.95
    assert server.deliveries == {key: 1}


def test_a_wrong_key_is_refused_and_journaled(server, tmp_path):
    """A 401 problem keeps every event (journaled), nothing is delivered."""
    with meterline.Client(
        api_key="om_wrong",
        destination="openmeter",
        base_url=server.url,
        journal_dir=tmp_path / "j",
    ) as c:
        for i in range(5):
            c.report("cust", "api_call", {"n": i})
        result = c.flush(timeout=10)
    assert (result.journaled, result.dropped, result.pending) == (5, 0, 0)
    assert server.received == {}
