"""``client.send()`` through the other destinations, against servers on 127.0.0.1 speaking each
vendor's dialect: Stripe's session-token stream and Lago's atomic batches with 422s."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import meterline
from meterline import DeliveryTimeoutError, EndpointRefusedError, EventRejectedError, Receipt
from tests.destinations.vendor_servers import LagoServer, MetronomeServer
from tests.destinations.vendor_servers import Reply as LagoReply
from tests.destinations.vendor_servers_b import (
    SESSION,
    STREAM,
    OpenMeterServer,
    Reply,
    StripeServer,
    stripe_error,
)


@pytest.fixture
def clients() -> Iterator[list[meterline.Client]]:
    made: list[meterline.Client] = []
    yield made
    for client in made:
        client.close(timeout=2)


def _client(clients: list[meterline.Client], tmp_path: Path, **kwargs: Any) -> meterline.Client:
    kwargs.setdefault("journal_dir", tmp_path / "journal")
    client = meterline.Client(**kwargs)
    clients.append(client)
    return client


# -- Stripe: a session of its own, renewed on expiry ----------------------------------------


@pytest.fixture
def stripe() -> Iterator[StripeServer]:
    with StripeServer() as srv:
        yield srv  # type: ignore[misc]


def _stripe(stripe: StripeServer, clients: list[meterline.Client], tmp_path: Path, **kw: Any):
    kw.setdefault("api_key", stripe.api_key)
    return _client(clients, tmp_path, destination="stripe", base_url=stripe.url, **kw)


def test_stripe_send_opens_a_session_and_is_delivered(stripe, clients, tmp_path):
    """send() with Stripe opens a session with the secret key and streams the event with the
    session token; the receipt says delivered."""
    client = _stripe(stripe, clients, tmp_path)
    receipt = client.send("cus_1", "api_call", {"value": 3}, idempotency_key="st-1")
    assert receipt == Receipt("st-1", "delivered", 1)
    assert stripe.deliveries == {"st-1": 1}
    assert stripe.received["st-1"]["payload"]["value"] == "3"
    (stream,) = stripe.seen(STREAM)
    assert stream.headers["authorization"] == f"Bearer {stripe.tokens[0]}"


def test_stripe_send_renews_an_expired_session_and_sends_once_more(stripe, clients, tmp_path):
    """A session that ended between two sends is renewed and the event sent with the new one."""
    client = _stripe(stripe, clients, tmp_path)
    client.send("cus_1", "api_call", {"value": 1})
    stripe.expire_sessions()
    receipt = client.send("cus_1", "api_call", {"value": 2})
    assert receipt.status == "delivered"
    assert len(stripe.tokens) == 2
    assert len(stripe.deliveries) == 2


def test_stripe_send_with_a_bad_key_is_refused_without_it(stripe, clients, tmp_path):
    """A secret key the session endpoint refuses gives EndpointRefusedError, key not in it."""
    bad = "sk_test_wrong_key_9876543210"
    client = _stripe(stripe, clients, tmp_path, api_key=bad)
    with pytest.raises(EndpointRefusedError) as caught:
        client.send("cus_1", "api_call")
    assert caught.value.status == 401
    assert bad not in str(caught.value)
    assert stripe.seen(STREAM) == []


def test_stripe_send_does_not_show_an_echoed_session_token(stripe, clients, tmp_path):
    """A 503 that quotes the session token with ``Stripe-Should-Retry: false`` is refused at
    once, and the exception holds neither the token nor the key."""
    stripe.echo = True
    client = _stripe(stripe, clients, tmp_path)
    with pytest.raises(EndpointRefusedError) as caught:
        client.send("cus_1", "api_call", timeout=5)
    text = str(caught.value)
    assert stripe.tokens
    assert all(token not in text for token in stripe.tokens)
    assert stripe.api_key not in text
    assert len(stripe.seen(STREAM)) == 1


def test_stripe_overload_is_retried_within_the_budget(stripe, clients, tmp_path):
    """Stripe's retryable 503 on every stream request ends in DeliveryTimeoutError after the
    attempts, with the same identifier each time."""
    overloaded = Reply(503, stripe_error("api_error", "overloaded"), {"Retry-After": "0"})
    stripe.push(STREAM, overloaded, overloaded)
    client = _stripe(stripe, clients, tmp_path, retry_attempts=2)
    with pytest.raises(DeliveryTimeoutError):
        client.send("cus_1", "api_call", idempotency_key="st-503", timeout=5)
    assert [s.keys for s in stripe.seen(STREAM)] == [["st-503"], ["st-503"]]


def test_stripe_invalid_request_is_a_rejection(stripe, clients, tmp_path):
    """A 400 invalid_request_error from the stream is a rejection with Stripe's message."""
    stripe.push(STREAM, Reply(400, stripe_error("invalid_request_error", "No such meter")))
    client = _stripe(stripe, clients, tmp_path)
    with pytest.raises(EventRejectedError) as caught:
        client.send("cus_1", "api_call")
    assert any("No such meter" in r for r in caught.value.reasons)
    assert len(stripe.seen(SESSION)) == 1


# -- Lago: one event in an atomic batch; 422 names it, value_already_exist is a duplicate ---


@pytest.fixture
def lago() -> Iterator[LagoServer]:
    with LagoServer() as srv:
        yield srv  # type: ignore[misc]


def _lago(lago: LagoServer, clients: list[meterline.Client], tmp_path: Path, **kw: Any):
    return _client(
        clients, tmp_path, api_key="lago-key", destination="lago", base_url=lago.url, **kw
    )


def test_lago_send_is_delivered_then_a_repeat_is_a_duplicate(lago, clients, tmp_path):
    """The first send is delivered; the same transaction_id again is answered 422
    value_already_exist, which the receipt reports as duplicate."""
    client = _lago(lago, clients, tmp_path)
    first = client.send("sub_1", "storage", {"gb": 10}, idempotency_key="lg-1")
    again = client.send("sub_1", "storage", {"gb": 10}, idempotency_key="lg-1")
    assert (first.status, again.status) == ("delivered", "duplicate")
    assert lago.deliveries == {"lg-1": 1}
    assert [s.status for s in lago.seen()] == [200, 422]


def test_lago_atomic_422_rejects_the_event_with_its_field_errors(lago, clients, tmp_path):
    """A 422 naming the event by index is an EventRejectedError with Lago's field reasons."""
    lago.bad["lg-bad"] = {"code": ["does_not_exist"]}
    client = _lago(lago, clients, tmp_path)
    with pytest.raises(EventRejectedError) as caught:
        client.send("sub_1", "nope", idempotency_key="lg-bad")
    assert caught.value.reasons == ["code: does_not_exist"]
    assert caught.value.status == 422
    assert lago.keys() == set()


def test_lago_rate_limit_then_success(lago, clients, tmp_path):
    """A 429 with Lago's reset header is waited out within the budget, then delivered."""
    lago.push(LagoReply(429, {"status": 429, "error": "Too Many Requests"}))
    client = _lago(lago, clients, tmp_path)
    receipt = client.send("sub_1", "storage", {"gb": 1}, timeout=10)
    assert (receipt.status, receipt.attempts) == ("delivered", 2)


# -- Metronome and OpenMeter: no body to tell a duplicate by --------------------------------


def test_metronome_send_is_delivered_even_for_a_repeated_key(clients, tmp_path):
    """Metronome answers a repeated transaction_id like a new one: both receipts say delivered."""
    with MetronomeServer() as metronome:
        client = _client(
            clients, tmp_path, api_key="m-key", destination="metronome", base_url=metronome.url
        )
        statuses = [client.send("c1", "api_call", idempotency_key="m-1").status for _ in "ab"]
        assert statuses == ["delivered", "delivered"]
        assert metronome.keys() == {"m-1"}


def test_openmeter_send_is_delivered(clients, tmp_path):
    """OpenMeter's 204 to a one-event CloudEvents batch is a delivery."""
    with OpenMeterServer() as openmeter:
        client = _client(
            clients,
            tmp_path,
            api_key=openmeter.api_key,
            destination="openmeter",
            base_url=openmeter.url,
        )
        receipt = client.send("subject_1", "api_call", {"n": 1}, idempotency_key="om-1")
        assert receipt.status == "delivered"
        assert "om-1" in openmeter.deliveries
