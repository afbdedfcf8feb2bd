"""The web scenario: gunicorn (one sync worker) serving ``webapp:app`` under a fixed load.

One run starts gunicorn with ``BENCH_PEER`` set (``none`` is the baseline without
reporting), waits until the worker answers, warms it with a few hundred requests, drives
it for ``duration`` seconds, and stops it with SIGTERM (the worker exits normally, so the
shippers' exit hooks run). The application is pinned to one CPU and the load generator
(with the sink) to the other, so the figure is what reporting costs the application's
own core.
"""

from __future__ import annotations

import functools
import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import loadgen

HERE = Path(__file__).resolve().parent
LISTENING = re.compile(r"Listening at: (http://127\.0\.0\.1:\d+)")
BOOTING = re.compile(r"Booting worker with pid: (\d+)")


def pinned(cpu: int | None) -> Callable[[], None] | None:
    """A ``preexec_fn`` that pins the child to ``cpu`` (None: no pinning)."""
    if cpu is None or not hasattr(os, "sched_setaffinity"):
        return None
    return lambda: os.sched_setaffinity(0, {cpu})


def run_once(
    peer: str,
    sink_url: str,
    journal_dir: str,
    *,
    duration: float,
    connections: int,
    app_cpu: int | None,
    load_cpu: int | None,
    log: Path,
    cpu_ms: float = 0.0,
) -> dict[str, Any]:
    env = dict(os.environ)
    env.update(BENCH_PEER=peer, BENCH_SINK=sink_url, BENCH_JOURNAL_DIR=journal_dir)
    env["BENCH_CPU_MS"] = str(cpu_ms)
    cmd = [sys.executable, "-m", "gunicorn", "--workers", "1", "--worker-class", "sync"]
    cmd += ["--bind", "127.0.0.1:0", "--pythonpath", str(HERE), "--log-level", "info"]
    cmd += ["--graceful-timeout", "10", *_no_control_socket(), "webapp:app"]
    with log.open("a") as log_file:
        proc = subprocess.Popen(
            cmd, env=env, stderr=subprocess.PIPE, text=True, preexec_fn=pinned(app_cpu)
        )
        try:
            workers: list[int] = []
            url = _wait_listening(proc, log_file, workers)
            _warm(url)
            cpu0, main0 = _worker_cpu(workers)
            result = loadgen.run(
                url + "/", duration=duration, connections=connections, preexec=pinned(load_cpu)
            )
            cpu1, main1 = _worker_cpu(workers)
            if result.get("requests"):
                result["cpu_us_per_request"] = (cpu1 - cpu0) * 1e6 / result["requests"]
                result["main_us_per_request"] = (main1 - main0) * 1e6 / result["requests"]
        finally:
            t0 = time.monotonic()
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=5)
            result_stop = time.monotonic() - t0
    return {"peer": peer, **result, "stop_seconds": result_stop}


@functools.cache
def _no_control_socket() -> tuple[str, ...]:
    """``--no-control-socket`` where gunicorn has one (a socket under ~/.gunicorn, shared by
    every gunicorn of the user, is not something a benchmark should touch)."""
    cmd = [sys.executable, "-m", "gunicorn", "--help"]
    text = subprocess.run(cmd, capture_output=True, text=True, timeout=30).stdout
    return ("--no-control-socket",) if "--no-control-socket" in text else ()


def _cpu_seconds(stat: str) -> float:
    """User plus system CPU seconds from a ``/proc/.../stat`` file (0 if it is gone)."""
    try:
        fields = Path(stat).read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _worker_cpu(pids: list[int]) -> tuple[float, float]:
    """CPU seconds of the worker processes: all threads, and their main threads alone."""
    total = sum(_cpu_seconds(f"/proc/{pid}/stat") for pid in pids)
    main = sum(_cpu_seconds(f"/proc/{pid}/task/{pid}/stat") for pid in pids)
    return total, main


def _wait_listening(
    proc: subprocess.Popen[str], log_file: Any, workers: list[int], limit: float = 30.0
) -> str:
    """The URL gunicorn bound; its stderr goes to ``log_file``, worker pids to ``workers``."""
    assert proc.stderr is not None
    stderr = proc.stderr
    end = time.monotonic() + limit
    url = None
    while url is None and time.monotonic() < end:
        line = stderr.readline()
        if not line:
            raise RuntimeError("gunicorn exited before listening")
        log_file.write(line)
        booted = BOOTING.search(line)
        if booted:
            workers.append(int(booted.group(1)))
        found = LISTENING.search(line)
        url = found.group(1) if found else None
    if url is None:
        raise RuntimeError("gunicorn did not report its address")

    def copy() -> None:
        for line in stderr:
            log_file.write(line)
            booted = BOOTING.search(line)
            if booted:
                workers.append(int(booted.group(1)))

    threading.Thread(target=copy, daemon=True).start()
    return url


def _warm(url: str, requests: int = 300, limit: float = 30.0) -> None:
    """Wait until the worker answers (it imports the app first), then warm it up."""
    end = time.monotonic() + limit
    with httpx.Client(timeout=5.0) as http:
        while True:
            try:
                if http.get(url + "/").status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if time.monotonic() > end:
                raise RuntimeError("the gunicorn worker never answered")
            time.sleep(0.05)
        for _ in range(requests):
            http.get(url + "/")
