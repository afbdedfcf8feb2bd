"""Metronome: the wire format against its own spec, its field rules at report(), how its
answers are read, and its semantics against a Metronome-dialect server on 127.0.0.1."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from typing import Any

import orjson
import pytest
from hypothesis import given, reject, settings
from hypothesis import strategies as st

import meterline
from meterline import InvalidEventError
from meterline._event import validate
from meterline._response import Response
from meterline.destinations import Metronome, resolve
from meterline.testing import RecordingTransport, accepted
from tests.destinations.vendor_servers import MetronomeServer, Reply, load_spec

JSON = {"content-type": "application/json"}
text = st.text(st.characters(blacklist_categories=("Cs",)), min_size=1, max_size=24)
names = st.text(st.characters(whitelist_categories=("L", "N", "P", "S")), min_size=1, max_size=24)
scalar = st.one_of(
    st.text(st.characters(blacklist_categories=("Cs",)), max_size=12),
    st.integers(min_value=-(1 << 63), max_value=(1 << 64) - 1),
    st.floats(allow_nan=False, allow_infinity=False),
    st.booleans(),
)
recent = st.one_of(
    st.none(),
    st.timedeltas(min_value=timedelta(0), max_value=timedelta(days=33)).map(
        lambda ago: datetime.now(timezone.utc) - ago
    ),
)
event = st.tuples(
    text,
    names,
    st.dictionaries(text, scalar, max_size=5),
    recent,
    st.one_of(st.none(), st.text(st.characters(codec="ascii"), min_size=1, max_size=128)),
)


@pytest.fixture(scope="module")
def validator() -> Any:
    """A JSON Schema validator of ``POST /v1/ingest``'s request body, from the spec."""
    jsonschema = pytest.importorskip("jsonschema")
    spec = load_spec("metronome-openapi.json")
    body = spec["paths"]["/v1/ingest"]["post"]["requestBody"]["content"]["application/json"]
    schema = {**body["schema"], "components": spec["components"]}
    return jsonschema.Draft202012Validator(schema)


def test_the_registry_and_the_canned_answer_are_metronomes() -> None:
    """``destination="metronome"`` is Metronome, 100 a batch, and its canned acceptance
    (an empty 200) reads as delivery."""
    dest = resolve("metronome")
    assert isinstance(dest, Metronome)
    assert (dest.max_batch_events, dest.key_field) == (100, "transaction_id")
    assert dest.ingest_url("https://api.metronome.com") == "https://api.metronome.com/v1/ingest"
    assert dest.headers("k") == {"Authorization": "Bearer k"}
    assert dest.read(accepted("metronome"), ["a"]).kind == "accepted"


@settings(max_examples=80, deadline=None)
@given(events=st.lists(event, min_size=1, max_size=100))
def test_every_body_report_accepts_validates_against_metronomes_schema(
    validator: Any, events: list[Any]
) -> None:
    """Whatever report() and Metronome's rules accept enveloped as a valid ingest body."""
    dest = Metronome()
    pending = []
    for customer, name, props, ts, key in events:
        try:
            one = validate(customer, name, props, ts, key, 32 * 1024)
            dest.check(one)
        except InvalidEventError:
            reject()
        pending.append(one)
    doc = orjson.loads(dest.envelope(dest.serialize_many(pending)))
    validator.validate(doc)
    for sent, (customer, name, props, _, _) in zip(doc, events, strict=True):
        assert (sent["customer_id"], sent["event_type"], sent["properties"]) == (
            customer,
            name,
            props,
        )
        assert datetime.fromisoformat(sent["timestamp"].replace("Z", "+00:00")).tzinfo


def test_the_schema_is_live(validator: Any) -> None:
    """The spec's validator refuses an empty batch, 101 events and a 129-character key."""
    import jsonschema

    good = {"transaction_id": "t", "customer_id": "c", "event_type": "e", "timestamp": "x"}
    validator.validate([good])
    for bad in ([], [good] * 101, [{**good, "transaction_id": "k" * 129}]):
        with pytest.raises(jsonschema.ValidationError):
            validator.validate(bad)


def test_report_refuses_what_metronome_would_refuse(tmp_path: Any) -> None:
    """report() raises InvalidEventError for a timestamp older than 34 days and a key
    longer than 128 characters, and accepts one 33 days old."""
    transport = RecordingTransport("metronome")
    with meterline.Client(
        destination="metronome", transport=transport, journal_dir=tmp_path / "j"
    ) as client:
        old = datetime.now(timezone.utc) - timedelta(days=34, minutes=1)
        with pytest.raises(InvalidEventError, match="34 days"):
            client.report("c", "e", timestamp=old)
        with pytest.raises(InvalidEventError, match="idempotency_key"):
            client.report("c", "e", idempotency_key="k" * 129)
        client.report("c", "e", timestamp=datetime.now(timezone.utc) - timedelta(days=33))
        assert client.flush(timeout=5)
    assert len(transport.events) == 1


@pytest.mark.parametrize(
    ("response", "kind"),
    [
        (Response(200, {}, b""), "accepted"),
        (Response(200, JSON, b"{}"), "accepted"),
        (Response(200, {"content-type": "text/html"}, b"<html>portal</html>"), "foreign"),
        (Response(200, JSON, b'{"message":"error"}'), "foreign"),
        (Response(204, {}, b""), "foreign"),
        (Response(400, JSON, b'{"message":"invalid timestamp"}'), "invalid_batch"),
        (Response(400, {"content-type": "text/html"}, b"<h1>Bad Request</h1>"), "foreign"),
        (Response(503, {}, b""), "retry"),
        (Response(401, JSON, b'{"message":"Unauthorized"}'), "refused"),
        (Response(413, {}, b""), "too_large"),
    ],
)
def test_answers_read_as_metronome_means_them(response: Response, kind: str) -> None:
    """Only an empty (or JSON) 200 is delivery; a 400 with ``message`` is a refused batch
    to bisect; an HTML page is not Metronome's answer."""
    assert Metronome().read(response, ["a", "b"]).kind == kind


def test_a_429_waits_retry_after() -> None:
    """A 429's Retry-After is the delay of the next attempt."""
    answer = Metronome().read(Response(429, {"retry-after": "2"}, b""), ["a"])
    assert (answer.kind, answer.delay) == ("retry", 2.0)


@pytest.fixture
def metronome() -> Any:
    with MetronomeServer() as srv:
        yield srv


def _client(srv: MetronomeServer, tmp_path: Any, **options: Any) -> meterline.Client:
    options.setdefault("flush_interval", 0.05)
    return meterline.Client(
        destination="metronome",
        base_url=srv.url,
        api_key="test",
        journal_dir=tmp_path / "j",
        **options,
    )


def test_a_5xx_then_200_delivers_once_with_the_same_transaction_ids(
    metronome: MetronomeServer, tmp_path: Any
) -> None:
    """A 503 then a 502 then success: each event stored once, every try carried the same
    transaction_ids and the same bytes."""
    metronome.push(Reply(503), Reply(502))
    with _client(metronome, tmp_path, flush_interval=5) as client:
        keys = {client.report("c", "e", {"n": i}) for i in range(20)}
        assert client.flush(timeout=20)
    seen = metronome.seen()
    assert [r.status for r in seen[:3]] == [503, 502, 200]
    assert all(set(r.keys) == keys for r in seen[:3])
    assert seen[0].raw == seen[1].raw == seen[2].raw
    assert metronome.keys() == keys
    assert all(metronome.deliveries[k] == 1 for k in keys)
    assert seen[0].headers["authorization"] == "Bearer test"


def test_a_lost_success_is_absorbed_by_the_transaction_id(
    metronome: MetronomeServer, tmp_path: Any
) -> None:
    """A 500 sent after Metronome stored the batch leads to a resend it ignores: each
    event is in Metronome once, and counted as sent once."""
    metronome.push(Reply(500, store=True))
    with _client(metronome, tmp_path, flush_interval=5) as client:
        keys = {client.report("c", "e", {"n": i}) for i in range(5)}
        result = client.flush(timeout=20)
    assert (result.sent, result.rejected) == (5, 0)
    assert metronome.keys() == keys
    assert all(metronome.deliveries[k] == 2 for k in keys)


def test_a_400_is_bisected_to_the_one_bad_event(metronome: MetronomeServer, tmp_path: Any) -> None:
    """A batch of 50 refused with ``{"message"}`` for one event: 49 delivered, the one
    rejected and kept in rejected/ with Metronome's message."""
    with _client(metronome, tmp_path, flush_interval=5) as client:
        keys = [client.report("c", "e", {"n": i}) for i in range(50)]
        metronome.bad[keys[17]] = "customer not found"
        result = client.flush(timeout=20)
    assert (result.sent, result.rejected, result.pending) == (49, 1, 0)
    assert metronome.keys() == set(keys) - {keys[17]}
    kept = b"".join(p.read_bytes() for p in (tmp_path / "j" / "rejected").iterdir())
    assert keys[17].encode() in kept
    assert b"customer not found" in kept


def test_an_html_200_is_not_delivery(metronome: MetronomeServer, tmp_path: Any) -> None:
    """A proxy's HTML 200 is retried, not settled as sent, and the retry lands."""
    metronome.push(Reply(200, b"<html>sign in</html>", content_type="text/html"))
    with _client(metronome, tmp_path, flush_interval=5) as client:
        key = client.report("c", "e")
        result = client.flush(timeout=20)
    assert [r.status for r in metronome.seen()] == [200, 200]
    assert (result.sent, result.rejected) == (1, 0)
    assert metronome.keys() == {key}
