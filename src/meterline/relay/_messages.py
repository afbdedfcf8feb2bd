"""What the relay makes of one Kafka message: an event to deliver, or a reason it cannot be.

A message written by meterline's Kafka destination holds an event's exact bytes in the
downstream's wire format, the idempotency key in the ``meterline-idempotency-key`` header
and the format's name in ``meterline-format``. The relay sends the bytes unchanged. A
message in another destination's format is a configuration error of the relay (shipping
Orb's events to Lago would bill nobody): the relay stops there and commits nothing past it.
Anything else that cannot be an event (no value, not a JSON object, no key, a key that does
not match its header, too large) is rejected, kept in the journal's ``rejected/`` with the
topic, partition and offset in its reason, and committed past.
"""

from __future__ import annotations

from typing import Any

import orjson

from meterline._errors import ConfigError
from meterline._outcomes import Item
from meterline.destinations.kafka import FORMAT_HEADER, KEY_HEADER

__all__ = ["FormatMismatchError", "Unreadable", "read_message"]


class FormatMismatchError(ConfigError):
    """The topic holds events in another destination's format than the relay sends."""


class Unreadable:
    """A message that cannot be an event: what to keep in ``rejected/``, and why."""

    __slots__ = ("body", "key", "reason")

    def __init__(self, body: bytes, key: str, reason: str) -> None:
        self.body = body
        self.key = key
        self.reason = reason


def read_message(msg: Any, *, fmt: str, key_field: str, max_bytes: int) -> Item | Unreadable:
    """The event a message carries, or why it carries none."""
    where = f"kafka {msg.topic()}[{msg.partition()}]@{msg.offset()}"
    headers = _headers(msg)
    value = msg.value()
    named = headers.get(FORMAT_HEADER)
    if named is not None and named != fmt:
        raise FormatMismatchError(
            f"{where} holds a {named!r} event and this relay sends {fmt!r}: run the relay "
            f"with --to {named} (nothing past this message was committed)"
        )
    header_key = headers.get(KEY_HEADER)
    if not value:
        return _unreadable(where, key_field, header_key, value, "the message has no value")
    if len(value) > max_bytes:
        return _unreadable(
            where, key_field, header_key, value, f"{len(value)} bytes, more than {max_bytes}"
        )
    try:
        doc = orjson.loads(value)
    except orjson.JSONDecodeError:
        return _unreadable(where, key_field, header_key, value, "the value is not JSON")
    if not isinstance(doc, dict):
        return _unreadable(where, key_field, header_key, value, "the value is not a JSON object")
    key = doc.get(key_field)
    if not isinstance(key, str) or not key:
        return _unreadable(where, key_field, header_key, value, f"no {key_field} in the event")
    if header_key is not None and header_key != key:
        return _unreadable(
            where, key_field, header_key, value, f"its header key differs from its {key_field}"
        )
    return (-1, len(value), key, bytes(value))


def _headers(msg: Any) -> dict[str, str]:
    found: dict[str, str] = {}
    for name, raw in msg.headers() or ():
        if name in (KEY_HEADER, FORMAT_HEADER) and isinstance(raw, bytes):
            found[name] = raw.decode("utf-8", "replace")
    return found


def _unreadable(
    where: str, key_field: str, key: str | None, value: bytes | None, why: str
) -> Unreadable:
    """An event-shaped record of the message for ``rejected/`` (which keeps JSON events by
    key): the key is the message's own, else its place in the topic."""
    key = key or where.replace(" ", ":")
    text = (value or b"").decode("utf-8", "replace")
    body = orjson.dumps({key_field: key, "meterline_relay_unreadable": text[:100_000]})
    return Unreadable(body, key, f"{where}: {why}")
