"""From queue entries to batches: exact bytes once per event, duplicates settled, batches cut
by their real UTF-8 size.

A cut of the queue becomes one or more ``Batch``es whose every event is accounted for: the
ones serialized, the same key again with the same content (*deduplicated*), the same key
with other content (*rejected* as ``conflicting_duplicate_key``), one the serializer
refuses (*dropped*: ``report()`` already refuses what UTF-8 cannot encode, so this is a
guard, not a path), and entries the full queue turned away (*dropped*, ``queue_full``).
"""

from __future__ import annotations

from bisect import bisect_right
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from itertools import accumulate
from operator import itemgetter
from typing import Any

from meterline._delivery import Batch, Item
from meterline._event import KEY, SIZE, Pending

Serialize = Callable[[Sequence[Pending]], list[bytes]]

__all__ = ["Cut", "cut"]

_ENVELOPE = 16  # bytes of the batch envelope around the events (Orb's: 13)
_key = itemgetter(KEY)
_size = itemgetter(SIZE)


@dataclass
class Cut:
    """Everything one cut of the queue turned into."""

    batches: list[Batch] = field(default_factory=list)
    duplicates: list[Item] = field(default_factory=list)
    conflicts: list[Item] = field(default_factory=list)
    unserializable: list[Item] = field(default_factory=list)
    turned_away: list[Item] = field(default_factory=list)


def cut(
    entries: list[Any], first: int, serialize: Serialize, max_events: int, max_bytes: int
) -> Cut:
    """Serialize ``entries`` (indexes from ``first``) into batches of at most ``max_events``
    events and ``max_bytes`` real bytes."""
    n = len(entries)
    if n and min(map(len, entries)) > 1:  # nothing turned away: the path of every cut
        keys = list(map(_key, entries))
        if len(set(keys)) == n:  # no key twice
            bodies = _serialize_all(entries, serialize)
            if bodies is not None:
                return _batched(entries, first, keys, bodies, max_events, max_bytes)
    return _cut_one_by_one(entries, first, serialize, max_events, max_bytes)


def _batched(
    entries: list[Pending],
    first: int,
    keys: list[str],
    bodies: list[bytes],
    max_events: int,
    max_bytes: int,
) -> Cut:
    """Distinct keys, every event serialized: items built and batches cut without a
    Python-level step per event (each event costs its bytes and a comma)."""
    n = len(entries)
    sizes = map(_size, entries)
    items: list[Item] = list(zip(range(first, first + n), sizes, keys, bodies, strict=True))
    limit = max_bytes - _ENVELOPE
    ends = list(accumulate(map(len, bodies), initial=0))  # ends[i]: bytes before event i
    out = Cut()
    start = 0
    while start < n:
        # the most events from ``start`` that fit ``limit`` (with their commas); at least one
        stop = min(bisect_right(ends, ends[start] + limit, lo=start + 1) - 1, start + max_events)
        while stop > start + 1 and ends[stop] - ends[start] + (stop - start) > limit:
            stop -= 1
        stop = max(stop, start + 1)
        out.batches.append(Batch(items[start:stop]))
        start = stop
    return out


def _serialize_all(entries: list[Pending], serialize: Serialize) -> list[bytes] | None:
    """Every event's bytes, or None when the serializer refused one (or answered oddly)."""
    try:
        made = serialize(entries)
        if type(made) is not list:
            made = list(made)  # a tuple, a generator (which may raise), None...
        if len(made) != len(entries) or (made and set(map(type, made)) != {bytes}):
            return None
    except Exception:  # noqa: BLE001 - orjson.JSONEncodeError, or a custom destination's bug
        return None
    return made


def _cut_one_by_one(
    entries: list[Any], first: int, serialize: Serialize, max_events: int, max_bytes: int
) -> Cut:
    """The path with something to sort out: turned-away entries, a key twice, an event the
    serializer refuses."""
    out = Cut()
    events: list[tuple[int, Pending]] = []
    for i, entry in enumerate(entries):
        if len(entry) == 1:
            pending = entry[0]
            out.turned_away.append((first + i, 0, pending[KEY], _body_or_empty(pending, serialize)))
        else:
            events.append((first + i, entry))
    bodies = _serialize(events, serialize, out)
    seen: dict[str, Pending] = {}
    limit = max_bytes - _ENVELOPE
    batch: list[Item] = []
    size = 0
    for (idx, event), body in zip(events, bodies, strict=True):
        if body is None:
            continue
        key = event[KEY]
        item: Item = (idx, event[SIZE], key, body)
        earlier = seen.get(key)
        if earlier is not None:
            (out.duplicates if _same(earlier, event) else out.conflicts).append(item)
            continue
        seen[key] = event
        if batch and (len(batch) >= max_events or size + len(body) + 1 > limit):
            out.batches.append(Batch(batch))
            batch, size = [], 0
        batch.append(item)
        size += len(body) + 1
    if batch:
        out.batches.append(Batch(batch))
    return out


def _serialize(
    events: list[tuple[int, Pending]], serialize: Serialize, out: Cut
) -> list[bytes | None]:
    made = _serialize_all([event for _, event in events], serialize)
    if made is not None:
        return list(made)
    bodies: list[bytes | None] = []
    for idx, event in events:  # find the one that fails; the others go on
        try:
            bodies.append(_one(event, serialize))
        except Exception:  # noqa: BLE001 - this one event is dropped, counted; the rest go on
            out.unserializable.append((idx, event[SIZE], event[KEY], b""))
            bodies.append(None)
    return bodies


def _one(event: Pending, serialize: Serialize) -> bytes:
    (body,) = serialize([event])
    if type(body) is not bytes:
        raise TypeError("a destination must serialize an event to bytes")
    return body


def _body_or_empty(event: Pending, serialize: Serialize) -> bytes:
    try:
        return _one(event, serialize)
    except Exception:  # noqa: BLE001 - a body only for on_drop's report
        return b""


def _same(a: Pending, b: Pending) -> bool:
    """The same event reported again: same customer, name and properties, and the same
    timestamp, or both stamped by ``report()`` (a caller's retry of one event)."""
    if a[1:4] != b[1:4]:
        return False
    ta, tb = a[4], b[4]
    return ta == tb or (type(ta) is int and type(tb) is int)
