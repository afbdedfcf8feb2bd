"""Interpreter exit in real processes: a script that reports and simply returns."""

from __future__ import annotations

import sys
import time
from pathlib import Path

import pytest

from tests.lifecycle.helpers import (
    CHILDREN,
    Proc,
    child_env,
    closed_port_url,
    interpreters,
    ready_events,
)
from tests.support.fault_server import FaultServer

pytestmark = pytest.mark.slow
REPORTER = CHILDREN / "reporter.py"


def run_reporter(
    procs: list[Proc],
    mode: str,
    url: str,
    journal_dir: Path,
    n: int = 100,
    *,
    python: str = sys.executable,
    **env: str | Path,
) -> tuple[Proc, int, float, list[str]]:
    keys_file = journal_dir.parent / f"keys-{mode}.txt"
    proc = Proc(
        [python, REPORTER, mode, url, journal_dir, str(n)],
        env=child_env(
            KEYS_FILE=keys_file,
            METERLINE_API_KEY="k",
            METERLINE_BASE_URL=url,
            METERLINE_JOURNAL_DIR=journal_dir,
            **env,
        ),
    )
    procs.append(proc)
    code = proc.wait(timeout=40)
    elapsed = time.monotonic() - proc.started
    keys = keys_file.read_text().split() if keys_file.exists() else []
    return proc, code, elapsed, keys


def replay(procs: list[Proc], url: str, journal_dir: Path) -> str:
    proc = Proc([sys.executable, CHILDREN / "replay.py", url, journal_dir], env=child_env())
    procs.append(proc)
    line = proc.expect("replayed", timeout=30)
    assert proc.wait() == 0, proc.output()
    return line


def test_returning_script_delivers_everything(server: FaultServer, tmp_path: Path, procs):
    """A script that reports 1,000 events and returns without flush() delivers each once."""
    proc, code, _, keys = run_reporter(procs, "exit", server.url, tmp_path / "j", 1000)
    assert code == 0, proc.output()
    assert len(keys) == 1000
    assert server.keys() == set(keys)
    assert all(server.deliveries[k] == 1 for k in keys)
    assert ready_events(tmp_path / "j") == 0


@pytest.mark.parametrize("shutdown_timeout", ["5", "1"])
def test_endpoint_down_exit_is_bounded_and_a_second_process_replays(
    server: FaultServer, tmp_path: Path, procs, shutdown_timeout: str
):
    """With nothing listening, the script exits within shutdown_timeout with all events
    journaled, and a second process on the same journal delivers each exactly once."""
    journal_dir = tmp_path / "j"
    url = closed_port_url()
    proc, code, elapsed, keys = run_reporter(
        procs,
        "exit",
        url,
        journal_dir,
        1000,
        METERLINE_SHUTDOWN_TIMEOUT=shutdown_timeout,
    )
    assert code == 0, proc.output()
    assert elapsed < float(shutdown_timeout) + 2.0, elapsed  # slack: interpreter start-up
    assert ready_events(journal_dir) == 1000
    # Another endpoint on the same journal never receives them: they were written for `url`.
    assert replay(procs, server.url, journal_dir) == "replayed 0 remaining 0"
    assert server.count() == 0
    revived = FaultServer(port=int(url.split(":")[2].split("/")[0])).start()
    try:
        assert replay(procs, url, journal_dir) == "replayed 1000 remaining 0"
        assert revived.keys() == set(keys)
        assert all(n == 1 for n in revived.deliveries.values())
    finally:
        revived.stop()
    assert len(keys) == 1000


def test_hung_endpoint_exit_is_bounded_by_shutdown_timeout(tmp_path: Path, procs):
    """An endpoint that accepts and never answers holds the exit for at most
    shutdown_timeout (journaling included), and nothing is lost."""
    import socket

    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(64)
        url = f"http://127.0.0.1:{listener.getsockname()[1]}/v1"
        proc, code, elapsed, _ = run_reporter(
            procs, "exit", url, tmp_path / "j", 500, METERLINE_SHUTDOWN_TIMEOUT="1"
        )
    assert code == 0, proc.output()
    # It waits for the hung endpoint (sends stop 0.25 s before the bound to leave time to
    # journal) but never past the bound; the slack is interpreter start-up and import.
    assert 0.7 <= elapsed < 1.0 + 1.5, elapsed
    assert ready_events(tmp_path / "j") == 500


_PYTHONS = interpreters()
_ATEXIT_CASES = {
    "atexit-report": "reported in atexit",
    "atexit-flush": "flush in atexit: True",
    "atexit-default": "default flush in atexit: True",
}


@pytest.mark.parametrize("version", sorted(_PYTHONS))
@pytest.mark.parametrize("mode", sorted(_ATEXIT_CASES))
def test_atexit_paths_on_each_python(
    server: FaultServer, tmp_path: Path, procs, version: str, mode: str
):
    """A first report() inside an atexit handler (no worker thread yet; 3.12+ refuses new
    threads there) and a flush() inside one both deliver, on every Python version found."""
    python = _PYTHONS[version]
    if python is None:
        pytest.skip(
            f"no Python {version} with httpx, tenacity and orjson: make a venv at "
            f"/tmp/meterline-venvs/py{version} or list it in METERLINE_TEST_PYTHONS"
        )
    proc, code, _, keys = run_reporter(procs, mode, server.url, tmp_path / "j", python=python)
    assert code == 0, proc.output()
    assert _ATEXIT_CASES[mode] in proc.lines, proc.output()
    assert "Traceback" not in "".join(proc.stderr), proc.output()
    assert len(keys) == 1
    assert server.keys() == set(keys)
