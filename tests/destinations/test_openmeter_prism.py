"""meterline's OpenMeter requests pass a validating mock of OpenMeter's own OpenAPI
document (Prism).

Prism 5 validates a request body against the *first* media type of an operation's
``requestBody.content`` whatever the request's Content-Type (a CloudEvents batch sent as
``application/cloudevents-batch+json`` is refused with "Request body must be object", the
single-event schema). The mock is therefore built from a copy of the document whose
``POST /api/v1/events`` keeps only the batch media type, the one meterline sends; nothing
else in the document changes.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

import meterline
from tests.destinations.test_openmeter_schema import _load_yaml
from tests.support.prism import prism_server, spec_path

pytestmark = [pytest.mark.slow, pytest.mark.timeout(240)]

BATCH = "application/cloudevents-batch+json"


@pytest.fixture(scope="module")
def prism_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    spec = _load_yaml(spec_path("openmeter-openapi.yaml"))
    body = spec["paths"]["/api/v1/events"]["post"]["requestBody"]
    body["content"] = {BATCH: body["content"][BATCH]}
    copy = tmp_path_factory.mktemp("openmeter") / "openmeter-batch-only.json"
    copy.write_text(json.dumps(spec))
    with prism_server(str(copy)) as url:  # an absolute path is found as it is
        yield url


def test_meterline_ships_to_openmeters_validating_mock_without_a_violation(
    prism_url: str, tmp_path: Path
) -> None:
    """120 events reported for OpenMeter are all accepted (204): nothing rejected, nothing
    retried."""
    with meterline.Client(
        destination="openmeter", base_url=prism_url, api_key="test", journal_dir=tmp_path / "j"
    ) as client:
        for i in range(120):
            client.report(f"cust_{i % 3}", "api_call", {"tokens": i, "model": "small", "x": 0.5})
        result = client.flush(timeout=30)
        stats = client.stats()
    assert (result.sent, result.rejected, result.pending) == (120, 0, 0)
    assert stats["retried"] == 0


def test_the_mock_is_live(prism_url: str) -> None:
    """The mock refuses what breaks the document (an empty id is a 400 problem), so the
    first test's acceptance means something."""
    event: dict[str, Any] = {
        "specversion": "1.0",
        "id": "k",
        "source": "meterline",
        "type": "api_call",
        "subject": "cust",
        "time": "2026-01-01T00:00:00.000000Z",
        "data": {},
    }
    headers = {"Content-Type": BATCH, "Authorization": "Bearer test"}
    ok = httpx.post(f"{prism_url}/api/v1/events", content=json.dumps([event]), headers=headers)
    bad = httpx.post(
        f"{prism_url}/api/v1/events", content=json.dumps([{**event, "id": ""}]), headers=headers
    )
    assert (ok.status_code, bad.status_code) == (204, 400)
    assert bad.headers["content-type"].startswith("application/problem+json")
