"""The events resource: amend, deprecate, search, and the audit trail of versions."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from meterline.server import ReferenceServer
from tests.server.helpers import Clock, event, stamp

TS = stamp(-60)


def ingest(api: httpx.Client, *events: dict[str, Any]) -> None:
    response = api.post("/ingest", json={"events": list(events)})
    assert response.json() == {"validation_failed": []}


def amendment(**changes: Any) -> dict[str, Any]:
    """The body of an amendment of event("a"): an event without its idempotency key."""
    body = event("a", timestamp=TS, properties={"tokens": 99})
    del body["idempotency_key"]
    return {**body, **changes}


def usage(api: httpx.Client) -> list[dict[str, Any]]:
    response = api.get("/usage", params={"start": stamp(-3600), "end": stamp(3600)})
    rows: list[dict[str, Any]] = response.json()["usage"]
    return rows


# -- amend ----------------------------------------------------------------------------------------


def test_amend_replaces_the_live_version_and_keeps_the_old_one(
    api: httpx.Client, reference: ReferenceServer
) -> None:
    """An amendment becomes the counted version; the original stays in the audit trail."""
    ingest(api, event("a", timestamp=TS, properties={"tokens": 5}))
    response = api.put("/events/a", json=amendment())
    assert (response.status_code, response.json()) == (200, {"amended": "a"})
    assert reference.event_count() == 1
    assert usage(api)[0]["sums"] == {"tokens": 99}
    old, new = reference.versions("a")
    assert (old["version"], old["status"], old["properties"]) == (1, "amended", {"tokens": 5})
    assert (new["version"], new["status"], new["properties"]) == (2, "live", {"tokens": 99})
    assert old["superseded_at"] == new["recorded_at"]


def test_amend_can_be_repeated_and_an_identical_amendment_changes_nothing(
    api: httpx.Client, reference: ReferenceServer
) -> None:
    """Each differing amendment adds a version; resending the same one is idempotent."""
    ingest(api, event("a", timestamp=TS))
    api.put("/events/a", json=amendment())
    api.put("/events/a", json=amendment())
    api.put("/events/a", json=amendment(event_name="renamed"))
    versions = reference.versions("a")
    assert [v["version"] for v in versions] == [1, 2, 3]
    assert versions[-1]["event_name"] == "renamed"


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (amendment(timestamp=stamp(-30)), "timestamp must match the original"),
        (amendment(external_customer_id="cust_2"), "customer id must match"),
        ({**amendment(external_customer_id=None), "customer_id": "cust_1"}, "customer id must"),
        ({**amendment(), "customer_id": "orb_1"}, "exactly one"),
        ({**amendment(), "idempotency_key": "a"}, "idempotency_key is not accepted"),
        ({**amendment(), "extra": 1}, "unknown field `extra`"),
        ({**amendment(), "properties": {"x": {"y": 1}}}, "not a nested dict"),
        ({k: v for k, v in amendment().items() if k != "properties"}, "`properties` is required"),
        (amendment(timestamp="2026-05-01T11:59:00+01:00"), "must be in UTC"),
    ],
    ids=[
        "other-timestamp",
        "other-customer",
        "other-customer-field",
        "two-customers",
        "idempotency-key",
        "unknown-field",
        "nested",
        "no-properties",
        "not-utc",
    ],
)
def test_invalid_amendments_answer_400_and_change_nothing(
    api: httpx.Client, reference: ReferenceServer, body: dict[str, Any], message: str
) -> None:
    """An amendment that breaks a rule answers 400 and leaves the event as it was."""
    ingest(api, event("a", timestamp=TS))
    response = api.put("/events/a", json=body)
    assert response.status_code == 400
    assert message in response.json()["detail"]
    assert len(reference.versions("a")) == 1


def test_amending_an_unknown_event_answers_404(api: httpx.Client) -> None:
    """PUT /v1/events/{id} for a key never ingested answers Orb's resource-not-found 404."""
    response = api.put("/events/nope", json=amendment())
    assert response.status_code == 404
    body = response.json()
    assert body["type"].endswith("#404-resource-not-found")
    assert body["title"]


def test_an_old_event_can_still_be_amended(
    api: httpx.Client, reference: ReferenceServer, clock: Clock
) -> None:
    """The grace period limits ingestion, not amendment of what was already accepted."""
    ingest(api, event("a", timestamp=TS))
    clock.now += 3 * 24 * 3600
    assert api.put("/events/a", json=amendment()).status_code == 200


def test_event_ids_are_percent_decoded(api: httpx.Client, reference: ReferenceServer) -> None:
    """An idempotency key with a slash is addressed as one percent-encoded path segment."""
    body = event("a/b", timestamp=TS)
    ingest(api, body)
    assert api.put("/events/a%2Fb", json=amendment()).json() == {"amended": "a/b"}
    assert api.put("/events/a%2Fb/deprecate").json() == {"deprecated": "a/b"}


# -- deprecate ------------------------------------------------------------------------------------


def test_deprecate_stops_counting_and_is_idempotent(
    api: httpx.Client, reference: ReferenceServer
) -> None:
    """A deprecated event no longer counts; deprecating it again still answers 200."""
    ingest(api, event("a"), event("b"))
    for _ in range(2):
        response = api.put("/events/a/deprecate")
        assert (response.status_code, response.json()) == (200, {"deprecated": "a"})
    assert reference.event_count() == 1
    assert usage(api)[0]["count"] == 1
    assert [e["id"] for e in reference.events(include_deprecated=True)] == ["a", "b"]
    assert reference.versions("a")[-1]["status"] == "deprecated"


def test_a_deprecated_key_cannot_be_ingested_again(
    api: httpx.Client, reference: ReferenceServer
) -> None:
    """Re-ingesting a deprecated key is a 400 naming it, and nothing of its batch is stored."""
    ingest(api, event("a"))
    api.put("/events/a/deprecate")
    response = api.post("/ingest", json={"events": [event("a"), event("b")]})
    assert response.status_code == 400
    failed = response.json()["validation_errors"]
    assert [f["idempotency_key"] for f in failed] == ["a"]
    assert "deprecated" in failed[0]["validation_errors"][0]
    assert reference.event_count() == 0


def test_deprecated_events_cannot_be_amended(api: httpx.Client) -> None:
    """Amending a deprecated event answers 400."""
    ingest(api, event("a", timestamp=TS))
    api.put("/events/a/deprecate")
    response = api.put("/events/a", json=amendment())
    assert response.status_code == 400
    assert "deprecated" in response.json()["detail"]


def test_deprecating_an_unknown_event_answers_404(api: httpx.Client) -> None:
    """Deprecating a key never ingested answers 404."""
    assert api.put("/events/nope/deprecate").status_code == 404


# -- search ---------------------------------------------------------------------------------------


def test_search_returns_live_versions_in_the_order_asked(api: httpx.Client) -> None:
    """Search answers Orb Event objects for known ids, in request order, amended and flagged."""
    ingest(api, event("a", timestamp=TS), event("b", field="customer_id", customer="orb_1"))
    api.put("/events/a", json=amendment())
    api.put("/events/b/deprecate")
    response = api.post("/events/search", json={"event_ids": ["b", "missing", "a", "b"]})
    assert response.status_code == 200
    body = response.json()
    assert body["pagination_metadata"] == {"has_more": False, "next_cursor": None}
    b, a = body["data"]
    assert a == {
        "id": "a",
        "customer_id": None,
        "external_customer_id": "cust_1",
        "event_name": "api_call",
        "properties": {"tokens": 99},
        "timestamp": TS,
        "deprecated": False,
    }
    assert (b["id"], b["customer_id"], b["deprecated"]) == ("b", "orb_1", True)


def test_search_filters_by_timeframe(api: httpx.Client) -> None:
    """timeframe_start is inclusive and timeframe_end exclusive, offsets allowed."""
    ingest(api, event("early", timestamp=stamp(-600)), event("late", timestamp=stamp(-60)))
    ids = ["early", "late"]
    late_only = {"event_ids": ids, "timeframe_start": stamp(-60)}
    assert [e["id"] for e in api.post("/events/search", json=late_only).json()["data"]] == ["late"]
    early_only = {"event_ids": ids, "timeframe_end": "2026-05-01T13:59:00+02:00"}
    found = api.post("/events/search", json=early_only).json()["data"]
    assert [e["id"] for e in found] == ["early"]


@pytest.mark.parametrize(
    "body",
    [
        {},
        {"event_ids": []},
        {"event_ids": ["a"] * 501},
        {"event_ids": [1]},
        {"event_ids": ["a"], "limit": 5},
        {"event_ids": ["a"], "timeframe_start": "yesterday"},
        ["a"],
    ],
    ids=["missing", "empty", "too-many", "not-strings", "unknown-field", "bad-time", "array"],
)
def test_bad_search_criteria_answer_400(api: httpx.Client, body: object) -> None:
    """Search needs 1 to 500 string ids and no unknown criteria."""
    assert api.post("/events/search", json=body).status_code == 400
