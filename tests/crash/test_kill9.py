"""kill -9 at any moment loses nothing that meterline had confirmed or journaled."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import threading
from pathlib import Path

import pytest

import meterline
from meterline.testing import wait_until
from tests.support.journal import ready_events

ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.slow


def _start(url: str, journal_dir: Path, mode: str) -> subprocess.Popen[str]:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.Popen(
        [sys.executable, "-m", "tests.crash.reporter", url, str(journal_dir), mode],
        stdout=subprocess.PIPE,
        text=True,
        cwd=ROOT,
        env=env,
    )


def _replay_all(url: str, journal_dir: Path) -> None:
    client = meterline.Client(api_key="k", base_url=url, journal_dir=journal_dir)
    try:
        assert client.replay(timeout=20), "journal not drained"
    finally:
        client.close(timeout=5)


@pytest.mark.timeout(60)
def test_write_ahead_survives_kill_9_with_batches_in_flight(server, tmp_path):
    """In write_ahead mode, events already cut into a batch survive kill -9 while their send
    is still failing, and a restart delivers each exactly once."""
    server.outage_status = 503
    journal_dir = tmp_path / "j"
    child = _start(server.url, journal_dir, "wal-hold")
    try:
        assert child.stdout is not None
        assert child.stdout.readline().strip() == "reported"
        wait_until(lambda: ready_events(journal_dir) == 400, timeout=20)
    finally:
        child.send_signal(signal.SIGKILL)
        child.wait(timeout=10)
        child.stdout.close()
    assert server.count() == 0
    server.outage_status = None
    _replay_all(server.url, journal_dir)
    assert server.count() == 400
    assert ready_events(journal_dir) == 0


@pytest.mark.timeout(120)
def test_random_kill_9_loop_keeps_every_confirmed_event(server, tmp_path):
    """Five children killed at random moments, the endpoint flapping: after a restart every
    event a flush() had confirmed is at the server, and every resend (a crash between the
    server's answer and the journal's unlink) carried the identical body, so it counts once."""
    rng = random.Random(1234)
    journal_dir = tmp_path / "j"
    confirmed: set[str] = set()
    for _ in range(5):
        server.outage_status = rng.choice([None, 503])
        child = _start(server.url, journal_dir, "loop")
        lines: list[str] = []
        reader = threading.Thread(
            target=lambda c=child, out=lines: out.extend(iter(c.stdout.readline, "")),
            daemon=True,
        )
        reader.start()
        wait_until(lambda out=lines: len(out) >= rng.randint(1, 6), timeout=30)
        child.send_signal(signal.SIGKILL)
        child.wait(timeout=10)
        reader.join(timeout=10)
        child.stdout.close()
        for line in lines:
            if line.startswith("confirmed "):
                confirmed.update(line.split()[1:])
    assert len(confirmed) >= 5 * 50
    server.outage_status = None
    _replay_all(server.url, journal_dir)
    assert confirmed <= server.keys()
    assert server.conflicts == []
