"""HTTP load for the web scenario: wrk when it is installed, else a small asyncio client.

Both keep ``connections`` requests in flight against one 127.0.0.1 URL for ``duration``
seconds and report requests/s and the p99 latency in ms. The asyncio client opens a
connection per request (gunicorn's sync worker closes each one anyway) and is only used
when ``wrk`` is missing; RESULTS.md names which one ran.

    .venv/bin/python benchmarks/loadgen.py http://127.0.0.1:PORT/ --duration 5
"""

from __future__ import annotations

import argparse
import asyncio
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from typing import Any
from urllib.parse import urlsplit

from stats import percentiles

_UNITS = {"us": 1e-3, "ms": 1.0, "s": 1e3}


def tool() -> str:
    """``wrk`` when it is on PATH, else ``asyncio``."""
    return "wrk" if shutil.which("wrk") else "asyncio"


def run(
    url: str,
    *,
    duration: float,
    connections: int,
    preexec: Callable[[], None] | None = None,
) -> dict[str, Any]:
    """Requests/s and p99 latency (ms) of a fixed-concurrency load on ``url``."""
    if not url.startswith("http://127.0.0.1:"):
        raise ValueError("load only goes to 127.0.0.1")
    if tool() == "wrk":
        return _wrk(url, duration, connections, preexec)
    cmd = [sys.executable, __file__, url, "--duration", str(duration), "-c", str(connections)]
    out = subprocess.run(
        cmd, capture_output=True, text=True, timeout=duration + 30, preexec_fn=preexec
    )
    rps, p99, errors, requests = (float(x) for x in out.stdout.split())
    return {"rps": rps, "p99_ms": p99, "errors": errors, "requests": requests}


def _wrk(
    url: str, duration: float, connections: int, preexec: Callable[[], None] | None
) -> dict[str, Any]:
    cmd = ["wrk", "-t1", f"-c{connections}", f"-d{max(1, round(duration))}s", "--latency", url]
    out = subprocess.run(
        cmd, capture_output=True, text=True, timeout=duration + 30, preexec_fn=preexec
    ).stdout
    rps = re.search(r"Requests/sec:\s+([\d.]+)", out)
    p99 = re.search(r"^\s+99%\s+([\d.]+)(us|ms|s)\s*$", out, re.M)
    errors = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", out)
    requests = re.search(r"(\d+) requests in", out)
    socket_errors = re.search(r"Socket errors: (.*)", out)
    if rps is None or p99 is None:
        raise RuntimeError(f"cannot read wrk's output:\n{out}")
    return {
        "rps": float(rps.group(1)),
        "p99_ms": float(p99.group(1)) * _UNITS[p99.group(2)],
        "errors": float(errors.group(1)) if errors else 0.0,
        "requests": float(requests.group(1)) if requests else 0.0,
        "socket_errors": socket_errors.group(1) if socket_errors else "",
    }


async def _client(host: str, port: int, request: bytes, end: float, lat: list[int]) -> int:
    errors = 0
    clock = time.perf_counter_ns
    while time.monotonic() < end:
        t0 = clock()
        try:
            reader, writer = await asyncio.open_connection(host, port)
            writer.write(request)
            data = await reader.read()
            writer.close()
        except OSError:
            errors += 1
            continue
        if not data.startswith(b"HTTP/1.1 200") and not data.startswith(b"HTTP/1.0 200"):
            errors += 1
        lat.append(clock() - t0)
    return errors


async def _load(url: str, duration: float, connections: int) -> tuple[float, float, int, int]:
    parts = urlsplit(url)
    host, port = parts.hostname or "127.0.0.1", parts.port or 80
    request = f"GET {parts.path or '/'} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n"
    lat: list[int] = []
    start = time.monotonic()
    end = start + duration
    errors = await asyncio.gather(
        *(_client(host, port, request.encode(), end, lat) for _ in range(connections))
    )
    elapsed = time.monotonic() - start
    return len(lat) / elapsed, percentiles(lat)["p99"] / 1e6, sum(errors), len(lat)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("url")
    parser.add_argument("--duration", type=float, default=5.0)
    parser.add_argument("-c", "--connections", type=int, default=4)
    args = parser.parse_args()
    if not args.url.startswith("http://127.0.0.1:"):
        parser.error("load only goes to 127.0.0.1")
    rps, p99, errors, requests = asyncio.run(_load(args.url, args.duration, args.connections))
    print(f"{rps:.1f} {p99:.3f} {errors} {requests}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
