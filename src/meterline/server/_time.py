"""Instants as integer microseconds since the epoch (UTC), and durations in seconds."""

from __future__ import annotations

import functools
import math
import re
from datetime import date, datetime, timedelta

_INSTANT = re.compile(
    r"(\d{4})-(\d{2})-(\d{2})[Tt](\d{2}):(\d{2}):(\d{2})(?:[.,](\d{1,9}))?"
    r"(?:([Zz])|([+-])(\d{2}):?(\d{2}))?",
    re.ASCII,  # \d must not match other scripts' digits, which int() would accept
)
_EPOCH = datetime(1970, 1, 1)  # naive on purpose: instants are handled as UTC microseconds
_EPOCH_DAY = date(1970, 1, 1).toordinal()
_DURATION_PART = re.compile(r"(\d+(?:\.\d*)?|\.\d+)([smhdw])")
_UNIT_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


def is_rfc3339_z(text: str) -> bool:
    """Whether a parsed UTC timestamp can be kept as sent (``T``, ``Z``, a dot fraction)."""
    return text[10] == "T" and text[-1] == "Z" and "," not in text


def parse_instant(text: str, *, require_utc: bool) -> int:
    """Microseconds since the epoch of an ISO 8601 instant with ``Z`` or an offset.

    ``require_utc`` accepts only ``Z`` and ``+00:00`` (what Orb means by "in UTC").
    Raises ``ValueError`` with a message that completes the sentence "timestamp ...".
    """
    match = _INSTANT.fullmatch(text)
    if match is None:
        raise ValueError(f"{text!r} is not an ISO 8601 date-time like 2024-05-01T12:00:00Z")
    year, month, day, hour, minute, second, fraction, zulu, sign, off_h, off_m = match.groups()
    if zulu is None and sign is None:
        raise ValueError(f"{text!r} has no UTC designator (end it with Z)")
    offset_minutes = 0 if zulu else (int(off_h) * 60 + int(off_m)) * (1 if sign == "+" else -1)
    if require_utc and offset_minutes:
        raise ValueError(f"{text!r} must be in UTC (end it with Z or +00:00)")
    hours, minutes, seconds = int(hour), int(minute), int(second)
    try:
        if hours > 23 or minutes > 59 or seconds > 59:
            raise ValueError
        days = _days_since_epoch(year, month, day)
    except ValueError:
        raise ValueError(f"{text!r} is not a valid calendar date and time") from None
    micros = int(fraction[:6].ljust(6, "0")) if fraction else 0
    seconds += ((days * 24 + hours) * 60 + minutes - offset_minutes) * 60
    return seconds * 1_000_000 + micros


@functools.lru_cache(maxsize=1024)
def _days_since_epoch(year: str, month: str, day: str) -> int:
    """Days from 1970-01-01 to a calendar date; ``ValueError`` if there is no such date."""
    return date(int(year), int(month), int(day)).toordinal() - _EPOCH_DAY


def format_instant(us: int) -> str:
    """``YYYY-MM-DDTHH:MM:SS[.ffffff]Z`` for microseconds since the epoch."""
    moment = _EPOCH + timedelta(microseconds=us)
    text = (
        f"{moment.year:04d}-{moment.month:02d}-{moment.day:02d}"
        f"T{moment.hour:02d}:{moment.minute:02d}:{moment.second:02d}"
    )
    return f"{text}.{moment.microsecond:06d}Z" if moment.microsecond else f"{text}Z"


def parse_duration(text: str | float) -> float:
    """Seconds in ``3600``, ``90.5``, ``30m``, ``12h``, ``7d``, ``1h30m``; must be positive."""
    if isinstance(text, (int, float)):
        seconds = float(text)
    else:
        spec = text.strip().lower()
        try:
            seconds = float(spec)
        except ValueError:
            parts = _DURATION_PART.findall(spec)
            if not parts or "".join(n + u for n, u in parts) != spec:
                raise ValueError(f"not a duration: {text!r} (try 3600, 30m, 12h or 7d)") from None
            seconds = sum(float(n) * _UNIT_SECONDS[u] for n, u in parts)
    if not math.isfinite(seconds) or seconds <= 0:
        raise ValueError(f"a duration must be a positive number of seconds, not {text!r}")
    return seconds


def format_duration(seconds: float) -> str:
    """The shortest exact form among ``7d``, ``12h``, ``30m``, ``45s``."""
    for unit in ("d", "h", "m"):
        count = seconds / _UNIT_SECONDS[unit]
        if count >= 1 and count == int(count):
            return f"{int(count)}{unit}"
    return f"{seconds:g}s"
