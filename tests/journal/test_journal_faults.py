"""Disk failures at each step of a spill: an error, nothing half-done, and a later spill works."""

from __future__ import annotations

import errno

import pytest

from meterline._errors import JournalError, JournalFullError
from meterline.journal import _format as fmt
from tests.journal.fsfakes import FaultyFileOps
from tests.journal.helpers import batch, files

STEPS = ["open", "fchmod", "lock", "write", "fsync", "rename", "fsync_dir", "statvfs"]


@pytest.fixture
def faulty() -> FaultyFileOps:
    return FaultyFileOps()


def size_of(events: list[bytes]) -> int:
    return len(fmt.encode(events))


@pytest.mark.parametrize("step", STEPS)
def test_failure_at_each_step_leaves_nothing_behind(make_journal, jdir, faulty, step, caplog):
    """A failed step raises JournalError with its errno, leaves tmp/ and ready/ empty,
    counts nothing, and the next spill of the same batch succeeds."""
    events = batch(20)
    journal = make_journal(fs=faulty, max_bytes=2 * size_of(events))
    faulty.fail(step, errno.EIO)
    with pytest.raises(JournalError) as caught:
        journal.spill(events)
    assert caught.value.errno == errno.EIO
    assert not isinstance(caught.value, JournalFullError)
    assert files(jdir / "tmp", "") == []
    assert files(jdir / "ready", "") == []
    assert "Input/output error" in caplog.text
    first = journal.spill(events)  # room for exactly two: nothing was half-counted
    journal.spill(batch(20))
    with pytest.raises(JournalFullError):
        journal.spill(batch(20))
    claim = journal.claim(journal.ready()[0])
    assert claim.name == first.name
    assert journal.read(claim) == events


@pytest.mark.parametrize("code", [errno.ENOSPC, errno.EROFS, errno.EACCES, errno.EIO])
@pytest.mark.parametrize("step", ["open", "write", "fsync", "rename"])
def test_os_errors_surface_with_their_errno(make_journal, faulty, step, code):
    """ENOSPC, EROFS, EACCES and EIO reach the caller as JournalError with errno kept."""
    journal = make_journal(fs=faulty)
    faulty.fail(step, code)
    with pytest.raises(JournalError) as caught:
        journal.spill(batch(2))
    assert caught.value.errno == code
    assert isinstance(caught.value, OSError)
    assert journal.ready() == []


def test_failed_fsync_is_never_retried_on_the_same_descriptor(make_journal, jdir, faulty):
    """After fsync fails the descriptor is abandoned: no second fsync on it, its file is
    removed, and spilling again writes a new file."""
    journal = make_journal(fs=faulty)
    faulty.fail("fsync", errno.EIO)
    with pytest.raises(JournalError):
        journal.spill(batch(2))
    failed_fd = next(arg for op, arg in faulty.calls if op == "fsync")
    failed_path = next(arg for op, arg in faulty.calls if op == "open" and "/tmp/" in str(arg))
    after = faulty.calls[faulty.calls.index(("fsync", failed_fd)) + 1 :]
    assert ("fsync", failed_fd) not in after
    assert ("unlink", failed_path) in after
    faulty.calls.clear()
    ref = journal.spill(batch(2))
    assert ref.path.rsplit("/", 1)[1] != failed_path.rsplit("/", 1)[1]
    assert files(jdir / "ready") == [ref.name]


def test_short_writes_are_completed(make_journal, faulty):
    """A write that takes only a few bytes at a time still produces the whole file."""
    journal = make_journal(fs=faulty)
    faulty.write_limit = 7
    events = batch(5)
    journal.spill(events)
    assert sum(1 for op, _ in faulty.calls if op == "write") > 10
    assert journal.read(journal.claim(journal.ready()[0])) == events


def test_short_write_then_enospc(make_journal, jdir, faulty):
    """A disk that fills in the middle of a batch leaves no partial file anywhere."""
    journal = make_journal(fs=faulty)
    faulty.write_limit = 100
    faulty.fail("write", errno.ENOSPC, skip=2)
    with pytest.raises(JournalError) as caught:
        journal.spill(batch(5))
    assert caught.value.errno == errno.ENOSPC
    assert files(jdir / "tmp", "") == []
    assert files(jdir / "ready", "") == []


def test_rename_reported_failed_but_done_is_cleaned_up(make_journal, jdir, faulty):
    """If rename fails after taking effect (seen on network file systems), the copy in
    ready/ is removed too, so a retried spill leaves exactly one file."""
    journal = make_journal(fs=faulty)
    real_rename = faulty.rename

    def rename_then_fail(src: str, dst: str) -> None:
        real_rename(src, dst)
        raise OSError(errno.EIO, "lost reply")

    faulty.rename = rename_then_fail  # type: ignore[method-assign]
    with pytest.raises(JournalError):
        journal.spill(batch(2))
    assert files(jdir / "ready", "") == []
    assert files(jdir / "tmp", "") == []


def test_journal_full_at_max_bytes(make_journal, jdir):
    """A batch that would pass max_bytes is refused with JournalFullError (errno ENOSPC)."""
    events = batch(10)
    journal = make_journal(max_bytes=size_of(events) * 3 - 1)
    journal.spill(events)
    journal.spill(batch(10))
    with pytest.raises(JournalFullError) as caught:
        journal.spill(batch(10))
    assert caught.value.errno == errno.ENOSPC
    assert len(files(jdir / "ready")) == 2
    journal.ack(journal.claim(journal.ready()[0]))  # acking makes room again
    journal.spill(batch(10))


def test_max_bytes_counts_rejected_and_other_writers(make_journal, jdir):
    """The bound covers ready/ and rejected/ and files written by another instance."""
    events = batch(10)
    size = size_of(events)
    first = make_journal(max_bytes=10 * size)
    other = make_journal()
    claim = other.spill_held(events)
    other.settle(claim, rejected=[(e, ["x"]) for e in events])  # rejected files are larger
    for _ in range(8):
        other.spill(batch(10))
    assert first.status().total_bytes > 9 * size
    with pytest.raises(JournalFullError):
        first.spill(batch(10))


def test_journal_full_at_the_free_space_reserve(make_journal, faulty):
    """When free space would drop below min_free_bytes the batch is refused."""
    journal = make_journal(fs=faulty, min_free_bytes=1 << 20)
    faulty.free_bytes = (1 << 20) + 10 * size_of(batch(10))
    journal.spill(batch(10))
    faulty.free_bytes = (1 << 20) + 100
    with pytest.raises(JournalFullError, match="reserve"):
        journal.spill(batch(10))
    assert len(journal.ready()) == 1


def test_ack_failure_releases_the_claim(make_journal, faulty):
    """An ack that cannot delete the file raises, releases the claim and keeps the file,
    so the batch is replayed (and de-duplicated by the server) later."""
    journal = make_journal(fs=faulty)
    journal.spill(batch(2))
    claim = journal.claim(journal.ready()[0])
    journal.read(claim)
    faulty.fail("unlink", errno.EIO)
    with pytest.raises(JournalError):
        journal.ack(claim)
    again = journal.claim(journal.ready()[0])
    assert again is not None
    journal.ack(again)
    assert journal.ready() == []


@pytest.mark.parametrize("step", ["write", "fsync", "rename", "fsync_dir"])
def test_settle_failure_keeps_the_original(make_journal, faulty, step):
    """If settle cannot write an outcome, the original batch stays whole in ready/."""
    journal = make_journal(fs=faulty)
    events = batch(4)
    claim = journal.spill_held(events)
    faulty.fail(step, errno.EIO)
    with pytest.raises(JournalError):
        journal.settle(claim, remaining=events[:2], rejected=[(events[3], ["no"])])
    refs = journal.ready()
    assert len(refs) == 1
    assert journal.read(journal.claim(refs[0])) == events


def test_quarantine_failure_sets_the_file_aside(make_journal, jdir, faulty):
    """If a corrupt file cannot be moved to quarantine/, it stays, is not offered again by
    this process, and the error is raised."""
    journal = make_journal(fs=faulty)
    name = fmt.make_name(1, 1, 1, "ab")
    (jdir / "ready" / name).write_bytes(b"junk")
    journal.spill(batch(1))
    faulty.fail("rename", errno.EIO)
    with pytest.raises(JournalError):
        journal.read(journal.claim(journal.ready()[0]))
    assert (jdir / "ready" / name).exists()
    assert name not in [r.name for r in journal.ready()]
    assert len(journal.ready()) == 1


def test_disk_errors_are_logged_once_per_burst(make_journal, faulty, caplog):
    """A failing disk produces one ERROR, not one per spill."""
    journal = make_journal(fs=faulty)
    for _ in range(5):
        faulty.fail("write", errno.EIO)
        with pytest.raises(JournalError):
            journal.spill(batch(1))
    errors = [r for r in caplog.records if r.levelname == "ERROR" and "write" in r.getMessage()]
    assert len(errors) == 1
