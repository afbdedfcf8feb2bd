"""``client.send()`` / ``await client.asend()``: one event sent now and confirmed, or a typed
``DeliveryError``, against a real HTTP server on 127.0.0.1 (Orb's dialect, scripted faults)."""

from __future__ import annotations

import asyncio
import os
import threading
import time
from pathlib import Path

import pytest

import meterline
from meterline import (
    ClientClosedError,
    DeliveryError,
    DeliveryTimeoutError,
    EndpointRefusedError,
    EventRejectedError,
    InvalidEventError,
    Receipt,
)
from meterline.testing import wait_until
from tests.support.fault_server import Step

SECRET = "sk_live_meterline_send_secret_0123"


def _journaled(journal_dir: Path, key: str) -> list[Path]:
    """Every file under the journal directory that holds ``key``."""
    if not journal_dir.exists():
        return []
    return [p for p in journal_dir.rglob("*") if p.is_file() and key.encode() in p.read_bytes()]


def test_a_delivered_event_returns_a_receipt_and_is_counted_apart(server, make_client):
    """A 200 without the event named gives a delivered Receipt; stats count it as
    sent_confirmed, not in the pipeline's sent."""
    client = make_client()
    receipt = client.send("cust_1", "credits_used", {"n": 1}, idempotency_key="k-ok")
    assert receipt == Receipt("k-ok", "delivered", 1)
    assert server.deliveries == {"k-ok": 1}
    (event,) = server.events()
    assert event["external_customer_id"] == "cust_1"
    assert event["properties"] == {"n": 1}
    stats = client.stats()
    assert (stats["sent_confirmed"], stats["send_failed"]) == (1, 0)
    assert (stats["reported"], stats["sent"]) == (0, 0)


def test_a_key_is_drawn_when_none_is_given(server, make_client):
    """Without idempotency_key, send() draws one and the receipt names the key the server got."""
    client = make_client()
    receipt = client.send("cust_1", "credits_used")
    assert server.keys() == {receipt.idempotency_key}


def test_a_rejected_event_raises_with_the_servers_reasons_and_is_not_journaled(
    server, make_client, journal_dir
):
    """An event the server names invalid raises EventRejectedError with its reasons; nothing of
    it reaches the journal (rejected/ included)."""
    server.reject["k-bad"] = ["Property n must be positive", "unknown event"]
    client = make_client()
    with pytest.raises(EventRejectedError) as caught:
        client.send("cust_1", "credits_used", {"n": -1}, idempotency_key="k-bad")
    error = caught.value
    assert error.reasons == ["Property n must be positive", "unknown event"]
    assert error.idempotency_key == "k-bad"
    assert error.status == 200
    assert "Property n must be positive" in str(error)
    assert isinstance(error, DeliveryError)
    assert len(server.requests) == 1  # a rejection is not retried
    client.close(timeout=2)
    assert _journaled(journal_dir, "k-bad") == []
    assert client.stats()["send_failed"] == 1


def test_a_400_naming_the_event_raises_rejected(server, make_client):
    """A 400 whose validation_errors name the event is a rejection with those reasons."""
    body = {"validation_errors": [{"idempotency_key": "k-400", "validation_errors": ["too old"]}]}
    server.push(Step(400, body=body))
    client = make_client()
    with pytest.raises(EventRejectedError) as caught:
        client.send("cust_1", "credits_used", idempotency_key="k-400")
    assert (caught.value.reasons, caught.value.status) == (["too old"], 400)


def test_a_transient_failure_is_retried_with_the_same_key_and_delivered_once(server, make_client):
    """503 then 200: delivered once, both requests carried the same key, the receipt counts two
    attempts."""
    server.push(Step(503, headers={"Retry-After": "0"}))
    client = make_client()
    receipt = client.send("cust_1", "credits_used", idempotency_key="k-retry")
    assert receipt.status == "delivered"
    assert receipt.attempts == 2
    assert [r.keys for r in server.requests] == [["k-retry"], ["k-retry"]]
    assert [r.status for r in server.requests] == [503, 200]
    assert server.deliveries == {"k-retry": 1}


def test_a_lasting_outage_raises_a_timeout_within_the_bound(server, make_client, journal_dir):
    """Always 503: DeliveryTimeoutError (also a TimeoutError) within the timeout given, after
    several attempts, and nothing journaled."""
    server.always = Step(503, headers={"Retry-After": "0.05"})
    client = make_client(retry_attempts=1000)
    started = time.monotonic()
    with pytest.raises(DeliveryTimeoutError) as caught:
        client.send("cust_1", "credits_used", idempotency_key="k-down", timeout=1.0)
    elapsed = time.monotonic() - started
    assert elapsed < 1.6
    assert isinstance(caught.value, TimeoutError)
    assert caught.value.attempts >= 3
    assert caught.value.attempts == len(server.requests)
    assert "k-down" in str(caught.value)
    client.close(timeout=2)
    assert _journaled(journal_dir, "k-down") == []


def test_the_attempts_bound_the_retries_too(server, make_client):
    """Always 503 with retry_attempts=2: two requests, then DeliveryTimeoutError."""
    server.always = Step(503, headers={"Retry-After": "0"})
    client = make_client(retry_attempts=2)
    with pytest.raises(DeliveryTimeoutError) as caught:
        client.send("cust_1", "credits_used", timeout=10)
    assert caught.value.attempts == 2 == len(server.requests)


def test_a_hung_server_cannot_hold_a_send_past_its_timeout(server, make_client):
    """A request that is never answered ends at the send's timeout, not the transport's."""
    server.always = Step(hang=True)
    client = make_client(timeout=30)
    started = time.monotonic()
    with pytest.raises(DeliveryTimeoutError):
        client.send("cust_1", "credits_used", timeout=0.5)
    assert time.monotonic() - started < 1.5


def test_a_401_raises_endpoint_refused_without_the_key(server, make_client):
    """A 401 that even quotes the key raises EndpointRefusedError at once (no retry), and the
    key appears nowhere in the exception."""
    server.push(Step(401, body={"detail": f"invalid key {SECRET}", "status": 401}))
    client = make_client(api_key=SECRET)
    with pytest.raises(EndpointRefusedError) as caught:
        client.send("cust_1", "credits_used")
    error = caught.value
    assert error.status == 401
    assert len(server.requests) == 1
    for text in (str(error), repr(error), str(error.args)):
        assert SECRET not in text
    assert "401" in str(error)


def test_a_404_raises_endpoint_refused(server, make_client):
    """A 404 (a wrong base_url) is a refusal, not something to wait for."""
    server.push(Step(404, body={"status": 404, "title": "Not Found"}))
    with pytest.raises(EndpointRefusedError) as caught:
        make_client().send("cust_1", "credits_used")
    assert caught.value.status == 404


def test_an_html_200_from_a_proxy_is_not_a_delivery(server, make_client):
    """An HTML page answered 200 is not Orb's answer: EndpointRefusedError at once, naming the
    content type, and the event is not counted as delivered."""
    server.push(Step(200, body=b"<html><body>Sign in</body></html>", content_type="text/html"))
    client = make_client()
    with pytest.raises(EndpointRefusedError) as caught:
        client.send("cust_1", "credits_used")
    assert "text/html" in str(caught.value)
    assert len(server.requests) == 1
    assert client.stats()["sent_confirmed"] == 0


def test_send_validates_like_report(server, make_client):
    """An invalid event raises InvalidEventError before anything is sent."""
    client = make_client()
    with pytest.raises(InvalidEventError):
        client.send("", "credits_used")
    with pytest.raises(InvalidEventError):
        client.send("cust_1", "credits_used", {"n": [1, 2]})  # type: ignore[dict-item]
    assert server.requests == []


def test_send_and_asend_after_close_raise_client_closed(server, make_client):
    """After close(), send() and asend() raise ClientClosedError and send nothing."""
    client = make_client()
    client.close(timeout=2)
    with pytest.raises(ClientClosedError):
        client.send("cust_1", "credits_used")
    with pytest.raises(ClientClosedError):
        asyncio.run(client.asend("cust_1", "credits_used"))
    assert server.requests == []


def test_close_ends_a_send_waiting_to_retry(server, make_client):
    """close() during a send's backoff ends it at once with DeliveryTimeoutError saying so."""
    server.always = Step(503, headers={"Retry-After": "30"})
    client = make_client(retry_after_max=30, retry_attempts=100)
    errors: list[BaseException] = []

    def send() -> None:
        try:
            client.send("cust_1", "credits_used", timeout=60)
        except BaseException as exc:
            errors.append(exc)

    thread = threading.Thread(target=send)
    thread.start()
    wait_until(lambda: len(server.requests) >= 1, timeout=5)
    started = time.monotonic()
    client.close(timeout=2)
    thread.join(timeout=5)
    assert time.monotonic() - started < 4
    (error,) = errors
    assert isinstance(error, DeliveryTimeoutError)
    assert "closed" in str(error)


def test_asend_does_not_block_the_event_loop(server, make_client):
    """While asend() waits on a hung request, another coroutine runs: it sees the request
    arrive and releases it, and only then does asend() return its receipt."""
    server.push(Step(hang=True, body={"validation_failed": []}))
    client = make_client()

    async def main() -> Receipt:
        task = asyncio.create_task(client.asend("cust_1", "credits_used", timeout=10))
        deadline = time.monotonic() + 5
        while not server.requests and time.monotonic() < deadline:
            await asyncio.sleep(0.01)  # the loop is free: this coroutine keeps running
        assert server.requests
        assert not task.done()
        server.release_hung()
        return await task

    receipt = asyncio.run(main())
    assert receipt.status == "delivered"


def test_a_hung_send_never_holds_up_report_and_the_pipeline(server, make_client):
    """With a send() hung on its own connection, report() stays quick and its events are
    delivered by the pipeline; then the send completes."""
    server.push(Step(hang=True, body={"validation_failed": []}))
    client = make_client()
    receipts: list[Receipt] = []
    thread = threading.Thread(
        target=lambda: receipts.append(client.send("cust_1", "credits_used", timeout=10))
    )
    thread.start()
    wait_until(lambda: len(server.requests) == 1, timeout=5)
    started = time.monotonic()
    keys = [client.report("cust_2", "api_call", {"i": i}) for i in range(200)]
    assert time.monotonic() - started < 1.0
    assert client.flush(timeout=5)
    assert set(keys) <= server.keys()
    server.release_hung()
    thread.join(timeout=5)
    assert [r.status for r in receipts] == ["delivered"]


def test_sends_while_report_traffic_flows(server, make_client):
    """Confirmed sends interleaved with a stream of report() calls: every event arrives once,
    and the counters keep the two paths apart."""
    client = make_client(flush_interval=0.01, max_batch_events=50)
    reported: list[str] = []
    done = threading.Event()

    def reporter() -> None:
        for i in range(2000):
            reported.append(client.report(f"cust_{i % 7}", "api_call", {"i": i}))
        done.set()

    thread = threading.Thread(target=reporter)
    thread.start()
    receipts = [client.send("cust_x", "credits_used", {"n": i}) for i in range(20)]
    thread.join(timeout=10)
    assert done.is_set()
    assert client.flush(timeout=10)
    assert client.replay(timeout=10)
    assert {r.status for r in receipts} == {"delivered"}
    assert server.keys() == set(reported) | {r.idempotency_key for r in receipts}
    assert all(n == 1 for n in server.deliveries.values())
    stats = client.stats()
    assert stats["reported"] == 2000 == stats["sent"] + stats["replayed"]
    assert stats["sent_confirmed"] == 20


def test_the_key_is_scrubbed_from_a_rejections_reasons(server, make_client):
    """Reasons that echo the API key are cleaned before they reach the exception."""
    server.reject["k-echo"] = [f"key {SECRET} may not send this"]
    client = make_client(api_key=SECRET)
    with pytest.raises(EventRejectedError) as caught:
        client.send("cust_1", "credits_used", idempotency_key="k-echo")
    assert all(SECRET not in r for r in caught.value.reasons)
    assert SECRET not in str(caught.value)


def test_a_given_transport_is_used_for_send(journal_dir):
    """With transport=, send() goes through it too (meterline.testing's are thread-safe)."""
    from meterline.testing import RecordingTransport

    transport = RecordingTransport()
    with meterline.Client(transport=transport, journal_dir=journal_dir) as client:
        receipt = client.send("cust_1", "credits_used", idempotency_key="k-rec")
        assert receipt.status == "delivered"
        assert [e["idempotency_key"] for e in transport.events] == ["k-rec"]


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
def test_a_forked_child_sends_on_a_connection_of_its_own(server, make_client):
    """After a fork, send() in the child opens its own connection (never the parent's socket)
    and is confirmed; the parent's next send() still works."""
    client = make_client()
    client.send("cust_1", "credits_used", idempotency_key="k-parent-1")
    pid = os.fork()
    if pid == 0:  # the child: one confirmed send, its outcome as the exit status
        code = 1
        try:
            receipt = client.send("cust_1", "credits_used", idempotency_key="k-child", timeout=5)
            code = 0 if receipt.status == "delivered" else 2
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    client.send("cust_1", "credits_used", idempotency_key="k-parent-2")
    assert server.keys() == {"k-parent-1", "k-child", "k-parent-2"}
