"""Stripe: the meter event mapping (string values, the customer in the payload), the field
rules at report(), the session protocol and how its answers are read."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import orjson
import pytest

import meterline
from meterline._event import validate
from meterline._response import Response
from meterline.destinations import Stripe, resolve
from meterline.destinations.stripe import as_text
from meterline.testing import RecordingTransport, accepted
from tests.destinations.vendor_servers_b import EXPIRED_BODY, stripe_error

JSON = {"content-type": "application/json"}


def _pending(**kw: object):
    return validate(
        kw.get("customer", "cus_1"),
        kw.get("name", "api_call"),
        kw.get("props", {"value": 3}),
        kw.get("ts"),
        kw.get("key", "key-1"),
        32 * 1024,
    )


def _error(status: int, code: str, headers: dict[str, str] | None = None) -> Response:
    body = orjson.dumps(stripe_error(code, f"{code} happened"))
    return Response(status, {**JSON, **(headers or {})}, body)


def test_an_event_maps_to_a_meter_event_with_string_values():
    """identifier, event_name, RFC 3339 timestamp, and a payload of strings that holds the
    customer under stripe_customer_id."""
    ts = datetime(2026, 11, 20, 3, 4, 5, tzinfo=timezone.utc)
    props = {"value": 3, "ratio": 0.1, "big": 1e16, "flag": True, "off": False, "model": "s"}
    [raw] = Stripe().serialize_many([_pending(props=props, ts=ts)])
    assert orjson.loads(raw) == {
        "identifier": "key-1",
        "event_name": "api_call",
        "timestamp": "2026-11-20T03:04:05.000000Z",
        "payload": {
            "value": "3",
            "ratio": "0.1",
            "big": "10000000000000000",
            "flag": "true",
            "off": "false",
            "model": "s",
            "stripe_customer_id": "cus_1",
        },
    }


@pytest.mark.parametrize(
    ("value", "text"),
    [
        (3, "3"),
        (-(1 << 63), str(-(1 << 63))),
        (1.5, "1.5"),
        (3.0, "3.0"),
        (1e-7, "0.0000001"),
        (2.5e20, "250000000000000000000"),
        (True, "true"),
        ("x", "x"),
    ],
)
def test_values_become_their_shortest_decimal_text(value, text):
    """Ints as digits, floats as the shortest text that reads back as them (never with an
    exponent), booleans as true/false."""
    assert as_text(value) == text
    if isinstance(value, float):
        assert float(text) == value


def test_the_customer_payload_key_is_configurable_and_a_property_of_that_name_is_refused(
    tmp_path,
):
    """Stripe(customer_payload_key=...) puts the customer there; a property with that name
    is refused at report() instead of being overwritten."""
    dest = Stripe(customer_payload_key="customer")
    [raw] = dest.serialize_many([_pending()])
    assert orjson.loads(raw)["payload"] == {"value": "3", "customer": "cus_1"}
    transport = RecordingTransport(dest)
    with meterline.Client(destination=dest, transport=transport, journal_dir=tmp_path) as c:
        with pytest.raises(meterline.InvalidEventError, match="customer"):
            c.report("cus_1", "api_call", {"customer": "cus_2"})
        c.report("cus_1", "api_call", {"stripe_customer_id": "allowed here"})
        assert c.flush(timeout=5).sent == 1


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"event_name": "e" * 101}, "event_name"),
        ({"idempotency_key": "k" * 101}, "idempotency_key"),
        ({"timestamp": datetime.now(timezone.utc) - timedelta(days=36)}, "timestamp"),
    ],
)
def test_stripes_field_rules_are_enforced_at_report(tmp_path, kwargs, field):
    """Names and identifiers over 100 characters and timestamps over 35 days old raise
    InvalidEventError naming the field; the limits themselves are accepted."""
    transport = RecordingTransport("stripe")
    with meterline.Client(destination="stripe", transport=transport, journal_dir=tmp_path) as c:
        args = {"event_name": "api_call", **kwargs}
        name = args.pop("event_name")
        with pytest.raises(meterline.InvalidEventError, match=field):
            c.report("cus_1", name, {"value": 1}, **args)
        c.report("cus_1", "e" * 100, idempotency_key="k" * 100)
        c.report("cus_1", "e", timestamp=datetime.now(timezone.utc) - timedelta(days=34))
        assert c.flush(timeout=5).sent == 2


def test_stream_url_follows_base_url_unless_it_is_stripes_own():
    """Stripe's API streams to meter-events.stripe.com; any other base_url (a mock, a
    proxy) serves both paths; stream_url= overrides both."""
    stream = "/v2/billing/meter_event_stream"
    assert (
        Stripe().ingest_url("https://api.stripe.com") == "https://meter-events.stripe.com" + stream
    )
    assert Stripe().ingest_url("http://127.0.0.1:9") == "http://127.0.0.1:9" + stream
    custom = Stripe(stream_url="https://proxy.example/")
    assert custom.ingest_url("https://api.stripe.com") == "https://proxy.example" + stream
    assert resolve("stripe") == Stripe()
    assert Stripe().headers("sk_live_x") == {}
    for bad in ({"stream_url": "ftp://x"}, {"customer_payload_key": ""}, {"api_version": " "}):
        with pytest.raises(meterline.ConfigError):
            Stripe(**bad)  # type: ignore[arg-type]


def test_the_session_request_and_grant_carry_the_right_credentials():
    """The session is bought with the secret key; the grant sends the token, expires at
    the answer's ISO expires_at (or a Unix time), and its repr shows neither."""
    session = Stripe().session("http://127.0.0.1:9")
    assert session is not None
    url, body, headers = session.request("sk_test_secret")
    assert url == "http://127.0.0.1:9/v2/billing/meter_event_session"
    assert (body, headers["Authorization"]) == (b"", "Bearer sk_test_secret")
    doc = {"authentication_token": "ek_tok", "expires_at": "2026-12-02T01:15:00.000Z"}
    grant = session.grant(Response(200, JSON, orjson.dumps(doc)))
    assert grant is not None
    assert grant.headers["Authorization"] == "Bearer ek_tok"
    assert grant.expires_at == datetime(2026, 12, 2, 1, 15, tzinfo=timezone.utc).timestamp()
    assert "ek_tok" not in repr(grant)
    assert "sk_test" not in repr(session)
    unix = session.grant(Response(200, JSON, orjson.dumps({**doc, "expires_at": 1796173200})))
    assert unix is not None
    assert unix.expires_at == 1796173200.0
    for bad in ({}, {"authentication_token": "t"}, {**doc, "expires_at": "soon"}):
        assert session.grant(Response(200, JSON, orjson.dumps(bad))) is None
    assert session.expired(Response(401, JSON, orjson.dumps(EXPIRED_BODY)))
    assert session.expired(Response(400, JSON, orjson.dumps(EXPIRED_BODY)))
    assert not session.expired(_error(401, "authentication_failed"))


@pytest.mark.parametrize(
    ("response", "kind"),
    [
        (Response(200, JSON, b"{}"), "accepted"),
        (Response(200, {"content-type": "text/html"}, b"<html/>"), "foreign"),
        (_error(400, "v2.error"), "invalid_batch"),
        (Response(400, {"content-type": "text/html"}, b"<html/>"), "foreign"),
        (_error(401, "billing_meter_event_session_expired"), "retry"),
        (_error(429, "too_many_concurrent_requests"), "retry"),
        (_error(400, "too_many_concurrent_requests"), "retry"),
        (_error(401, "authentication_failed"), "refused"),
        (_error(429, "rate_limit", {"stripe-should-retry": "true", "retry-after": "1"}), "retry"),
        (_error(400, "v2.error", {"stripe-should-retry": "true"}), "retry"),
        (_error(500, "api_error"), "retry"),
        (_error(500, "api_error", {"stripe-should-retry": "false"}), "refused"),
        (_error(409, "conflict", {"stripe-should-retry": "false"}), "refused"),
        (_error(400, "v2.error", {"stripe-should-retry": "false"}), "invalid_batch"),
        (_error(403, "forbidden", {"stripe-should-retry": "false"}), "refused"),
        (Response(200, {"stripe-should-retry": "false", **JSON}, b"{}"), "accepted"),
    ],
)
def test_answers_are_read_as_stripe_means_them(response, kind):
    """Stripe-Should-Retry overrides the status (true retries; false keeps events instead
    of retrying a 5xx or 408/409/429); an expired session or concurrent requests are
    transient whatever the status; a 400 names no event, so it is bisected."""
    assert Stripe().read(response, ["k"]).kind == kind


def test_the_testing_helpers_answer_as_stripe():
    """accepted("stripe") is the stream's 200 {} and reads as delivery."""
    assert Stripe().read(accepted("stripe"), ["k"]).kind == "accepted"
