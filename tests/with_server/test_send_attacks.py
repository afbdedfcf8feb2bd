"""What attacking ``send()`` found, kept fixed: secrets cut in half by a truncation, locals
an error tracker records, pickling, odd timeouts, long Retry-After, re-entrant sends."""

from __future__ import annotations

import logging
import pickle
import traceback

import pytest

from meterline import (
    DeliveryTimeoutError,
    EndpointRefusedError,
    EventRejectedError,
    InvalidEventError,
)
from meterline._response import Response
from tests.destinations.vendor_servers_b import SESSION, Reply, StripeServer
from tests.support.fault_server import Step

SECRET = "sk_live_meterline_attack_0123456789abcdefghijklmnopqrstuvwxyzABCDEF"


def _fragments(text: str) -> list[str]:
    """Pieces of SECRET long enough to matter that appear in ``text``."""
    return [SECRET[:n] for n in range(8, len(SECRET) + 1) if SECRET[:n] in text]


def test_a_key_quoted_where_a_cut_falls_leaves_no_piece_of_it(
    server, make_client, caplog: pytest.LogCaptureFixture
):
    """A server quoting the key after 254 characters of text: no prefix of the key survives
    in the exception, its reasons, the traceback, or the log of a report() of the same."""
    caplog.set_level(logging.DEBUG, logger="meterline")
    client = make_client(api_key=SECRET)
    message = "x" * 254 + f" your key {SECRET} is not allowed"
    server.push(Step(400, body={"type": "about:blank", "status": 400, "detail": message}))
    with pytest.raises(EventRejectedError) as info:
        client.send("cust_1", "e")
    shown = str(info.value) + repr(info.value) + " ".join(info.value.reasons)
    shown += "".join(traceback.format_exception(info.value))
    assert _fragments(shown) == []
    server.push(Step(400, body={"type": "about:blank", "status": 400, "detail": message}))
    client.report("cust_1", "e")
    assert client.flush(timeout=10).rejected == 1
    assert _fragments(caplog.text) == []


def test_an_answer_shows_no_body_in_its_repr():
    """Response's repr (in a recorded frame, a debugger) leaves the body out."""
    assert SECRET not in repr(Response(401, {}, SECRET.encode()))


@pytest.mark.parametrize(
    "error",
    [
        EventRejectedError("rejected", reasons=["bad"], idempotency_key="k", status=400),
        DeliveryTimeoutError("late", idempotency_key="k", attempts=3),
        EndpointRefusedError("refused", status=401),
        InvalidEventError("timestamp", "is naive"),
    ],
)
def test_errors_survive_pickling(error):
    """A process pool sends exceptions back pickled: each comes back whole."""
    again = pickle.loads(pickle.dumps(error))  # noqa: S301 - our own bytes
    assert type(again) is type(error)
    assert str(again) == str(error)
    assert vars(again) == vars(error)


@pytest.mark.parametrize("timeout", [0, -1, float("nan"), True, "2"])
def test_a_timeout_that_is_not_a_positive_number_is_a_value_error(server, make_client, timeout):
    """A caller's bug is a ValueError naming timeout, not a transient-looking failure."""
    client = make_client()
    with pytest.raises(ValueError, match="timeout"):
        client.send("cust_1", "e", timeout=timeout)
    assert client.stats()["send_failed"] == 0
    assert server.keys() == set()


def test_a_retry_after_longer_than_the_time_left_is_said_and_kept(server, make_client):
    """A 429 asking for an hour ends the send at once, saying so, with retry_after set."""
    client = make_client()
    server.push(Step(429, headers={"Retry-After": "3600"}))
    with pytest.raises(DeliveryTimeoutError) as info:
        client.send("cust_1", "e", timeout=3)
    assert info.value.retry_after == 3600
    assert "3600" in str(info.value)


@pytest.mark.timeout(20)
def test_a_send_from_inside_the_senders_own_lock_does_not_wait_on_itself(server, make_client):
    """A signal handler that sends while its thread is inside the sender's counters (held
    lock) must not deadlock: the lock is re-entrant."""
    client = make_client()
    with client._sender._lock:
        assert client.send("cust_1", "e").status == "delivered"


class PortalStripe(StripeServer):
    """A wrong base_url: the session path answers a portal's 404 page."""

    def answer(self, seen):  # type: ignore[no-untyped-def]
        if seen.path == SESSION:
            return Reply(404, b"<html>not here</html>", content_type="text/html")
        return super().answer(seen)


def test_a_stripe_session_endpoint_that_is_not_there_is_a_refusal(tmp_path):
    """A 404 page where the session should be is a misconfiguration: EndpointRefusedError at
    once, not a timeout that tells the caller to try again."""
    import meterline

    with PortalStripe() as server:
        client = meterline.Client(
            server.api_key, destination="stripe", base_url=server.url, journal_dir=tmp_path
        )
        try:
            with pytest.raises(EndpointRefusedError):
                client.send("cus_1", "e", {"value": 1}, timeout=5)
        finally:
            client.close()
