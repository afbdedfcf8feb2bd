"""The sink's own ceiling: how fast it counts when nothing else is slow.

A raw-socket client on one keep-alive connection sends pre-built requests (the bytes are
ready before the clock starts) and reads each answer before the next: first Orb batches of
500 events, then one-event requests like the orb-billing SDK's. Prints one JSON line.

    .venv/bin/python benchmarks/ceiling.py http://127.0.0.1:PORT --seconds 2
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import sys
import time
import uuid
from urllib.parse import urlsplit

import orjson
from sinkctl import SinkControl


def _requests(count: int, size: int, host: str) -> list[bytes]:
    out = []
    n = 0
    for _ in range(count):
        events = []
        for _ in range(size):
            events.append(
                {
                    "idempotency_key": str(uuid.uuid4()),
                    "external_customer_id": f"cust_{n % 100:03d}",
                    "event_name": "api_call",
                    "timestamp": "2026-01-01T00:00:00.000000Z",
                    "properties": {"n": n, "region": "eu-west"},
                }
            )
            n += 1
        body = orjson.dumps({"events": events})
        head = (
            f"POST /v1/ingest HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\n\r\n"
        )
        out.append(head.encode() + body)
    return out


def _read_response(sock: socket.socket) -> None:
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        if not chunk:
            raise ConnectionError("sink closed the connection")
        data += chunk
    head, _, rest = data.partition(b"\r\n\r\n")
    if not head.startswith(b"HTTP/1.1 200"):
        raise ConnectionError(head.decode("latin-1"))
    length = 0
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value)
    while len(rest) < length:
        rest += sock.recv(65536)


def blast(url: str, size: int, seconds: float, max_requests: int) -> dict[str, float]:
    """Requests of ``size`` events for ``seconds`` (at most ``max_requests``)."""
    parts = urlsplit(url)
    host, port = parts.hostname or "127.0.0.1", parts.port or 80
    requests = _requests(max_requests, size, f"{host}:{port}")
    control = SinkControl(url)
    control.reset(f"ceiling/{size}")
    sent = 0
    with socket.create_connection((host, port)) as sock:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        start = time.perf_counter()
        end = start + seconds
        for request in requests:
            sock.sendall(request)
            _read_response(sock)
            sent += 1
            if time.perf_counter() >= end:
                break
        elapsed = time.perf_counter() - start
    counted = control.counts()["unique_ids"]
    control.close()
    if counted != sent * size:
        raise RuntimeError(f"the sink counted {counted} events of {sent * size}")
    return {"requests_per_s": sent / elapsed, "events_per_s": sent * size / elapsed}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("url")
    parser.add_argument("--seconds", type=float, default=2.0)
    parser.add_argument("--cpu", type=int, default=None)
    args = parser.parse_args()
    if not args.url.startswith("http://127.0.0.1:"):
        parser.error("the sink must be on 127.0.0.1")
    if args.cpu is not None and hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {args.cpu})
    batches = blast(args.url, 500, args.seconds, 800)
    singles = blast(args.url, 1, args.seconds, 15_000)
    print(json.dumps({"batch500": batches, "single": singles}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
