"""Delivery decisions with an injected sleep: which waits, which resends, what is settled."""

from __future__ import annotations

import threading
from collections import Counter

import orjson
import pytest

from meterline._config import Config
from meterline._delivery import Batch, Delivery, Item
from meterline._stats import Counters
from meterline._transport import Response, TransportError
from meterline.testing import FlakyTransport, RecordingTransport


class MemoryJournal:
    """Just enough journal to see what delivery spills (the real one has its own suite)."""

    def __init__(self) -> None:
        self.spilled: list[list[bytes]] = []

    def spill(self, events):
        self.spilled.append(list(events))

    def spill_held(self, events):
        self.spilled.append(list(events))
        return len(self.spilled) - 1

    def settle(self, claim, remaining=(), rejected=()):
        self.spilled[claim] = list(remaining)
        self.rejected = list(rejected)

    def ack(self, claim):
        self.spilled[claim] = []

    def release(self, claim):
        pass


def _items(n: int) -> list[Item]:
    out = []
    for i in range(n):
        key = f"k{i}"
        body = orjson.dumps({"idempotency_key": key, "event_name": "e", "properties": {}})
        out.append((i, 100, key, body))
    return out


class Deliverer:
    """A Delivery with the batch wrapping of the pipeline around it."""

    def __init__(self, delivery: Delivery) -> None:
        self.delivery = delivery
        self.circuit = delivery.circuit
        self.parked: list[Batch] = []

    def deliver(self, items: list[Item]) -> str:
        return self.delivery.deliver(Batch(items))


def _delivery(transport, sleeps, journal=None, **options):
    settled: Counter[str] = Counter()
    config = Config(api_key="k", **options)
    parked: list[Batch] = []
    d = Delivery(
        config,
        transport_factory=lambda: transport,
        counters=Counters(),
        settle=lambda items, outcome, reason: settled.update({outcome: len(items)}),
        park=parked.append,
        stopping=threading.Event(),
        sleep=sleeps.append,
    )
    d.journal = journal
    wrapper = Deliverer(d)
    wrapper.parked = parked
    return wrapper, settled


def test_429_waits_exactly_what_retry_after_says():
    """Retry-After and retry-after-ms set the waits between attempts."""
    script = [
        Response(429, {"retry-after": "3"}),
        Response(503, {"retry-after-ms": "250"}),
    ]
    sleeps: list[float] = []
    transport = FlakyTransport(script)
    d, settled = _delivery(transport, sleeps)
    d.deliver(_items(3))
    assert sleeps == [3.0, 0.25]
    assert settled == {"sent": 3}


def test_budget_exhausted_spills_to_the_journal():
    """After retry_attempts failures the batch goes to the journal, counted as journaled."""
    sleeps: list[float] = []
    journal = MemoryJournal()
    d, settled = _delivery(FlakyTransport([TransportError("refused")] * 9), sleeps, journal)
    d.deliver(_items(4))
    assert len(sleeps) == 3
    assert settled == {"journaled": 4}
    assert len(journal.spilled) == 1
    assert len(journal.spilled[0]) == 4
    assert d.circuit.is_open


def test_open_circuit_sends_new_batches_straight_to_the_journal():
    """While the circuit is open no request is made; batches are journaled at once."""
    sleeps: list[float] = []
    journal = MemoryJournal()
    transport = FlakyTransport([503] * 4)
    d, settled = _delivery(transport, sleeps, journal)
    d.deliver(_items(2))
    attempts = transport.attempts
    d.deliver(_items(2))
    assert transport.attempts == attempts
    assert settled == {"journaled": 4}


def test_unauthorized_is_not_retried_and_nothing_is_dropped():
    """401 journals the batch at once, opens the circuit with the slow probe interval."""
    sleeps: list[float] = []
    journal = MemoryJournal()
    transport = FlakyTransport([401, 401])
    d, settled = _delivery(transport, sleeps, journal, auth_probe_interval=60.0)
    d.deliver(_items(5))
    assert transport.attempts == 1
    assert sleeps == []
    assert settled == {"journaled": 5}
    assert d.circuit.seconds_to_probe() > 50


def test_conflict_409_is_retried_but_bounded():
    """409 retries within the attempt budget, then spills."""
    sleeps: list[float] = []
    journal = MemoryJournal()
    transport = FlakyTransport([409] * 10)
    d, settled = _delivery(transport, sleeps, journal, retry_attempts=3)
    d.deliver(_items(1))
    assert transport.attempts == 3
    assert settled == {"journaled": 1}


def test_400_naming_keys_rejects_those_and_resends_the_rest_at_once():
    """A 400 listing failing keys rejects them; the rest goes out again without waiting."""
    body = orjson.dumps(
        {
            "type": "x",
            "status": 400,
            "validation_errors": [{"idempotency_key": "k1", "validation_errors": ["bad"]}],
        }
    )
    sleeps: list[float] = []
    inner = RecordingTransport()
    d, settled = _delivery(FlakyTransport([Response(400, {}, body)], then=inner), sleeps)
    d.deliver(_items(4))
    assert sleeps == []
    assert settled == {"rejected": 1, "sent": 3}
    assert {e["idempotency_key"] for e in inner.events} == {"k0", "k2", "k3"}


def test_200_naming_keys_the_batch_does_not_contain_is_ignored():
    """validation_failed entries for foreign keys do not reject anything."""
    body = orjson.dumps(
        {"validation_failed": [{"idempotency_key": "zzz", "validation_errors": ["?"]}]}
    )
    sleeps: list[float] = []
    d, settled = _delivery(FlakyTransport([Response(200, {}, body)]), sleeps)
    d.deliver(_items(2))
    assert settled == {"sent": 2}


@pytest.mark.parametrize("status", [413])
def test_single_event_too_large_is_rejected_with_a_reason(status):
    """A lone event answered 413 cannot be split further; it is rejected, not retried."""
    sleeps: list[float] = []
    d, settled = _delivery(FlakyTransport([status] * 3), sleeps)
    d.deliver(_items(1))
    assert settled == {"rejected": 1}


def test_a_raising_custom_transport_does_not_kill_delivery():
    """An unexpected exception from a transport is treated like a connection error."""

    class Broken:
        def send(self, events, *, timeout=None):
            raise KeyError("boom")

        def close(self):
            pass

    sleeps: list[float] = []
    journal = MemoryJournal()
    d, settled = _delivery(Broken(), sleeps, journal, retry_attempts=2)
    d.deliver(_items(2))
    assert settled == {"journaled": 2}


class _BlockingJournal(MemoryJournal):
    """A journal whose spill waits for ``release`` (a slow disk), saying when it began."""

    def __init__(self) -> None:
        super().__init__()
        self.entered = threading.Event()
        self.release = threading.Event()

    def spill(self, events):
        self.entered.set()
        assert self.release.wait(10)
        super().spill(events)


def test_close_never_copies_a_batch_the_sender_is_already_journaling():
    """The sender's failed batch is being written when close() wants a copy of the batch in
    flight: close() waits for the write and then finds nothing in flight (it used to copy
    it too, and the journal held every event twice)."""
    journal = _BlockingJournal()
    d, settled = _delivery(FlakyTransport([503] * 9), [], journal)
    sender = threading.Thread(target=d.deliver, args=(_items(3),))
    sender.start()
    assert journal.entered.wait(10)
    copies: list[Batch] = []
    closer = threading.Thread(target=d.delivery.journal_in_flight, args=(copies.append,))
    closer.start()
    closer.join(0.2)
    assert closer.is_alive()  # it waits for the sender's write to end
    journal.release.set()
    sender.join(10)
    closer.join(10)
    assert copies == []
    assert len(journal.spilled) == 1
    assert settled == {"journaled": 3}


def test_close_copies_a_batch_whose_send_hangs():
    """While the send itself hangs, close() gets the batch in flight to journal a copy."""
    started, hang = threading.Event(), threading.Event()

    class Hanging(RecordingTransport):
        def send(self, events, *, timeout=None):
            started.set()
            hang.wait(10)
            raise TransportError("hung up")

    d, _ = _delivery(Hanging(), [], MemoryJournal(), retry_attempts=1)
    items = _items(2)
    sender = threading.Thread(target=d.deliver, args=(items,))
    sender.start()
    assert started.wait(10)
    copies: list[Batch] = []
    d.delivery.journal_in_flight(copies.append)
    hang.set()
    sender.join(10)
    assert len(copies) == 1
    assert copies[0].items == items
