"""Stale tmp/ files of dead writers, and the races between claimers, writers and recovery."""

from __future__ import annotations

import fcntl
import logging
import os

from meterline.journal import _format as fmt
from tests.journal.fsfakes import FaultyFileOps
from tests.journal.helpers import batch, craft, files


def put_tmp(jdir, data: bytes, label: int = 1) -> str:
    name = fmt.make_name(1_795_000_000_000_000_000 + label, 999_999, label, "dead")
    (jdir / "tmp" / name).write_bytes(data)
    return name


def test_complete_tmp_file_of_a_dead_writer_is_promoted(make_journal, jdir, caplog):
    """A finished tmp file whose writer died is moved to ready/ at open(), keeping its
    place in time, because its events were never delivered."""
    make_journal().close()
    events = batch(3)
    name = put_tmp(jdir, fmt.encode(events))
    journal = make_journal()
    assert files(jdir / "tmp", "") == []
    assert [r.name for r in journal.ready()] == [name]
    assert journal.read(journal.claim(journal.ready()[0])) == events
    assert "recovered" in caplog.text


def test_recover_can_be_called_later(make_journal, jdir):
    """recover() picks up dead writers' files found after open() and says how many."""
    journal = make_journal()
    put_tmp(jdir, fmt.encode(batch(2)), 1)
    put_tmp(jdir, fmt.encode(batch(2)), 2)
    assert journal.recover() == 2
    assert journal.recover() == 0
    assert len(journal.ready()) == 2


def test_partial_tmp_file_is_quarantined(make_journal, jdir, caplog):
    """A half-written tmp file goes to quarantine/ with a reason, never to ready/."""
    make_journal().close()
    name = put_tmp(jdir, fmt.encode(batch(3))[:-10])
    with caplog.at_level(logging.WARNING, "meterline.journal"):
        journal = make_journal()
    assert journal.ready() == []
    assert files(jdir / "quarantine") == [name]
    reason = (jdir / "quarantine" / f"{name}.reason").read_text()
    assert "incomplete write" in reason
    assert "from: tmp/" in reason
    assert "quarantined tmp/" in caplog.text


def test_empty_tmp_file_is_removed(make_journal, jdir):
    """An empty tmp file holds no event; recovery removes it instead of hoarding it."""
    make_journal().close()
    put_tmp(jdir, b"")
    make_journal()
    assert files(jdir / "tmp", "") == []
    assert files(jdir / "quarantine", "") == []


def test_tmp_file_of_a_live_writer_is_left_alone(make_journal, jdir):
    """A tmp file whose flock is held (its writer is alive) is not touched by recovery."""
    journal = make_journal()
    name = put_tmp(jdir, fmt.encode(batch(1))[:20])
    fd = os.open(jdir / "tmp" / name, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        assert journal.recover() == 0
        assert files(jdir / "tmp") == [name]
    finally:
        os.close(fd)
    journal.recover()
    assert files(jdir / "tmp") == []


def test_tmp_rejected_file_goes_to_rejected(make_journal, jdir):
    """A dead writer's rejected-events file is recovered into rejected/, not resent."""
    make_journal().close()
    name = put_tmp(jdir, fmt.encode_rejected([(e, ["bad"]) for e in batch(2)]))
    journal = make_journal()
    assert journal.ready() == []
    assert files(jdir / "rejected") == [name]


def test_tmp_file_of_a_newer_format_stays(make_journal, jdir):
    """Recovery does not move or destroy a tmp file written by a newer meterline."""
    make_journal().close()
    name = put_tmp(jdir, craft(b"future", 1, version=3))
    make_journal()
    assert files(jdir / "tmp") == [name]


def test_stray_files_in_tmp_are_ignored(make_journal, jdir, caplog):
    """A file that is not a batch is left where it is, with a warning."""
    make_journal().close()
    (jdir / "tmp" / "notes.txt").write_text("mine")
    make_journal()
    assert (jdir / "tmp" / "notes.txt").read_text() == "mine"
    assert "stray" in caplog.text


def test_claim_racing_an_ack_gets_nothing(make_journal, jdir):
    """A claimer that opened a batch just before another process acknowledged and
    unlinked it notices, once it holds the lock, that the file is gone: no double send."""
    first = make_journal()
    first.spill(batch(2))
    ref = first.ready()[0]
    held = first.claim(ref)
    faulty = FaultyFileOps()
    second = make_journal(fs=faulty)
    faulty.before("lock", lambda: first.ack(held))  # between second's open and its lock
    assert second.claim(ref) is None


def test_claim_racing_an_expiry_gets_nothing(make_journal, jdir, clock):
    """A batch moved to expired/ between a claimer's open and lock is not claimed."""
    first = make_journal(max_age=10.0)
    first.spill(batch(2))
    ref = first.ready()[0]
    clock.advance(11)
    faulty = FaultyFileOps()
    second = make_journal(fs=faulty)
    faulty.before("lock", first.expire)
    assert second.claim(ref) is None
    assert len(files(jdir / "expired")) == 1


def test_writer_racing_recovery_retries_with_a_new_file(make_journal, jdir):
    """If recovery removes a writer's brand-new empty tmp file before the writer locks it,
    the writer notices and writes a new file: the spill still succeeds, once."""
    recoverer = make_journal()
    faulty = FaultyFileOps()
    writer = make_journal(fs=faulty)
    faulty.before("lock", recoverer.recover)
    events = batch(3)
    ref = writer.spill(events)
    assert files(jdir / "ready") == [ref.name]
    assert files(jdir / "tmp", "") == []
    assert writer.read(writer.claim(writer.ready()[0])) == events


def test_recovery_judges_a_tmp_file_by_its_size_once_locked(make_journal, jdir):
    """A writer that finishes and dies between recovery's open and lock leaves a complete
    file, and recovery promotes it instead of judging it by its earlier, empty size."""
    make_journal().close()
    name = put_tmp(jdir, b"")
    events = batch(2)
    faulty = FaultyFileOps()
    faulty.before("lock", lambda: (jdir / "tmp" / name).write_bytes(fmt.encode(events)))
    journal = make_journal(fs=faulty)
    assert [r.name for r in journal.ready()] == [name]


def test_symlinks_in_journal_directories_are_never_followed(make_journal, jdir, tmp_path):
    """A symlink planted in ready/ or tmp/ is neither offered, claimed, read nor moved."""
    target = tmp_path / "outside.mlj"
    target.write_bytes(fmt.encode(batch(1)))
    make_journal().close()
    (jdir / "tmp" / fmt.make_name(1, 1, 1, "aa")).symlink_to(target)
    (jdir / "ready" / fmt.make_name(2, 1, 2, "bb")).symlink_to(target)
    journal = make_journal()
    assert journal.ready() == []
    assert journal.expire() == 0
    assert journal.status().ready_batches == 0
    assert journal.recover() == 0
    assert len(files(jdir / "tmp")) == 1
    assert len(files(jdir / "ready")) == 1
    assert target.exists()


def test_writer_never_waits_for_a_lock_someone_else_holds(make_journal, jdir):
    """If another descriptor locks a writer's new tmp file before the writer does, the
    writer does not block on it: it moves to a new file and the spill succeeds."""
    faulty = FaultyFileOps()
    writer = make_journal(fs=faulty)
    holders: list[int] = []

    def grab_the_new_tmp_file() -> None:
        (name,) = files(jdir / "tmp")
        fd = os.open(jdir / "tmp" / name, os.O_RDONLY)
        fcntl.flock(fd, fcntl.LOCK_EX)
        holders.append(fd)

    faulty.before("lock", grab_the_new_tmp_file)
    events = batch(2)
    ref = writer.spill(events)
    assert files(jdir / "ready") == [ref.name]
    assert len(files(jdir / "tmp")) == 1  # the abandoned empty file, still held
    os.close(holders[0])
    assert writer.recover() == 0
    assert files(jdir / "tmp", "") == []  # removed once its holder let go
    assert writer.read(writer.claim(writer.ready()[0])) == events
