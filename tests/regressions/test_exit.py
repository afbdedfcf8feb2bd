"""Interpreter exit and kill -9 in real processes: nothing reported is lost or stranded.

Scenarios 1, 5, 6 and 8 of the regression issue.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest

from tests.regressions.helpers import (
    Proc,
    closed_port_url,
    journal_keys,
    run_child,
    wait_exit,
)
from tests.support.fault_server import FaultServer, Step

pytestmark = pytest.mark.slow


def _exit_script(
    procs: list[Proc],
    url: str,
    tmp_path: Path,
    n: int,
    *,
    flavor: str = "plain",
    scope: str = "module",
    shutdown_timeout: float,
) -> tuple[Proc, float, float, list[str]]:
    """Run the script to its exit: (proc, wall seconds, seconds after "returning", keys)."""
    keys_file = tmp_path / "keys.txt"
    proc = run_child(
        procs,
        "exit_script.py",
        url,
        tmp_path / "j",
        str(n),
        flavor,
        scope,
        keys_file,
        METERLINE_SHUTDOWN_TIMEOUT=shutdown_timeout,
    )
    proc.expect("returning", timeout=30)
    returned = time.monotonic()
    code = wait_exit(proc, timeout=shutdown_timeout + 15)
    ended = time.monotonic()
    assert code == 0, proc.output()
    return proc, ended - proc.started, ended - returned, keys_file.read_text().split()


@pytest.mark.parametrize("n", [400, 10_010])
def test_client_made_in_main_and_never_closed_delivers_everything_at_exit(
    server: FaultServer, tmp_path: Path, procs, n: int
):
    """A Client created inside main() and dropped when it returns, never closed: at exit
    every event it accepted reaches the endpoint once, within shutdown_timeout."""
    _, _, after_return, keys = _exit_script(
        procs, server.url, tmp_path, n, scope="main", shutdown_timeout=3
    )
    assert len(set(keys)) == n
    missing = set(keys) - server.keys()
    assert not missing, f"{len(missing)} of {n} events never arrived"
    assert all(server.deliveries[k] == 1 for k in keys)
    assert after_return <= 3 + 0.6, after_return


@pytest.mark.parametrize("n", [400, 10_010])
def test_client_made_in_main_journals_everything_at_exit_when_nothing_listens(
    tmp_path: Path, procs, n: int
):
    """The same never-closed Client with nothing listening at the endpoint: at exit every
    event is in the journal's ready/, within shutdown_timeout."""
    _, _, after_return, keys = _exit_script(
        procs, closed_port_url(), tmp_path, n, scope="main", shutdown_timeout=2
    )
    on_disk = journal_keys(tmp_path / "j")
    assert len(set(keys)) == n
    assert set(on_disk) == set(keys), f"{len(set(keys) - set(on_disk))} of {n} not journaled"
    assert after_return <= 2 + 0.6, after_return


def test_wide_unicode_events_to_a_hung_endpoint_are_journaled_within_the_exit_bound(
    server: FaultServer, tmp_path: Path, procs
):
    """500 events of ~600 CJK/emoji characters each (real UTF-8 bytes far above their
    character count), an endpoint that accepts and never answers, shutdown_timeout=1: the
    process exits within about a second of its work and all 500 keys are in ready/."""
    server.always = Step(hang=True)
    _, wall, _, keys = _exit_script(
        procs, server.url, tmp_path, 500, flavor="wide", shutdown_timeout=1
    )
    assert len(server.requests) >= 1  # the endpoint did hold a request
    on_disk = journal_keys(tmp_path / "j")
    assert set(on_disk) == set(keys), f"{len(set(keys) - set(on_disk))} of 500 not journaled"
    assert wall <= 2.5, f"exit took {wall:.2f} s in all (start-up included)"


def test_fifty_thousand_queued_to_a_hung_endpoint_exit_within_shutdown_timeout(
    server: FaultServer, tmp_path: Path, procs
):
    """50,000 events queued, an endpoint that never answers, shutdown_timeout=2: the exit
    comes within ~2 s of the script's return and all 50,000 events are on disk."""
    server.always = Step(hang=True)
    _, _, after_return, keys = _exit_script(procs, server.url, tmp_path, 50_000, shutdown_timeout=2)
    on_disk = set(journal_keys(tmp_path / "j"))
    assert len(set(keys)) == 50_000
    assert on_disk == set(keys), f"{len(set(keys) - on_disk)} of 50,000 not on disk"
    assert after_return <= 2.6, f"exit took {after_return:.2f} s after the script returned"


def test_write_ahead_keeps_every_event_through_kill_9_while_the_endpoint_fails(
    server: FaultServer, tmp_path: Path, procs
):
    """In write_ahead mode with the endpoint answering 503, 5,000 reported events are all on
    disk when the process is killed with SIGKILL 0.6 s after its last report() returned."""
    server.outage_status = 503
    keys_file = tmp_path / "keys.txt"
    journal_dir = tmp_path / "j"
    proc = run_child(procs, "wal_kill.py", server.url, journal_dir, "5000", keys_file)
    proc.expect("reported", timeout=30)
    # The promise is "nothing older than a few milliseconds is lost": 0.6 s is the scenario's
    # own interval between the last report() and the kill, not a wait for an outcome.
    threading.Event().wait(0.6)
    proc.signal(9)
    assert wait_exit(proc, timeout=10) == -9
    keys = set(keys_file.read_text().split())
    assert len(keys) == 5000
    on_disk = set(journal_keys(journal_dir))
    assert keys <= on_disk, f"{len(keys - on_disk)} of 5,000 lost to kill -9"
