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
    action kills the process without running ``atexit``). A handler that was installed
    before is called first; if it returns, the process exits with status 143 (128 + 15).
    Call it from the main thread.
    """
    previous = signal.getsignal(signal.SIGTERM)

    def handle(signum: int, frame: FrameType | None) -> Any:
        if callable(previous):
            previous(signum, frame)
        sys.exit(128 + signum)

    signal.signal(signal.SIGTERM, handle)
