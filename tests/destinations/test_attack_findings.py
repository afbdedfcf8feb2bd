"""What a careless or hostile user or server found in the destinations, kept fixed: answers
that only look like success, escaped secrets, odd configuration, old events replayed."""

from __future__ import annotations

import logging
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest

import meterline
from meterline import ConfigError
from meterline._response import Response
from meterline.destinations import Lago, Metronome, OpenMeter, Stripe, resolve
from meterline.destinations._base import ACCEPTED, FOREIGN, INVALID_BATCH
from meterline.testing import FlakyTransport, RecordingTransport, TransportError
from tests.destinations.vendor_servers_b import STREAM, Reply, StripeServer
from tests.support.journal import ready_events

JSON = {"content-type": "application/json"}


@pytest.mark.parametrize(
    ("destination", "response"),
    [
        (OpenMeter(), Response(200, {}, b"")),  # a load balancer's empty 200
        (OpenMeter(), Response(202, {}, b"")),
        (Stripe(), Response(200, JSON, b'{"error":{"code":"no_meter","message":"x"}}')),
        (Stripe(), Response(202, JSON, b"{}")),
        (Metronome(), Response(200, JSON, b'{"errors":[{"message":"bad"}]}')),
    ],
)
def test_a_2xx_that_is_not_the_vendors_acceptance_is_not_delivery(destination, response):
    """An answer that only looks like success is foreign: the events are kept, not billed
    as delivered."""
    assert destination.read(response, ["k"]).kind == FOREIGN


def test_the_vendors_real_acceptances_still_count():
    """OpenMeter's 204, Stripe's 200 {} and Metronome's bare 200 are delivery."""
    assert OpenMeter().read(Response(204), ["k"]).kind == ACCEPTED
    assert Stripe().read(Response(200, JSON, b"{}"), ["k"]).kind == ACCEPTED
    assert Metronome().read(Response(200), ["k"]).kind == ACCEPTED


def test_a_lago_index_that_is_a_unicode_digit_is_not_an_index():
    """error_details keyed "²" (isdigit, not int) names no event of ours: bisect, no raise."""
    body = (
        b'{"status":422,"error":"Unprocessable entity","code":"x","error_details":{"\xc2\xb2":{}}}'
    )
    assert Lago().read(Response(422, JSON, body), ["a", "b", "c"]).kind == INVALID_BATCH


@pytest.mark.parametrize("value", ["", Lago, 0, False])
def test_a_destination_that_is_empty_or_a_class_is_refused(value, tmp_path):
    """ "", a class instead of an instance, 0 or False never silently become Orb."""
    with pytest.raises(ConfigError):
        meterline.Client("k", destination=value, journal_dir=tmp_path)


@pytest.mark.parametrize(
    "url", ["http://user:sk_live_pw@host", "https://host/x?q=1", "http:", "https://a b#f"]
)
def test_a_stripe_stream_url_with_credentials_or_a_query_is_refused(url):
    """stream_url follows base_url's rules: no userinfo (httpx would send it instead of the
    session token, and show it in logs), no query, a host."""
    with pytest.raises(ConfigError) as info:
        Stripe(stream_url=url)
    assert "sk_live_pw" not in str(info.value)


def test_a_custom_destination_whose_ingest_url_fails_is_a_config_error(tmp_path):
    """A destination whose ingest_url() raises is refused at construction, not on a thread."""

    class Broken(Lago):
        name = "broken"

        def ingest_url(self, base_url: str) -> str:
            raise KeyError("oops")

    assert resolve(Broken()).name == "broken"
    with pytest.raises(ConfigError, match="ingest_url"):
        meterline.Client("k", destination=Broken(), journal_dir=tmp_path)


def test_a_year_before_1000_is_sent_as_four_digits():
    """RFC 3339 wants four digits: year 999 is 0999, never 999."""
    rec = RecordingTransport("orb")
    client = meterline.Client("k", transport=rec, journal_dir=None)
    try:
        client.report("c", "e", timestamp="0999-12-31T23:59:59Z")
        client.flush(timeout=5)
    finally:
        client.close()
    assert rec.events[0]["timestamp"] == "0999-12-31T23:59:59.000000Z"


class EscapingStripe(StripeServer):
    """Refuses batches with a message quoting the session token, every character written as
    a JSON escape: scrubbing the raw bytes cannot see it, the decoded text holds it whole."""

    def answer(self, seen: Any) -> Reply:
        if seen.path == STREAM:
            token = seen.headers.get("authorization", "").removeprefix("Bearer ")
            escaped = "".join(f"\\u{ord(c):04x}" for c in token)
            body = f'{{"error":{{"code":"x","message":"bad token {escaped}"}}}}'.encode()
            return Reply(400, body)
        return super().answer(seen)


def test_a_json_escaped_session_token_never_reaches_logs_callbacks_or_the_journal(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
):
    """A server that quotes the token JSON-escaped in its error: the reason kept in
    rejected/, the log line and on_error all show *** instead."""
    infos: list[str] = []
    caplog.set_level(logging.DEBUG)
    with EscapingStripe() as server:
        client = meterline.Client(
            server.api_key,
            destination="stripe",
            base_url=server.url,
            journal_dir=tmp_path / "j",
            on_error=lambda exc, info: infos.append(f"{exc} {info}"),
        )
        try:
            client.report("cus_1", "e", {"value": 1})
            assert client.flush(timeout=10).rejected == 1
        finally:
            client.close()
        tokens = list(server.tokens)
    assert tokens
    files = b"".join(p.read_bytes() for p in (tmp_path / "j").rglob("*") if p.is_file())
    seen = caplog.text + " ".join(infos)
    for token in tokens:
        assert token not in seen
        assert token.encode() not in files
    assert "***" in seen


def test_an_event_past_stripes_window_when_replayed_is_rejected_not_sent(tmp_path: Path):
    """An event reported 34 days 23 hours old and journaled for a day is kept in rejected/
    with the reason when replayed: Stripe would answer 200 and drop it unseen."""
    journal = tmp_path / "j"
    down = FlakyTransport([TransportError("down")] * 100, destination="stripe")
    old = datetime.now(timezone.utc) - timedelta(days=34, hours=23)
    with meterline.Client(
        "sk_x", destination="stripe", transport=down, journal_dir=journal, retry_attempts=1
    ) as client:
        client.report("cus", "e", {"value": 1}, timestamp=old)
        fresh = client.report("cus", "e", {"value": 2})
        assert client.flush(timeout=5).journaled == 2
    rec = RecordingTransport("stripe")
    client = meterline.Client("sk_x", destination="stripe", transport=rec, journal_dir=journal)
    try:
        client._pipeline.replayer._wall = lambda: time.time() + 86_400  # a day later
        result = client.replay(timeout=10)
    finally:
        client.close()
    assert (result.replayed, result.rejected) == (1, 1)
    assert rec.keys() == {fresh}
    assert ready_events(journal) == 0
    kept = b"".join(p.read_bytes() for p in (journal / "rejected").iterdir())
    assert b"older than stripe accepts" in kept
