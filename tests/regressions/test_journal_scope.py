"""Where journaled events live, whose they are, how they age, and who replays them.

Scenarios 9, 10, 15, 17 and 20 of the regression issue.
"""

from __future__ import annotations

import fcntl
import os
import shutil
import struct
import zlib
from pathlib import Path

import orjson
import pytest

import meterline
from meterline import DropReport
from meterline._config import Config
from meterline.journal import Journal
from meterline.testing import wait_until
from tests.regressions.helpers import (
    journal_keys,
    oldest_ready_age,
    run_child,
    run_module,
    wait_exit,
)
from tests.support.fault_server import FaultServer

OUTAGE = {"retry_attempts": 1, "probe_interval": 30.0, "replay_interval": 30.0}


def _journal_during_outage(
    server: FaultServer, client: meterline.Client, n: int, prefix: str = "cust"
) -> list[str]:
    """Report ``n`` events while the endpoint answers 503 and wait until all are journaled."""
    server.outage_status = 503
    keys = [client.report(f"{prefix}_1", "api_call", {"i": i}) for i in range(n)]
    result = client.flush(timeout=5)
    assert (result.journaled, result.pending) == (n, 0), result
    return keys


def test_an_outage_longer_than_journal_max_age_expires_the_batches_visibly(
    server: FaultServer, make_client, journal_dir: Path
):
    """Batches older than journal_max_age are moved to expired/, unsent: stats() counts them
    as expired, on_drop receives DropReport(reason="expired") with their keys and bodies,
    and replay() returns a falsy result whose expired is positive."""
    reports: list[DropReport] = []
    client = make_client(journal_max_age=1.0, on_drop=reports.append, **OUTAGE)
    keys = _journal_during_outage(server, client, 100)
    wait_until(lambda: oldest_ready_age(journal_dir) > 1.3, timeout=5)
    server.outage_status = None
    result = client.replay(timeout=3)
    assert server.count() == 0, "expired events were sent"
    assert set(journal_keys(journal_dir, "expired")) == set(keys)
    assert not result, result
    assert result.expired > 0, result
    assert client.stats().get("expired") == 100, client.stats()
    wait_until(lambda: sum(r.count for r in reports if r.reason == "expired") >= 100, timeout=5)
    expired = [r for r in reports if r.reason == "expired"]
    assert sum(r.count for r in expired) == 100
    assert {k for r in expired for k in r.idempotency_keys} == set(keys)
    bodies = [orjson.loads(b) for r in expired for b in r.events]
    assert sorted(b["idempotency_key"] for b in bodies) == sorted(keys)


def test_a_relative_journal_dir_stays_where_it_resolved_at_construction(
    server: FaultServer, make_client, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    """A relative journal_dir followed by os.chdir(): the events are journaled in the
    directory as it resolved when the Client was built, and nowhere else."""
    first, later = tmp_path / "first", tmp_path / "later"
    first.mkdir()
    later.mkdir()
    monkeypatch.chdir(first)
    client = make_client(journal_dir="rel-journal", **OUTAGE)
    monkeypatch.chdir(later)
    keys = _journal_during_outage(server, client, 50)
    assert set(journal_keys(first / "rel-journal")) == set(keys)
    assert not (later / "rel-journal").exists()


def test_a_second_api_key_never_sends_the_first_keys_backlog(
    server: FaultServer, make_client, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    """Two API keys on one base_url with the default journal folder: client B never sends
    what client A journaled; each of A's events arrives only with A's key, when a later
    A-keyed client replays."""
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "state"))
    a = make_client(api_key="key-A", journal_dir=None, **OUTAGE)
    a_keys = _journal_during_outage(server, a, 200, prefix="a")
    a.close(timeout=2)
    server.outage_status = None
    b = make_client(api_key="key-B", journal_dir=None)
    b_keys = [b.report("b_1", "api_call", {"i": i}) for i in range(50)]
    assert b.flush(timeout=5)
    b.replay(timeout=2)
    b.close(timeout=5)  # a close with the endpoint healthy drains its own backlog too
    assert set(b_keys) <= server.keys()
    sent_by_b = len(set(a_keys) & server.keys())
    assert sent_by_b == 0, f"B sent {sent_by_b} of A's 200 events"
    again = make_client(api_key="key-A", journal_dir=None)
    assert again.replay(timeout=10)
    assert set(a_keys) <= server.keys()
    assert server.auths_of(a_keys) == {"Bearer key-A"}
    assert server.auths_of(b_keys) == {"Bearer key-B"}


def test_two_endpoints_sharing_one_journal_dir_each_get_only_their_own_events(
    server: FaultServer, make_client, journal_dir: Path
):
    """Two base_urls sharing one explicit journal_dir: each endpoint receives only the
    events reported to it, whichever client replays the shared directory."""
    other = FaultServer().start()
    try:
        x = make_client(**OUTAGE)
        x_keys = _journal_during_outage(server, x, 100, prefix="x")
        x.close(timeout=2)
        y = make_client(base_url=other.url)
        y_keys = [y.report("y_1", "api_call", {"i": i}) for i in range(50)]
        assert y.flush(timeout=5)
        y.replay(timeout=2)
        y.close(timeout=5)
        assert set(y_keys) <= other.keys()
        misrouted = len(set(x_keys) & other.keys())
        assert misrouted == 0, f"the other endpoint got {misrouted} of x's 100 events"
        server.outage_status = None
        again = make_client()
        again.replay(timeout=10)
        assert set(x_keys) <= server.keys()
        assert len(set(y_keys) & server.keys()) == 0
    finally:
        other.stop()


def test_a_process_that_does_not_lead_replay_idles_without_spinning(
    server: FaultServer, journal_dir: Path, procs
):
    """A process that cannot lead replay (another process holds its replay lock), after a
    blip left a backlog on disk, uses under 10% of a core while idle."""
    journal = Journal(journal_dir)
    journal.open()
    journal.close()
    # The follower's key is "k" on this server: the leader's lock is the one for its files.
    config = Config(api_key="k", base_url=server.url, journal_dir=journal_dir)
    lock = f"replay-{config.journal_fingerprint.hex()[:16]}.lock"
    fd = os.open(journal_dir / "locks" / lock, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        server.outage_status = 503
        proc = run_child(procs, "idle_follower.py", server.url, journal_dir, stdin=True)
        assert proc.expect("journaled", timeout=20) == "journaled 100", proc.output()
        assert len(journal_keys(journal_dir)) == 100
        server.outage_status = None
        assert proc.popen.stdin is not None
        proc.popen.stdin.write("go\n")
        proc.popen.stdin.flush()
        cpu = float(proc.expect("cpu ", timeout=20).split()[1])
        assert wait_exit(proc, timeout=10) == 0
    finally:
        os.close(fd)
    assert cpu < 0.10, f"idle follower used {cpu:.0%} of a core"


def _bump_version(source: Path, target: Path) -> None:
    """Copy a real batch file as one of a newer format: version + 1, header CRC redone."""
    data = bytearray(source.read_bytes())
    version, header_len = struct.unpack_from("<HH", data, 4)
    struct.pack_into("<H", data, 4, version + 1)
    struct.pack_into("<I", data, header_len - 4, zlib.crc32(bytes(data[: header_len - 4])))
    target.write_bytes(bytes(data))
    shutil.copymode(source, target)


def test_journal_replay_command_leaves_a_newer_format_file_and_returns(
    server: FaultServer, make_client, journal_dir: Path, procs
):
    """`meterline journal replay` with a newer-format batch next to a normal one: the
    command sends the normal batch and returns by itself, leaving the newer file in place."""
    client = make_client(**OUTAGE)
    keys = _journal_during_outage(server, client, 100)
    client.close(timeout=2)
    (original,) = sorted((journal_dir / "ready").glob("*.mlj"))
    newer = original.with_name(original.name[: -len(".mlj")] + "ff.mlj")
    _bump_version(original, newer)
    newer_bytes = newer.read_bytes()
    server.outage_status = None
    proc = run_module(
        procs,
        "meterline.cli",
        "journal",
        "replay",
        "--dir",
        journal_dir,
        METERLINE_API_KEY="test-key",
        METERLINE_BASE_URL=server.url,
    )
    wait_exit(proc, timeout=10)
    assert newer.exists(), "the newer-format file was removed"
    assert newer.read_bytes() == newer_bytes
    assert set(keys) <= server.keys()
    assert "Traceback" not in "".join(proc.stderr), proc.output()
