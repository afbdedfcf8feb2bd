"""``serve()``: run the reference server in the foreground until SIGINT or SIGTERM."""

from __future__ import annotations

import logging
import signal
import sqlite3
import sys
import threading
import time
from collections.abc import Iterable
from types import FrameType
from typing import Any, TextIO

from meterline.server._metrics import Metric, MetricError, load_metrics
from meterline.server._plans import PlansError
from meterline.server._server import (
    DEFAULT_GRACE_PERIOD,
    DEFAULT_HOST,
    DEFAULT_MAX_BODY_BYTES,
    DEFAULT_PORT,
    ReferenceServer,
)

DEFAULT_DB = "meterline-usage.db"
READY_LINE = "meterline reference server listening on {url}"

logger = logging.getLogger("meterline.server")


class _StopRequested(Exception):
    """Raised in the main thread by the SIGINT/SIGTERM handler."""


def serve(
    *,
    host: str = DEFAULT_HOST,
    port: int = DEFAULT_PORT,
    db: str = DEFAULT_DB,
    api_keys: Iterable[str] = (),
    grace_period: float | str = DEFAULT_GRACE_PERIOD,
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES,
    verbose: bool = False,
    stdout: TextIO | None = None,
    metrics: str | None = None,
    plans: str | None = None,
) -> int:
    """Serve until SIGINT/SIGTERM, then close the database; returns the exit code.

    Prints :data:`READY_LINE` to ``stdout`` once listening. Logs go to stderr: warnings
    only, or one line per request with ``verbose``. API keys are never logged. ``plans``
    names a plans file for the entitlements endpoint (see ``meterline.server._plans``).
    """
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("meterline serve: %(levelname)s: %(message)s"))
    logger.addHandler(handler)
    logger.setLevel(logging.INFO if verbose else logging.WARNING)
    logger.propagate = False
    try:
        try:
            loaded = tuple(load_metrics(metrics)) if metrics is not None else ()
        except MetricError as exc:
            logger.error("%s", exc)
            return 1
        return _run(
            host,
            port,
            db,
            tuple(api_keys),
            grace_period,
            max_body_bytes,
            stdout,
            plans,
            metrics=loaded,
        )
    finally:
        logger.removeHandler(handler)
        logger.propagate = True
        logger.setLevel(logging.NOTSET)


def _run(
    host: str,
    port: int,
    db: str,
    api_keys: tuple[str, ...],
    grace_period: float | str,
    max_body_bytes: int,
    stdout: TextIO | None,
    plans: str | None = None,
    *,
    metrics: tuple[Metric, ...] = (),
) -> int:
    if not api_keys:
        logger.warning("no --api-key given: every bearer token is accepted")
    try:
        server = ReferenceServer(
            host,
            port,
            db,
            api_keys,
            grace_period,
            max_body_bytes=max_body_bytes,
            request_log_size=0,
            plans=plans,
        )
    except PlansError as exc:
        logger.error("%s", exc)
        return 1
    for metric in metrics:
        server.define_metric(metric)
    try:
        server.start()
    except OSError as exc:
        logger.error("cannot listen on %s port %s: %s", host, port, exc)
        return 1
    except sqlite3.Error as exc:
        logger.error("cannot use the database %s: %s", db, exc)
        return 1
    previous: dict[signal.Signals, Any] = {}
    try:
        previous = _install_stop_handlers()
        print(READY_LINE.format(url=server.url), file=stdout or sys.stdout, flush=True)
        _wait_for_signal()
    except (_StopRequested, KeyboardInterrupt):
        logger.info("stopping")
    finally:
        for signum in previous:
            signal.signal(signum, signal.SIG_IGN)  # a second signal must not cut the stop short
        server.stop()
        for signum, handler in previous.items():
            signal.signal(signum, signal.SIG_DFL if handler is None else handler)
    return 0


def _wait_for_signal() -> None:
    """Sleep until a signal handler raises (SIGINT, SIGTERM)."""
    while True:
        time.sleep(3600)


def _install_stop_handlers() -> dict[signal.Signals, Any]:
    """Turn SIGINT and SIGTERM into :class:`_StopRequested`; returns the previous handlers."""
    if threading.current_thread() is not threading.main_thread():
        return {}  # only the main thread may set handlers; Ctrl-C still raises there

    def stop(signum: int, frame: FrameType | None) -> None:
        raise _StopRequested(signal.Signals(signum).name)

    return {sig: signal.signal(sig, stop) for sig in (signal.SIGINT, signal.SIGTERM)}
