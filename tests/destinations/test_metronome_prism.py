"""meterline's Metronome requests pass a validating mock of Metronome's own OpenAPI
document (Prism)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

import meterline
from tests.support.prism import prism_server

pytestmark = [pytest.mark.slow, pytest.mark.timeout(240)]


@pytest.fixture(scope="module")
def prism_url() -> Iterator[str]:
    with prism_server("metronome-openapi.json") as url:
        yield url


def test_meterline_ships_to_metronomes_validating_mock_without_a_violation(
    prism_url: str, tmp_path: Any
) -> None:
    """120 events reported for Metronome are all accepted by the mock's empty 200:
    nothing rejected, nothing retried."""
    with meterline.Client(
        destination="metronome", base_url=prism_url, api_key="test", journal_dir=tmp_path / "j"
    ) as client:
        for i in range(120):
            client.report(f"cust_{i % 3}", "api_call", {"tokens": i, "model": "small", "ok": True})
        result = client.flush(timeout=30)
        stats = client.stats()
    assert (result.sent, result.rejected, result.pending) == (120, 0, 0)
    assert stats["retried"] == 0


def test_the_mock_is_live(prism_url: str) -> None:
    """The mock refuses what breaks the document: an empty array and a 129-character
    transaction_id are 4xx, one good event a 200."""
    import httpx

    event = {"transaction_id": "t", "customer_id": "c", "event_type": "e", "timestamp": "x"}
    headers = {"Authorization": "Bearer test"}
    url = f"{prism_url}/v1/ingest"
    assert httpx.post(url, json=[event], headers=headers).status_code == 200
    for body in ([], [{**event, "transaction_id": "k" * 129}]):
        assert 400 <= httpx.post(url, json=body, headers=headers).status_code < 500
