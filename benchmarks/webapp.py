"""The web scenario's application: one WSGI route that answers "ok".

Run by gunicorn (``--pythonpath benchmarks webapp:app``). ``BENCH_PEER`` picks the shipper
(``none`` for the baseline); each worker builds its client when it imports this module,
after gunicorn forked it, as an application would. Every request reports one event.
"""

from __future__ import annotations

import itertools
import os
from collections.abc import Callable, Iterable
from typing import Any

import peers

PEER = os.environ.get("BENCH_PEER", "none")
CUSTOMERS = [f"cust_{i:03d}" for i in range(100)]
HEADERS = [("Content-Type", "text/plain"), ("Content-Length", "2")]
BODY = [b"ok"]

_counter = itertools.count()
_send: peers.Send | None = None
if PEER != "none":
    _peer = peers.make(PEER, os.environ["BENCH_SINK"], os.environ["BENCH_JOURNAL_DIR"])
    _send = _peer.send


def app(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
    if _send is not None:
        i = next(_counter)
        _send(CUSTOMERS[i % 100], peers.EVENT_NAME, {"n": i, "region": "eu-west"})
    start_response("200 OK", HEADERS)
    return BODY
