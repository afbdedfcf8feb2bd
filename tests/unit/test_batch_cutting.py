"""The fast paths of the spooler cut the same batches as the one-by-one path.

``cut()`` and ``Queue.take()`` skip the Python-level step per event when nothing needs
sorting out; these properties compare them with the one-by-one code they stand in for,
on random events, limits and queue contents (turned-away entries and repeated keys
included, which must take the slow path and still come out right).
"""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from meterline._event import validate
from meterline._pipeline._batches import _cut_one_by_one, cut
from meterline._pipeline._queue import Queue, Wake
from meterline._pipeline._settle import Settlement
from meterline.destinations import Orb

ORB = Orb()

events = st.lists(
    st.tuples(
        st.text("abc", min_size=1, max_size=40),  # customer
        st.sampled_from([0, 1, 5, 50, 300]),  # length of a string property
        st.sampled_from([None, "k1", "k2"]),  # an idempotency key given twice, sometimes
    ),
    min_size=1,
    max_size=60,
)


def _pendings(spec: list[tuple[str, int, str | None]]) -> list[Any]:
    return [
        validate(customer, "api_call", {"s": "x" * n}, None, key, 1 << 20)
        for customer, n, key in spec
    ]


@settings(max_examples=300, deadline=None)
@given(
    spec=events,
    max_events=st.integers(1, 20),
    max_bytes=st.integers(200, 4000),
    first=st.integers(0, 1000),
    away=st.sets(st.integers(0, 59), max_size=3),
)
def test_cut_matches_the_one_by_one_path(
    spec: list[tuple[str, int, str | None]],
    max_events: int,
    max_bytes: int,
    first: int,
    away: set[int],
) -> None:
    entries: list[Any] = _pendings(spec)
    for i in away:
        if i < len(entries):
            entries[i] = (entries[i],)  # turned away by a full queue
    fast = cut(entries, first, ORB.serialize_many, max_events, max_bytes)
    slow = _cut_one_by_one(entries, first, ORB.serialize_many, max_events, max_bytes)
    assert [b.items for b in fast.batches] == [b.items for b in slow.batches]
    assert fast.duplicates == slow.duplicates
    assert fast.conflicts == slow.conflicts
    assert fast.turned_away == slow.turned_away
    counted = sum(len(b.items) for b in fast.batches) + len(fast.duplicates)
    counted += len(fast.conflicts) + len(fast.turned_away) + len(fast.unserializable)
    assert counted == len(entries)  # every entry comes out once
    for batch in fast.batches:
        assert len(batch.items) <= max_events
        size = sum(len(it[3]) + 1 for it in batch.items)
        assert len(batch.items) == 1 or size <= max_bytes - 16


def _queue(entries: list[Any]) -> Queue:
    queue = Queue(
        Settlement(),
        max_events=10_000,
        max_bytes=1 << 30,
        batch_events=500,
        batch_bytes=1 << 30,
        eager=False,
        wake=Wake(),
        own_thread=lambda: False,
    )
    queue.entries.extend(entries)
    queue.in_bytes = sum(e[5] for e in entries if len(e) != 1)
    return queue


@settings(max_examples=300, deadline=None)
@given(
    spec=events,
    max_events=st.integers(1, 80),
    max_bytes=st.integers(100, 6000),
    away=st.sets(st.integers(0, 59), max_size=3),
    edge=st.none() | st.integers(1, 60),
)
def test_take_matches_the_one_by_one_path(
    spec: list[tuple[str, int, str | None]],
    max_events: int,
    max_bytes: int,
    away: set[int],
    edge: int | None,
) -> None:
    entries: list[Any] = _pendings(spec)
    for i in away:
        if i < len(entries):
            entries[i] = (entries[i],)
    if edge is not None:  # a bound that the first ``edge`` events fill exactly
        max_bytes = sum(e[5] for e in entries[:edge] if len(e) != 1)
    fast, slow = _queue(entries), _queue(entries)
    taken_fast = fast.take(max_events, max_bytes)
    taken_slow = slow._take_one_by_one(max_events, max_bytes)
    assert taken_fast == taken_slow
    assert list(fast.entries) == list(slow.entries)
    assert fast.out_bytes == slow.out_bytes
    assert taken_fast + list(fast.entries) == entries  # nothing lost, order kept


def _odd_serializers() -> list[Any]:
    def none(events: Any) -> Any:
        return None

    def raising_generator(events: Any) -> Any:
        def bodies() -> Any:
            yield from ORB.serialize_many(events)[:1]
            raise ValueError("midway")

        return bodies() if len(events) > 1 else iter(ORB.serialize_many(events))

    def tuple_of_bytes(events: Any) -> Any:
        return tuple(ORB.serialize_many(events))

    return [none, raising_generator, tuple_of_bytes]


@pytest.mark.parametrize("serialize", _odd_serializers(), ids=lambda f: f.__name__)
def test_a_misbehaving_custom_serializer_costs_no_event(serialize: Any) -> None:
    """A serializer answering None, or a generator that raises part way, once made the
    whole cut raise on the spooler: its events were held for ever, never settled."""
    entries: list[Any] = _pendings([("c", 5, None)] * 10)
    made = cut(entries, 0, serialize, 500, 1 << 20)
    counted = sum(len(b.items) for b in made.batches) + len(made.unserializable)
    assert counted == len(entries)
