"""Real processes for the lifecycle tests: start them, read their lines with a deadline."""

from __future__ import annotations

import os
import queue
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import IO

ROOT = Path(__file__).resolve().parents[2]
CHILDREN = Path(__file__).resolve().parent / "children"
EXAMPLES = ROOT / "examples"
BIN = Path(sys.executable).parent


def child_env(**extra: str | os.PathLike[str]) -> dict[str, str]:
    """The test's environment without METERLINE_*/proxy variables, plus ``extra``."""
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("METERLINE_", "GUNICORN_", "CELERY_"))
        and k.lower() not in ("http_proxy", "https_proxy", "all_proxy")
    }
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT / "src"), str(ROOT)])
    env["PYTHONUNBUFFERED"] = "1"
    env.update({k: os.fspath(v) for k, v in extra.items()})
    return env


class Proc:
    """A child process whose stdout lines are read by a thread and waited for with a deadline."""

    def __init__(
        self,
        args: Sequence[str | os.PathLike[str]],
        *,
        env: dict[str, str] | None = None,
        cwd: str | os.PathLike[str] | None = None,
        merge_stderr: bool = False,
        stdin: bool = False,
    ) -> None:
        self.args = [os.fspath(a) for a in args]
        self.started = time.monotonic()
        self.popen = subprocess.Popen(
            self.args,
            stdin=subprocess.PIPE if stdin else subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT if merge_stderr else subprocess.PIPE,
            text=True,
            env=env if env is not None else child_env(),
            cwd=cwd if cwd is not None else ROOT,
            start_new_session=True,
        )
        self.lines: list[str] = []
        self.stderr: list[str] = []
        self._queue: queue.Queue[str | None] = queue.Queue()
        self._readers = [self._reader(self.popen.stdout, self._queue)]
        if not merge_stderr:
            self._readers.append(self._reader(self.popen.stderr, None))

    @property
    def pid(self) -> int:
        return self.popen.pid

    def _reader(
        self, stream: IO[str] | None, sink: queue.Queue[str | None] | None
    ) -> threading.Thread:
        def run() -> None:
            assert stream is not None
            for line in stream:
                if sink is None:
                    self.stderr.append(line)
                else:
                    sink.put(line.rstrip("\n"))
            if sink is not None:
                sink.put(None)

        thread = threading.Thread(target=run, daemon=True)
        thread.start()
        return thread

    def expect(self, needle: str, timeout: float = 20.0) -> str:
        """The first new stdout line containing ``needle``; fails at the deadline or at EOF."""
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError(f"no line with {needle!r} within {timeout} s: {self.output()}")
            try:
                line = self._queue.get(timeout=left)
            except queue.Empty:
                continue
            if line is None:
                self._queue.put(None)
                raise AssertionError(f"exited before printing {needle!r}: {self.output()}")
            self.lines.append(line)
            if needle in line:
                return line

    def signal(self, signum: int) -> None:
        self.popen.send_signal(signum)

    def wait(self, timeout: float = 30.0) -> int:
        """Wait for the exit and the end of its output; return the exit status."""
        code = self.popen.wait(timeout=timeout)
        for reader in self._readers:
            reader.join(timeout=5)
        while True:
            try:
                line = self._queue.get_nowait()
            except queue.Empty:
                break
            if line is not None:
                self.lines.append(line)
        return code

    def output(self) -> str:
        return "\n".join(self.lines) + "\n--- stderr ---\n" + "".join(self.stderr[-40:])

    def kill_group(self) -> None:
        """Stop the child and anything it started (its own session), if still running."""
        if self.popen.poll() is None:
            try:
                os.killpg(self.popen.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            self.popen.wait(timeout=10)
        for stream in (self.popen.stdin, self.popen.stdout, self.popen.stderr):
            if stream is not None:
                stream.close()


def python(*args: str | os.PathLike[str], **kwargs: object) -> Proc:
    """Run the test interpreter on ``args``."""
    return Proc([sys.executable, *args], **kwargs)  # type: ignore[arg-type]


def tool(name: str) -> str | None:
    """The path of a console script installed next to the test interpreter, else on PATH."""
    candidate = BIN / name
    if candidate.exists():
        return str(candidate)
    return shutil.which(name)


def closed_port_url() -> str:
    """A base URL on 127.0.0.1 where nothing listens (the port was just released)."""
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}/v1"


def ready_events(journal_dir: Path) -> int:
    """Events in the journal's ready/ (read-only: no lock is taken, nothing is created)."""
    from meterline import MeterlineError
    from meterline.journal import inspect_file

    ready = journal_dir / "ready"
    if not ready.is_dir():
        return 0
    total = 0
    for path in ready.glob("*.mlj"):
        try:
            count = inspect_file(path).get("count")
        except (OSError, MeterlineError):  # a batch acknowledged meanwhile
            count = 0
        total += count if isinstance(count, int) else 0
    return total


def interpreters() -> dict[str, str | None]:
    """For Python 3.10 to 3.13: an interpreter that can import meterline's dependencies.

    Looked for in ``$METERLINE_TEST_PYTHONS`` (paths separated by ``os.pathsep``), in
    throwaway venvs ``/tmp/meterline-venvs/py3.X`` and as ``python3.X`` on PATH; the
    test interpreter counts for its own version. None: no usable interpreter here.
    """
    found: dict[str, str | None] = {f"3.{minor}": None for minor in range(10, 14)}
    found[f"{sys.version_info.major}.{sys.version_info.minor}"] = sys.executable
    extra = [p for p in os.environ.get("METERLINE_TEST_PYTHONS", "").split(os.pathsep) if p]
    for version in [v for v, path in found.items() if path is None]:
        candidates = [*extra, f"/tmp/meterline-venvs/py{version}/bin/python"]
        candidates.append(shutil.which(f"python{version}") or "")
        for candidate in candidates:
            if candidate and _usable(candidate, version):
                found[version] = candidate
                break
    return found


def _usable(path: str, version: str) -> bool:
    probe = (
        "import sys, httpx, tenacity, orjson; "
        f"sys.exit(0 if '%d.%d' % sys.version_info[:2] == {version!r} else 1)"
    )
    try:
        done = subprocess.run(
            [path, "-c", probe], env=child_env(), capture_output=True, timeout=20, check=False
        )
    except (OSError, subprocess.TimeoutExpired):
        return False
    return done.returncode == 0
