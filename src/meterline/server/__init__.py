"""A local, Orb-compatible ingest server for development, demos, CI and tests.

Standard library only (``http.server`` and ``sqlite3``); the core of meterline never
imports it. Run it with ``meterline serve`` or use it from Python::

    from meterline.server import ReferenceServer

    with ReferenceServer(api_keys=["test-key"]) as server:
        ...  # point a client at server.url, then check server.event_count()

Endpoints under ``/v1``: ``POST /ingest`` (Orb's rules, ``?debug=true``, ``?backfill_id=``),
``PUT /events/{id}`` (amend), ``PUT /events/{id}/deprecate``, ``POST /events/search``,
``GET /events/volume``, ``GET|POST /events/backfills``, ``GET /events/backfills/{id}``,
``POST /events/backfills/{id}/close|revert``, ``GET /usage?start=&end=[&customer=]`` and
``GET /health``.
"""

from __future__ import annotations

from meterline.server._main import READY_LINE, serve
from meterline.server._messages import RequestRecord
from meterline.server._server import (
    DEFAULT_GRACE_PERIOD,
    DEFAULT_MAX_BODY_BYTES,
    ReferenceServer,
)
from meterline.server._time import parse_duration

__all__ = [
    "DEFAULT_GRACE_PERIOD",
    "DEFAULT_MAX_BODY_BYTES",
    "READY_LINE",
    "ReferenceServer",
    "RequestRecord",
    "parse_duration",
    "serve",
]
