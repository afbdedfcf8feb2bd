"""Helpers for the reference server tests: a settable clock, events, a server subprocess."""

from __future__ import annotations

import os
import queue
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import meterline.server

API_KEY = "test-key"
NOW = datetime(2026, 5, 1, 12, 0, 0, tzinfo=timezone.utc)
READY_PREFIX = "meterline reference server listening on "


class Clock:
    """A clock the test moves by hand; ``ReferenceServer(clock=...)`` reads it."""

    def __init__(self, start: datetime = NOW) -> None:
        self.now = start.timestamp()

    def __call__(self) -> float:
        return self.now


def stamp(seconds_from_now: float = 0.0, *, at: datetime = NOW) -> str:
    """An RFC 3339 UTC timestamp, ``seconds_from_now`` away from ``at``."""
    return (at + timedelta(seconds=seconds_from_now)).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def event(
    key: str,
    *,
    customer: str = "cust_1",
    field: str = "external_customer_id",
    event_name: str = "api_call",
    properties: dict[str, Any] | None = None,
    timestamp: str | None = None,
) -> dict[str, Any]:
    """A valid Orb ingest event."""
    return {
        field: customer,
        "event_name": event_name,
        "timestamp": timestamp if timestamp is not None else stamp(-60),
        "properties": {"tokens": 10} if properties is None else properties,
        "idempotency_key": key,
    }


def subprocess_env() -> dict[str, str]:
    """The environment for a child Python that imports the same meterline as this one."""
    source_root = str(Path(meterline.server.__file__).parent.parent.parent)
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [source_root, env.get("PYTHONPATH")]))
    env["PYTHONUNBUFFERED"] = "1"
    return env


@dataclass
class ServerProcess:
    """A ``meterline serve`` child process that has printed its ready line."""

    process: subprocess.Popen[str]
    url: str
    stderr: str = ""
    _lines: queue.Queue[str] = field(default_factory=queue.Queue)

    @property
    def port(self) -> int:
        return int(self.url.rsplit(":", 1)[1].split("/", 1)[0])

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 10.0) -> int:
        """Send ``sig``, wait for the exit code and collect stderr."""
        if self.process.poll() is None:
            self.process.send_signal(sig)
        _, self.stderr = self.process.communicate(timeout=timeout)
        return self.process.returncode


@contextmanager
def serve_process(*args: str, module: str = "meterline.cli") -> Iterator[ServerProcess]:
    """Run ``python -m MODULE [serve] ARGS`` until it prints its ready line; stop it at exit."""
    command = [sys.executable, "-m", module, *(["serve"] if module == "meterline.cli" else [])]
    process = subprocess.Popen(
        [*command, *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=subprocess_env(),
    )
    lines: queue.Queue[str] = queue.Queue()
    stdout = process.stdout
    assert stdout is not None

    def read_lines() -> None:
        for line in stdout:
            lines.put(line)

    reader = threading.Thread(target=read_lines, daemon=True)
    reader.start()
    try:
        try:
            line = lines.get(timeout=20)
        except queue.Empty:
            raise AssertionError("the server printed no ready line within 20 s") from None
        assert line.startswith(READY_PREFIX), line
        server = ServerProcess(process, line[len(READY_PREFIX) :].strip(), _lines=lines)
        yield server
    finally:
        if process.poll() is None:
            process.kill()
        process.communicate(timeout=10)
        reader.join(timeout=5)
