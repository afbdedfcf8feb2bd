"""report() rejects bad input at the call site, with a typed error naming the field."""

from __future__ import annotations

import math
from datetime import datetime, timedelta, timezone
from enum import Enum, IntEnum

import pytest

import meterline
from meterline import InvalidEventError
from meterline.testing import RecordingTransport, wait_until


@pytest.fixture
def transport():
    return RecordingTransport()


@pytest.fixture
def client(tmp_path, transport):
    c = meterline.Client(transport=transport, journal_dir=tmp_path / "j")
    yield c
    c.close(timeout=2)


BAD = [
    ({"customer": ""}, "customer"),
    ({"customer": 42}, "customer"),
    ({"customer": "x" * 257}, "customer"),
    ({"event_name": ""}, "event_name"),
    ({"event_name": "api call"}, "event_name"),
    ({"event_name": "api\tcall"}, "event_name"),
    ({"event_name": "api\x00"}, "event_name"),
    ({"event_name": None}, "event_name"),
    ({"event_name": "e" * 257}, "event_name"),
    ({"properties": [("a", 1)]}, "properties"),
    ({"properties": {"": 1}}, "properties"),
    ({"properties": {1: 1}}, "properties"),
    ({"properties": {"a": {"b": 1}}}, "properties['a']"),
    ({"properties": {"a": [1]}}, "properties['a']"),
    ({"properties": {"a": None}}, "properties['a']"),
    ({"properties": {"a": math.nan}}, "properties['a']"),
    ({"properties": {"a": math.inf}}, "properties['a']"),
    ({"properties": {"a": -math.inf}}, "properties['a']"),
    ({"properties": {"a": 1 << 64}}, "properties['a']"),
    ({"properties": {"a": b"bytes"}}, "properties['a']"),
    ({"properties": {"a": object()}}, "properties['a']"),
    ({"timestamp": datetime(2026, 1, 1)}, "timestamp"),
    ({"timestamp": "2026-01-01T00:00:00"}, "timestamp"),
    ({"timestamp": "yesterday"}, "timestamp"),
    ({"timestamp": 1700000000}, "timestamp"),
    ({"timestamp": "SIX_MINUTES_AHEAD"}, "timestamp"),  # computed when the test runs
    ({"idempotency_key": ""}, "idempotency_key"),
    ({"idempotency_key": "k" * 129}, "idempotency_key"),
    ({"idempotency_key": 7}, "idempotency_key"),
    ({"properties": {"blob": "x" * 40_000}}, "event"),
]


@pytest.mark.parametrize(("override", "field"), BAD)
def test_bad_input_raises_invalid_event_error_naming_the_field(client, override, field):
    """Each rule of report() raises InvalidEventError (a ValueError) naming its field."""
    args = {"customer": "c1", "event_name": "api_call", "properties": {"n": 1}, **override}
    if args.get("timestamp") == "SIX_MINUTES_AHEAD":
        args["timestamp"] = datetime.now(timezone.utc) + timedelta(minutes=6)
    with pytest.raises(InvalidEventError) as info:
        client.report(
            args.pop("customer"),
            args.pop("event_name"),
            args.pop("properties"),
            **args,
        )
    assert info.value.field == field
    assert isinstance(info.value, ValueError)
    assert field in str(info.value)
    assert client.stats()["reported"] == 0


def test_bad_input_does_not_disturb_events_around_it(tmp_path):
    """Good events before and after a rejected one are all delivered; the bad one is not."""
    transport = RecordingTransport()
    with meterline.Client(transport=transport, journal_dir=tmp_path / "j") as c:
        k1 = c.report("c1", "ok", {"n": 1})
        with pytest.raises(InvalidEventError):
            c.report("c1", "bad name", {"n": 2})
        k2 = c.report("c1", "ok", {"n": 3})
        assert c.flush(timeout=5)
    assert transport.keys() == {k1, k2}


def test_callers_dict_is_copied_not_mutated(client, transport):
    """Mutating the dict after report() does not change what is sent, and report() never
    changes the caller's dict."""
    props = {"n": 1, "tag": "a"}
    before = dict(props)
    client.report("c1", "api_call", props)
    assert props == before
    props["n"] = 999
    assert client.flush(timeout=5)
    sent = transport.events
    assert sent[0]["properties"] == {"n": 1, "tag": "a"}


def test_valid_edge_values_are_accepted(client, transport):
    """Limits are inclusive, enums and aware timestamps in any zone are accepted."""

    class Color(str, Enum):
        RED = "red"

    class Size(IntEnum):
        BIG = 3

    tz = timezone(timedelta(hours=5, minutes=30))
    client.report("x" * 256, "e" * 256, {"a": True, "b": -(1 << 63), "c": 1.5, "d": ""})
    client.report("c", "e", {"color": Color.RED, "size": Size.BIG}, timestamp=datetime.now(tz))
    client.report("c", "e", None, timestamp="2026-01-01T05:30:00+05:30", idempotency_key="k" * 128)
    assert client.flush(timeout=5)
    events = transport.events
    assert events[1]["properties"] == {"color": "red", "size": 3}
    assert events[2]["timestamp"] == "2026-01-01T00:00:00.000000Z"
    assert events[2]["idempotency_key"] == "k" * 128
    assert events[2]["properties"] == {}


def test_default_key_is_a_uuid4_and_unique(client):
    """Keys are distinct UUID4 strings."""
    import uuid

    keys = {client.report("c", "e") for _ in range(2000)}
    assert len(keys) == 2000
    for k in list(keys)[:50]:
        assert uuid.UUID(k).version == 4


def test_timestamp_is_stamped_in_utc_with_microseconds(client, transport):
    """The default timestamp is now, in UTC, as YYYY-MM-DDTHH:MM:SS.ffffffZ."""
    before = datetime.now(timezone.utc)
    client.report("c", "e")
    assert client.flush(timeout=5)
    wait_until(lambda: transport.events)
    ts = transport.events[0]["timestamp"]
    assert ts.endswith("Z")
    assert len(ts) == len("2026-01-01T00:00:00.000000Z")
    when = datetime.strptime(ts, "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=timezone.utc)
    assert before - timedelta(seconds=1) <= when <= datetime.now(timezone.utc)
