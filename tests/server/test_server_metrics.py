"""Billable metrics: definitions over HTTP and in files, and their values in GET /v1/usage."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import httpx
import pytest

from meterline.server import ReferenceServer
from meterline.server._metrics import Metric, MetricError, load_metrics
from tests.server.helpers import API_KEY, Clock, event, stamp

HOUR = 3600.0
START, END = stamp(-HOUR), stamp(HOUR)
METRICS = [
    {"name": "calls", "event_name": "api_call", "aggregation": "count"},
    {"name": "tokens", "event_name": "api_call", "aggregation": "sum", "property": "tokens"},
    {"name": "peak", "event_name": "api_call", "aggregation": "max", "property": "tokens"},
    {"name": "models", "event_name": "api_call", "aggregation": "unique", "property": "model"},
    {"name": "seats", "event_name": "seats", "aggregation": "latest", "property": "n"},
]


@pytest.fixture
def metered(clock: Clock) -> Any:
    with ReferenceServer(api_keys=[API_KEY], clock=clock, metrics=METRICS) as server:
        headers = {"Authorization": f"Bearer {API_KEY}"}
        with httpx.Client(base_url=server.url, headers=headers, timeout=10.0) as client:
            yield client


def ingest(api: httpx.Client, *events: dict[str, Any], backfill: str | None = None) -> None:
    params = {"backfill_id": backfill} if backfill else {}
    response = api.post("/ingest", json={"events": list(events)}, params=params)
    assert response.json() == {"validation_failed": []}, response.text


def values(api: httpx.Client, **params: str) -> dict[str, dict[str, Any]]:
    """The metric values of a usage report, by customer then metric."""
    response = api.get("/usage", params={"start": START, "end": END, **params})
    assert response.status_code == 200, response.text
    out: dict[str, dict[str, Any]] = {}
    for row in response.json()["metrics"]:
        out.setdefault(row["customer"], {})[row["metric"]] = row["value"]
    return out


def seat(key: str, n: object, seconds: float, customer: str = "cust_1") -> dict[str, Any]:
    return event(
        key, customer=customer, event_name="seats", properties={"n": n}, timestamp=stamp(seconds)
    )


def test_each_aggregation_per_customer(metered: httpx.Client) -> None:
    """count, sum, max, unique and latest are computed per customer over the window."""
    ingest(
        metered,
        event("1", properties={"tokens": 5, "model": "small"}),
        event("2", properties={"tokens": 7.5, "model": "large"}),
        event("3", properties={"tokens": 2, "model": "small"}),
        event("4", customer="amy", properties={"tokens": 1}),
        seat("s1", 3, -120),
        seat("s2", 9, -60),
    )
    assert values(metered) == {
        "amy": {"calls": 1, "tokens": 1, "peak": 1, "models": 0, "seats": None},
        "cust_1": {"calls": 3, "tokens": 14.5, "peak": 7.5, "models": 2, "seats": 9},
    }


def test_rows_are_sorted_and_keep_the_old_fields(metered: httpx.Client) -> None:
    """Metric rows come sorted by customer then metric name; usage rows are unchanged."""
    ingest(metered, event("1", customer="zed"), event("2", customer="amy"))
    body = metered.get("/usage", params={"start": START, "end": END}).json()
    assert [(r["customer"], r["metric"]) for r in body["metrics"]][:5] == [
        ("amy", "calls"),
        ("amy", "models"),
        ("amy", "peak"),
        ("amy", "seats"),
        ("amy", "tokens"),
    ]
    assert body["usage"][0] == {
        "customer": "amy",
        "event_name": "api_call",
        "count": 1,
        "sums": {"tokens": 10},
    }


def test_latest_is_by_timestamp_then_ingestion(metered: httpx.Client) -> None:
    """The latest timestamp wins even if ingested first; among equal ones, the last ingested."""
    ingest(metered, seat("late", 4, -10), seat("early", 8, -500))
    assert values(metered)["cust_1"]["seats"] == 4
    ingest(metered, seat("same-1", 6, -5))
    ingest(metered, seat("same-2", 2, -5))
    assert values(metered)["cust_1"]["seats"] == 2


def test_latest_within_the_window_only(metered: httpx.Client) -> None:
    """A value after the window's end does not count; the window's own latest does."""
    ingest(metered, seat("in", 5, -60), seat("after", 50, 30))
    got = metered.get("/usage", params={"start": START, "end": stamp(0)}).json()["metrics"]
    assert {r["metric"]: r["value"] for r in got}["seats"] == 5


def test_non_numbers_and_missing_properties_are_skipped(metered: httpx.Client) -> None:
    """sum, max and latest read numbers only; unique counts any present value, type included."""
    ingest(
        metered,
        event("1", properties={"tokens": "12", "model": 1}),
        event("2", properties={"tokens": True, "model": "1"}),
        event("3", properties={}),
        seat("s1", 7, -30),
        seat("s2", "seven", -20),
    )
    got = values(metered)["cust_1"]
    assert got == {"calls": 3, "tokens": 0, "peak": None, "models": 2, "seats": 7}


def test_deprecated_events_do_not_count(metered: httpx.Client) -> None:
    """A deprecated event takes no part in any metric, latest included."""
    ingest(metered, event("1"), seat("s1", 3, -60), seat("s2", 9, -30))
    assert metered.put("/events/s2/deprecate").status_code == 200
    assert metered.put("/events/1/deprecate").status_code == 200
    got = values(metered)["cust_1"]
    assert (got["calls"], got["seats"]) == (0, 3)


def test_amended_events_count_with_their_new_properties(metered: httpx.Client) -> None:
    """An amendment replaces the event's values in every metric."""
    original = seat("s1", 3, -60)
    ingest(metered, original)
    amended = {k: v for k, v in original.items() if k != "idempotency_key"}
    amended["properties"] = {"n": 11}
    assert metered.put("/events/s1", json=amended).status_code == 200
    assert values(metered)["cust_1"]["seats"] == 11


def test_open_and_reverted_backfills_do_not_count(metered: httpx.Client) -> None:
    """Events of a pending backfill count once it is closed and stop counting when reverted."""
    ingest(metered, seat("live", 3, -30 * 60))
    created = metered.post(
        "/events/backfills",
        json={
            "timeframe_start": stamp(-50 * 60),
            "timeframe_end": stamp(-10 * 60),
            "replace_existing_events": False,
        },
    )
    backfill = created.json()["id"]
    ingest(metered, seat("late", 20, -20 * 60), backfill=backfill)
    assert values(metered)["cust_1"]["seats"] == 3
    metered.post(f"/events/backfills/{backfill}/close")
    assert values(metered)["cust_1"]["seats"] == 20
    metered.post(f"/events/backfills/{backfill}/revert")
    assert values(metered)["cust_1"]["seats"] == 3


def test_a_customer_asked_for_gets_every_metric_even_without_events(
    metered: httpx.Client,
) -> None:
    """customer= reports that customer alone, with zero counts and null max/latest if idle."""
    ingest(metered, event("1", customer="amy"))
    assert values(metered, customer="nobody") == {
        "nobody": {"calls": 0, "tokens": 0, "peak": None, "models": 0, "seats": None}
    }
    assert list(values(metered, customer="amy")) == ["amy"]


def test_metrics_api_defines_and_lists(api: httpx.Client) -> None:
    """POST /v1/metrics defines (idempotently); GET lists by name; usage then reports it."""
    body = {"name": "calls", "event_name": "api_call", "aggregation": "count"}
    assert api.get("/metrics").json() == {"data": []}
    first = api.post("/metrics", json=body)
    assert first.status_code == 200
    assert first.json() == {**body, "property": None, "created": True}
    assert api.post("/metrics", json=body).json()["created"] is False
    assert api.get("/metrics").json()["data"] == [{**body, "property": None}]
    ingest(api, event("1"))
    assert values(api) == {"cust_1": {"calls": 1}}


def test_metrics_api_refuses_bad_and_conflicting_definitions(api: httpx.Client) -> None:
    """A bad definition is a 400 naming the problem; another definition of a name is a 409."""
    bad = [
        {"name": "x", "event_name": "e", "aggregation": "median", "property": "p"},
        {"name": "x", "event_name": "e", "aggregation": "sum"},
        {"name": "x", "event_name": "e", "aggregation": "count", "property": "p"},
        {"name": "x y", "event_name": "e", "aggregation": "count"},
        {"name": "x", "event_name": "", "aggregation": "count"},
        {"name": "x", "event_name": "e", "aggregation": "count", "filter": "a"},
        {"event_name": "e", "aggregation": "count"},
        ["not", "an", "object"],
    ]
    for body in bad:
        response = api.post("/metrics", json=body)
        assert response.status_code == 400, body
        assert response.json()["validation_errors"]
    api.post("/metrics", json={"name": "x", "event_name": "e", "aggregation": "count"})
    other = {"name": "x", "event_name": "f", "aggregation": "count"}
    conflict = api.post("/metrics", json=other)
    assert conflict.status_code == 409
    assert api.delete("/metrics").headers["allow"] == "GET, POST"


def test_metrics_need_the_api_key(metered: httpx.Client) -> None:
    """The metrics endpoints answer 401 without the bearer key."""
    url = str(metered.base_url).rstrip("/")
    assert httpx.get(f"{url}/metrics").status_code == 401


def test_metrics_files_toml_and_json(tmp_path: Path) -> None:
    """[[metric]] tables in TOML and {"metric": [...]} in JSON give the same metrics."""
    toml = tmp_path / "metrics.toml"
    toml.write_text(
        '[[metric]]\nname = "seats"\nevent_name = "seats"\naggregation = "latest"\n'
        'property = "n"\n\n[[metric]]\nname = "calls"\nevent_name = "api_call"\n'
        'aggregation = "count"\n'
    )
    as_json = tmp_path / "metrics.json"
    as_json.write_text(json.dumps({"metric": [METRICS[4], METRICS[0]]}))
    expected = [Metric("seats", "seats", "latest", "n"), Metric("calls", "api_call", "count")]
    assert load_metrics(toml) == expected
    assert load_metrics(as_json) == expected
    with ReferenceServer(metrics=toml) as server:
        assert [m.name for m in server.metrics()] == ["calls", "seats"]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("[[metric]]\nname = 1\n", "needs `event_name`"),
        ('[[metric]]\nname = "a"\nevent_name = "e"\naggregation = "avg"\n', "must be one of"),
        ("metric = 3\n", "must be a list"),
        ("[other]\n", "only `metric`"),
        ("[[metric]\n", "is not valid"),
        (
            '[[metric]]\nname = "a"\nevent_name = "e"\naggregation = "count"\n'
            '[[metric]]\nname = "a"\nevent_name = "f"\naggregation = "count"\n',
            "defined twice",
        ),
    ],
)
def test_a_bad_metrics_file_names_the_problem(tmp_path: Path, text: str, message: str) -> None:
    """A bad metrics file raises MetricError (a ValueError) naming the file and the problem."""
    path = tmp_path / "metrics.toml"
    path.write_text(text)
    with pytest.raises(MetricError, match=message) as caught:
        load_metrics(path)
    assert str(path) in str(caught.value)
    with pytest.raises(ValueError, match=message):
        ReferenceServer(metrics=path)


def test_define_metric_from_python(reference: ReferenceServer) -> None:
    """ReferenceServer.define_metric adds a metric; a different one of that name raises."""
    assert reference.define_metric({"name": "c", "event_name": "e", "aggregation": "count"})
    assert not reference.define_metric(Metric("c", "e", "count"))
    with pytest.raises(MetricError, match="cannot be changed"):
        reference.define_metric(Metric("c", "other", "count"))
