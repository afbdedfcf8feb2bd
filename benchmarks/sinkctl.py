"""Start the sink as a separate process and talk to its control endpoint."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx

HERE = Path(__file__).resolve().parent
READY = "sink listening on "


class SinkControl:
    """Reset, read and fault the sink at ``url`` (``http://127.0.0.1:PORT``)."""

    def __init__(self, url: str) -> None:
        self.url = url
        self._http = httpx.Client(base_url=url, timeout=10.0)

    def reset(self, label: str, vendor: str | None = None) -> None:
        """A new tally for ``label``; with ``vendor``, only that vendor's API answers."""
        params = {"label": label} if vendor is None else {"label": label, "vendor": vendor}
        self._http.post("/_ctl/reset", params=params).raise_for_status()

    def counts(self) -> dict[str, Any]:
        response = self._http.get("/_ctl/counts")
        response.raise_for_status()
        data: dict[str, Any] = response.json()
        return data

    def fault(self, **spec: float) -> dict[str, Any]:
        response = self._http.post("/_ctl/fault", json=spec)
        response.raise_for_status()
        data: dict[str, Any] = response.json()
        return data

    def settle(self, expected: int, *, quiet: float = 1.0, limit: float = 30.0) -> dict[str, Any]:
        """Counts once ``expected`` unique ids arrived or nothing new came for ``quiet`` s."""
        end = time.monotonic() + limit
        last = self.counts()
        changed = time.monotonic()
        while time.monotonic() < end and last["unique_ids"] < expected:
            time.sleep(0.02)
            now = self.counts()
            if now["events"] != last["events"]:
                changed = time.monotonic()
            elif time.monotonic() - changed >= quiet:
                return now
            last = now
        return last

    def close(self) -> None:
        self._http.close()


class SinkProcess:
    """``python benchmarks/sink.py --port 0`` as a child process, pinned to ``cpu``."""

    def __init__(self, cpu: int | None = None) -> None:
        cmd = [sys.executable, str(HERE / "sink.py"), "--port", "0"]
        if cpu is not None:
            cmd += ["--cpu", str(cpu)]
        self._proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True)
        assert self._proc.stdout is not None
        line = self._proc.stdout.readline()
        if not line.startswith(READY):
            self._proc.kill()
            raise RuntimeError(f"sink did not start: {line!r}")
        self.url = "http://" + line[len(READY) :].strip()
        self.pid = self._proc.pid
        self.control = SinkControl(self.url)

    def stop(self) -> None:
        self.control.close()
        self._proc.terminate()
        try:
            self._proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            self._proc.kill()
            self._proc.wait(timeout=5)

    def __enter__(self) -> SinkProcess:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
