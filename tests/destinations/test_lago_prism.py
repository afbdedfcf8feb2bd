"""meterline's Lago requests pass a validating mock of Lago's own OpenAPI document (Prism)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

import meterline
from tests.support.prism import prism_server

pytestmark = [pytest.mark.slow, pytest.mark.timeout(240)]


@pytest.fixture(scope="module")
def prism_url() -> Iterator[str]:
    with prism_server("lago-openapi.yaml") as url:
        yield url


def test_meterline_ships_to_lagos_validating_mock_without_a_violation(
    prism_url: str, tmp_path: Any
) -> None:
    """120 events reported for Lago are all accepted by the mock: nothing rejected,
    nothing retried. (Property values are text, bools and fractional numbers: the
    document's ``oneOf: [string, integer, number]`` refuses any whole number.)"""
    with meterline.Client(
        destination="lago", base_url=prism_url, api_key="test", journal_dir=tmp_path / "j"
    ) as client:
        for i in range(120):
            client.report(f"sub_{i % 3}", "api_call", {"gb": i + 0.5, "model": "small", "ok": True})
        result = client.flush(timeout=30)
        stats = client.stats()
    assert (result.sent, result.rejected, result.pending) == (120, 0, 0)
    assert stats["retried"] == 0


def test_the_mock_is_live(prism_url: str, tmp_path: Any) -> None:
    """The mock refuses what breaks the document: an event without its code is a 422,
    so the first test's acceptance means something."""
    import httpx

    event = {"transaction_id": "t", "external_subscription_id": "s", "timestamp": "1.000"}
    headers = {"Authorization": "Bearer test"}
    bad = httpx.post(f"{prism_url}/events/batch", json={"events": [event]}, headers=headers)
    ok = httpx.post(
        f"{prism_url}/events/batch", json={"events": [{**event, "code": "c"}]}, headers=headers
    )
    assert (bad.status_code, ok.status_code) == (422, 200)
