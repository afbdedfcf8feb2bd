"""Format version 2: every file carries its fingerprint; a journal reads only its own
(and version-1 files, which predate keying), and leaves the others where they are."""

from __future__ import annotations

import logging
import os
from pathlib import Path

import pytest

from meterline._errors import ConfigError, JournalCorruptError, JournalError, JournalForeignError
from meterline.journal import Journal, inspect_file
from meterline.journal import _format as fmt
from tests.journal.fsfakes import FaultyFileOps
from tests.journal.helpers import FP_OURS, FP_THEIRS, batch, craft, encode_v1, event, files


def plant(jdir: Path, data: bytes, label: int = 1) -> str:
    """Put a batch file straight into ready/, named as if written long ago."""
    name = fmt.make_name(1_000_000_000 + label, 1, label, "ab")
    (jdir / "ready" / name).write_bytes(data)
    return name


def fingerprint_of(path: Path | str) -> object:
    return inspect_file(path)["fingerprint"]


def snapshot(path: Path) -> tuple[bytes, int, int]:
    st = path.stat()
    return path.read_bytes(), st.st_mtime_ns, st.st_ino


# -- version 1: written by meterline 0.1 -----------------------------------------------------


def test_v1_file_is_read_by_a_keyed_journal_byte_for_byte(make_journal, jdir):
    """A version-1 file (no fingerprint: it predates keying) replays through a keyed
    journal with its exact event bytes, and inspect shows it as version 1 without one."""
    journal = make_journal(fingerprint=FP_OURS)
    events = batch(3)
    name = plant(jdir, encode_v1(events))
    info = inspect_file(jdir / "ready" / name)
    assert (info["ok"], info["version"], info["header_len"], info["fingerprint"]) == (
        True,
        1,
        32,
        None,
    )
    claim = journal.claim(journal.ready()[0])
    assert journal.read(claim) == events
    journal.ack(claim)
    assert files(jdir / "ready") == []


def test_v1_files_are_counted_and_expired_like_any_other(make_journal, jdir, clock):
    """status() counts version-1 files (events from their header) as legacy, and expire()
    moves an old one, passing its exact bytes on."""
    journal = make_journal(fingerprint=FP_OURS, max_age=60.0)
    events = batch(2)
    plant(jdir, encode_v1(events))
    status = journal.status()
    assert (status.ready_batches, status.ready_events, status.ready_legacy_batches) == (1, 2, 1)
    assert status.ready_foreign_batches == 0
    seen: list[list[bytes]] = []
    assert journal.expire(seen.append) == 2
    assert seen == [events]
    assert len(files(jdir / "expired")) == 1


def test_settling_a_v1_file_writes_v2_files_with_our_fingerprint(make_journal, jdir):
    """What is left of a version-1 batch after a partial send is rewritten in version 2,
    keyed to the journal that sent it."""
    journal = make_journal(fingerprint=FP_OURS)
    events = batch(3)
    plant(jdir, encode_v1(events))
    claim = journal.claim(journal.ready()[0])
    journal.read(claim)
    journal.settle(claim, remaining=events[:1], rejected=[(events[1], ["bad"])])
    (left,) = files(jdir / "ready")
    (refused,) = files(jdir / "rejected")
    for path in (jdir / "ready" / left, jdir / "rejected" / refused):
        assert inspect_file(path)["version"] == 2
        assert fingerprint_of(path) == FP_OURS.hex()


# -- version 2 round trips -------------------------------------------------------------------


def test_spill_and_spill_held_write_the_fingerprint(make_journal, jdir):
    """Every batch a keyed journal spills, held or not, is version 2 with its fingerprint,
    and reads back exactly."""
    journal = make_journal(fingerprint=FP_OURS)
    events = batch(2)
    ref = journal.spill(events)
    held = journal.spill_held(batch(1))
    for path in (ref.path, held.path):
        info = inspect_file(path)
        assert (info["ok"], info["version"], info["header_len"]) == (True, 2, 48)
        assert info["fingerprint"] == FP_OURS.hex()
    assert fmt.decode(Path(ref.path).read_bytes()).header.fingerprint == FP_OURS
    assert len(journal.read(held)) == 1
    claim = journal.claim(next(r for r in journal.ready() if r.name == ref.name))
    assert journal.read(claim) == events


def test_settle_keys_remaining_and_rejected_files(make_journal, jdir):
    """After a partial outcome, both the remaining batch and the rejected file carry the
    journal's fingerprint, and the remaining one reads back to the same journal."""
    journal = make_journal(fingerprint=FP_OURS)
    events = batch(4)
    journal.spill(events)
    claim = journal.claim(journal.ready()[0])
    journal.read(claim)
    journal.settle(claim, remaining=events[2:], rejected=[(events[0], ["too old"])])
    (refused,) = files(jdir / "rejected")
    assert fingerprint_of(jdir / "rejected" / refused) == FP_OURS.hex()
    assert fmt.decode((jdir / "rejected" / refused).read_bytes()).reasons == [["too old"]]
    (ref,) = journal.ready()
    assert fingerprint_of(ref.path) == FP_OURS.hex()
    assert journal.read(journal.claim(ref)) == events[2:]


@pytest.mark.parametrize("which", ["quarantine", "expired"])
def test_requeue_keeps_each_file_its_fingerprint(make_journal, jdir, clock, which):
    """Requeue moves files back to ready/ as they are: a foreign file keeps the fingerprint
    it was written with (so it still goes only where it belongs), ours keeps ours."""
    journal = make_journal(fingerprint=FP_OURS, max_age=60.0)
    ours = fmt.encode(batch(2), fingerprint=FP_OURS)
    theirs = fmt.encode(batch(3), fingerprint=FP_THEIRS)
    for label, data in enumerate((ours, theirs)):
        name = fmt.make_name(int(clock() * 1e9) + label, 1, label, "cd")
        (jdir / which / name).write_bytes(data)
    assert journal.requeue(which) == 5
    moved = sorted((jdir / "ready" / name).read_bytes() for name in files(jdir / "ready"))
    assert moved == sorted([ours, theirs])
    assert journal.replayable() == 2  # nothing read yet: both are offered, by name


def test_recovered_files_keep_their_fingerprint(make_journal, jdir):
    """A dead writer's complete tmp/ file is promoted as written, fingerprint included."""
    make_journal().close()
    data = fmt.encode(batch(2), fingerprint=FP_THEIRS)
    name = fmt.make_name(1_000_000_001, 999_999, 1, "dead")
    (jdir / "tmp" / name).write_bytes(data)
    make_journal(fingerprint=FP_OURS)  # open() recovers: not its batch, but not lost
    assert (jdir / "ready" / name).read_bytes() == data


def test_a_bad_fingerprint_is_a_config_error():
    """A fingerprint must be exactly 16 bytes (or None); anything else is refused."""
    for bad in (b"short", bytes(17), "0" * 16, bytearray(16)):
        with pytest.raises(ConfigError, match="16 bytes"):
            Journal("/nonexistent", fingerprint=bad)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="16 bytes"):
        fmt.encode([event()], fingerprint=b"x")


# -- foreign files ---------------------------------------------------------------------------


def test_foreign_file_is_left_in_place_and_set_aside(make_journal, jdir, caplog):
    """A version-2 file of another fingerprint is neither read nor moved: read() raises
    JournalForeignError, releases the claim, logs one WARNING, and from then on ready()
    skips it and set_aside() counts it."""
    caplog.set_level(logging.WARNING, logger="meterline.journal")
    journal = make_journal(fingerprint=FP_OURS)
    name = plant(jdir, fmt.encode(batch(3), fingerprint=FP_THEIRS))
    path = jdir / "ready" / name
    before = snapshot(path)
    ours = journal.spill(batch(1))
    assert (journal.replayable(), journal.set_aside()) == (2, 0)
    stale = journal.ready()[0]
    assert stale.name == name
    with pytest.raises(JournalForeignError) as caught:
        journal.read(journal.claim(stale))
    assert isinstance(caught.value, JournalError)
    assert not isinstance(caught.value, JournalCorruptError)
    assert name in str(caught.value)
    assert snapshot(path) == before
    assert [r.name for r in journal.ready()] == [ours.name]
    assert (journal.replayable(), journal.set_aside()) == (1, 1)
    with pytest.raises(JournalForeignError):  # a stale listing: refused again, logged once
        journal.read(journal.claim(stale))
    warnings = [r for r in caplog.records if name in r.getMessage()]
    assert len(warnings) == 1
    assert warnings[0].levelno == logging.WARNING
    assert FP_THEIRS[:4].hex() in warnings[0].getMessage()
    assert FP_THEIRS.hex() not in caplog.text  # a short prefix, never the whole value
    assert files(jdir / "quarantine", "") == []
    owner = make_journal(fingerprint=FP_THEIRS)  # the claim was released: its owner reads it
    claim = owner.claim(next(r for r in owner.ready() if r.name == name))
    assert claim is not None
    assert len(owner.read(claim)) == 3


def test_foreign_file_with_a_damaged_payload_is_not_quarantined(make_journal, jdir):
    """Only the header of a foreign file is judged: a damaged payload under a sound header
    of another fingerprint is left for its owner, not quarantined."""
    journal = make_journal(fingerprint=FP_OURS)
    data = bytearray(fmt.encode(batch(2), fingerprint=FP_THEIRS))
    data[-3] ^= 0x10
    name = plant(jdir, bytes(data))
    with pytest.raises(JournalForeignError):
        journal.read(journal.claim(journal.ready()[0]))
    assert (jdir / "ready" / name).read_bytes() == bytes(data)
    assert files(jdir / "quarantine", "") == []


def test_zero_fingerprint_is_foreign_to_a_keyed_journal(make_journal, jdir):
    """A file written by a journal without a fingerprint (16 zero bytes) is not replayed
    by a keyed one: zeros name no destination, not every destination."""
    make_journal().spill(batch(1))
    keyed = make_journal(fingerprint=FP_OURS)
    with pytest.raises(JournalForeignError):
        keyed.read(keyed.claim(keyed.ready()[0]))


def test_foreign_file_is_never_expired(make_journal, jdir, clock):
    """expire() leaves an old foreign batch in ready/, calls nobody for it, and counts it
    as set aside; an old batch of ours next to it expires."""
    journal = make_journal(fingerprint=FP_OURS, max_age=60.0)
    name = plant(jdir, fmt.encode(batch(3), fingerprint=FP_THEIRS))
    before = snapshot(jdir / "ready" / name)
    ours = batch(2)
    journal.spill(ours)
    clock.advance(120)
    seen: list[list[bytes]] = []
    assert journal.expire(seen.append) == 2
    assert seen == [ours]
    assert files(jdir / "ready") == [name]
    assert snapshot(jdir / "ready" / name) == before
    assert (journal.replayable(), journal.set_aside()) == (0, 1)
    assert journal.expire(seen.append) == 0  # set aside now: not even looked at again
    assert len(seen) == 1


def test_status_tells_foreign_newer_and_legacy_files_apart(make_journal, jdir):
    """status() reports the journal's fingerprint and how many ready files are foreign
    (with their events), newer-format or version 1, without setting anything aside."""
    journal = make_journal(fingerprint=FP_OURS)
    journal.spill(batch(1))
    plant(jdir, fmt.encode(batch(3), fingerprint=FP_THEIRS), 1)
    plant(jdir, craft(b"a newer layout", 9, version=3), 2)
    plant(jdir, encode_v1(batch(2)), 3)
    status = journal.status()
    assert status.fingerprint == FP_OURS.hex()
    assert (status.ready_batches, status.ready_events) == (4, 6)
    assert (status.ready_foreign_batches, status.ready_foreign_events) == (1, 3)
    assert (status.ready_newer_batches, status.ready_legacy_batches) == (1, 1)
    assert journal.set_aside() == 0
    unkeyed = make_journal().status()
    assert unkeyed.fingerprint is None
    assert (unkeyed.ready_foreign_batches, unkeyed.ready_newer_batches) == (0, 1)


# -- a journal without a fingerprint (operator tools) ------------------------------------------


def test_unkeyed_journal_reads_every_file_and_writes_zeros(make_journal, jdir):
    """Journal(fingerprint=None) reads files of any fingerprint and of version 1, and
    writes 16 zero bytes into what it spills."""
    journal = make_journal()
    expected = {}
    for label, data_events in enumerate((batch(1), batch(2), batch(3))):
        fp = (FP_OURS, FP_THEIRS, None)[label]
        data = encode_v1(data_events) if fp is None else fmt.encode(data_events, fingerprint=fp)
        expected[plant(jdir, data, label)] = data_events
    for ref in journal.ready():
        assert journal.read(journal.claim(ref)) == expected[ref.name]
    assert journal.set_aside() == 0
    ref = journal.spill(batch(1))
    assert fingerprint_of(ref.path) == "00" * 16
    assert journal.fingerprint is None


# -- replayable() and set_aside() --------------------------------------------------------------


def test_replayable_and_set_aside_open_no_file(jdir, clock):
    """Both counts come from names alone: no batch file is opened or read."""
    faulty = FaultyFileOps()
    journal = Journal(jdir, clock=clock, min_free_bytes=0, fs=faulty, fingerprint=FP_OURS)
    assert (journal.replayable(), journal.set_aside()) == (0, 0)  # no directory yet
    journal.open()
    try:
        for _ in range(3):
            journal.spill(batch(1))
        plant(jdir, fmt.encode(batch(1), fingerprint=FP_THEIRS))
        (jdir / "ready" / "notes.txt").write_text("not a batch")
        with pytest.raises(JournalForeignError):
            journal.read(journal.claim(journal.ready()[0]))
        faulty.calls.clear()
        assert (journal.replayable(), journal.set_aside()) == (3, 1)
        assert [op for op, _ in faulty.calls if op in ("open", "pread")] == []
        os.unlink(jdir / "ready" / files(jdir / "ready")[0])  # its owner replayed it
        assert (journal.replayable(), journal.set_aside()) == (3, 0)
    finally:
        journal.close()


# -- expire(on_expired) ------------------------------------------------------------------------


def test_expire_passes_each_batch_exact_bytes_before_moving_it(make_journal, jdir, clock):
    """The callback gets every expired batch's events byte for byte, one call per batch,
    while the file is still in ready/; a young batch is not passed."""
    journal = make_journal(fingerprint=FP_OURS, max_age=60.0)
    first = [event(), b' {"idempotency_key" : "k-spaced"} ']
    second = batch(3)
    journal.spill(first)
    journal.spill(second)
    clock.advance(61)
    young = journal.spill(batch(1))
    seen: list[tuple[list[bytes], list[str]]] = []
    assert journal.expire(lambda bodies: seen.append((bodies, files(jdir / "ready")))) == 5
    assert [bodies for bodies, _ in seen] == [first, second]
    assert all(len(in_ready) >= 2 for _, in_ready in seen)  # called before the move
    assert files(jdir / "ready") == [young.name]
    assert len(files(jdir / "expired")) == 2


def test_expire_quarantines_a_corrupt_old_batch_without_calling_back(make_journal, jdir, clock):
    """An old batch that fails its checks goes to quarantine/, as read() would send it,
    and its bytes are never passed to the callback."""
    journal = make_journal(fingerprint=FP_OURS, max_age=60.0)
    name = plant(jdir, fmt.encode(batch(2), fingerprint=FP_OURS)[:-4])
    seen: list[list[bytes]] = []
    assert journal.expire(seen.append) == 0
    assert seen == []
    assert files(jdir / "quarantine") == [name]


def test_expire_survives_a_raising_callback(make_journal, jdir, clock, caplog):
    """A callback that raises is logged with its traceback and the batches still move to
    expired/, each counted."""
    journal = make_journal(fingerprint=FP_OURS, max_age=60.0)
    journal.spill(batch(2))
    journal.spill(batch(1))
    clock.advance(61)
    calls: list[int] = []

    def explode(bodies: list[bytes]) -> None:
        calls.append(len(bodies))
        raise RuntimeError("on_drop is broken")

    assert journal.expire(explode) == 3
    assert calls == [2, 1]
    assert files(jdir / "ready") == []
    assert len(files(jdir / "expired")) == 2
    errors = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert len(errors) == 2
    assert all(r.exc_info and "on_drop is broken" in str(r.exc_info[1]) for r in errors)


def test_expire_interrupted_in_the_callback_keeps_the_batch(make_journal, jdir, clock):
    """A KeyboardInterrupt in the callback propagates and leaves that batch in ready/ (it
    is reported again by the next expire) instead of moving it unreported."""
    journal = make_journal(fingerprint=FP_OURS, max_age=60.0)
    events = batch(2)
    journal.spill(events)
    clock.advance(61)

    def interrupt(bodies: list[bytes]) -> None:
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        journal.expire(interrupt)
    assert len(files(jdir / "ready")) == 1
    seen: list[list[bytes]] = []
    assert journal.expire(seen.append) == 2  # the claim was let go: it expires now
    assert seen == [events]
