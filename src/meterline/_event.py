"""The event model: validation on the caller's thread, serialization on the worker's.

``report()`` must cost a few microseconds, so validation here does no JSON, no logging and
no formatting of the default timestamp: it checks types and sizes, copies the caller's
properties and returns a small tuple. The worker turns that tuple into the exact bytes that
are sent, retried, journaled and replayed (the destination's ``serialize_many``).
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Mapping
from datetime import datetime, timedelta, timezone
from typing import Any, Final

import orjson

from ._errors import InvalidEventError
from ._stamps import format_ns

__all__ = [
    "MAX_FUTURE_SECONDS",
    "Pending",
    "forget_keys",
    "new_key",
    "top_up_keys",
    "validate",
]

MAX_NAME_CHARS = 256
MAX_KEY_CHARS = 128
MAX_FUTURE_SECONDS = 300.0
_INT_MIN = -(1 << 63)
_INT_MAX = (1 << 64) - 1
_INF = float("inf")
_WHITESPACE = frozenset(" \t\n\r\x0b\x0c\x85\xa0\u1680\u2028\u2029\u3000\u202f\u205f")


# An accepted event waiting on the worker, as a plain tuple (a NamedTuple costs more to
# build on the caller's thread): (key, customer, event_name, properties, ts, size), where ts
# is ns since the epoch or an already formatted UTC string and size estimates its JSON bytes.
Pending = tuple[str, str, str, dict[str, Any], "int | str", int]
KEY: Final = 0
SIZE: Final = 5


# UUID4 keys from a pool of random bytes: os.urandom once per 256 keys instead of per key,
# and each key's text cut from one hex string by C-level slicing (about 0.1 µs a key; a
# formatted string per key took 0.5 µs, uuid.uuid4() takes 2.5 µs). The version nibble is
# set to 4 and the variant bits to 10, as RFC 9562 §5.4 says; the other 122 bits are random.
_POOL_KEYS = 256
_pool: list[str] = []
_VERSION_4 = bytes((b & 0x0F) | 0x40 for b in range(256))  # byte 6: 0100xxxx
_VARIANT = bytes((b & 0x3F) | 0x80 for b in range(256))  # byte 8: 10xxxxxx
_CUT = b"!"  # not a hex digit: marks the group separators a UUID does not have


def _refill(count: int = _POOL_KEYS) -> None:
    if count <= 0:
        return  # (an empty text would leave one "-" behind as a key)
    raw = bytearray(os.urandom(16 * count))
    raw[6::16] = raw[6::16].translate(_VERSION_4)
    raw[8::16] = raw[8::16].translate(_VARIANT)
    # 40 characters a key: 8 groups of 4 hex digits, each followed by "-". A UUID keeps the
    # "-" after groups 2 to 5 only; the last one becomes the space between two keys.
    text = bytearray(raw.hex("-", 2).encode("ascii") + b"-")
    text[4::40] = text[29::40] = text[34::40] = _CUT * count
    text[39::40] = b" " * count
    _pool.extend(text.translate(None, _CUT).decode("ascii").split())


def new_key() -> str:
    """A random UUID4 string; thread-safe because ``list.pop`` is atomic under the GIL."""
    try:
        return _pool.pop()
    except IndexError:
        _refill()
        return new_key()


def top_up_keys(low: int = 4 * _POOL_KEYS) -> None:
    """Refill the key pool off the caller's thread (the worker calls this between batches)."""
    while len(_pool) < low:
        _refill(low)  # one call to os.urandom (which releases the GIL) for the lot


def forget_keys() -> None:
    """Empty the key pool: a forked child must never hand out keys its parent also holds."""
    _pool.clear()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=forget_keys)


def validate(
    customer: Any,
    event_name: Any,
    properties: Any,
    timestamp: Any,
    idempotency_key: Any,
    max_event_bytes: int,
    measure: Callable[[Pending], int] | None = None,
) -> Pending:
    """Check one event against the rules of ``report()`` and return it ready to enqueue;
    ``measure`` gives the exact size of an event's bytes (the destination's), when it is
    big enough for the estimate to matter."""
    if type(customer) is not str or not customer or len(customer) > MAX_NAME_CHARS:
        _bad_name("customer", customer)
    if not customer.isascii():  # O(1) in CPython: only non-ASCII text pays for the check
        _check_utf8("customer", customer)
    if event_name not in _good_names:
        _check_event_name(event_name)
    if idempotency_key is None:
        try:
            key = _pool.pop()  # new_key(), inlined: this runs per event
        except IndexError:
            key = new_key()
    elif type(idempotency_key) is str and idempotency_key and len(idempotency_key) <= MAX_KEY_CHARS:
        key = idempotency_key
        if not key.isascii():
            _check_utf8("idempotency_key", key)
    else:
        raise InvalidEventError(
            "idempotency_key", f"must be a non-empty str of at most {MAX_KEY_CHARS} characters"
        )
    chars = len(customer) + len(event_name) + len(key)
    if properties is None:
        props: dict[str, Any] = {}
    else:
        if type(properties) is dict:
            props = properties.copy()
        elif isinstance(properties, Mapping):
            props = dict(properties)
        else:
            raise InvalidEventError(
                "properties", f"must be a dict, got {type(properties).__name__}"
            )
        for k, v in props.items():
            if type(k) is not str or not k:
                raise InvalidEventError("properties", f"keys must be non-empty str, got {k!r}")
            if not k.isascii():
                _check_utf8("properties", k)
            t = type(v)
            if t is str:
                if not v.isascii():
                    _check_utf8(f"properties[{k!r}]", v)
                chars += len(k) + len(v)
            elif t is int:
                if not _INT_MIN <= v <= _INT_MAX:
                    raise InvalidEventError(f"properties[{k!r}]", "int out of the 64-bit range")
                chars += len(k) + 20
            elif t is bool:
                chars += len(k) + 5
            elif t is float:
                if v != v or v == _INF or v == -_INF:
                    raise InvalidEventError(
                        f"properties[{k!r}]", "NaN and infinity are not allowed"
                    )
                chars += len(k) + 24
            else:
                props[k] = _coerce(k, v)
                if type(props[k]) is str and not props[k].isascii():
                    _check_utf8(f"properties[{k!r}]", props[k])
                chars += len(k) + 24 + (len(props[k]) if type(props[k]) is str else 0)
    ts: int | str = time.time_ns() if timestamp is None else _utc_string(timestamp)
    # An upper bound of the JSON size (every char escaped to six bytes) avoids serializing
    # ordinary events here; only a big event pays for an exact measurement.
    size = 160 + chars + 8 * len(props)
    if 200 + 6 * chars + 12 * len(props) > max_event_bytes:
        event: Pending = (key, customer, event_name, props, ts, 0)
        exact = (
            measure(event)
            if measure is not None
            else len(_body(key, "external_customer_id", customer, event_name, props, ts))
        )
        if exact > max_event_bytes:
            raise InvalidEventError(
                "event", f"serializes to {exact} bytes, more than max_event_bytes={max_event_bytes}"
            )
        size = exact
    return (key, customer, event_name, props, ts, size)


def _check_utf8(field: str, value: str) -> None:
    """Refuse text UTF-8 cannot encode (a lone surrogate): found here, not by the serializer
    on the worker, where it would take a whole batch of good events with it."""
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise InvalidEventError(
            field, f"is not valid Unicode text (a lone surrogate at position {exc.start})"
        ) from None


def _bad_name(field: str, value: object) -> None:
    if type(value) is not str:
        raise InvalidEventError(field, f"must be a str, got {type(value).__name__}")
    raise InvalidEventError(
        field, f"must be a non-empty str of at most {MAX_NAME_CHARS} characters"
    )


# Event names come from a small set; remember the ones that passed (bounded).
_good_names: set[str] = set()


def _check_event_name(value: object) -> None:
    if type(value) is not str or not value or len(value) > MAX_NAME_CHARS:
        _bad_name("event_name", value)
    assert isinstance(value, str)
    if not _WHITESPACE.isdisjoint(value) or not value.isprintable():
        raise InvalidEventError("event_name", "must not contain whitespace or control characters")
    if not value.isascii():
        _check_utf8("event_name", value)
    if len(_good_names) < 4096:
        _good_names.add(value)


def _coerce(key: str, value: object) -> str | int | float | bool:
    """Accept subclasses of the allowed types (str and int enums) as their plain values."""
    if isinstance(value, bool):
        return bool(value)
    if isinstance(value, str):
        return str.__str__(value)
    if isinstance(value, int):
        if not _INT_MIN <= value <= _INT_MAX:
            raise InvalidEventError(f"properties[{key!r}]", "int out of the 64-bit range")
        return int(value)
    if isinstance(value, float):
        f = float(value)
        if f != f or f in (_INF, -_INF):
            raise InvalidEventError(f"properties[{key!r}]", "NaN and infinity are not allowed")
        return f
    kind = (
        "nested containers are not allowed"
        if isinstance(value, (dict, list, tuple, set))
        else ("values must be str, int, float or bool")
    )
    raise InvalidEventError(f"properties[{key!r}]", f"{kind}, got {type(value).__name__}")


def _utc_string(timestamp: object) -> str:
    if isinstance(timestamp, str):
        text = timestamp.strip()
        if text.endswith(("Z", "z")):
            text = text[:-1] + "+00:00"
        try:
            when = datetime.fromisoformat(text)
        except ValueError:
            raise InvalidEventError(
                "timestamp", f"must be ISO 8601 with an offset, got {timestamp!r}"
            ) from None
    elif isinstance(timestamp, datetime):
        when = timestamp
    else:
        raise InvalidEventError(
            "timestamp", f"must be a datetime or an ISO 8601 str, got {type(timestamp).__name__}"
        )
    if when.tzinfo is None or when.utcoffset() is None:
        raise InvalidEventError(
            "timestamp", "must be timezone-aware; a naive time would be billed in a guessed zone"
        )
    try:
        utc = when.astimezone(timezone.utc)
    except (OverflowError, ValueError):
        raise InvalidEventError("timestamp", "is outside the range of UTC dates") from None
    if utc - datetime.now(timezone.utc) > timedelta(seconds=MAX_FUTURE_SECONDS):
        raise InvalidEventError("timestamp", "is more than 5 minutes in the future")
    # Not strftime: its %Y does not pad years before 1000, which RFC 3339 needs as 4 digits.
    return (
        f"{utc.year:04d}-{utc.month:02d}-{utc.day:02d}T{utc.hour:02d}:{utc.minute:02d}:"
        f"{utc.second:02d}.{utc.microsecond:06d}Z"
    )


def _body(
    key: str,
    customer_field: str,
    customer: str,
    event_name: str,
    props: dict[str, Any],
    ts: int | str,
) -> bytes:
    return orjson.dumps(
        {
            "idempotency_key": key,
            customer_field: customer,
            "event_name": event_name,
            "timestamp": ts if type(ts) is str else format_ns(ts),  # type: ignore[arg-type]
            "properties": props,
        }
    )
