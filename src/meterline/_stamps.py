"""Timestamps as the wire's text: ``YYYY-MM-DDTHH:MM:SS.ffffffZ`` from ns since the epoch.

Formatting runs on the spooler, once per event of every batch, so it caches the text of
the current second and formats a batch's stamps in one call.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

__all__ = ["format_many", "format_ns"]


_second_cache: tuple[int, str] = (-1, "")
# The fraction as two looked-up halves: ".mmm" and "uuuZ" (cheaper than a format spec).
_MILLIS = [f".{i:03d}" for i in range(1000)]
_MICROS = [f"{i:03d}Z" for i in range(1000)]


def format_ns(ns: int) -> str:
    """``YYYY-MM-DDTHH:MM:SS.ffffffZ`` for a time in ns since the epoch (worker thread only)."""
    global _second_cache
    sec, rem = divmod(ns, 1_000_000_000)
    cached_sec, prefix = _second_cache
    if sec != cached_sec:
        prefix = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(sec))
        _second_cache = (sec, prefix)
    us = rem // 1000
    return prefix + _MILLIS[us // 1000] + _MICROS[us % 1000]


def format_many(events: Sequence[tuple[Any, ...]]) -> list[str]:
    """Each event's timestamp (``Pending[4]``) as ``format_ns`` text, or the UTC text it
    was given, in one pass: a serializer pays one call per batch, not two per event."""
    out: list[str] = []
    append = out.append
    last, prefix = -1, ""
    millis, micros = _MILLIS, _MICROS
    for event in events:
        ts = event[4]
        if type(ts) is not int:
            append(ts)
            continue
        sec, rem = divmod(ts, 1_000_000_000)
        if sec != last:
            last, prefix = sec, time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(sec))
        us = rem // 1000
        append(prefix + millis[us // 1000] + micros[us % 1000])
    return out
