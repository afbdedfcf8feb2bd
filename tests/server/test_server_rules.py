"""Unit tests of instants, durations and the properties encoder (no HTTP)."""

from __future__ import annotations

import json
import json.encoder
from datetime import datetime, timedelta, timezone

import pytest
from hypothesis import given
from hypothesis import strategies as st

from meterline.server import parse_duration
from meterline.server._rules import _flat_encoder
from meterline.server._time import format_duration, format_instant, parse_instant

EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)


def micros(moment: datetime) -> int:
    return (moment - EPOCH) // timedelta(microseconds=1)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2026-05-01T12:00:00Z", datetime(2026, 5, 1, 12, tzinfo=timezone.utc)),
        ("2026-05-01t12:00:00z", datetime(2026, 5, 1, 12, tzinfo=timezone.utc)),
        ("2026-05-01T12:00:00.5Z", datetime(2026, 5, 1, 12, 0, 0, 500000, tzinfo=timezone.utc)),
        (
            "2026-05-01T12:00:00,123456789Z",
            datetime(2026, 5, 1, 12, 0, 0, 123456, tzinfo=timezone.utc),
        ),
        ("2026-05-01T12:00:00-00:00", datetime(2026, 5, 1, 12, tzinfo=timezone.utc)),
        ("2026-05-01T14:30:00+0230", datetime(2026, 5, 1, 12, tzinfo=timezone.utc)),
        ("1969-12-31T23:59:59.999999Z", EPOCH - timedelta(microseconds=1)),
    ],
)
def test_parse_instant_accepts_rfc3339_forms(text: str, expected: datetime) -> None:
    """Z, offsets, commas and long fractions (truncated to microseconds) are understood."""
    assert parse_instant(text, require_utc=False) == micros(expected)


@pytest.mark.parametrize(
    "text",
    ["2026-05-01", "2026-05-01 12:00:00Z", "2026-5-1T12:00:00Z", "2026-05-01T24:00:00Z", "x"],
)
def test_parse_instant_refuses_other_text(text: str) -> None:
    """Dates alone, spaces, short fields, impossible times and junk are refused."""
    with pytest.raises(ValueError, match=r"ISO 8601|valid calendar"):
        parse_instant(text, require_utc=False)


def test_require_utc_refuses_other_offsets() -> None:
    """With require_utc only Z and a zero offset pass."""
    assert parse_instant("2026-05-01T12:00:00+00:00", require_utc=True) > 0
    with pytest.raises(ValueError, match="must be in UTC"):
        parse_instant("2026-05-01T12:00:00+01:00", require_utc=True)


@given(st.datetimes(min_value=datetime(1, 1, 2), max_value=datetime(9999, 12, 30)))
def test_format_and_parse_round_trip(moment: datetime) -> None:
    """format_instant writes what parse_instant reads back, microseconds included."""
    us = micros(moment.replace(tzinfo=timezone.utc))
    text = format_instant(us)
    assert text.endswith("Z")
    assert parse_instant(text, require_utc=True) == us
    assert datetime.fromisoformat(text.replace("Z", "+00:00")) == moment.replace(
        tzinfo=timezone.utc
    )


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("3600", 3600.0),
        ("90.5", 90.5),
        ("30m", 1800.0),
        ("12h", 43200.0),
        ("7d", 604800.0),
        ("1h30m", 5400.0),
        ("2w", 1209600.0),
        (" 12H ", 43200.0),
        (60, 60.0),
    ],
)
def test_parse_duration(text: str | float, seconds: float) -> None:
    """Durations are seconds or number-unit pairs in s, m, h, d, w."""
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["", "0", "-5", "12x", "h", "1h 30m", "nan", "inf", 0])
def test_parse_duration_refuses_nonsense(text: str | float) -> None:
    """Empty, zero, negative, unknown units and non-finite values are refused."""
    with pytest.raises(ValueError, match="duration"):
        parse_duration(text)


@pytest.mark.parametrize(
    ("seconds", "text"),
    [(43200.0, "12h"), (604800.0, "7d"), (90.0, "90s"), (1800.0, "30m"), (0.5, "0.5s")],
)
def test_format_duration(seconds: float, text: str) -> None:
    """Durations print in their largest exact unit."""
    assert format_duration(seconds) == text


_C_MAKE_ENCODER = json.encoder.c_make_encoder


def _other_signature(markers: object, *args: object) -> object:
    """Like json's C encoder factory, but refusing the call the flat encoder makes."""
    if markers is None:
        raise TypeError("another signature")
    return _C_MAKE_ENCODER(markers, *args)


@pytest.mark.parametrize(
    "replacement", [None, _other_signature], ids=["no-accelerator", "other-signature"]
)
def test_the_flat_encoder_falls_back_to_the_plain_one(
    monkeypatch: pytest.MonkeyPatch, replacement: object
) -> None:
    """Without json's C encoder (or with another signature) properties still encode the same."""
    props = {"s": "é", "n": 1, "x": 1.5, "b": False}
    fast = _flat_encoder()(props)
    monkeypatch.setattr(json.encoder, "c_make_encoder", replacement)
    assert _flat_encoder()(props) == fast == '{"s":"\\u00e9","n":1,"x":1.5,"b":false}'
