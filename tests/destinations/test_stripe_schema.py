"""The bytes sent to Stripe's meter event stream validate against the stream's request
schema in Stripe's own OpenAPI document, for any event report() and Stripe's rules accept."""

from __future__ import annotations

import json
import re
from datetime import datetime, timedelta, timezone
from typing import Any

import orjson
import pytest
from hypothesis import HealthCheck, given, reject, settings
from hypothesis import strategies as st

import meterline
from meterline._event import validate
from meterline.destinations import Stripe
from meterline.testing import RecordingTransport
from tests.support.prism import spec_path

RFC3339 = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?(Z|[+-]\d\d:\d\d)")


@pytest.fixture(scope="module")
def validator() -> Any:
    jsonschema = pytest.importorskip("jsonschema")
    spec = json.loads(spec_path("stripe-meter-events-openapi.json").read_text())
    operation = spec["paths"]["/v2/billing/meter_event_stream"]["post"]
    schema = operation["requestBody"]["content"]["application/json"]["schema"]
    checker = jsonschema.FormatChecker()
    checker.checks("date-time")(lambda v: not isinstance(v, str) or bool(RFC3339.fullmatch(v)))
    return jsonschema.Draft7Validator(schema, format_checker=checker)


def test_the_validator_refuses_what_the_schema_refuses(validator):
    """The schema is live: a number in the payload or a missing event_name fails it."""
    import jsonschema

    good = {"event_name": "e", "payload": {"value": "1"}, "timestamp": "2026-01-01T00:00:00Z"}
    validator.validate({"events": [good]})
    for bad in ({**good, "payload": {"value": 1}}, {"payload": {}}, {**good, "timestamp": "x"}):
        with pytest.raises(jsonschema.ValidationError):
            validator.validate({"events": [bad]})


text = st.text(st.characters(blacklist_categories=("Cs",)), min_size=1, max_size=40)
names = st.text(
    st.characters(blacklist_categories=("Cs", "Cc", "Cf", "Co", "Cn", "Zs", "Zl", "Zp")),
    min_size=1,
    max_size=100,
)
scalar = st.one_of(
    st.text(st.characters(blacklist_categories=("Cs",)), max_size=20),
    st.integers(min_value=-(1 << 63), max_value=(1 << 63) - 1),
    st.floats(allow_nan=False, allow_infinity=False),
    st.booleans(),
)
moments = st.one_of(
    st.none(),
    st.timedeltas(min_value=timedelta(0), max_value=timedelta(days=34)).map(
        lambda ago: datetime.now(timezone.utc) - ago
    ),
)
events = st.tuples(
    text,
    names,
    st.dictionaries(text, scalar, max_size=6),
    moments,
    st.one_of(
        st.none(), st.text(st.characters(blacklist_categories=("Cs",)), min_size=1, max_size=100)
    ),
)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    batch=st.lists(events, min_size=1, max_size=8),
    customer_key=st.sampled_from(["stripe_customer_id", "customer"]),
)
def test_any_accepted_event_is_a_valid_meter_event_in_a_valid_body(validator, batch, customer_key):
    """Whatever is accepted becomes a schema-valid stream body: string payload values that
    read back as the properties, the customer under its key, at most 100 events."""
    dest = Stripe(customer_payload_key=customer_key)
    try:
        pending = [validate(c, n, p, t, k, 32 * 1024) for c, n, p, t, k in batch]
        for event in pending:
            dest.check(event)
    except meterline.InvalidEventError:
        reject()
    doc = orjson.loads(dest.envelope(dest.serialize_many(pending)))
    validator.validate(doc)
    assert len(doc["events"]) <= dest.max_batch_events
    for sent, (key, customer, name, props, _, _) in zip(doc["events"], pending, strict=True):
        assert (sent["identifier"], sent["event_name"]) == (key, name)
        payload = dict(sent["payload"])
        assert payload.pop(customer_key) == customer
        assert payload.keys() == props.keys()
        for k, v in props.items():
            if isinstance(v, bool):
                assert payload[k] == ("true" if v else "false")
            elif isinstance(v, (int, float)):
                assert type(v)(payload[k]) == v
            else:
                assert payload[k] == v


def test_the_bodies_a_client_sends_validate(validator, tmp_path):
    """The request bodies of a real client's batches validate, in batches of at most 100."""
    transport = RecordingTransport("stripe")
    with meterline.Client(destination="stripe", transport=transport, journal_dir=tmp_path) as c:
        for i in range(230):
            c.report(f"cus_{i % 4}", "api_call", {"value": i, "ok": i % 2 == 0, "x": i / 3})
        c.report("ünïcode", "名前", {"naïve": "日本語"}, timestamp=datetime.now(timezone.utc))
        assert c.flush(timeout=5).sent == 231
    assert transport.bodies
    for body in transport.bodies:
        doc = orjson.loads(body)
        validator.validate(doc)
        assert len(doc["events"]) <= 100
