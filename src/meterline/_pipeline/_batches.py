"""From queue entries to batches: exact bytes once per event, duplicates settled, batches cut
by their real UTF-8 size.

A cut of the queue becomes one or more ``Batch``es whose every event is accounted for: the
ones serialized, the same key again with the same content (*deduplicated*), the same key
with other content (*rejected* as ``conflicting_duplicate_key``), one the serializer
refuses (*dropped*: ``report()`` already refuses what UTF-8 cannot encode, so this is a
guard, not a path), and entries the full queue turned away (*dropped*, ``queue_full``).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from meterline._delivery import Batch, Item
from meterline._event import KEY, SIZE, Pending

Serialize = Callable[[Sequence[Pending]], list[bytes]]

__all__ = ["Cut", "cut"]

_ENVELOPE = 16  # bytes of the batch envelope around the events (Orb's: 13)


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
    out = Cut()
    events: list[tuple[int, Pending]] = []
    for i, entry in enumerate(entries):
        if len(entry) == 1:
            pending = entry[0]
            out.turned_away.append(
                Item(first + i, 0, pending[KEY], _body_or_empty(pending, serialize))
            )
        else:
            events.append((first + i, entry))
    bodies = _serialize(events, serialize, out)
    seen: dict[str, Pending] = {}
    limit = max_bytes - _ENVELOPE
    batch: list[Item] = []
    size = 0
    new_item = tuple.__new__  # Item(...) without its Python-level __new__
    for (idx, event), body in zip(events, bodies, strict=True):
        if body is None:
            continue
        key = event[KEY]
        item: Item = new_item(Item, (idx, event[SIZE], key, body))
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
    pendings = [event for _, event in events]
    try:
        made: list[bytes | None] = list(serialize(pendings))
    except Exception:  # noqa: BLE001 - orjson.JSONEncodeError, or a custom destination's bug
        made = []
    if len(made) == len(pendings) and all(type(b) is bytes for b in made):
        return made
    bodies: list[bytes | None] = []
    for idx, event in events:  # find the one that fails; the others go on
        try:
            bodies.append(_one(event, serialize))
        except Exception:  # noqa: BLE001 - this one event is dropped, counted; the rest go on
            out.unserializable.append(Item(idx, event[SIZE], event[KEY], b""))
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
