"""`meterline journal status|inspect|requeue|replay`, run as a real command."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

import meterline
from tests.support.journal import ready_events

pytestmark = pytest.mark.slow


def _run(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "meterline.cli", *args],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, **(env or {})},
    )


@pytest.fixture
def backlog(server, journal_dir) -> set[str]:
    """A journal holding 250 events that could not be delivered (server answering 503)."""
    server.outage_status = 503
    client = meterline.Client(
        api_key="k", base_url=server.url, journal_dir=journal_dir, retry_attempts=1
    )
    keys = {client.report("c", "e", {"i": i}) for i in range(250)}
    assert client.close(timeout=5).journaled == 250
    server.outage_status = None
    return keys


def test_status_reports_counts_as_text_and_json(backlog, journal_dir):
    """status shows the ready events; --json gives the same numbers to a script."""
    text = _run("journal", "status", "--dir", str(journal_dir))
    assert text.returncode == 0, text.stderr
    assert "250 events" in text.stdout
    doc = json.loads(_run("journal", "status", "--dir", str(journal_dir), "--json").stdout)
    assert doc["ready_events"] == 250
    assert doc["quarantined"] == 0


def test_inspect_shows_header_and_events_and_flags_damage(backlog, journal_dir):
    """inspect prints a batch's header and events; a damaged copy is reported, exit 2."""
    path = sorted((journal_dir / "ready").iterdir())[0]
    good = _run("journal", "inspect", str(path), "--limit", "2")
    assert good.returncode == 0, good.stderr
    assert "idempotency_key" in good.stdout
    damaged = path.parent.parent / "damaged.mlj"
    data = bytearray(path.read_bytes())
    data[-5] ^= 0xFF
    damaged.write_bytes(bytes(data))
    bad = _run("journal", "inspect", str(damaged))
    assert bad.returncode == 2
    assert "False" in bad.stdout


def test_replay_drains_the_backlog_with_progress(backlog, server, journal_dir):
    """replay sends every journaled event once and leaves ready/ empty."""
    proc = _run(
        "journal",
        "replay",
        "--dir",
        str(journal_dir),
        "--base-url",
        server.url,
        env={"METERLINE_API_KEY": "k"},
    )
    assert proc.returncode == 0, proc.stderr
    assert "250/250 events" in proc.stdout
    assert server.keys() == backlog
    assert ready_events(journal_dir) == 0


def test_requeue_moves_quarantined_batches_back_after_a_check(backlog, journal_dir: Path):
    """A quarantined file that passes its checks goes back to ready/ on requeue."""
    ready = sorted((journal_dir / "ready").iterdir())
    target = journal_dir / "quarantine" / ready[0].name
    ready[0].rename(target)
    before = ready_events(journal_dir)
    proc = _run("journal", "requeue", "--dir", str(journal_dir), "quarantine")
    assert proc.returncode == 0, proc.stderr
    assert ready_events(journal_dir) == 250
    assert before < 250


def test_status_without_a_journal_says_so(tmp_path):
    """Pointing at a directory that holds no journal is a clear error, not a traceback."""
    proc = _run("journal", "status", "--dir", str(tmp_path / "nothing"))
    assert proc.returncode != 0
    assert "no journal" in proc.stderr
