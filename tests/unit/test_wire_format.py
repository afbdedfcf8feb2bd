"""The bytes meterline sends validate against Orb's published IngestRequestBody schema."""

from __future__ import annotations

import json
from datetime import datetime, timezone
from pathlib import Path

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import meterline
from meterline.testing import RecordingTransport

SPEC = Path(__file__).resolve().parents[3] / "shared" / "ingest-specs" / "orb-openapi.json"
if not SPEC.exists():  # a checkout with shared/ beside it (CI), or inside it
    SPEC = Path(__file__).resolve().parents[2] / "shared" / "ingest-specs" / "orb-openapi.json"


@pytest.fixture(scope="module")
def validator():
    jsonschema = pytest.importorskip("jsonschema")
    if not SPEC.exists():
        pytest.skip(f"Orb's OpenAPI spec not found at {SPEC}")
    spec = json.loads(SPEC.read_text())
    schema = dict(spec["components"]["schemas"]["IngestRequestBody"])
    schema["components"] = spec["components"]
    cls = jsonschema.validators.validator_for(
        {"$schema": "https://json-schema.org/draft/2020-12/schema"}
    )
    return cls(schema, format_checker=cls.FORMAT_CHECKER)


def _sent_bodies(tmp_path, **options) -> list[bytes]:
    transport = RecordingTransport()
    with meterline.Client(transport=transport, journal_dir=tmp_path / "j", **options) as c:
        c.report("cust_1", "api_call", {"tokens": 812, "model": "small", "ok": True, "x": 1.5})
        c.report("cust_2", "upload", None, timestamp=datetime(2026, 1, 2, tzinfo=timezone.utc))
        c.report("cust_3", "ünïcode", {"naïve": "日本語", "e": '"quoted" \\ \n'})
        assert c.flush(timeout=5)
    return transport.bodies


@pytest.mark.parametrize("field", ["external_customer_id", "customer_id"])
def test_sent_body_validates_against_orbs_schema(tmp_path, validator, field):
    """Every request body is a valid IngestRequestBody for either customer field."""
    bodies = _sent_bodies(tmp_path, customer_field=field)
    assert bodies
    for body in bodies:
        validator.validate(orjson.loads(body))
        for event in orjson.loads(body)["events"]:
            assert field in event
            assert event["timestamp"].endswith("Z")


def test_schema_rejects_what_orb_rejects(validator):
    """The validator is live: an unknown key or a missing properties field fails it."""
    import jsonschema

    good = {
        "idempotency_key": "k",
        "external_customer_id": "c",
        "event_name": "e",
        "timestamp": "2026-01-01T00:00:00Z",
        "properties": {},
    }
    validator.validate({"events": [good]})
    with pytest.raises(jsonschema.ValidationError):
        validator.validate({"events": [{**good, "extra": 1}]})
    bad = dict(good)
    del bad["properties"]
    with pytest.raises(jsonschema.ValidationError):
        validator.validate({"events": [bad]})


scalar = st.one_of(
    st.text(max_size=20),
    st.integers(min_value=-(1 << 63), max_value=(1 << 64) - 1),
    st.floats(allow_nan=False, allow_infinity=False),
    st.booleans(),
)


@settings(max_examples=60, deadline=None)
@given(
    customer=st.text(min_size=1, max_size=40),
    props=st.dictionaries(st.text(min_size=1, max_size=10), scalar, max_size=6),
)
def test_any_accepted_event_serializes_to_a_valid_body(
    tmp_path_factory, validator, customer, props
):
    """Whatever report() accepts round-trips through the wire as a schema-valid event."""
    from meterline._event import validate
    from meterline.destinations import Orb

    pending = validate(customer, "e", props, None, None, 32 * 1024)
    orb = Orb()
    body = orb.envelope(orb.serialize_many([pending]))
    doc = orjson.loads(body)
    validator.validate(doc)
    event = doc["events"][0]
    assert event["external_customer_id"] == customer
    assert event["properties"] == props


@settings(max_examples=60, deadline=None)
@given(
    events=st.lists(
        st.tuples(
            st.text(min_size=1, max_size=20),
            st.dictionaries(st.text(min_size=1, max_size=8), scalar, max_size=4),
            st.booleans(),
        ),
        min_size=1,
        max_size=8,
    ),
    field=st.sampled_from(["external_customer_id", "customer_id"]),
)
def test_batch_serializer_matches_the_single_event_one_byte_for_byte(events, field):
    """Orb's batch serializer gives each event the bytes it gives that event alone,
    whether its timestamp is the default stamp or one the caller gave."""
    from meterline._event import validate
    from meterline.destinations import Orb

    pending = [
        validate(
            customer, "e", props, "2026-01-01T00:00:00+02:00" if given_ts else None, None, 32 * 1024
        )
        for customer, props, given_ts in events
    ]
    orb = Orb(customer_field=field)
    assert orb.serialize_many(pending) == [orb.serialize_many([p])[0] for p in pending]
