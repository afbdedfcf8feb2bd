"""The web scenario's application: one WSGI route that answers "ok".

``BENCH_CPU_MS`` (the ``web_1ms`` scenario) makes each request spend that much CPU first,
as an endpoint with real work would, so that reporting's cost shows against it.

Run by gunicorn (``--pythonpath benchmarks webapp:app``). ``BENCH_PEER`` picks the shipper
(``none`` for the baseline); each worker builds its client when it imports this module,
after gunicorn forked it, as an application would. Every request reports one event.
"""

from __future__ import annotations

import itertools
import os
import time
from collections.abc import Callable, Iterable
from typing import Any

import peers

PEER = os.environ.get("BENCH_PEER", "none")
BURN = float(os.environ.get("BENCH_CPU_MS", "0")) / 1000
CUSTOMERS = [f"cust_{i:03d}" for i in range(100)]
HEADERS = [("Content-Type", "text/plain"), ("Content-Length", "2")]
BODY = [b"ok"]

_counter = itertools.count()
_send: peers.Send | None = None
if PEER != "none":
    _peer = peers.make(PEER, os.environ["BENCH_SINK"], os.environ["BENCH_JOURNAL_DIR"])
    _send = _peer.send


def app(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
    if BURN:
        end = time.thread_time() + BURN
        while time.thread_time() < end:
            pass
    if _send is not None:
        i = next(_counter)
        _send(CUSTOMERS[i % 100], peers.EVENT_NAME, {"n": i, "region": "eu-west"})
    start_response("200 OK", HEADERS)
    return BODY
