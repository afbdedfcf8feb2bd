"""`meterline journal status|inspect|requeue|replay`, run as a real command."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import orjson
import pytest

import meterline
from meterline._config import Config
from meterline.cli import main
from meterline.journal import Journal
from meterline.journal import _format as fmt
from tests.journal.helpers import craft, encode_v1
from tests.support.journal import ready_events

pytestmark = pytest.mark.slow

SECRET = "sk_live_7Qx9c2VbN4mR8tLpZ3wY"  # distinctive, so any echo of it is caught


def _run(
    *args: str, env: dict[str, str] | None = None, timeout: float = 60
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "meterline.cli", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, **(env or {})},
    )


def fingerprint(key: str, base_url: str) -> bytes:
    """The fingerprint a client with this key and endpoint writes into its batches."""
    return Config(api_key=key, base_url=base_url).journal_fingerprint


def write_batches(
    journal_dir: Path, fp: bytes, batches: int, size: int = 10, *, age: float = 0.0
) -> set[str]:
    """Spill ``batches`` batches keyed with ``fp`` (``age`` seconds old); return their keys."""
    journal = Journal(
        journal_dir, fingerprint=fp, min_free_bytes=0, clock=lambda: time.time() - age
    )
    journal.open()
    keys: set[str] = set()
    try:
        for b in range(batches):
            events = [
                orjson.dumps(
                    {
                        "idempotency_key": f"{fp[:4].hex()}-{age:.0f}-{b}-{i}",
                        "external_customer_id": "c",
                        "event_name": "e",
                        "timestamp": "2026-11-22T04:00:00Z",
                        "properties": {"i": i},
                    }
                )
                for i in range(size)
            ]
            journal.spill(events)
            keys.update(orjson.loads(e)["idempotency_key"] for e in events)
    finally:
        journal.close()
    return keys


def plant_newer(journal_dir: Path) -> Path:
    """A sound file of a newer format version (3) in ready/, named as the oldest batch."""
    path = journal_dir / "ready" / fmt.make_name(1, 1, 1, "f00d")
    path.write_bytes(craft(b"a newer meterline's payload", 1, version=3))
    return path


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


def test_replay_with_a_newer_format_file_returns_within_a_deadline(server, journal_dir):
    """A newer-format file in ready/ does not hold replay: it sends the rest, reports the
    file as left in place, leaves it untouched, and exits 0 well within the deadline."""
    keys = write_batches(journal_dir, fingerprint(SECRET, server.url), 3)
    newer = plant_newer(journal_dir)
    before = newer.read_bytes()
    started = time.monotonic()
    proc = _run(
        "journal",
        "replay",
        "--dir",
        str(journal_dir),
        "--base-url",
        server.url,
        env={"METERLINE_API_KEY": SECRET},
        timeout=30,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert time.monotonic() - started < 30
    assert server.keys() == keys
    assert newer.read_bytes() == before
    assert "replayed    30 events" in proc.stdout
    assert "left        0 batches to retry, 1 set aside" in proc.stdout


def test_replay_leaves_batches_of_another_key_in_place(server, journal_dir):
    """Batches written for another API key are never sent with this one: they stay in
    ready/, are counted as set aside, and the command still exits 0."""
    ours = write_batches(journal_dir, fingerprint(SECRET, server.url), 2)
    write_batches(journal_dir, fingerprint("someone-else", server.url), 1)
    theirs_before = sorted(p.read_bytes() for p in (journal_dir / "ready").iterdir())
    code = main(
        [
            "journal",
            "replay",
            "--dir",
            str(journal_dir),
            "--base-url",
            server.url,
            "--api-key",
            SECRET,
        ]
    )
    assert code == 0
    assert server.keys() == ours
    left = sorted(p.read_bytes() for p in (journal_dir / "ready").iterdir())
    assert len(left) == 1
    assert left[0] in theirs_before
    assert server.auths_of(ours) == {f"Bearer {SECRET}"}


def test_replay_of_expired_batches_exits_1(server, journal_dir, capsys):
    """Batches past journal_max_age move to expired/ instead of being sent, and replay
    reports them and exits 1."""
    fp = fingerprint(SECRET, server.url)
    fresh = write_batches(journal_dir, fp, 1)
    write_batches(journal_dir, fp, 1, 4, age=8 * 86_400.0)
    code = main(
        [
            "journal",
            "replay",
            "--dir",
            str(journal_dir),
            "--base-url",
            server.url,
            "--api-key",
            SECRET,
        ]
    )
    out = capsys.readouterr().out
    assert code == 1
    assert "expired     4 events" in out
    assert server.keys() == fresh
    assert len(list((journal_dir / "expired").iterdir())) == 1


def test_replay_output_never_holds_the_key(server, journal_dir):
    """Neither the progress bar, the summary nor the errors of a failing replay print the
    API key."""
    write_batches(journal_dir, fingerprint(SECRET, server.url), 2)
    server.outage_status = 503
    failing = _run(
        "journal",
        "replay",
        "--dir",
        str(journal_dir),
        "--base-url",
        server.url,
        "--timeout",
        "1",
        env={"METERLINE_API_KEY": SECRET, "METERLINE_SHUTDOWN_TIMEOUT": "0.5"},
    )
    assert failing.returncode == 1
    assert "2 batches to retry" in failing.stdout
    server.outage_status = None
    passing = _run(
        "journal",
        "replay",
        "--dir",
        str(journal_dir),
        "--base-url",
        server.url,
        "--api-key",
        SECRET,
    )
    assert passing.returncode == 0, passing.stderr
    status = _run("journal", "status", "--dir", str(journal_dir), "--api-key", SECRET)
    for proc in (failing, passing, status):
        assert SECRET not in proc.stdout + proc.stderr


@pytest.mark.parametrize("action", [["status"], ["requeue", "expired"], ["replay"]])
def test_without_a_key_or_a_directory_the_cli_asks_for_one(tmp_path, action):
    """With neither --dir, $METERLINE_JOURNAL_DIR nor a key, the journal commands refuse
    to guess which per-key folder is meant: exit 2 with a message naming --dir and the
    key (replay needs the key in any case)."""
    env = {"XDG_STATE_HOME": str(tmp_path / "state"), "HOME": str(tmp_path)}
    proc = _run("journal", *action, env=env)
    assert proc.returncode == 2
    assert "METERLINE_API_KEY" in proc.stderr
    if action != ["replay"]:
        assert "--dir" in proc.stderr
    assert "Traceback" not in proc.stderr
    assert not (tmp_path / "state").exists()


def test_status_with_a_key_finds_the_per_key_folder(tmp_path, monkeypatch):
    """Without --dir, a key (from the environment) selects its own default folder, and
    another key's folder is not looked at."""
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "state"))
    base_url = "http://127.0.0.1:9/v1"
    mine = Config(api_key=SECRET, base_url=base_url).resolved_journal_dir()
    write_batches(mine, fingerprint(SECRET, base_url), 2)
    env = {"XDG_STATE_HOME": str(tmp_path / "state"), "METERLINE_BASE_URL": base_url}
    proc = _run("journal", "status", "--json", env={**env, "METERLINE_API_KEY": SECRET})
    assert proc.returncode == 0, proc.stderr
    doc = json.loads(proc.stdout)
    assert doc["directory"] == str(mine)
    assert doc["ready_batches"] == 2
    other = _run("journal", "status", env={**env, "METERLINE_API_KEY": "another-key"})
    assert other.returncode == 1
    assert "no journal" in other.stderr


def test_status_shows_the_fingerprint_and_what_is_set_aside(server, journal_dir):
    """status with a key names its fingerprint (a prefix, never the key) and counts the
    batches of other keys, of a newer format and of 0.1 separately."""
    fp = fingerprint(SECRET, server.url)
    write_batches(journal_dir, fp, 2)
    write_batches(journal_dir, fingerprint("someone-else", server.url), 1, 5)
    plant_newer(journal_dir)
    legacy = journal_dir / "ready" / fmt.make_name(2, 1, 1, "01d")
    legacy.write_bytes(encode_v1([b'{"idempotency_key":"old"}']))
    args = ["journal", "status", "--dir", str(journal_dir), "--base-url", server.url]
    text = _run(*args, env={"METERLINE_API_KEY": SECRET})
    assert text.returncode == 0, text.stderr
    assert f"fingerprint {fp.hex()[:8]}..." in text.stdout
    assert "set aside 1 batches (5 events)" in text.stdout
    assert "1 from a newer meterline" in text.stdout
    assert "legacy    1 batches from meterline 0.1" in text.stdout
    doc = json.loads(_run(*args, "--json", "--api-key", SECRET).stdout)
    assert doc["fingerprint"] == fp.hex()
    assert (doc["ready_foreign_batches"], doc["ready_foreign_events"]) == (1, 5)
    assert (doc["ready_newer_batches"], doc["ready_legacy_batches"]) == (1, 1)
    unkeyed = json.loads(_run("journal", "status", "--dir", str(journal_dir), "--json").stdout)
    assert unkeyed["fingerprint"] is None
    assert unkeyed["ready_foreign_batches"] == 0


def test_inspect_shows_the_fingerprint_as_hex(journal_dir):
    """inspect prints a version-2 file's fingerprint in hex, and None for a 0.1 file."""
    fp = fingerprint(SECRET, "http://127.0.0.1:9/v1")
    write_batches(journal_dir, fp, 1)
    (path,) = (journal_dir / "ready").iterdir()
    legacy = journal_dir / "legacy.mlj"
    legacy.write_bytes(encode_v1([b'{"idempotency_key":"old"}']))
    keyed = _run("journal", "inspect", str(path))
    assert keyed.returncode == 0, keyed.stderr
    assert f"fingerprint      {fp.hex()}" in keyed.stdout
    assert "version          2" in keyed.stdout
    old = _run("journal", "inspect", str(legacy))
    assert old.returncode == 0, old.stderr
    assert "fingerprint      None" in old.stdout
    assert "version          1" in old.stdout
