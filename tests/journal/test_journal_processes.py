"""Real processes: kill -9 releases locks, concurrent replayers, and fork."""

from __future__ import annotations

import os
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest

from meterline._errors import JournalError
from tests.journal.helpers import batch, key_of

HELPER = str(Path(__file__).with_name("procs.py"))
SRC = str(Path(__file__).resolve().parents[2] / "src")

pytestmark = pytest.mark.slow


def start(*args: str) -> subprocess.Popen[str]:
    env = {**os.environ, "PYTHONPATH": SRC}
    return subprocess.Popen(
        [sys.executable, HELPER, *args],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        env=env,
    )


def test_leader_killed_with_sigkill_releases_the_lock(make_journal, jdir):
    """A leader killed with SIGKILL loses the replay lock: the kernel releases it."""
    journal = make_journal()
    child = start("lead", str(jdir))
    try:
        assert child.stdout is not None
        assert child.stdout.readline().strip() == "True"
        assert not journal.try_lead()
    finally:
        child.kill()
        child.wait(timeout=10)
        child.stdin.close()  # type: ignore[union-attr]
        child.stdout.close()  # type: ignore[union-attr]
    assert journal.try_lead()


def test_claim_of_a_killed_process_is_released(make_journal, jdir):
    """A batch claimed by a process that dies with SIGKILL can be claimed again, whole."""
    journal = make_journal()
    events = batch(3)
    journal.spill(events)
    child = start("claim", str(jdir))
    try:
        assert child.stdout is not None
        assert child.stdout.readline().strip() == journal.ready()[0].name
        assert journal.claim(journal.ready()[0]) is None
    finally:
        child.kill()
        child.wait(timeout=10)
        child.stdin.close()  # type: ignore[union-attr]
        child.stdout.close()  # type: ignore[union-attr]
    claim = journal.claim(journal.ready()[0])
    assert claim is not None
    assert journal.read(claim) == events


def test_three_processes_replay_one_journal(make_journal, jdir, tmp_path):
    """Three replaying processes deliver every key exactly once and never read one batch
    at the same time."""
    journal = make_journal()
    expected: Counter[str] = Counter()
    for _ in range(150):
        events = batch(10)
        journal.spill(events)
        expected.update(key_of(e) for e in events)
    inflight = tmp_path / "inflight"
    inflight.mkdir()
    outs = [tmp_path / f"sent{i}.txt" for i in range(3)]
    children = [start("replay", str(jdir), str(out), str(inflight)) for out in outs]
    for child in children:
        assert child.stdout.readline().strip() == "ready"  # type: ignore[union-attr]
    for child in children:
        child.stdin.write("go\n")  # type: ignore[union-attr]
        child.stdin.flush()  # type: ignore[union-attr]
    codes = [child.wait(timeout=45) for child in children]
    for child in children:
        child.stdin.close()  # type: ignore[union-attr]
        child.stdout.close()  # type: ignore[union-attr]
    sent: Counter[str] = Counter()
    for out in outs:
        lines = out.read_text().split() if out.exists() else []
        assert not any(line.startswith("VIOLATION") for line in lines)
        sent.update(lines)
    assert codes == [0, 0, 0]
    assert sent == expected
    assert journal.ready() == []
    assert sum(1 for out in outs if out.exists() and out.stat().st_size) >= 2  # all took part


@pytest.mark.parametrize("explicit", [True, False], ids=["after_fork_in_child", "pid-check"])
def test_fork_child_drops_inherited_locks_without_unlocking_the_parent(
    make_journal, jdir, explicit
):
    """A forked child starts with no claims and not leader, and closing its copies of the
    descriptors leaves the parent's locks held (checked while the child still lives)."""
    journal = make_journal()
    events = batch(2)
    journal.spill(events)
    ref = journal.ready()[0]
    claim = journal.claim(ref)
    assert claim is not None
    assert journal.try_lead()
    report_r, report_w = os.pipe()
    go_r, go_w = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: report, then wait for the parent's checks, then leave
        code = 1
        try:
            os.close(report_r)
            os.close(go_w)
            if explicit:
                journal.after_fork_in_child()
            ok = not journal.is_leader and journal.claim(ref) is None
            ok = ok and not journal.try_lead()
            try:
                journal.read(claim)
                ok = False
            except JournalError:
                pass
            os.write(report_w, b"1" if ok else b"0")
            os.read(go_r, 1)
            code = 0
        finally:
            os._exit(code)
    os.close(report_w)
    os.close(go_r)
    try:
        assert os.read(report_r, 1) == b"1"
        other = make_journal()
        assert not other.try_lead()  # the parent still leads
        assert other.claim(ref) is None  # and still holds its claim
        assert journal.read(claim) == events
        journal.resign()
        journal.release(claim)
        assert other.try_lead()  # the living child kept no reference to either lock
        assert other.claim(ref) is not None
    finally:
        os.write(go_w, b"x")
        os.close(go_w)
        os.close(report_r)
        _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0


def test_fork_child_can_use_the_journal_on_its_own(make_journal, jdir):
    """After the fork the child spills and claims with its own descriptors."""
    journal = make_journal()
    pid = os.fork()
    if pid == 0:
        code = 1
        try:
            journal.after_fork_in_child()
            journal.spill(batch(2))
            claim = journal.claim(journal.ready()[0])
            code = 0 if claim is not None and len(journal.read(claim)) == 2 else 2
            journal.ack(claim)
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    assert journal.ready() == []
