"""Lago: the wire format against its own spec, how its answers are read (atomic 422s,
``value_already_exist``, ``X-RateLimit-Reset``), and its semantics against a Lago-dialect
server on 127.0.0.1."""

from __future__ import annotations

import copy
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
from meterline.destinations import Lago, resolve
from meterline.destinations.lago import rate_delay, unix_text
from meterline.testing import accepted
from tests.destinations.vendor_servers import LagoServer, Reply, load_spec

JSON = {"content-type": "application/json"}
text = st.text(st.characters(blacklist_categories=("Cs",)), min_size=1, max_size=24)
names = st.text(st.characters(whitelist_categories=("L", "N", "P", "S")), min_size=1, max_size=24)
scalar = st.one_of(
    st.text(st.characters(blacklist_categories=("Cs",)), max_size=12),
    st.integers(min_value=-(1 << 63), max_value=(1 << 64) - 1),
    st.floats(allow_nan=False, allow_infinity=False),
    st.booleans(),
)
when = st.one_of(
    st.none(),
    st.datetimes(
        min_value=datetime(1, 1, 2),
        max_value=datetime.now() - timedelta(days=1),
        timezones=st.just(timezone.utc),
    ),
)
event = st.tuples(text, names, st.dictionaries(text, scalar, max_size=5), when)


def _batch_schema(spec: dict[str, Any], *, fix_number_oneof: bool) -> dict[str, Any]:
    """``EventBatchInput`` with the spec's components. ``fix_number_oneof`` turns the
    ``oneOf: [string, integer, number]`` of property values into ``anyOf``: an integer is
    both an integer and a number, so the spec as written refuses ``{"gb": 10}``, its own
    example, which Lago accepts."""
    components = copy.deepcopy(spec["components"])
    if fix_number_oneof:
        values = components["schemas"]["EventInputObject"]["properties"]["properties"]
        values["additionalProperties"] = {"anyOf": values["additionalProperties"]["oneOf"]}
    return {"$ref": "#/components/schemas/EventBatchInput", "components": components}


@pytest.fixture(scope="module")
def spec() -> dict[str, Any]:
    pytest.importorskip("jsonschema")
    return load_spec("lago-openapi.yaml")


@pytest.fixture(scope="module")
def validator(spec: dict[str, Any]) -> Any:
    import jsonschema

    return jsonschema.Draft202012Validator(_batch_schema(spec, fix_number_oneof=True))


def test_the_registry_and_the_canned_answer_are_lagos() -> None:
    """``destination="lago"`` is Lago, 100 a batch, ``/events/batch`` under the API URL,
    bearer auth, and its canned acceptance reads as delivery."""
    dest = resolve("lago")
    assert isinstance(dest, Lago)
    assert (dest.max_batch_events, dest.key_field) == (100, "transaction_id")
    assert dest.default_base_url == "https://api.getlago.com/api/v1"
    assert dest.ingest_url(dest.default_base_url).endswith("/api/v1/events/batch")
    assert dest.headers("k") == {"Authorization": "Bearer k"}
    assert dest.read(accepted("lago"), ["a"]).kind == "accepted"


def test_timestamps_are_unix_seconds_with_milliseconds_as_text() -> None:
    """Both kinds of timestamp become the same ``seconds.mmm`` text, truncated, also
    before 1970 and in year 1."""
    assert unix_text(1_651_240_791_123_999_999) == "1651240791.123"
    assert unix_text("2022-04-29T13:59:51.123999Z") == "1651240791.123"
    assert unix_text("1969-12-31T23:59:59.500000Z") == "-0.500"
    assert unix_text("1-01-01T00:00:00.000000Z") == "-62135596800.000"


@settings(max_examples=80, deadline=None)
@given(events=st.lists(event, min_size=1, max_size=100))
def test_every_body_report_accepts_validates_against_lagos_schema(
    validator: Any, events: list[Any]
) -> None:
    """Whatever report() accepts enveloped as a valid batch (timestamps a string Lago
    parses, bools sent as text), with every other field as given."""
    dest = Lago()
    pending = []
    for customer, name, props, ts in events:
        try:
            pending.append(validate(customer, name, props, ts, None, 32 * 1024))
        except InvalidEventError:
            reject()
    doc = orjson.loads(dest.envelope(dest.serialize_many(pending)))
    validator.validate(doc)
    for sent, (customer, name, props, ts) in zip(doc["events"], events, strict=True):
        assert (sent["external_subscription_id"], sent["code"]) == (customer, name)
        assert sent["properties"] == {
            k: ("true" if v else "false") if type(v) is bool else v for k, v in props.items()
        }
        seconds = float(sent["timestamp"])
        if ts is not None:
            assert abs(seconds - ts.timestamp()) < 0.002


def test_the_schema_is_live_and_the_spec_refuses_integers(spec: dict[str, Any]) -> None:
    """The validator refuses a missing code and a bool or float timestamp; the spec as
    written also refuses an integer property (the one defect the tests correct)."""
    import jsonschema

    fixed = jsonschema.Draft202012Validator(_batch_schema(spec, fix_number_oneof=True))
    as_written = jsonschema.Draft202012Validator(_batch_schema(spec, fix_number_oneof=False))
    good = {"transaction_id": "t", "external_subscription_id": "s", "code": "c"}
    fixed.validate({"events": [{**good, "timestamp": "1.5", "properties": {"gb": 10}}]})
    assert not as_written.is_valid({"events": [{**good, "properties": {"gb": 10}}]})
    for bad in (
        {"transaction_id": "t", "external_subscription_id": "s"},
        {**good, "timestamp": 1.5},
    ):
        assert not fixed.is_valid({"events": [bad]})


def _lago_422(details: Any) -> Response:
    body = {
        "status": 422,
        "error": "Unprocessable Entity",
        "code": "validation_errors",
        "error_details": details,
    }
    return Response(422, JSON, orjson.dumps(body))


DUP = {"transaction_id": ["value_already_exist"]}


@pytest.mark.parametrize(
    ("response", "kind", "rejected"),
    [
        (Response(200, JSON, b'{"events":[]}'), "accepted", {}),
        (Response(200, {"content-type": "text/html"}, b"<html>"), "foreign", {}),
        (Response(200, JSON, b"{}"), "foreign", {}),
        (Response(201, JSON, b'{"events":[]}'), "foreign", {}),
        (_lago_422({"1": {"code": ["invalid"]}}), "invalid", {"b": ["code: invalid"]}),
        (_lago_422({"2": "undefined variable x"}), "invalid", {"c": ["undefined variable x"]}),
        (_lago_422({"0": DUP, "1": DUP, "2": DUP}), "accepted", {}),
        (_lago_422({"0": DUP}), "invalid_batch", {}),
        (_lago_422({"0": DUP, "2": {"timestamp": ["invalid_format"]}}), "invalid", None),
        (_lago_422({"events": ["too_many_events"]}), "invalid_batch", {}),
        (_lago_422({"7": {"code": ["invalid"]}}), "invalid_batch", {}),
        (Response(400, JSON, b'{"status":400,"error":"BadRequest: events"}'), "invalid_batch", {}),
        (Response(422, JSON, b'{"detail":"nope"}'), "foreign", {}),
        (Response(400, {"content-type": "text/html"}, b"<h1>400</h1>"), "foreign", {}),
        (Response(401, JSON, b'{"status":401,"error":"Unauthorized"}'), "refused", {}),
        (Response(502, {}, b""), "retry", {}),
    ],
)
def test_answers_read_as_lago_means_them(
    response: Response, kind: str, rejected: dict[str, list[str]] | None
) -> None:
    """Indexes in error_details become keys; a batch wholly ``value_already_exist`` is
    delivered; a partly duplicate one is split; one naming no event is bisected; a body
    that is not Lago's is foreign."""
    answer = Lago().read(response, ["a", "b", "c"])
    assert answer.kind == kind
    if rejected is not None:
        assert dict(answer.rejected) == rejected
    else:  # the duplicate is not rejected: it goes back with the rest
        assert dict(answer.rejected) == {"c": ["timestamp: invalid_format"]}


def test_a_429_waits_until_the_rate_limit_window_resets() -> None:
    """X-RateLimit-Reset is seconds to wait after a 429 (not after a 5xx, though Lago
    sends it on every answer); Retry-After wins; an epoch time is made relative; junk is
    no delay."""
    answer = Lago().read(Response(429, {"x-ratelimit-reset": "3"}, b""), ["a"])
    assert (answer.kind, answer.delay) == ("retry", 3.0)
    assert rate_delay({"x-ratelimit-reset": "3", "retry-after": "1"}) == 1.0
    unavailable = Lago().read(Response(503, {"x-ratelimit-reset": "0"}, b""), ["a"])
    assert (unavailable.kind, unavailable.delay) == ("retry", None)  # the backoff decides
    assert rate_delay({"x-ratelimit-reset": "1700000010"}, now=lambda: 1_700_000_000.0) == 10.0
    assert rate_delay({"x-ratelimit-reset": "soon"}) is None
    assert rate_delay({}) is None


@pytest.fixture
def lago() -> Any:
    with LagoServer() as srv:
        yield srv


def _client(srv: LagoServer, tmp_path: Any, **options: Any) -> meterline.Client:
    options.setdefault("flush_interval", 5)
    return meterline.Client(
        destination="lago", base_url=srv.url, api_key="test", journal_dir=tmp_path / "j", **options
    )


def _rejected_bytes(tmp_path: Any) -> bytes:
    return b"".join(p.read_bytes() for p in (tmp_path / "j" / "rejected").iterdir())


@pytest.mark.parametrize("name_indexes", [True, False])
def test_an_atomic_422_costs_only_the_bad_event(
    lago: LagoServer, tmp_path: Any, name_indexes: bool
) -> None:
    """One bad event in a batch of 50: Lago refuses all 50; whether or not it names the
    event by index, 49 are delivered once and the one is rejected with its reason."""
    lago.name_indexes = name_indexes
    with _client(lago, tmp_path) as client:
        keys = [client.report("sub_1", "storage", {"gb": i}) for i in range(50)]
        lago.bad[keys[31]] = {"code": ["does_not_exist"]}
        result = client.flush(timeout=20)
    assert (result.sent, result.rejected, result.pending) == (49, 1, 0)
    assert lago.keys() == set(keys) - {keys[31]}
    assert all(n == 1 for n in lago.deliveries.values())
    kept = _rejected_bytes(tmp_path)
    assert keys[31].encode() in kept
    assert (b"does_not_exist" if name_indexes else b"422") in kept
    if name_indexes:  # refused, then the 49 at once
        assert [r.status for r in lago.seen()] == [422, 200]


def test_a_retry_of_a_stored_batch_is_delivered_not_rejected(
    lago: LagoServer, tmp_path: Any
) -> None:
    """A 500 after Lago stored the batch: the resend is a 422 of value_already_exist for
    every event, which means each is in Lago once, so all count as sent."""
    lago.push(Reply(500, store=True))
    with _client(lago, tmp_path) as client:
        keys = {client.report("sub_1", "storage", {"gb": i}) for i in range(10)}
        result = client.flush(timeout=20)
    assert (result.sent, result.rejected, result.pending) == (10, 0, 0)
    assert [r.status for r in lago.seen()] == [500, 422]
    assert lago.keys() == keys


def test_a_batch_partly_in_lago_is_split_and_the_rest_delivered(
    lago: LagoServer, tmp_path: Any
) -> None:
    """Three of twenty events already in Lago: the others were rolled back with them;
    bisection delivers the seventeen and settles the three as sent, none rejected."""
    with _client(lago, tmp_path) as client:
        keys = [f"key-{i}" for i in range(20)]
        for key in keys[3:6]:
            lago.received[key] = {"transaction_id": key}
        for key in keys:
            client.report("sub_1", "storage", {"gb": 1}, idempotency_key=key)
        result = client.flush(timeout=20)
    assert (result.sent, result.rejected, result.pending) == (20, 0, 0)
    assert lago.keys() == set(keys)
    assert all(lago.deliveries[k] == 1 for k in keys[:3] + keys[6:])


def test_a_429_with_x_ratelimit_reset_delays_the_retry(lago: LagoServer, tmp_path: Any) -> None:
    """A 429 carrying X-RateLimit-Reset: 1 makes the next attempt wait about that second
    (measured by the server's arrival times, with a tolerance)."""
    lago.push(Reply(429, {"status": 429, "error": "Too Many Requests"}, {"X-RateLimit-Reset": "1"}))
    with _client(lago, tmp_path, flush_interval=0.05) as client:
        client.report("sub_1", "storage")
        assert client.flush(timeout=20)
    first, second = lago.seen()[:2]
    assert (first.status, second.status) == (429, 200)
    assert 0.9 <= second.at - first.at < 5.0
