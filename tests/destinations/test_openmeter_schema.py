"""The bytes sent to OpenMeter validate against its own OpenAPI document (the CloudEvents
batch of ``Event``), for any event report() accepts."""

from __future__ import annotations

import json
import re
import subprocess
from datetime import datetime, timedelta, timezone
from typing import Any

import orjson
import pytest
from hypothesis import HealthCheck, given, reject, settings
from hypothesis import strategies as st

import meterline
from meterline._event import validate
from meterline.destinations import OpenMeter
from meterline.testing import RecordingTransport
from tests.support.prism import PRISM_DIR, install_prism, spec_path

RFC3339 = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?(Z|[+-]\d\d:\d\d)")
# RFC 3986: a URI reference is made of unreserved, reserved and percent-encoded characters.
URI_REFERENCE = re.compile(r"([A-Za-z0-9\-._~:/?#\[\]@!$&'()*+,;=]|%[0-9A-Fa-f]{2})*")


def _load_yaml(path: Any) -> Any:
    """The document as data: PyYAML when installed, else js-yaml from Prism's install."""
    try:
        import yaml
    except ImportError:
        install_prism()
        script = (
            "const y=require(process.argv[1]);const f=require('fs');"
            "process.stdout.write(JSON.stringify(y.load(f.readFileSync(process.argv[2],'utf8'))))"
        )
        js_yaml = str(PRISM_DIR / "node_modules" / "js-yaml")
        out = subprocess.run(
            ["node", "-e", script, js_yaml, str(path)], capture_output=True, check=True, timeout=60
        )
        return json.loads(out.stdout)
    return yaml.safe_load(path.read_text())


@pytest.fixture(scope="module")
def validator() -> Any:
    jsonschema = pytest.importorskip("jsonschema")
    spec = _load_yaml(spec_path("openmeter-openapi.yaml"))
    body = spec["paths"]["/api/v1/events"]["post"]["requestBody"]["content"]
    schema = dict(body["application/cloudevents-batch+json"]["schema"])
    schema["components"] = spec["components"]
    checker = jsonschema.FormatChecker()
    checker.checks("date-time")(lambda v: not isinstance(v, str) or bool(RFC3339.fullmatch(v)))
    checker.checks("uri-reference")(
        lambda v: not isinstance(v, str) or bool(URI_REFERENCE.fullmatch(v))
    )
    return jsonschema.Draft7Validator(schema, format_checker=checker)


def test_the_validator_refuses_what_the_schema_refuses(validator):
    """The schema is live: an empty subject, a missing id or a non-object data fail it."""
    import jsonschema

    good = {"specversion": "1.0", "id": "k", "source": "s", "type": "t", "subject": "c"}
    validator.validate([good])
    for bad in ({**good, "subject": ""}, {**good, "data": [1]}, {**good, "time": "yesterday"}):
        with pytest.raises(jsonschema.ValidationError):
            validator.validate([bad])
    with pytest.raises(jsonschema.ValidationError):
        validator.validate([{k: v for k, v in good.items() if k != "id"}])


text = st.text(st.characters(blacklist_categories=("Cs",)), min_size=1, max_size=40)
names = st.text(
    st.characters(blacklist_categories=("Cs", "Cc", "Cf", "Co", "Cn", "Zs", "Zl", "Zp")),
    min_size=1,
    max_size=40,
)
scalar = st.one_of(
    st.text(st.characters(blacklist_categories=("Cs",)), max_size=20),
    st.integers(min_value=-(1 << 63), max_value=(1 << 63) - 1),
    st.floats(allow_nan=False, allow_infinity=False),
    st.booleans(),
)
moments = st.one_of(
    st.none(),
    st.datetimes(
        min_value=datetime(2000, 1, 1),
        max_value=datetime.now() - timedelta(days=1),
        timezones=st.just(timezone.utc),
    ),
)
events = st.tuples(
    text, names, st.dictionaries(text, scalar, max_size=6), moments, st.one_of(st.none(), text)
)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    batch=st.lists(events, min_size=1, max_size=8),
    source=st.sampled_from(["meterline", "billing-api", "urn:app:x", "https://a.example/b"]),
)
def test_any_accepted_event_is_a_valid_cloudevent_in_a_valid_batch(validator, batch, source):
    """Whatever report() accepts becomes a schema-valid batch holding the event's fields."""
    try:
        pending = [validate(c, n, p, t, k, 32 * 1024) for c, n, p, t, k in batch]
    except meterline.InvalidEventError:
        reject()
    dest = OpenMeter(source=source)
    doc = orjson.loads(dest.envelope(dest.serialize_many(pending)))
    validator.validate(doc)
    for sent, (key, customer, name, props, _, _) in zip(doc, pending, strict=True):
        assert (sent["id"], sent["subject"], sent["type"], sent["source"]) == (
            key,
            customer,
            name,
            source,
        )
        assert sent["data"] == props
        assert sent["time"].endswith("Z")


def test_the_bodies_a_client_sends_validate(validator, tmp_path):
    """The request bodies of a real client's batches validate as they are sent."""
    transport = RecordingTransport("openmeter")
    with meterline.Client(destination="openmeter", transport=transport, journal_dir=tmp_path) as c:
        for i in range(130):
            c.report(f"cust_{i % 4}", "api_call", {"i": i, "ok": i % 2 == 0, "x": i / 3})
        c.report("ünïcode", "名前", {"naïve": "日本語"}, timestamp="2026-01-01T00:00:00+02:00")
        assert c.flush(timeout=5).sent == 131
    assert transport.bodies
    for body in transport.bodies:
        validator.validate(orjson.loads(body))
