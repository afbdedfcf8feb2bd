"""Backfills, event volume and search's default timeframe, over plain HTTP."""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any

import httpx

from meterline.server import ReferenceServer
from tests.server.helpers import Clock, event, stamp

HOUR = 3600.0


def _create(api: httpx.Client, **body: Any) -> httpx.Response:
    return api.post("/events/backfills", json=body)


def _open(api: httpx.Client, start: float, end: float, **body: Any) -> str:
    response = _create(api, timeframe_start=stamp(start), timeframe_end=stamp(end), **body)
    assert response.status_code == 200, response.text
    return str(response.json()["id"])


def test_new_backfill_rules(api: httpx.Client) -> None:
    """A timeframe must be ordered and at most 31 days; overlapping pending ones conflict."""
    backwards = _create(api, timeframe_start=stamp(-HOUR), timeframe_end=stamp(-2 * HOUR))
    assert backwards.status_code == 400
    too_long = _create(api, timeframe_start=stamp(-32 * 86400), timeframe_end=stamp(-HOUR))
    assert too_long.status_code == 400
    assert _create(api, timeframe_start=stamp(-HOUR)).status_code == 400
    _open(api, -48 * HOUR, -24 * HOUR)
    overlap = _create(api, timeframe_start=stamp(-30 * HOUR), timeframe_end=stamp(-20 * HOUR))
    assert overlap.status_code == 409


def test_backfill_events_must_fit_its_timeframe_and_customer(
    api: httpx.Client, reference: ReferenceServer
) -> None:
    """Outside the timeframe or for another customer is a 400 naming the key; nothing stored."""
    bf = _open(api, -48 * HOUR, -24 * HOUR, external_customer_id="cust_1")
    outside = api.post(
        f"/ingest?backfill_id={bf}", json={"events": [event("x", timestamp=stamp(-20 * HOUR))]}
    )
    assert outside.status_code == 400
    assert "timeframe" in outside.json()["validation_errors"][0]["validation_errors"][0]
    other = event("y", customer="cust_2", timestamp=stamp(-30 * HOUR))
    wrong = api.post(f"/ingest?backfill_id={bf}", json={"events": [other]})
    assert [e["idempotency_key"] for e in wrong.json()["validation_errors"]] == ["y"]
    fine = event("z", timestamp=stamp(-30 * HOUR))  # older than the grace period: allowed here
    assert api.post(f"/ingest?backfill_id={bf}", json={"events": [fine]}).status_code == 200
    assert api.get(f"/events/backfills/{bf}").json()["events_ingested"] == 1


def test_a_backfill_closes_itself_at_its_close_time(
    api: httpx.Client, reference: ReferenceServer, clock: Clock
) -> None:
    """Without a close_time it closes a day after creation; then it takes no more events."""
    bf = _open(api, -48 * HOUR, -24 * HOUR)
    backfill = api.get(f"/events/backfills/{bf}").json()
    assert backfill["close_time"] == "2026-05-02T12:00:00Z"
    old = event("old", timestamp=stamp(-30 * HOUR))
    assert api.post(f"/ingest?backfill_id={bf}", json={"events": [old]}).status_code == 200
    clock.now += 86400
    assert reference.event_count() == 1
    assert api.get(f"/events/backfills/{bf}").json()["status"] == "reflected"
    late = api.post(f"/ingest?backfill_id={bf}", json={"events": [event("late")]})
    assert late.status_code == 409
    assert api.post(f"/events/backfills/{bf}/close").status_code == 409


def test_replace_existing_events_and_revert(api: httpx.Client, reference: ReferenceServer) -> None:
    """Closing a replacing backfill stops its timeframe's old events counting; revert undoes it."""
    api.post("/ingest", json={"events": [event("live", timestamp=stamp(-2 * HOUR))]})
    bf = _open(api, -3 * HOUR, -HOUR)  # replace_existing_events defaults to true, as in Orb
    new = event("new", timestamp=stamp(-2 * HOUR))
    api.post(f"/ingest?backfill_id={bf}", json={"events": [new]})
    assert [e["id"] for e in reference.events()] == ["live"]
    assert api.post(f"/events/backfills/{bf}/close").json()["status"] == "reflected"
    assert [e["id"] for e in reference.events()] == ["new"]
    assert api.post(f"/events/backfills/{bf}/revert").json()["status"] == "reverted"
    assert [e["id"] for e in reference.events()] == ["live"]
    assert api.post(f"/events/backfills/{bf}/revert").status_code == 409
    again = api.post("/ingest", json={"events": [new]}, params={"debug": "true"})
    assert again.json()["debug"]["ingested"] == ["new"]  # a reverted key may be sent again


def test_backfill_list_pages_newest_first(api: httpx.Client) -> None:
    """The list is newest first, with a cursor while more remain."""
    ids = [_open(api, -(i + 2) * 86400, -(i + 1) * 86400) for i in range(3)]
    first = api.get("/events/backfills", params={"limit": 2}).json()
    assert [b["id"] for b in first["data"]] == ids[::-1][:2]
    assert first["pagination_metadata"]["has_more"] is True
    cursor = first["pagination_metadata"]["next_cursor"]
    rest = api.get("/events/backfills", params={"limit": 2, "cursor": cursor}).json()
    assert [b["id"] for b in rest["data"]] == [ids[0]]
    assert rest["pagination_metadata"] == {"has_more": False, "next_cursor": None}
    assert api.get("/events/backfills", params={"limit": 0}).status_code == 400


def test_volume_counts_per_hour(api: httpx.Client) -> None:
    """Volume counts live events per hour of their timestamp, oldest hour first."""
    stamps = [stamp(-3 * HOUR), stamp(-3 * HOUR + 1), stamp(-HOUR)]
    api.post(
        "/ingest", json={"events": [event(f"k{i}", timestamp=s) for i, s in enumerate(stamps)]}
    )
    body = api.get("/events/volume", params={"timeframe_start": stamp(-4 * HOUR)}).json()
    assert [item["count"] for item in body["data"]] == [2, 1]
    assert body["data"][0]["timeframe_start"] == "2026-05-01T09:00:00Z"
    assert api.get("/events/volume").status_code == 400
    assert api.put("/events/volume", json={}).status_code != 405  # still an event id for PUT


def test_search_defaults_to_the_last_week(api: httpx.Client, clock: Clock) -> None:
    """Without a timeframe, search covers the week up to now, as Orb's does."""
    api.post("/ingest", json={"events": [event("a", properties={})]})
    clock.now += 8 * 86400
    assert api.post("/events/search", json={"event_ids": ["a"]}).json()["data"] == []
    wide = {"event_ids": ["a"], "timeframe_start": stamp(-86400)}
    found = api.post("/events/search", json=wide).json()["data"]
    assert found[0]["properties"] == {}  # kept as ingested, although Event says minProperties 1


def test_head_options_and_trace_are_405_with_allow(api: httpx.Client) -> None:
    """HEAD, OPTIONS and TRACE are refused with 405 and Allow, which no SDK retries."""
    for method in ("HEAD", "OPTIONS", "TRACE"):
        response = api.request(method, "/events/backfills")
        assert (response.status_code, response.headers["Allow"]) == (405, "GET, POST")


def test_a_version_1_database_is_upgraded_in_place(tmp_path: Path) -> None:
    """A database written before backfills gains their table and columns, keeping its events."""
    path = tmp_path / "v1.db"
    with sqlite3.connect(path) as db:
        db.executescript(V1_SCHEMA)
        db.execute(
            "INSERT INTO events VALUES ('k', 'c', NULL, 'c', 'e', '2026-05-01T11:00:00Z',"
            " 1777633200000000, '{}', 1, '2026-05-01T11:00:00Z', NULL)"
        )
    db.close()
    with ReferenceServer(db=path) as server:
        assert server.event_count() == 1
    with sqlite3.connect(path) as db:
        assert db.execute("PRAGMA user_version").fetchone()[0] == 2
    db.close()


V1_SCHEMA = """
CREATE TABLE events (
    idempotency_key TEXT PRIMARY KEY, customer TEXT NOT NULL, customer_id TEXT,
    external_customer_id TEXT, event_name TEXT NOT NULL, timestamp TEXT NOT NULL,
    ts_us INTEGER NOT NULL, properties TEXT NOT NULL, version INTEGER NOT NULL DEFAULT 1,
    recorded_at TEXT NOT NULL, deprecated_at TEXT
);
CREATE TABLE event_versions (
    idempotency_key TEXT NOT NULL, customer TEXT NOT NULL, customer_id TEXT,
    external_customer_id TEXT, event_name TEXT NOT NULL, timestamp TEXT NOT NULL,
    ts_us INTEGER NOT NULL, properties TEXT NOT NULL, version INTEGER NOT NULL,
    recorded_at TEXT NOT NULL, superseded_at TEXT NOT NULL,
    PRIMARY KEY (idempotency_key, version)
);
PRAGMA user_version = 1;
"""
