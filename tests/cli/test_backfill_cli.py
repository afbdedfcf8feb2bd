"""`meterline journal backfill`: expired batches through Orb's backfills."""

from __future__ import annotations

import time
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from pathlib import Path

import httpx
import orjson
import pytest

from meterline._config import Config
from meterline.cli import main
from meterline.journal import Journal
from meterline.server import ReferenceServer

SECRET = "sk_live_backfill_Zq81mXv3"  # distinctive, so any echo of it is caught


@pytest.fixture
def server() -> Iterator[ReferenceServer]:
    with ReferenceServer(api_keys=[SECRET]) as reference:
        yield reference


@pytest.fixture(autouse=True)
def _no_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("METERLINE_API_KEY", "METERLINE_BASE_URL", "METERLINE_JOURNAL_DIR"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.delenv("METERLINE_DESTINATION", raising=False)


def _stamp(days_ago: float) -> str:
    moment = datetime.now(timezone.utc) - timedelta(days=days_ago)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def expire_batches(
    journal_dir: Path, base_url: str, batches: list[list[float]], prefix: str = "k"
) -> list[str]:
    """Spill one batch per list of event ages (days), then expire them; return the keys."""
    fp = Config(api_key=SECRET, base_url=base_url).journal_fingerprint
    journal = Journal(
        journal_dir, fingerprint=fp, min_free_bytes=0, clock=lambda: time.time() - 3600
    )
    journal.open()
    keys: list[str] = []
    try:
        for b, ages in enumerate(batches):
            events = []
            for i, age in enumerate(ages):
                key = f"{prefix}-{b}-{i}"
                keys.append(key)
                doc = {
                    "idempotency_key": key,
                    "external_customer_id": "c",
                    "event_name": "e",
                    "timestamp": _stamp(age),
                    "properties": {"i": i},
                }
                events.append(orjson.dumps(doc))
            journal.spill(events)
    finally:
        journal.close()
    expirer = Journal(journal_dir, fingerprint=fp, min_free_bytes=0, max_age=60)
    expirer.open()
    try:
        assert expirer.expire() == len(keys)
    finally:
        expirer.close()
    return keys


def _run(journal_dir: Path, server: ReferenceServer, *extra: str) -> int:
    args = ["journal", "backfill", "--dir", str(journal_dir), "--base-url", server.url]
    return main([*args, "--api-key", SECRET, *extra])


def test_expired_batches_are_backfilled_and_deleted(
    tmp_path: Path, server: ReferenceServer, capsys: pytest.CaptureFixture[str]
) -> None:
    """Expired batches land through one closed, adding backfill; then their files are gone."""
    keys = expire_batches(tmp_path, server.url, [[3.0, 3.1], [2.5, 2.0, 2.2]])
    assert server.event_count() == 0
    assert _run(tmp_path, server) == 0
    assert {e["id"] for e in server.events()} == set(keys)
    assert list((tmp_path / "expired").iterdir()) == []
    out, err = capsys.readouterr()
    assert "deleted     2 of 2 expired batches" in out
    assert SECRET not in out + err
    auth = {"Authorization": f"Bearer {SECRET}"}
    listed = httpx.get(f"{server.url}/events/backfills", headers=auth).json()["data"]
    assert [(b["status"], b["replace_existing_events"]) for b in listed] == [("reflected", False)]
    assert listed[0]["events_ingested"] == 5


def test_dry_run_sends_nothing(
    tmp_path: Path, server: ReferenceServer, capsys: pytest.CaptureFixture[str]
) -> None:
    """--dry-run prints the batches and the backfill it would create, and sends nothing."""
    expire_batches(tmp_path, server.url, [[3.0, 4.0]])
    assert _run(tmp_path, server, "--dry-run") == 0
    out = capsys.readouterr().out
    assert "1 batches, 2 events" in out
    assert "would create" in out
    assert server.requests == []
    assert len(list((tmp_path / "expired").iterdir())) == 1


def test_more_than_31_days_takes_several_backfills(tmp_path: Path, server: ReferenceServer) -> None:
    """Timestamps over 40 days apart are split into backfills of at most 31 days each."""
    keys = expire_batches(tmp_path, server.url, [[45.0, 44.0], [3.0]])
    assert _run(tmp_path, server) == 0
    assert {e["id"] for e in server.events()} == set(keys)
    created = [
        r for r in server.requests if r.method == "POST" and r.path == "/v1/events/backfills"
    ]
    assert len(created) == 2


def test_a_refused_event_keeps_its_file(
    tmp_path: Path, server: ReferenceServer, capsys: pytest.CaptureFixture[str]
) -> None:
    """A key the server refuses keeps its batch in expired/ (exit 1); the others still land."""
    keys = expire_batches(tmp_path, server.url, [[2.0, 2.1], [2.2]])
    auth = {"Authorization": f"Bearer {SECRET}"}
    live = {
        "idempotency_key": keys[0],
        "external_customer_id": "c",
        "event_name": "e",
        "timestamp": _stamp(0),
        "properties": {"i": 0},
    }
    assert httpx.post(f"{server.url}/ingest", json={"events": [live]}, headers=auth).is_success
    assert httpx.put(f"{server.url}/events/{keys[0]}/deprecate", headers=auth).is_success
    assert _run(tmp_path, server) == 1
    assert {e["id"] for e in server.events()} == set(keys[1:])
    assert len(list((tmp_path / "expired").iterdir())) == 1
    out, err = capsys.readouterr()
    assert f"refused     {keys[0]}" in out
    assert SECRET not in out + err


def test_only_orb_has_a_backfill_api(
    tmp_path: Path, server: ReferenceServer, capsys: pytest.CaptureFixture[str]
) -> None:
    """Another destination gets a clear message and exit 2, and nothing is touched."""
    expire_batches(tmp_path, server.url, [[2.0]])
    with pytest.raises(SystemExit) as exited:
        _run(tmp_path, server, "--destination", "lago")
    assert exited.value.code == 2
    err = capsys.readouterr().err
    assert "only Orb has one, not lago" in err
    assert SECRET not in err
    assert server.requests == []
