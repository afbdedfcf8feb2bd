"""SIGTERM to a bare script that opted in with ``meterline.install_sigterm_handler()``."""

from __future__ import annotations

import signal
import socket
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from meterline.testing import wait_until
from tests.lifecycle.helpers import CHILDREN, Proc, child_env, ready_events
from tests.support.fault_server import FaultServer

pytestmark = pytest.mark.slow


def start(procs: list[Proc], mode: str, url: str, tmp_path: Path, n: int, **env: str) -> Proc:
    proc = Proc(
        [sys.executable, CHILDREN / "reporter.py", mode, url, tmp_path / "j", str(n)],
        env=child_env(KEYS_FILE=tmp_path / "keys.txt", **env),
    )
    procs.append(proc)
    proc.expect("ready")
    return proc


@pytest.fixture
def hung_url() -> Iterator[str]:
    """An endpoint that accepts connections and never answers."""
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(64)
        yield f"http://127.0.0.1:{listener.getsockname()[1]}/v1"


def test_sigterm_delivers_everything_and_exits_143(server: FaultServer, tmp_path: Path, procs):
    """SIGTERM turns into a normal exit whose close delivers every queued event once."""
    proc = start(procs, "sigterm", server.url, tmp_path, 500, METERLINE_FLUSH_INTERVAL="30")
    proc.signal(signal.SIGTERM)
    assert proc.wait() == 143, proc.output()
    keys = (tmp_path / "keys.txt").read_text().split()
    assert len(keys) == 500
    assert server.keys() == set(keys)
    assert all(server.deliveries[k] == 1 for k in keys)


def test_sigterm_chains_to_the_host_handler(server: FaultServer, tmp_path: Path, procs):
    """A SIGTERM handler the host installed first still runs, then meterline's exit."""
    proc = start(procs, "sigterm-host", server.url, tmp_path, 10, METERLINE_FLUSH_INTERVAL="30")
    proc.signal(signal.SIGTERM)
    assert proc.wait() == 143, proc.output()
    assert "host handler" in proc.lines
    assert server.count() == 10


def test_sigterm_with_a_send_in_flight_to_a_hung_endpoint_journals_it(
    hung_url: str, tmp_path: Path, procs
):
    """SIGTERM while a batch waits on an endpoint that never answers: the exit takes
    shutdown_timeout plus the journaling grace, and the in-flight batch is journaled."""
    proc = start(
        procs,
        "sigterm",
        hung_url,
        tmp_path,
        200,
        METERLINE_FLUSH_INTERVAL="0.05",
        METERLINE_SHUTDOWN_TIMEOUT="1",
    )
    wait_until(lambda: _connections(proc.pid) > 0, timeout=10)
    proc.signal(signal.SIGTERM)
    sent = time.monotonic()
    assert proc.wait() == 143, proc.output()
    assert time.monotonic() - sent < 1.0 + 1.0 + 1.0
    assert ready_events(tmp_path / "j") == 200


def test_a_second_sigterm_does_not_cut_the_close_short(hung_url: str, tmp_path: Path, procs):
    """A second SIGTERM during the bounded close is ignored (the host handler runs once), so
    the batch in flight is still journaled."""
    proc = start(
        procs,
        "sigterm-host",
        hung_url,
        tmp_path,
        200,
        METERLINE_FLUSH_INTERVAL="0.05",
        METERLINE_SHUTDOWN_TIMEOUT="2",
    )
    wait_until(lambda: _connections(proc.pid) > 0, timeout=10)
    proc.signal(signal.SIGTERM)
    proc.expect("host handler")  # the exit has begun; its close waits 2 s on the endpoint
    proc.signal(signal.SIGTERM)
    assert proc.wait() == 143, proc.output()
    assert proc.lines.count("host handler") == 1
    assert "Traceback" not in "".join(proc.stderr), proc.output()
    assert ready_events(tmp_path / "j") == 200


def _connections(pid: int) -> int:
    """TCP sockets the process holds (its in-flight request), from /proc."""
    fd_dir = Path(f"/proc/{pid}/fd")
    try:
        links = [p.readlink() for p in fd_dir.iterdir()]
    except OSError:
        return 0
    return sum(1 for link in links if str(link).startswith("socket:"))
