"""Shared pieces of the regression tests: child processes and read-only views of a journal.

Children run the same meterline the test process imported (its ``src`` first on
``PYTHONPATH``), so a test and its children always exercise one version of the code.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import meterline
from meterline.journal import inspect_file
from tests.lifecycle.helpers import Proc

ROOT = Path(__file__).resolve().parents[2]
CHILDREN = Path(__file__).resolve().parent / "children"
SRC = Path(meterline.__file__).resolve().parents[1]

__all__ = [
    "CHILDREN",
    "Proc",
    "child_env",
    "closed_port_url",
    "journal_entries",
    "journal_keys",
    "oldest_ready_age",
    "run_child",
    "run_module",
    "wait_exit",
]


def child_env(**extra: str | os.PathLike[str]) -> dict[str, str]:
    """The test's environment without METERLINE_* or proxy variables, plus ``extra``."""
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith("METERLINE_")
        and k.lower() not in ("http_proxy", "https_proxy", "all_proxy")
    }
    env["PYTHONPATH"] = os.pathsep.join([str(SRC), str(ROOT)])
    env["PYTHONUNBUFFERED"] = "1"
    env.update({k: os.fspath(v) for k, v in extra.items()})
    return env


def run_child(
    procs: list[Proc], script: str, *args: str | os.PathLike[str], stdin: bool = False, **env: Any
) -> Proc:
    """Start ``children/<script>`` with ``args``; the fixture kills it if the test does not."""
    proc = Proc(
        [sys.executable, CHILDREN / script, *args],
        env=child_env(**{k: str(v) for k, v in env.items()}),
        stdin=stdin,
    )
    procs.append(proc)
    return proc


def run_module(procs: list[Proc], module: str, *args: str | os.PathLike[str], **env: Any) -> Proc:
    """Start ``python -m <module> args`` (a command as users run it) like ``run_child``."""
    proc = Proc(
        [sys.executable, "-m", module, *args],
        env=child_env(**{k: str(v) for k, v in env.items()}),
    )
    procs.append(proc)
    return proc


def wait_exit(proc: Proc, timeout: float) -> int:
    """The child's exit status; fails the test (and kills the child) past ``timeout``."""
    try:
        return proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        proc.wait(timeout=10)
        raise AssertionError(
            f"child still running after {timeout} s (killed): {proc.output()}"
        ) from None


def closed_port_url() -> str:
    """A base URL on 127.0.0.1 where nothing listens (the port was just released)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}/v1"


def _files(journal_dir: Path, where: str) -> Iterator[Path]:
    folder = Path(journal_dir) / where
    if folder.is_dir():
        yield from sorted(p for p in folder.iterdir() if p.name.endswith(".mlj"))


def journal_entries(journal_dir: Path, where: str = "ready") -> list[tuple[dict[str, Any], Any]]:
    """Every event (decoded) in ``where`` with its reasons (rejected/ only, else None)."""
    found: list[tuple[dict[str, Any], Any]] = []
    for path in _files(journal_dir, where):
        try:
            info = inspect_file(path)
        except OSError:  # acknowledged and deleted since the listing
            continue
        events = info.get("events") or []
        reasons = info.get("reasons") or [None] * len(events)
        found.extend((e, r) for e, r in zip(events, reasons, strict=False) if isinstance(e, dict))
    return found


def journal_keys(journal_dir: Path, where: str = "ready") -> list[str]:
    """The idempotency keys of the events kept in ``where`` (duplicates included)."""
    return [e["idempotency_key"] for e, _ in journal_entries(journal_dir, where)]


def oldest_ready_age(journal_dir: Path) -> float:
    """Seconds since the oldest file in ready/ was written (0 when there is none)."""
    mtimes = [p.stat().st_mtime for p in _files(journal_dir, "ready")]
    return time.time() - min(mtimes) if mtimes else 0.0
