"""Orb's official Python SDK (``orb-billing``) against the reference server: every events call."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from typing import Any

import orb
import pytest

from meterline.server import ReferenceServer

KEY = "sdk-test-key"


@pytest.fixture
def sdk() -> Iterator[tuple[orb.Orb, ReferenceServer]]:
    with ReferenceServer(api_keys=[KEY]) as server:
        client = orb.Orb(api_key=KEY, base_url=server.url, max_retries=0, timeout=10.0)
        with client:
            yield client, server


def _at(hours_ago: float) -> str:
    moment = datetime.now(timezone.utc) - timedelta(hours=hours_ago)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _event(key: str, hours_ago: float = 0.01, **change: Any) -> dict[str, Any]:
    return {
        "idempotency_key": key,
        "external_customer_id": "cust_1",
        "event_name": "api_call",
        "timestamp": _at(hours_ago),
        "properties": {"tokens": 3},
        **change,
    }


def test_ingest_update_deprecate_search_and_volume(sdk: tuple[orb.Orb, ReferenceServer]) -> None:
    """ingest, update (amend), deprecate, search and volume.list answer as Orb's SDK expects."""
    client, server = sdk
    first = _event("a")
    assert client.events.ingest(events=[first, _event("b")]).validation_failed == []
    raw = client.events.with_raw_response.ingest(
        events=[_event("b"), _event("c")], extra_query={"debug": "true"}
    )
    assert raw.status_code == 200
    assert raw.http_response.json()["debug"] == {"duplicate": ["b"], "ingested": ["c"]}
    amended = client.events.update(
        "a",
        event_name="api_call",
        properties={"tokens": 5},
        timestamp=first["timestamp"],
        external_customer_id="cust_1",
    )
    assert amended.amended == "a"
    assert client.events.deprecate("c").deprecated == "c"
    found = client.events.search(event_ids=["a", "b", "c", "missing"])
    by_id = {event.id: event for event in found.data}
    assert set(by_id) == {"a", "b", "c"}
    assert [by_id[k].deprecated for k in "abc"] == [False, False, True]
    assert by_id["a"].properties == {"tokens": 5}
    assert by_id["a"].external_customer_id == "cust_1"
    volume = client.events.volume.list(timeframe_start=_at(2))
    assert sum(item.count for item in volume.data) == 2  # a deprecated event does not count
    assert server.event_count() == 2


def test_a_per_event_failure_is_a_bad_request_naming_the_key(
    sdk: tuple[orb.Orb, ReferenceServer],
) -> None:
    """A batch with an event 13 hours old raises BadRequestError naming it; nothing counts."""
    client, server = sdk
    with pytest.raises(orb.BadRequestError) as caught:
        client.events.ingest(events=[_event("good"), _event("late", hours_ago=13)])
    body = caught.value.body
    assert isinstance(body, dict)
    assert [entry["idempotency_key"] for entry in body["validation_errors"]] == ["late"]
    assert server.event_count() == 0


def test_backfill_create_ingest_list_fetch_close_and_revert(
    sdk: tuple[orb.Orb, ReferenceServer],
) -> None:
    """A backfill's events count only once it is closed, and no longer once it is reverted."""
    client, server = sdk
    start, end = _at(72), _at(48)
    backfill = client.events.backfills.create(
        timeframe_start=start, timeframe_end=end, replace_existing_events=False
    )
    assert backfill.status == "pending"
    old = _event("old", hours_ago=60)
    ingested = client.events.ingest(events=[old], backfill_id=backfill.id)
    assert ingested.validation_failed == []
    assert server.event_count() == 0  # not before the backfill is closed
    assert client.events.search(event_ids=["old"], timeframe_start=start).data == []
    fetched = client.events.backfills.fetch(backfill.id)
    assert (fetched.id, fetched.events_ingested) == (backfill.id, 1)
    listed = client.events.backfills.list()
    assert [item.id for item in listed.data] == [backfill.id]
    closed = client.events.backfills.close(backfill.id)
    assert closed.status == "reflected"
    assert server.event_count() == 1
    found = client.events.search(event_ids=["old"], timeframe_start=start, timeframe_end=end)
    assert [event.id for event in found.data] == ["old"]
    volume = client.events.volume.list(timeframe_start=start, timeframe_end=end)
    assert sum(item.count for item in volume.data) == 1
    with pytest.raises(orb.ConflictError):
        client.events.ingest(events=[_event("late", hours_ago=59)], backfill_id=backfill.id)
    reverted = client.events.backfills.revert(backfill.id)
    assert reverted.status == "reverted"
    assert reverted.reverted_at is not None
    assert server.event_count() == 0
    assert client.events.backfills.list(status="reverted").data[0].id == backfill.id


def test_unknown_backfill_is_not_found(sdk: tuple[orb.Orb, ReferenceServer]) -> None:
    """fetch, close and revert of an unknown backfill raise NotFoundError, not a 405 or 500."""
    client, _ = sdk
    for call in (
        client.events.backfills.fetch,
        client.events.backfills.close,
        client.events.backfills.revert,
    ):
        with pytest.raises(orb.NotFoundError):
            call("bf_missing")


async def _async_calls(server: ReferenceServer) -> None:
    async with orb.AsyncOrb(api_key=KEY, base_url=server.url, max_retries=0) as client:
        assert (await client.events.ingest(events=[_event("x")])).validation_failed == []
        found = await client.events.search(event_ids=["x"])
        assert [event.id for event in found.data] == ["x"]
        volume = await client.events.volume.list(timeframe_start=_at(1))
        assert sum(item.count for item in volume.data) == 1
        backfill = await client.events.backfills.create(
            timeframe_start=_at(30), timeframe_end=_at(20), replace_existing_events=False
        )
        assert (await client.events.backfills.close(backfill.id)).status == "reflected"


def test_the_async_client_works_too(sdk: tuple[orb.Orb, ReferenceServer]) -> None:
    """AsyncOrb's events calls answer the same way."""
    import asyncio

    asyncio.run(_async_calls(sdk[1]))
