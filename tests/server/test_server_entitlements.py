"""The reference server's entitlements: plans files and ``GET /v1/entitlements/{c}/{f}``."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import httpx
import pytest

from meterline.server import ReferenceServer
from meterline.server._entitlements import period_window
from meterline.server._plans import PlansError, load_plans, parse_plans
from tests.server.helpers import API_KEY, Clock, event, serve_process, subprocess_env

PLANS: dict[str, Any] = {
    "default_plan": "free",
    "plans": {
        "free": {"features": {"api_call": {"limit": 3, "period": "monthly"}}},
        "pro": {
            "features": {
                "api_call": {},
                "tokens": {"limit": 100, "period": "daily", "unit": "tokens"},
                "seats": {"limit": 2, "period": "total"},
            }
        },
    },
    "customers": {
        "acme": {"plan": "pro"},
        "big": {"plan": "free", "features": {"api_call": {"limit": 1000}}},
    },
}

TOML = """\
default_plan = "free"

[plans.free.features.api_call]
limit = 3
period = "monthly"

[customers.acme]
plan = "free"
[customers.acme.features.api_call]
limit = 10
period = "daily"
"""


@pytest.fixture
def server(clock: Clock) -> Iterator[ReferenceServer]:
    with ReferenceServer(api_keys=[API_KEY], clock=clock, plans=PLANS) as running:
        yield running


@pytest.fixture
def http(server: ReferenceServer) -> Iterator[httpx.Client]:
    headers = {"Authorization": f"Bearer {API_KEY}"}
    with httpx.Client(base_url=server.url, headers=headers, timeout=10.0) as client:
        yield client


def _ingest(http: httpx.Client, *events: dict[str, Any]) -> None:
    answer = http.post("/ingest", json={"events": list(events)})
    assert answer.status_code == 200, answer.text


def _can(http: httpx.Client, customer: str, feature: str) -> dict[str, Any]:
    answer = http.get(f"/entitlements/{customer}/{feature}")
    assert answer.status_code == 200, answer.text
    body: dict[str, Any] = answer.json()
    return body


def test_usage_counts_against_the_plan_limit_until_it_is_reached(http: httpx.Client) -> None:
    """A free customer's events count one each; ok turns false at the limit."""
    assert _can(http, "cust_1", "api_call") == {
        "customer": "cust_1",
        "feature": "api_call",
        "plan": "free",
        "ok": True,
        "limit": 3,
        "used": 0,
        "remaining": 3,
        "period": "monthly",
        "period_start": "2026-05-01T00:00:00Z",
        "period_end": "2026-06-01T00:00:00Z",
    }
    _ingest(http, event("a"), event("b"))
    assert (_can(http, "cust_1", "api_call")["used"], _can(http, "cust_1", "api_call")["ok"]) == (
        2,
        True,
    )
    _ingest(http, event("c"))
    body = _can(http, "cust_1", "api_call")
    assert (body["ok"], body["used"], body["remaining"]) == (False, 3, 0)


def test_a_unit_property_is_summed_and_events_without_it_count_one(http: httpx.Client) -> None:
    """With ``unit = "tokens"`` an event adds its tokens; one without a number adds 1."""
    _ingest(
        http,
        event("t1", customer="acme", event_name="tokens", properties={"tokens": 60}),
        event("t2", customer="acme", event_name="tokens", properties={"tokens": "x"}),
    )
    body = _can(http, "acme", "tokens")
    assert (body["used"], body["remaining"], body["ok"], body["period"]) == (61, 39, True, "daily")


def test_no_limit_is_unlimited_and_an_override_replaces_the_plans(http: httpx.Client) -> None:
    """A feature without a limit is always ok; a customer's own limit wins over its plan's."""
    pro = _can(http, "acme", "api_call")
    big = _can(http, "big", "api_call")
    assert (pro["ok"], pro["limit"], pro["remaining"]) == (True, None, None)
    assert (big["plan"], big["limit"]) == ("free", 1000)


def test_a_feature_outside_the_plan_is_answered_no(http: httpx.Client) -> None:
    """A feature the plan does not grant is a 200 with ok false and limit 0."""
    body = _can(http, "cust_1", "seats")
    assert (body["ok"], body["limit"], body["plan"]) == (False, 0, "free")


def test_only_the_current_period_counts(http: httpx.Client, clock: Clock) -> None:
    """A month later, May's events no longer count in a monthly period; ``total`` keeps them."""
    _ingest(http, event("may"), event("s1", customer="acme", event_name="seats"))
    assert _can(http, "cust_1", "api_call")["used"] == 1
    clock.now += 32 * 86400  # 2 June
    body = _can(http, "cust_1", "api_call")
    assert (body["used"], body["period_start"]) == (0, "2026-06-01T00:00:00Z")
    assert _can(http, "acme", "seats")["used"] == 1


def test_a_deprecated_event_no_longer_counts(http: httpx.Client) -> None:
    """Deprecating an event takes it out of the usage, as billing does."""
    _ingest(http, event("d1"), event("d2"))
    assert http.put("/events/d1/deprecate").status_code == 200
    assert _can(http, "cust_1", "api_call")["used"] == 1


def test_without_plans_the_endpoint_says_how_to_get_them(
    api: httpx.Client,
) -> None:
    """A server started without plans answers 404 naming ``--plans``."""
    answer = api.get("/entitlements/cust_1/api_call")
    assert answer.status_code == 404
    assert "--plans" in answer.json()["detail"]


def test_the_endpoint_needs_the_api_key(server: ReferenceServer) -> None:
    """Entitlements are behind the same bearer key as ingest."""
    answer = httpx.get(f"{server.url}/entitlements/cust_1/api_call", timeout=10)
    assert answer.status_code == 401


def test_period_windows_are_utc_calendar_periods() -> None:
    """Monthly is the calendar month (December rolls into January), daily the UTC day."""
    dec = round(datetime(2026, 12, 31, 23, 0, tzinfo=timezone.utc).timestamp() * 1e6)
    start, end = period_window("monthly", dec)
    assert (start, end) == (
        round(datetime(2026, 12, 1, tzinfo=timezone.utc).timestamp()) * 1_000_000,
        round(datetime(2027, 1, 1, tzinfo=timezone.utc).timestamp()) * 1_000_000,
    )
    day = period_window("daily", dec)
    assert day[1] is not None
    assert day[0] is not None
    assert day[1] - day[0] == 86400 * 1_000_000
    assert period_window("total", dec) == (None, None)


@pytest.mark.parametrize(
    ("plans", "names"),
    [
        ({"plans": {"p": {"features": {"f": {"limit": -1}}}}}, "plans.p.features.f.limit"),
        ({"plans": {"p": {"features": {"f": {"limit": True}}}}}, "plans.p.features.f.limit"),
        ({"plans": {"p": {"features": {"f": {"period": "weekly"}}}}}, "period"),
        ({"plans": {"p": {"features": {"f": {"limt": 3}}}}}, "limt"),
        ({"default_plan": "gold", "plans": {}}, "gold"),
        ({"customers": {"c": {"plan": "gold"}}}, "customers.c.plan"),
        ({"plan": {}}, "unknown key"),
        ([], "the plans file"),
    ],
)
def test_a_bad_plans_document_is_refused_naming_the_key(plans: object, names: str) -> None:
    """Each schema break raises ``PlansError`` whose message names the offending key."""
    with pytest.raises(PlansError, match=names):
        parse_plans(plans)


def test_toml_and_json_files_load_the_same_plans(tmp_path: Path) -> None:
    """A TOML file and its JSON twin give equal plans; a broken file is a ``PlansError``."""
    toml = tmp_path / "plans.toml"
    toml.write_text(TOML)
    json_file = tmp_path / "plans.json"
    json_file.write_text(
        '{"default_plan": "free", "plans": {"free": {"features": {"api_call":'
        ' {"limit": 3, "period": "monthly"}}}}, "customers": {"acme": {"plan": "free",'
        ' "features": {"api_call": {"limit": 10, "period": "daily"}}}}}'
    )
    assert load_plans(toml) == load_plans(json_file)
    (tmp_path / "bad.toml").write_text("[plans\n")
    with pytest.raises(PlansError, match="not valid TOML"):
        load_plans(tmp_path / "bad.toml")
    with pytest.raises(PlansError, match="cannot read"):
        load_plans(tmp_path / "missing.toml")


@pytest.mark.slow
def test_meterline_serve_with_plans_answers_entitlements(tmp_path: Path) -> None:
    """``meterline serve --plans plans.toml`` serves the endpoint from the file."""
    plans = tmp_path / "plans.toml"
    plans.write_text(TOML)
    args = ("--port", "0", "--db", ":memory:", "--api-key", API_KEY, "--plans", str(plans))
    with serve_process(*args) as proc:
        headers = {"Authorization": f"Bearer {API_KEY}"}
        answer = httpx.get(f"{proc.url}/entitlements/acme/api_call", headers=headers, timeout=10)
    assert answer.status_code == 200
    assert (answer.json()["limit"], answer.json()["period"]) == (10, "daily")


@pytest.mark.slow
def test_meterline_serve_refuses_a_bad_plans_file(tmp_path: Path) -> None:
    """A plans file that breaks the schema stops ``meterline serve`` with exit 1 and the key."""
    plans = tmp_path / "plans.toml"
    plans.write_text('[plans.free.features.api_call]\nperiod = "weekly"\n')
    proc = subprocess.run(
        [sys.executable, "-m", "meterline.cli", "serve", "--port", "0", "--plans", str(plans)],
        capture_output=True,
        text=True,
        env=subprocess_env(),
        timeout=30,
    )
    assert proc.returncode == 1
    assert "period" in proc.stderr


def test_a_path_beside_the_endpoint_is_a_404(http: httpx.Client) -> None:
    """``/v1/entitlements/acme`` (no feature) is not found, with the endpoint's shape named."""
    answer = http.get("/entitlements/acme")
    assert answer.status_code == 404
    assert "/v1/entitlements/C/F" in answer.json()["detail"]
