"""``meterline journal`` for a destination other than Orb: the journal's batches are found,
counted and replayed to the destination they were written for, and to no other."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import meterline
from meterline.testing import FlakyTransport, TransportError
from tests.destinations.vendor_servers import LagoServer
from tests.support.journal import ready_events

KEY = "lago_key_3f9a7c1e"


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("METERLINE_")}
    return subprocess.run(
        [sys.executable, "-m", "meterline", *args],
        capture_output=True,
        text=True,
        timeout=60,
        env={**env, "METERLINE_API_KEY": KEY},
    )


def _journal_for_lago(journal: Path, base_url: str, n: int) -> set[str]:
    """Report ``n`` events for Lago while the endpoint is down: all journaled."""
    down = FlakyTransport([TransportError("down")] * 1000, destination="lago")
    keys = set()
    with meterline.Client(
        KEY,
        destination="lago",
        base_url=base_url,
        journal_dir=journal,
        transport=down,
        retry_attempts=1,
        shutdown_timeout=2,
    ) as client:
        for i in range(n):
            keys.add(client.report(f"sub_{i % 3}", "api_call", {"n": i}))
        assert client.flush(timeout=10).journaled == n
    assert ready_events(journal) == n
    return keys


def test_replay_with_destination_lago_sends_the_backlog_to_lago(tmp_path):
    """``journal replay --destination lago`` sends a Lago journal's events to Lago, each
    transaction_id once, and leaves the journal empty."""
    journal = tmp_path / "j"
    with LagoServer() as lago:
        keys = _journal_for_lago(journal, lago.url, 40)
        status = _run(
            "journal",
            "status",
            "--dir",
            str(journal),
            "--destination",
            "lago",
            "--base-url",
            lago.url,
            "--json",
        )
        assert status.returncode == 0, status.stderr
        assert '"ready_events": 40' in status.stdout
        done = _run(
            "journal",
            "replay",
            "--dir",
            str(journal),
            "--destination",
            "lago",
            "--base-url",
            lago.url,
            "--timeout",
            "30",
        )
        assert done.returncode == 0, done.stdout + done.stderr
        assert lago.keys() == keys
        assert all(n == 1 for n in lago.deliveries.values())
    assert ready_events(journal) == 0
    assert KEY not in done.stdout + done.stderr


def test_replay_as_orb_leaves_a_lago_journal_alone(tmp_path):
    """The same journal replayed as Orb (the default destination) is another account's:
    nothing is sent, the batches stay for Lago, and the command says they were set aside."""
    journal = tmp_path / "j"
    with LagoServer() as lago:
        _journal_for_lago(journal, lago.url, 10)
        done = _run(
            "journal", "replay", "--dir", str(journal), "--base-url", lago.url, "--timeout", "10"
        )
        assert lago.seen() == []
    assert done.returncode == 0, done.stdout + done.stderr
    assert "set aside" in done.stdout
    assert ready_events(journal) == 10
