"""meterline's own client against the reference server: Orb's 400 for a mixed batch."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from pathlib import Path

import httpx
import pytest

import meterline
from meterline.server import ReferenceServer
from meterline.testing import wait_until

KEY = "client-test-key"


@pytest.fixture
def reference() -> Iterator[ReferenceServer]:
    with ReferenceServer(api_keys=[KEY], grace_period="1h") as server:
        yield server


def test_a_mixed_batch_ends_with_the_good_counted_once_and_the_bad_rejected(
    reference: ReferenceServer, tmp_path: Path
) -> None:
    """The server's 400 names the bad keys; the client rejects those and resends the rest once."""
    auth = {"Authorization": f"Bearer {KEY}"}
    with httpx.Client(base_url=reference.url, headers=auth) as api:
        old = {
            "idempotency_key": "deprecated-key",
            "external_customer_id": "c",
            "event_name": "e",
            "timestamp": datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
            "properties": {"n": 0},
        }
        assert api.post("/ingest", json={"events": [old]}).status_code == 200
        assert api.put("/events/deprecated-key/deprecate").status_code == 200
    journal = tmp_path / "journal"
    client = meterline.Client(
        api_key=KEY, base_url=reference.url, journal_dir=journal, flush_interval=5
    )
    try:
        two_hours_ago = datetime.now(timezone.utc) - timedelta(hours=2)
        late = client.report("c", "e", {"n": 1}, timestamp=two_hours_ago)
        gone = client.report("c", "e", {"n": 2}, idempotency_key="deprecated-key")
        good = {client.report("c", "e", {"n": i}) for i in range(3, 9)}
        result = client.flush(timeout=10)
    finally:
        client.close(timeout=5)
    assert (result.sent, result.rejected, result.pending) == (6, 2, 0)
    assert {e["id"] for e in reference.events()} == good
    ingest_statuses = [r.status for r in reference.requests if r.path == "/v1/ingest"]
    assert ingest_statuses[-2:] == [400, 200]
    wait_until(lambda: len(list(journal.glob("**/rejected/*"))) > 0)
    kept = b"".join(p.read_bytes() for p in journal.glob("**/rejected/*") if p.is_file())
    assert late.encode() in kept
    assert gone.encode() in kept
