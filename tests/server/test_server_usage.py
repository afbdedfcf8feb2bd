"""GET /v1/usage: the half-open window, grouping, numeric sums, and parameter checks."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from meterline.server import ReferenceServer
from tests.server.helpers import event, stamp

START = "2026-05-01T11:00:00Z"
END = "2026-05-01T11:30:00Z"


def ingest(api: httpx.Client, *events: dict[str, Any]) -> None:
    response = api.post("/ingest", json={"events": list(events)})
    assert response.json() == {"validation_failed": []}


def report(api: httpx.Client, **params: str) -> dict[str, Any]:
    response = api.get("/usage", params={"start": START, "end": END, **params})
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


def test_the_window_includes_start_and_excludes_end(api: httpx.Client) -> None:
    """Events at start and a microsecond before end count; at end and before start do not."""
    ingest(
        api,
        event("before", timestamp="2026-05-01T10:59:59.999999Z"),
        event("at-start", timestamp=START),
        event("just-before-end", timestamp="2026-05-01T11:29:59.999999Z"),
        event("at-end", timestamp=END),
    )
    body = report(api)
    assert (body["start"], body["end"]) == (START, END)
    assert body["usage"] == [
        {"customer": "cust_1", "event_name": "api_call", "count": 2, "sums": {"tokens": 20}}
    ]


def test_sums_cover_numbers_only_and_ints_stay_ints(api: httpx.Client) -> None:
    """Numeric properties are summed (int stays int, int+float is float); others are skipped."""
    ingest(
        api,
        event("1", timestamp=START, properties={"n": 2, "x": 0.5, "ok": True, "tier": "pro"}),
        event("2", timestamp=START, properties={"n": 3, "x": 1, "big": 10**20}),
        event("3", timestamp=START, properties={}),
    )
    (row,) = report(api)["usage"]
    assert row["count"] == 3
    assert row["sums"] == {"n": 5, "x": 1.5, "big": 10**20}
    assert isinstance(row["sums"]["n"], int)
    assert isinstance(row["sums"]["x"], float)


def test_rows_are_grouped_and_sorted_by_customer_then_event_name(api: httpx.Client) -> None:
    """One row per customer and event name, sorted; either customer field names the customer."""
    ingest(
        api,
        event("1", customer="zed", timestamp=START),
        event("2", customer="amy", event_name="upload", timestamp=START),
        event("3", customer="amy", event_name="api_call", timestamp=START),
        event("4", customer="amy", field="customer_id", event_name="api_call", timestamp=START),
    )
    rows = [(r["customer"], r["event_name"], r["count"]) for r in report(api)["usage"]]
    assert rows == [("amy", "api_call", 2), ("amy", "upload", 1), ("zed", "api_call", 1)]


def test_customer_filter(api: httpx.Client) -> None:
    """customer= limits the report to one customer."""
    ingest(api, event("1", customer="amy", timestamp=START), event("2", timestamp=START))
    assert [r["customer"] for r in report(api, customer="amy")["usage"]] == ["amy"]
    assert report(api, customer="nobody")["usage"] == []


def test_offsets_are_converted_and_an_unencoded_plus_is_understood(
    api: httpx.Client, reference: ReferenceServer
) -> None:
    """Bounds with offsets are converted to UTC, even when '+' arrives as a space."""
    ingest(api, event("1", timestamp=START))
    url = f"{reference.url}/usage?start=2026-05-01T13:00:00+02:00&end=2026-05-01T07:30:00-04:00"
    response = api.get(url)
    assert response.status_code == 200, response.text
    assert (response.json()["start"], response.json()["end"]) == (START, END)
    assert response.json()["usage"][0]["count"] == 1


def test_an_empty_window_is_an_empty_report(api: httpx.Client) -> None:
    """start == end is a valid, empty window."""
    ingest(api, event("1", timestamp=START))
    assert report(api, end=START)["usage"] == []


def test_deprecated_and_amended_events_count_by_their_live_version(api: httpx.Client) -> None:
    """Deprecated events are left out; an amended event counts once, with its new values."""
    ingest(api, event("a", timestamp=START), event("b", timestamp=START))
    amended = {k: v for k, v in event("a", timestamp=START).items() if k != "idempotency_key"}
    api.put("/events/a", json={**amended, "properties": {"tokens": 7}})
    api.put("/events/b/deprecate")
    assert report(api)["usage"][0] == {
        "customer": "cust_1",
        "event_name": "api_call",
        "count": 1,
        "sums": {"tokens": 7},
    }


@pytest.mark.parametrize(
    "params",
    [
        {"end": END},
        {"start": START},
        {"start": "2026-05-01T11:00:00", "end": END},
        {"start": "noon", "end": END},
        {"start": END, "end": START},
        {"start": START, "end": END, "customer": ""},
        {"start": START, "end": END, "limit": "5"},
    ],
    ids=["no-start", "no-end", "naive", "garbage", "reversed", "empty-customer", "unknown"],
)
def test_bad_parameters_answer_400(api: httpx.Client, params: dict[str, str]) -> None:
    """Missing, naive, unparsable or reversed bounds and unknown parameters answer 400."""
    response = api.get("/usage", params=params)
    assert response.status_code == 400
    assert response.json()["validation_errors"]


def test_usage_needs_the_api_key(reference: ReferenceServer) -> None:
    """The usage report is authenticated like ingestion."""
    response = httpx.get(f"{reference.url}/usage", params={"start": START, "end": stamp()})
    assert response.status_code == 401
