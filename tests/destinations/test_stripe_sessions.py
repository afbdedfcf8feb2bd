"""Stripe's meter event stream against a programmable server on 127.0.0.1 scripted like
Stripe: sessions that expire and are renewed, refusals, retries, the journal and replay,
and neither credential ever reaching a log, a callback, a repr or the journal."""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import meterline
from meterline._transport import SESSION_MARGIN, HttpxTransport
from meterline.destinations import Stripe
from tests.destinations.vendor_servers_b import (
    EXPIRED_BODY,
    SESSION,
    STREAM,
    Reply,
    StripeServer,
    stripe_error,
)


@pytest.fixture
def server() -> Iterator[StripeServer]:
    with StripeServer() as srv:
        yield srv  # type: ignore[misc]


@pytest.fixture
def make_client(server: StripeServer, tmp_path: Path) -> Iterator[Any]:
    clients: list[meterline.Client] = []

    def make(**kwargs: Any) -> meterline.Client:
        kwargs.setdefault("api_key", server.api_key)
        kwargs.setdefault("destination", "stripe")
        kwargs.setdefault("base_url", server.url)
        kwargs.setdefault("journal_dir", tmp_path / "journal")
        kwargs.setdefault("flush_interval", 5)
        client = meterline.Client(**kwargs)
        clients.append(client)
        return client

    yield make
    for client in clients:
        client.close(timeout=2)


def _report(client: meterline.Client, n: int, start: int = 0) -> list[str]:
    return [
        client.report(f"cus_{i % 3}", "api_call", {"value": i}) for i in range(start, start + n)
    ]


def test_events_reach_the_stream_with_the_session_token(server, make_client):
    """The secret key opens one session; 250 events go to the stream in batches of at most
    100, each with the session's token (never the key), each delivered once."""
    client = make_client()
    keys = _report(client, 250)
    assert client.flush(timeout=10).sent == 250
    assert set(server.received) == set(keys)
    assert set(server.deliveries.values()) == {1}
    assert [s.headers["authorization"] for s in server.seen(SESSION)] == [
        f"Bearer {server.api_key}"
    ]
    stream = server.seen(STREAM)
    assert {s.headers["authorization"] for s in stream} == {f"Bearer {server.tokens[0]}"}
    assert all(len(s.keys) <= 100 for s in stream)
    assert {s.headers.get("stripe-version") for s in stream} == {"2026-09-30.endive"}
    assert server.received[keys[4]]["payload"] == {"value": "4", "stripe_customer_id": "cus_1"}


def test_a_session_that_expires_mid_stream_is_renewed_and_the_batch_resent_once(
    server, make_client
):
    """A batch answered billing_meter_event_session_expired gets a new session and is sent
    again with the same identifiers under the new token; every event is delivered once."""
    client = make_client()
    first = _report(client, 50)
    assert client.flush(timeout=10).sent == 50
    server.expire_sessions()
    second = _report(client, 50, start=50)
    result = client.flush(timeout=10)
    assert (result.sent, result.pending) == (50, 0)
    assert client.stats()["retried"] == 0  # the transport's resend is not a retry
    stream = server.seen(STREAM)
    assert [s.status for s in stream] == [200, 401, 200]
    assert stream[1].keys == stream[2].keys == second
    assert stream[2].headers["authorization"] == f"Bearer {server.tokens[1]}"
    assert len(server.tokens) == 2
    assert set(server.received) == set(first) | set(second)
    assert set(server.deliveries.values()) == {1}


def test_a_session_expired_twice_is_renewed_once_then_the_batch_retried(server, make_client):
    """When the resend is answered expired too, the transport does not loop: the batch is
    retried later under the renewed session, and delivered once."""
    server.push(STREAM, Reply(401, EXPIRED_BODY), Reply(401, EXPIRED_BODY))
    client = make_client()
    keys = _report(client, 10)
    assert client.flush(timeout=10).sent == 10
    assert [s.status for s in server.seen(STREAM)] == [401, 401, 200]
    assert all(s.keys == keys for s in server.seen(STREAM))
    assert len(server.tokens) == 2
    assert set(server.deliveries.values()) == {1}


def test_a_session_is_renewed_before_it_expires(server, tmp_path):
    """Once the transport's clock is within SESSION_MARGIN of expires_at, the next batch
    opens a new session first: no batch is ever answered expired."""
    now = [time.time()]
    dest = Stripe()
    transport = HttpxTransport(
        dest.ingest_url(server.url),
        server.api_key,
        timeout=5,
        connect_timeout=2,
        envelope=dest.envelope,
        content_type=dest.content_type,
        session=dest.session(server.url),
        clock=lambda: now[0],
    )
    with meterline.Client(
        api_key=server.api_key,
        destination=dest,
        base_url=server.url,
        transport=transport,
        journal_dir=tmp_path / "j",
    ) as client:
        _report(client, 5)
        assert client.flush(timeout=10).sent == 5
        now[0] += server.lifetime - SESSION_MARGIN - 5  # still fresh
        _report(client, 5)
        assert client.flush(timeout=10).sent == 5
        now[0] += 10  # within the margin of expires_at
        _report(client, 5)
        assert client.flush(timeout=10).sent == 5
    stream = server.seen(STREAM)
    assert [s.status for s in stream] == [200, 200, 200]
    assert [s.headers["authorization"].split()[1] for s in stream] == [
        server.tokens[0],
        server.tokens[0],
        server.tokens[1],
    ]


def test_a_refused_session_journals_everything_and_logs_without_the_key(
    server, make_client, tmp_path, caplog
):
    """The session endpoint's 401 is the batch's refusal: every event journaled, nothing
    sent to the stream, an ERROR logged that never shows the key."""
    secret = "sk_live_wrong_do_not_log_me"
    client = make_client(api_key=secret)
    with caplog.at_level(logging.DEBUG, logger="meterline"):
        _report(client, 20)
        result = client.flush(timeout=10)
    assert (result.journaled, result.dropped, result.pending) == (20, 0, 0)
    assert server.seen(STREAM) == []
    assert [s.status for s in server.seen(SESSION)] == [401]
    assert any(r.levelno == logging.ERROR and "401" in r.getMessage() for r in caplog.records)
    assert secret not in caplog.text
    for path in (tmp_path / "journal").rglob("*"):
        if path.is_file():
            assert secret.encode() not in path.read_bytes()


def test_a_failing_session_endpoint_is_retried(server, make_client):
    """A 500 from the session endpoint is transient: retried, then the batch is delivered."""
    server.push(SESSION, Reply(500, stripe_error("api_error", "try again")))
    client = make_client()
    keys = _report(client, 10)
    assert client.flush(timeout=15).sent == 10
    assert [s.status for s in server.seen(SESSION)] == [500, 200]
    assert client.stats()["retried"] >= 1
    assert set(server.received) == set(keys)


def test_a_429_with_stripe_should_retry_true_is_retried_after_retry_after(server, make_client):
    """429 with Stripe-Should-Retry: true and Retry-After: 1 is retried a second later."""
    headers = {"Stripe-Should-Retry": "true", "Retry-After": "1"}
    server.push(STREAM, Reply(429, stripe_error("rate_limit", "slow down"), headers))
    client = make_client()
    keys = _report(client, 5)
    assert client.flush(timeout=20).sent == 5
    first, second = server.seen(STREAM)
    assert (first.status, second.status) == (429, 200)
    assert second.at - first.at >= 0.95
    assert first.keys == second.keys == keys


@pytest.mark.parametrize("status", [429, 503])
def test_stripe_should_retry_false_keeps_the_events_instead_of_retrying(
    server, make_client, status
):
    """A 429 or 5xx that Stripe says not to retry is not retried: the events are journaled."""
    headers = {"Stripe-Should-Retry": "false"}
    server.push(STREAM, Reply(status, stripe_error("api_error", "do not retry"), headers))
    client = make_client()
    _report(client, 5)
    result = client.flush(timeout=10)
    assert (result.journaled, result.sent, result.dropped) == (5, 0, 0)
    assert len(server.seen(STREAM)) == 1


def test_an_outage_is_journaled_and_replayed_with_the_same_identifiers(server, make_client):
    """With both endpoints down the events are journaled; once they are back a new client
    replays them: the same identifiers, each delivered once."""
    server.outage = Reply(503, stripe_error("api_error", "down"))
    down = make_client(retry_attempts=1)
    keys = _report(down, 30)
    result = down.close(timeout=5)
    assert (result.journaled, result.pending, result.dropped) == (30, 0, 0)
    assert server.received == {}
    server.outage = None
    up = make_client()
    assert up.replay(timeout=10)
    assert set(server.received) == set(keys)
    assert set(server.deliveries.values()) == {1}
    assert up.stats()["replayed"] == 30


def test_neither_credential_reaches_logs_callbacks_reprs_or_the_journal(
    server, make_client, tmp_path, caplog
):
    """Across a session renewal and a refusal whose body quotes the token, the secret key
    and every session token stay out of DEBUG logs (meterline, httpx, httpcore), on_error,
    the client's repr and the journal."""
    errors: list[str] = []
    for name in ("meterline", "httpx", "httpcore"):
        caplog.set_level(logging.DEBUG, logger=name)
    client = make_client(on_error=lambda exc, info: errors.append(f"{exc!r} {info!r}"))
    _report(client, 20)
    assert client.flush(timeout=10).sent == 20
    server.expire_sessions()
    _report(client, 20, start=20)
    assert client.flush(timeout=10).sent == 20
    server.echo = True  # a 503 (Stripe-Should-Retry: false) that quotes the Authorization
    _report(client, 20, start=40)
    assert client.flush(timeout=10).journaled == 20
    client.close(timeout=2)
    assert len(server.tokens) == 2
    assert errors
    assert any("httpcore" in r.name for r in caplog.records)  # the capture is live
    journal = b"".join(p.read_bytes() for p in (tmp_path / "journal").rglob("*") if p.is_file())
    for secret in (server.api_key, *server.tokens):
        assert secret not in caplog.text
        assert secret not in " ".join(errors)
        assert secret not in repr(client)
        assert secret.encode() not in journal


def test_the_transport_holds_only_the_current_sessions_secrets(server):
    """After thirty renewals the transport scrubs answers with the key's and the last two
    sessions' secrets only (it does not keep every token ever granted), and an answer that
    quotes the current token still reaches the reader without it."""
    now = [time.time()]
    dest = Stripe()
    transport = HttpxTransport(
        dest.ingest_url(server.url),
        server.api_key,
        timeout=5,
        connect_timeout=2,
        envelope=dest.envelope,
        content_type=dest.content_type,
        session=dest.session(server.url),
        clock=lambda: now[0],
    )
    try:
        body = dest.serialize_many([_pending_event()])
        for _ in range(30):
            assert transport.send(body).status == 200
            now[0] += server.lifetime
        assert len(server.tokens) == 30
        assert len(transport._secrets) <= 6  # the bound is the point
        server.echo = True
        answer = transport.send(body)
        assert answer.status == 503
        assert b"[redacted]" in answer.body
        assert all(t.encode() not in answer.body for t in server.tokens)
    finally:
        transport.close()


def _pending_event():
    from meterline._event import validate

    return validate("cus_1", "api_call", {"value": 1}, None, None, 32 * 1024)


def test_a_revoked_session_token_is_dropped_and_a_new_session_opened(server, make_client):
    """A stream 401 that is not the expiry code (a revoked token) opens a new session and
    sends the same identifiers again at once; every event is delivered once."""
    client = make_client()
    first = _report(client, 10)
    assert client.flush(timeout=10).sent == 10
    with server.lock:
        server.live.clear()
        server.tokens.clear()  # unknown to the server now: answered "authentication_failed"
    second = _report(client, 10, start=10)
    assert client.flush(timeout=15).sent == 10
    stream = server.seen(STREAM)
    assert [s.status for s in stream][-2:] == [401, 200]
    assert stream[-1].keys == stream[-2].keys == second
    assert len(server.seen(SESSION)) == 2
    assert set(server.received) == set(first) | set(second)
    assert set(server.deliveries.values()) == {1}
