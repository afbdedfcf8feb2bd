"""Timestamps under a frozen clock: the default stamp, the UTC format, the future bound."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import orjson
import pytest
from freezegun import freeze_time

from meterline import InvalidEventError
from meterline._event import validate
from meterline.destinations import Orb

NOW = datetime(2026, 11, 22, 12, 30, 45, 123456, tzinfo=timezone.utc)


def _sent_timestamp(**kwargs: object) -> str:
    pending = validate("c", "e", None, kwargs.get("timestamp"), None, 32 * 1024)
    return str(orjson.loads(Orb().serialize_many([pending])[0])["timestamp"])


@freeze_time(NOW)
def test_default_timestamp_is_now_in_utc_with_microseconds():
    """Without a timestamp the event is stamped with the current UTC time, to the µs."""
    assert _sent_timestamp() == "2026-11-22T12:30:45.123456Z"


@freeze_time(NOW)
def test_offsets_are_converted_to_utc():
    """An aware time in another zone, or an ISO string with an offset, is sent in UTC."""
    tokyo = timezone(timedelta(hours=9))
    assert _sent_timestamp(timestamp=NOW.astimezone(tokyo)) == "2026-11-22T12:30:45.123456Z"
    assert _sent_timestamp(timestamp="2026-11-22T07:00:00-05:00") == "2026-11-22T12:00:00.000000Z"
    assert _sent_timestamp(timestamp="2026-11-22T12:00:00Z") == "2026-11-22T12:00:00.000000Z"


@freeze_time(NOW)
def test_five_minutes_ahead_is_the_limit():
    """Exactly five minutes in the future is accepted; a microsecond more is refused."""
    assert _sent_timestamp(timestamp=NOW + timedelta(minutes=5)).startswith("2026-11-22T12:35:45")
    with pytest.raises(InvalidEventError, match="future"):
        _sent_timestamp(timestamp=NOW + timedelta(minutes=5, microseconds=1))


@freeze_time(NOW)
def test_old_timestamps_are_left_to_the_server():
    """A week-old event is the server's grace period to judge, not the client's."""
    assert _sent_timestamp(timestamp=NOW - timedelta(days=7)) == "2026-11-15T12:30:45.123456Z"


def test_stamps_match_datetimes_formatting_across_the_range():
    """The spooler's formatter (a cached second, the fraction from two tables) writes what
    ``datetime`` writes, for random instants from 1970 to 2100 and stamps given as text."""
    import random

    from meterline._stamps import format_many, format_ns

    rng = random.Random(7)
    instants = [rng.randrange(0, 4_102_444_800 * 10**9) for _ in range(20_000)]
    instants += [0, 999, 10**9 - 1, 10**9, 4_102_444_799_999_999_999]
    events = [("k", "c", "e", {}, ns, 0) for ns in instants] + [("k", "c", "e", {}, "x", 0)]
    want = [
        datetime.fromtimestamp(ns // 1000 / 1e6, timezone.utc).strftime("%Y-%m-%dT%H:%M:%S")
        + f".{ns // 1000 % 10**6:06d}Z"
        for ns in instants
    ]
    assert format_many(events) == [*want, "x"]
    assert [format_ns(ns) for ns in instants] == want
