"""`meterline usage`: the reference server's usage report for a window, as a table or JSON."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from pathlib import Path

import httpx
import pytest

from meterline.cli import main
from meterline.server import ReferenceServer
from tests.server.helpers import serve_process, subprocess_env

SECRET = "sk_live_usage_Rt72pWq9"  # distinctive, so any echo of it is caught
METRICS = [
    {"name": "calls", "event_name": "api_call", "aggregation": "count"},
    {"name": "tokens", "event_name": "api_call", "aggregation": "sum", "property": "tokens"},
    {"name": "seats", "event_name": "seats", "aggregation": "latest", "property": "n"},
]


def _stamp(seconds_ago: float) -> str:
    moment = datetime.now(timezone.utc) - timedelta(seconds=seconds_ago)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _event(
    key: str, customer: str, name: str, properties: dict[str, object], ago: float
) -> dict[str, object]:
    return {
        "external_customer_id": customer,
        "event_name": name,
        "timestamp": _stamp(ago),
        "properties": properties,
        "idempotency_key": key,
    }


@pytest.fixture
def server() -> Iterator[ReferenceServer]:
    with ReferenceServer(api_keys=[SECRET], metrics=METRICS) as reference:
        events = [
            _event("1", "acme", "api_call", {"tokens": 1200}, 60),
            _event("2", "acme", "api_call", {"tokens": 34}, 50),
            _event("3", "acme", "seats", {"n": 5}, 40),
            _event("4", "acme", "seats", {"n": 3}, 30),
            _event("5", "bolt", "api_call", {"tokens": 0.5}, 20),
        ]
        response = httpx.post(
            f"{reference.url}/ingest",
            json={"events": events},
            headers={"Authorization": f"Bearer {SECRET}"},
        )
        assert response.status_code == 200, response.text
        yield reference


@pytest.fixture(autouse=True)
def _no_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("METERLINE_API_KEY", raising=False)


def _window() -> list[str]:
    return ["--start", _stamp(3600), "--end", _stamp(-60)]


def test_the_table_shows_metrics_per_customer_then_events(
    server: ReferenceServer, capsys: pytest.CaptureFixture[str]
) -> None:
    """The default output is a table: one row per customer with every metric, then events."""
    code = main(["usage", "--url", server.url, "--api-key", SECRET, *_window()])
    out = capsys.readouterr().out
    assert code == 0
    lines = out.splitlines()
    assert lines[0].startswith("usage from ")
    assert lines[0].endswith("(end excluded)")
    assert "billable metrics" in lines
    header = next(line for line in lines if line.split()[:1] == ["customer"])
    assert header.split() == ["customer", "calls", "seats", "tokens"]
    assert "acme" in out
    assert "1,234" in out
    acme = next(line for line in lines if line.split()[:1] == ["acme"])
    assert acme.split() == ["acme", "2", "3", "1,234"]
    bolt = next(line for line in lines if line.split()[:1] == ["bolt"])
    assert bolt.split() == ["bolt", "1", "-", "0.5"]
    assert "  acme      api_call      2  tokens=1,234" in out
    assert SECRET not in out


def test_json_is_the_servers_answer(
    server: ReferenceServer, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """--json prints the /v1/usage body; the key may come from METERLINE_API_KEY."""
    monkeypatch.setenv("METERLINE_API_KEY", SECRET)
    code = main(["usage", "--url", server.url, "--json", "--customer", "acme", *_window()])
    body = json.loads(capsys.readouterr().out)
    assert code == 0
    assert {(r["metric"], r["value"]) for r in body["metrics"]} == {
        ("calls", 2),
        ("tokens", 1234),
        ("seats", 3),
    }
    assert [r["customer"] for r in body["usage"]] == ["acme", "acme"]


def test_dates_and_naive_times_are_utc(
    server: ReferenceServer, capsys: pytest.CaptureFixture[str]
) -> None:
    """A date or a time without an offset is UTC; an offset is converted."""
    today = datetime.now(timezone.utc).date()
    tomorrow = today + timedelta(days=1)
    args = ["usage", "--url", server.url, "--api-key", SECRET, "--json"]
    assert main([*args, "--start", str(today - timedelta(days=1)), "--end", str(tomorrow)]) == 0
    body = json.loads(capsys.readouterr().out)
    assert body["start"] == f"{today - timedelta(days=1)}T00:00:00Z"
    assert main([*args, "--start", "2026-05-01T12:00:00+02:00", "--end", "2026-05-02"]) == 0
    assert json.loads(capsys.readouterr().out)["start"] == "2026-05-01T10:00:00Z"


def test_an_empty_window_says_so(
    server: ReferenceServer, capsys: pytest.CaptureFixture[str]
) -> None:
    """A window without events prints that no event was counted."""
    args = ["--start", "2020-01-01", "--end", "2020-01-02"]
    assert main(["usage", "--url", server.url, "--api-key", SECRET, *args]) == 0
    assert "(no events counted in this window)" in capsys.readouterr().out


def test_exit_codes(server: ReferenceServer, capsys: pytest.CaptureFixture[str]) -> None:
    """2 for no key, a bad time or a 400; 1 for a wrong key or an unreachable server."""
    base = ["usage", "--url", server.url, *_window()]
    assert main(base) == 2
    assert "METERLINE_API_KEY" in capsys.readouterr().err
    with pytest.raises(SystemExit) as caught:
        main(["usage", "--url", server.url, "--api-key", SECRET, "--start", "soon", "--end", "x"])
    assert caught.value.code == 2
    assert "not an ISO 8601" in capsys.readouterr().err
    backwards = ["--start", "2026-05-02", "--end", "2026-05-01"]
    assert main(["usage", "--url", server.url, "--api-key", SECRET, *backwards]) == 2
    assert "answered 400" in capsys.readouterr().err
    wrong = "sk_wrong_key_Ux1"
    assert main([*base, "--api-key", wrong]) == 1
    err = capsys.readouterr().err
    assert "answered 401" in err
    assert wrong not in err
    port = server.port
    server.stop()
    assert (
        main(["usage", "--url", f"http://127.0.0.1:{port}/v1", "--api-key", SECRET, *_window()])
        == 1
    )
    err = capsys.readouterr().err
    assert "cannot reach" in err
    assert SECRET not in err


def test_serve_with_a_metrics_file_then_usage_from_the_command_line(tmp_path: Path) -> None:
    """`meterline serve --metrics FILE` loads the metrics; `meterline usage` reports them."""
    metrics = tmp_path / "metrics.toml"
    metrics.write_text(
        '[[metric]]\nname = "seats"\nevent_name = "seats"\naggregation = "latest"\nproperty = "n"\n'
    )
    with serve_process("--port", "0", "--db", ":memory:", "--metrics", str(metrics)) as proc:
        headers = {"Authorization": f"Bearer {SECRET}"}
        events = [
            _event("a", "acme", "seats", {"n": 7}, 20),
            _event("b", "acme", "seats", {"n": 4}, 10),
        ]
        assert httpx.post(f"{proc.url}/ingest", json={"events": events}, headers=headers).is_success
        assert (
            httpx.get(f"{proc.url}/metrics", headers=headers).json()["data"][0]["name"] == "seats"
        )
        done = subprocess.run(
            [
                sys.executable,
                "-m",
                "meterline.cli",
                "usage",
                "--url",
                proc.url,
                "--json",
                *_window(),
            ],
            capture_output=True,
            text=True,
            env={**subprocess_env(), "METERLINE_API_KEY": SECRET},
            timeout=60,
        )
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["metrics"] == [
        {"customer": "acme", "metric": "seats", "value": 4}
    ]


def test_serve_refuses_a_bad_metrics_file(tmp_path: Path) -> None:
    """A bad metrics file makes `meterline serve` exit 1 naming the file, before listening."""
    metrics = tmp_path / "metrics.json"
    metrics.write_text('{"metric": [{"name": "x", "event_name": "e", "aggregation": "avg"}]}')
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "meterline.cli",
            "serve",
            "--port",
            "0",
            "--db",
            ":memory:",
            "--metrics",
            str(metrics),
        ],
        capture_output=True,
        text=True,
        env=subprocess_env(),
        timeout=60,
    )
    assert done.returncode == 1
    assert str(metrics) in done.stderr
    assert "must be one of" in done.stderr
    assert "listening" not in done.stdout
