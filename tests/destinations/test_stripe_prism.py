"""meterline's Stripe requests pass a validating mock of Stripe's own OpenAPI document
(Prism): the session request with the secret key, then the stream with the token.

The mock serves both paths at one base URL (``stream_url`` defaults to ``base_url`` for
any URL but Stripe's). Its session is the document's example: the token ``"string"``,
which the mock's stream accepts as a bearer, and an ``expires_at`` in 2019, so each batch
opens a session of its own: the renewal path is exercised by every batch.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

import meterline
from tests.support.prism import prism_server

pytestmark = [pytest.mark.slow, pytest.mark.timeout(240)]


@pytest.fixture(scope="module")
def prism_url() -> Iterator[str]:
    with prism_server("stripe-meter-events-openapi.json") as url:
        yield url


def test_meterline_ships_to_stripes_validating_mock_without_a_violation(
    prism_url: str, tmp_path: Path
) -> None:
    """120 events reported for Stripe are all accepted by the mock's stream: nothing
    rejected, nothing retried."""
    with meterline.Client(
        destination="stripe", base_url=prism_url, api_key="test", journal_dir=tmp_path / "j"
    ) as client:
        for i in range(120):
            client.report(f"cus_{i % 3}", "api_call", {"value": i, "ok": True, "x": 0.5})
        result = client.flush(timeout=30)
        stats = client.stats()
    assert (result.sent, result.rejected, result.pending) == (120, 0, 0)
    assert stats["retried"] == 0


def test_the_mock_is_live(prism_url: str) -> None:
    """The mock checks what the document says: the session needs a credential and takes
    no body; the stream needs one and refuses a number as a payload value."""
    session = f"{prism_url}/v2/billing/meter_event_session"
    stream = f"{prism_url}/v2/billing/meter_event_stream"
    key = {"Authorization": "Bearer test"}
    granted = httpx.post(session, headers=key)
    assert granted.status_code == 200
    token = {"Authorization": f"Bearer {granted.json()['authentication_token']}"}
    assert httpx.post(session).status_code == 401
    assert httpx.post(session, headers=key, json={}).status_code == 415
    event = {"event_name": "e", "payload": {"value": "1", "stripe_customer_id": "c"}}
    assert httpx.post(stream, headers=token, json={"events": [event]}).status_code == 200
    assert httpx.post(stream, json={"events": [event]}).status_code == 401
    bad = {**event, "payload": {"value": 1}}
    assert httpx.post(stream, headers=token, json={"events": [bad]}).status_code == 422
