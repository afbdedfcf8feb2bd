"""Fork in real processes: os.fork, a hammer of forks, libc's fork (uWSGI), multiprocessing."""

from __future__ import annotations

import signal
import sys
from pathlib import Path

import pytest

from meterline.testing import wait_until
from tests.lifecycle.helpers import CHILDREN, Proc, child_env, ready_events
from tests.support.fault_server import FaultServer

pytestmark = pytest.mark.slow


def run_forker(procs: list[Proc], mode: str, server: FaultServer, tmp_path: Path) -> Proc:
    proc = Proc([sys.executable, CHILDREN / "forker.py", mode, server.url, tmp_path / "j"])
    procs.append(proc)
    assert proc.wait(timeout=50) == 0, proc.output()
    return proc


def keys_of(proc: Proc, who: str) -> list[str]:
    line = next(line for line in proc.lines if line.startswith(who + " "))
    return line.split()[1:]


@pytest.mark.parametrize("mode", ["basic", "cfork"])
def test_child_starts_empty_and_parent_sends_its_own_once(
    server: FaultServer, tmp_path: Path, procs, mode: str
):
    """After a fork with 50 events pending (os.fork, or libc's fork() that runs no Python
    hook, as uWSGI does), the child sends only its own 20 and the parent its 60, each once,
    and no key is shared between them."""
    proc = run_forker(procs, mode, server, tmp_path)
    assert "child status 0 parent sent 60" in proc.lines, proc.output()
    parent, child = keys_of(proc, "parent"), keys_of(proc, "child")
    assert len(set(parent)) == 60
    assert len(set(child)) == 20
    assert not set(parent) & set(child)
    assert server.keys() == set(parent) | set(child)
    assert all(n == 1 for n in server.deliveries.values())


def test_forking_while_another_thread_reports_never_deadlocks_the_child(
    server: FaultServer, tmp_path: Path, procs
):
    """25 forks while a thread reports in a loop (so the queue lock or the worker is often
    busy at the fork): every child reports and flushes within its deadline."""
    proc = run_forker(procs, "hammer", server, tmp_path)
    assert "children ok 25 failed 0 stuck 0" in proc.lines, proc.output()
    assert any(line.endswith("pending 0") for line in proc.lines), proc.output()
    assert sum(1 for e in server.events() if e["event_name"] == "in_child") == 25


def test_multiprocessing_fork_pool_workers_deliver_at_their_exit(
    server: FaultServer, tmp_path: Path, procs
):
    """Pool workers (fork start method) close their client from multiprocessing's own
    finalizers, since they leave with os._exit(): all 20 task events arrive once."""
    proc = run_forker(procs, "mp-pool", server, tmp_path)
    tasks = keys_of(proc, "tasks")
    assert len(set(tasks)) == 20
    assert set(tasks) <= server.keys()
    assert all(n == 1 for n in server.deliveries.values())


def test_write_ahead_journals_events_reported_during_a_backoff(
    server: FaultServer, tmp_path: Path, procs
):
    """In write_ahead mode, events reported while the worker backs off from a failing
    endpoint are journaled at once, so a kill -9 then loses none of them."""
    server.outage_status = 503
    journal_dir = tmp_path / "j"
    proc = Proc(
        [sys.executable, CHILDREN / "reporter.py", "wal-backoff", server.url, journal_dir, "200"],
        env=child_env(KEYS_FILE=tmp_path / "keys.txt"),
        stdin=True,
    )
    procs.append(proc)
    proc.expect("first")
    wait_until(lambda: len(server.requests) >= 1, timeout=10)  # now in its retry backoff
    assert proc.popen.stdin is not None
    proc.popen.stdin.write("go\n")
    proc.popen.stdin.flush()
    proc.expect("reported")
    wait_until(lambda: ready_events(journal_dir) == 201, timeout=10)
    proc.signal(signal.SIGKILL)
    proc.wait()
    keys = (tmp_path / "keys.txt").read_text().split()
    server.outage_status = None
    replayer = Proc([sys.executable, CHILDREN / "replay.py", server.url, journal_dir])
    procs.append(replayer)
    assert replayer.expect("replayed").endswith("remaining 0")
    assert server.keys() == set(keys)
    assert len(keys) == 201
