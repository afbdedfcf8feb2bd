"""The acceptance test: three `meterline relay` processes of one group ship 100,000 events;
one is killed with SIGKILL halfway and replaced; the server ends with exactly the reported
keys, and every relay stops on SIGTERM with exit 0 and its final progress line."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from meterline.server import ReferenceServer

from .conftest import API_KEY, CLI_GROUP_SETTINGS, fill, wait_for

N = 100_000


def start_relay(
    source: str, group: str, base_url: str, journal: Path, log: Path
) -> subprocess.Popen[bytes]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("METERLINE_")}
    env["METERLINE_API_KEY"] = API_KEY
    with open(log, "wb") as out:
        return subprocess.Popen(
            [
                sys.executable,
                "-m",
                "meterline",
                "relay",
                "--from",
                source,
                "--group",
                group,
                "--to",
                "orb",
                "--base-url",
                base_url,
                "--journal-dir",
                str(journal),
                "--progress-interval",
                "2",
                "--shutdown-timeout",
                "5",
                *CLI_GROUP_SETTINGS,
            ],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=out,
        )


@pytest.mark.slow
@pytest.mark.timeout(240)
def test_a_fleet_survives_a_kill_and_counts_every_event_once(broker, group, tmp_path):
    topic = broker.create_topic(partitions=6)
    keys = fill(broker, topic, N, tmp_path / "producer", customers=97)
    assert len(set(keys)) == N
    srv = ReferenceServer(api_keys=[API_KEY], request_log_size=100_000).start()
    procs: list[tuple[subprocess.Popen[bytes], Path]] = []
    try:
        for i in range(3):
            log = tmp_path / f"relay-{i}.log"
            procs.append(
                (start_relay(broker.url(topic), group, srv.url, tmp_path / f"j{i}", log), log)
            )
        wait_for(lambda: srv.event_count() > 0.3 * N, 120, "30% delivered")
        victim, _ = procs[0]
        victim.send_signal(signal.SIGKILL)
        victim.wait(10)
        log = tmp_path / "relay-3.log"
        procs.append((start_relay(broker.url(topic), group, srv.url, tmp_path / "j3", log), log))
        wait_for(lambda: srv.event_count() >= N, 180, "every event delivered")
        held = {e["id"] for e in srv.events()}
        assert held == set(keys), (len(held - set(keys)), len(set(keys) - held))
        for proc, _ in procs[1:]:
            assert proc.poll() is None, "a relay exited on its own"
            proc.send_signal(signal.SIGTERM)
        for proc, log in procs[1:]:
            assert proc.wait(20) == 0, log.read_text()[-2000:]
            text = log.read_text()
            assert "meterline relay: stopped" in text, text[-2000:]
            assert f"relay {group}: delivered=" in text.splitlines()[-2], text[-2000:]
            assert API_KEY not in text
            assert "Traceback" not in text
    finally:
        for proc, _ in procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait(10)
        srv.stop()
