"""A random walk through spills, replays, partial outcomes, crashes, corruption, full
disks and expiry: no key is ever lost or invented."""

from __future__ import annotations

import tempfile
from collections import Counter
from pathlib import Path

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule, run_state_machine_as_test

from meterline._errors import JournalCorruptError, JournalError, JournalFullError
from meterline.journal import Journal
from meterline.journal import _format as fmt
from tests.journal.fsfakes import PowerCutFileOps
from tests.journal.helpers import FakeClock, batch, files, key_of

DIRS = ("ready", "rejected", "expired", "quarantine")


class JournalMachine(RuleBasedStateMachine):
    """The model is two multisets: keys spilled, and keys acknowledged by the server."""

    def __init__(self, base: Path) -> None:
        super().__init__()
        self.root = Path(tempfile.mkdtemp(dir=base)) / "j"
        self.clock = FakeClock()
        self.spilled: Counter[str] = Counter()
        self.acked: Counter[str] = Counter()
        self.corrupted: dict[str, list[str]] = {}  # file name -> its keys before the damage
        self.full = False
        self.boot()

    def boot(self) -> None:
        self.sim = PowerCutFileOps(str(self.root.parent))
        self.sim.free_bytes = 0 if self.full else None
        self.journal = Journal(
            self.root, fs=self.sim, clock=self.clock, max_age=86400.0, min_free_bytes=1024
        )
        self.journal.open()

    def keys_in(self, sub: str) -> Counter[str]:
        keys: Counter[str] = Counter()
        for name in files(self.root / sub):
            try:
                events = fmt.decode((self.root / sub / name).read_bytes()).events
                keys.update(key_of(e) for e in events)
            except fmt.BatchFormatError:
                keys.update(self.corrupted[name])
        return keys

    # -- rules ---------------------------------------------------------------------------

    @rule(size=st.integers(1, 6))
    def spill(self, size: int) -> None:
        events = batch(size)
        try:
            self.journal.spill(events)
        except JournalFullError:
            assert self.full
            return
        assert not self.full
        self.spilled.update(key_of(e) for e in events)

    @rule(size=st.integers(1, 4))
    def write_ahead_then_ack(self, size: int) -> None:
        events = batch(size)
        try:
            claim = self.journal.spill_held(events)
        except JournalFullError:
            return
        self.spilled.update(key_of(e) for e in events)
        assert self.journal.read(claim) == events
        self.journal.ack(claim)
        self.acked.update(key_of(e) for e in events)

    def take(self, pick: int) -> tuple[object, list[bytes]] | None:
        refs = self.journal.ready()
        if not refs:
            return None
        claim = self.journal.claim(refs[pick % len(refs)])
        assert claim is not None
        try:
            return claim, self.journal.read(claim)
        except JournalCorruptError:
            assert claim.name in self.corrupted
            return None

    @rule(pick=st.integers(0, 50))
    def replay_and_ack(self, pick: int) -> None:
        taken = self.take(pick)
        if taken is not None:
            claim, events = taken
            self.journal.ack(claim)  # type: ignore[arg-type]
            self.acked.update(key_of(e) for e in events)

    @rule()
    def replay_everything(self) -> None:
        for _ in range(len(self.journal.ready())):
            self.replay_and_ack(0)
        assert self.journal.ready() == []

    @rule(pick=st.integers(0, 50), cut1=st.integers(0, 6), cut2=st.integers(0, 6))
    def replay_and_settle(self, pick: int, cut1: int, cut2: int) -> None:
        taken = self.take(pick)
        if taken is None:
            return
        claim, events = taken
        low, high = sorted((min(cut1, len(events)), min(cut2, len(events))))
        delivered, remaining, rejected = events[:low], events[low:high], events[high:]
        self.journal.settle(
            claim,  # type: ignore[arg-type]
            remaining=remaining,
            rejected=[(e, ["invalid"]) for e in rejected],
        )
        self.acked.update(key_of(e) for e in delivered)

    @rule(pick=st.integers(0, 50))
    def release_unread(self, pick: int) -> None:
        refs = self.journal.ready()
        if refs:
            claim = self.journal.claim(refs[pick % len(refs)])
            assert claim is not None
            self.journal.release(claim)

    @rule()
    def crash_and_reopen(self) -> None:
        self.sim.crash()
        self.boot()

    @rule(pick=st.integers(0, 50), offset=st.integers(0, 10_000), truncate=st.booleans())
    def corrupt_a_file(self, pick: int, offset: int, truncate: bool) -> None:
        sound = {}
        for name in files(self.root / "ready"):
            try:
                sound[name] = fmt.decode((self.root / "ready" / name).read_bytes())
            except fmt.BatchFormatError:
                continue  # damaged already
        if not sound:
            return
        name = sorted(sound)[pick % len(sound)]
        path = self.root / "ready" / name
        data = bytearray(path.read_bytes())
        self.corrupted[name] = [key_of(e) for e in sound[name].events]
        if truncate:
            del data[offset % len(data) :]
        else:
            data[offset % len(data)] ^= 0x10
        path.write_bytes(bytes(data))

    @rule()
    def toggle_disk_full(self) -> None:
        self.full = not self.full
        self.sim.free_bytes = 0 if self.full else None

    @rule(seconds=st.sampled_from([60.0, 3600.0, 86400.0, 2 * 86400.0]))
    def advance_clock_and_expire(self, seconds: float) -> None:
        before = sum(self.keys_in("expired").values())
        self.clock.advance(seconds)
        moved = self.journal.expire()
        assert sum(self.keys_in("expired").values()) == before + moved

    @rule(which=st.sampled_from(["expired", "quarantine"]))
    def requeue(self, which: str) -> None:
        before = sum(self.keys_in("ready").values())
        try:
            moved = self.journal.requeue(which)
        except JournalError:
            raise AssertionError("requeue of everything never raises") from None
        assert sum(self.keys_in("ready").values()) == before + moved

    # -- what must always hold ------------------------------------------------------------

    @invariant()
    def nothing_lost_nothing_invented(self) -> None:
        on_disk: Counter[str] = Counter()
        for sub in DIRS:
            on_disk += self.keys_in(sub)
        assert on_disk + self.acked == self.spilled
        assert files(self.root / "tmp", "") == []

    @invariant()
    def ready_is_sorted_and_counted(self) -> None:
        names = [r.name for r in self.journal.ready()]
        assert names == sorted(names)
        assert self.journal.status().ready_batches == len(files(self.root / "ready"))

    def teardown(self) -> None:
        self.journal.close()


def test_journal_state_machine(tmp_path):
    """Any sequence of journal operations, crashes, corruptions, full disks and expiries
    keeps every spilled key exactly once in ready, rejected, expired, quarantine or acked."""
    run_state_machine_as_test(
        lambda: JournalMachine(tmp_path),
        settings=settings(
            max_examples=50,
            stateful_step_count=30,
            deadline=None,
            database=None,
            suppress_health_check=[HealthCheck.too_slow],
        ),
    )
