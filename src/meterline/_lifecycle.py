"""Opt-in process hooks: a SIGTERM handler for bare scripts that keeps the host's own."""

from __future__ import annotations

import signal
import sys
from types import FrameType
from typing import Any

__all__ = ["install_sigterm_handler"]


def install_sigterm_handler() -> None:
    """Turn SIGTERM into a normal interpreter exit, so the exit hook closes every client.

    Gunicorn, uvicorn and Celery already do this; a bare script does not (the default
    action kills the process without running ``atexit``). Call it from the main thread,
    after your own SIGTERM handler is installed: that handler is called first; if it
    returns, the process exits with status 143 (128 + 15), and if it raises (``sys.exit``),
    its exception wins. A handler installed later replaces this one; to keep both, call
    ``signal.getsignal(signal.SIGTERM)`` before installing yours and call it from yours.

    Only the first SIGTERM starts the exit: later ones are ignored, so a second signal
    cannot cut short the bounded close (at most ``shutdown_timeout``) that delivers or
    journals what is queued. SIGKILL remains the way to stop at once.
    """
    previous = signal.getsignal(signal.SIGTERM)
    exiting = False

    def handle(signum: int, frame: FrameType | None) -> Any:
        nonlocal exiting
        if exiting:
            return None
        exiting = True
        if callable(previous):
            previous(signum, frame)
        sys.exit(128 + signum)

    signal.signal(signal.SIGTERM, handle)
