"""The key pool: every key a canonical UUID4 string, never one twice, random where it should be."""

from __future__ import annotations

import uuid
from collections import Counter

from meterline import _event


def _fresh(count: int) -> list[str]:
    _event.forget_keys()
    _event._refill(count)
    keys = list(_event._pool)
    _event.forget_keys()
    return keys


def test_keys_are_canonical_uuid4_text() -> None:
    assert _fresh(0) == []
    for count in (1, 2, 255, 256, 1024, 4097):
        keys = _fresh(count)
        assert len(keys) == count
        for k in keys:
            parsed = uuid.UUID(k)
            assert parsed.version == 4
            assert parsed.variant == uuid.RFC_4122
            assert str(parsed) == k  # lower case, 8-4-4-4-12, nothing else


def test_keys_are_distinct_and_their_random_digits_vary() -> None:
    keys = _fresh(20_000) + _fresh(20_000)
    assert len(set(keys)) == len(keys)
    for pos in range(36):
        if pos in (8, 13, 18, 23):
            assert {k[pos] for k in keys} == {"-"}
            continue
        digits = Counter(k[pos] for k in keys)
        if pos == 14:  # the version digit
            assert set(digits) == {"4"}
        elif pos == 19:  # the variant digit
            assert set(digits) == set("89ab")
            assert min(digits.values()) > len(keys) / 4 * 0.9
        else:
            assert set(digits) == set("0123456789abcdef")
            assert min(digits.values()) > len(keys) / 16 * 0.85  # uniform, within noise


def test_top_up_keeps_the_pool_at_least_at_its_low_mark() -> None:
    _event.forget_keys()
    _event.top_up_keys(1000)
    assert len(_event._pool) >= 1000
    before = len(_event._pool)
    _event.top_up_keys(10)
    assert len(_event._pool) == before  # full enough: nothing drawn
    _event.forget_keys()
