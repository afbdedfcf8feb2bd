"""Round trips, layout and permissions, directory safety, and the everyday API."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import orjson
import pytest

from meterline._errors import ConfigError, JournalCorruptError, JournalError
from meterline.journal import Journal, inspect_file
from meterline.journal import _format as fmt
from tests.journal.helpers import batch, event, files, key_of


def mode(path: Path) -> int:
    return stat.S_IMODE(path.lstat().st_mode)


def test_round_trip_returns_exact_bytes(make_journal):
    """Events come back byte for byte, including unicode and unusual but valid JSON."""
    journal = make_journal()
    events = [
        event("k-ascii"),
        orjson.dumps({"idempotency_key": "k-ü-€-𝄞", "properties": {"s": "naïve 日本 \u2028 😀"}}),
        b'{"idempotency_key":"k-raw","properties":{"f":1.50,"s":"\\u00e9\\n"}}',
        b' {"idempotency_key" : "k-space"} ',
    ]
    journal.spill(events)
    (ref,) = journal.ready()
    claim = journal.claim(ref)
    assert claim is not None
    assert journal.read(claim) == events
    journal.ack(claim)
    assert journal.ready() == []


@pytest.mark.parametrize("size", [1, 500, 5000])
def test_round_trip_sizes(make_journal, size):
    """A one-event batch and big batches round-trip and report their event count."""
    journal = make_journal()
    events = batch(size)
    ref = journal.spill(events)
    assert ref.events == size
    claim = journal.claim(journal.ready()[0])
    assert claim is not None
    assert journal.read(claim) == events


def test_round_trip_of_a_32_kib_event(make_journal):
    """An event at the size limit survives unchanged."""
    journal = make_journal()
    big = event(blob="x" * (32 * 1024 - 300))
    journal.spill([big, event()])
    claim = journal.claim(journal.ready()[0])
    assert claim is not None
    assert journal.read(claim)[0] == big


@pytest.mark.parametrize(
    "bad",
    [
        [],
        [b""],
        [b'{"idempotency_key":"a"}\n{"idempotency_key":"b"}'],
        [b"not json"],
        [b"[1, 2]"],
        [b'{"key":"no idempotency key"}'],
        [b'{"idempotency_key":42}'],
        ['{"idempotency_key":"str, not bytes"}'],
    ],
)
def test_spill_refuses_invalid_batches_before_any_io(make_journal, jdir, bad):
    """A batch the reader would refuse is refused at spill time, leaving no file behind."""
    journal = make_journal()
    with pytest.raises(ValueError):  # noqa: PT011 - any ValueError: the message varies
        journal.spill(bad)
    assert files(jdir / "tmp", "") == []
    assert files(jdir / "ready", "") == []


def test_layout_modes_under_umask_zero(make_journal, jdir, umask):
    """Directories are 0700 and files 0600 even when the umask would allow everything."""
    umask(0)
    journal = make_journal()
    journal.spill(batch(2))
    claim = journal.spill_held(batch(3))
    journal.settle(claim, remaining=batch(1), rejected=[(event(), ["bad"])])
    journal.try_lead()
    (jdir / "ready" / "00000000000000000001-1-1-ab.mlj").write_bytes(b"junk")
    with pytest.raises(JournalCorruptError):
        journal.read(journal.claim(journal.ready()[0]))  # quarantines the junk file
    assert mode(jdir) == 0o700
    for sub in ("tmp", "ready", "rejected", "quarantine", "expired", "locks"):
        assert mode(jdir / sub) == 0o700
    written = [p for p in jdir.rglob("*") if p.is_file()]
    assert len(written) >= 6  # ready x3, rejected, quarantine + reason, replay.lock
    for path in written:
        if path.name != "00000000000000000001-1-1-ab.mlj" or path.parent.name != "quarantine":
            assert mode(path) == 0o600, path


@pytest.mark.parametrize("mask", [0o077, 0o277, 0o777])
def test_modes_do_not_depend_on_a_strict_umask(make_journal, jdir, umask, mask):
    """A umask that removes the owner's bits still yields a usable 0700/0600 journal."""
    umask(mask)
    journal = make_journal()
    journal.spill(batch(1))
    assert mode(jdir / "ready") == 0o700
    assert [mode(p) for p in (jdir / "ready").iterdir()] == [0o600]


def test_existing_directory_is_tightened_to_0700(make_journal, jdir):
    """A pre-existing journal readable by others is made private by open()."""
    jdir.mkdir(mode=0o755)
    os.chmod(jdir, 0o755)  # noqa: S103 - readable by others, so that open() tightens it
    make_journal()
    assert mode(jdir) == 0o700


def test_parents_are_created_private(make_journal, tmp_path):
    """Missing parent directories are created by open(), and privately."""
    deep = tmp_path / "a" / "b" / "journal"
    make_journal(deep)
    assert mode(tmp_path / "a") == 0o700
    assert (deep / "ready").is_dir()


def test_symlinked_directory_is_refused(tmp_path):
    """A journal directory that is a symlink is refused, with or without a trailing slash."""
    real = tmp_path / "real"
    real.mkdir(mode=0o700)
    link = tmp_path / "link"
    link.symlink_to(real)
    for path in (link, f"{link}/"):
        with pytest.raises(ConfigError, match="symlink"):
            Journal.check_directory(path)
        with pytest.raises(ConfigError, match="symlink"):
            Journal(path).open()
    assert list(real.iterdir()) == []


def test_symlinked_subdirectory_is_refused(make_journal, jdir, tmp_path):
    """open() refuses a layout whose ready/ is a symlink to somewhere else."""
    make_journal().close()
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir(mode=0o700)
    (jdir / "ready").rmdir()
    (jdir / "ready").symlink_to(elsewhere)
    with pytest.raises(ConfigError, match="symlink"):
        Journal(jdir).open()


@pytest.mark.parametrize("perm", [0o777, 0o770, 0o702, 0o720])
def test_group_or_world_writable_directory_is_refused(tmp_path, perm):
    """A directory others could write to is refused before anything is written to it."""
    path = tmp_path / "shared"
    path.mkdir()
    os.chmod(path, perm)
    with pytest.raises(ConfigError, match="writable"):
        Journal.check_directory(path)
    with pytest.raises(ConfigError, match="writable"):
        Journal(path).open()
    assert list(path.iterdir()) == []


def test_a_file_is_not_a_journal_directory(tmp_path):
    """A path naming a regular file, or under one, is refused."""
    plain = tmp_path / "plain"
    plain.write_text("")
    with pytest.raises(ConfigError, match="not a directory"):
        Journal.check_directory(plain)
    with pytest.raises(ConfigError, match=r"(?i)not a directory"):
        Journal.check_directory(plain / "sub")


def test_check_directory_creates_nothing(tmp_path):
    """check_directory accepts a missing directory and does not create it."""
    Journal.check_directory(tmp_path / "later")
    assert not (tmp_path / "later").exists()


def test_constructor_does_no_io_and_checks_options(tmp_path):
    """Journal() touches no file; invalid bounds raise ConfigError."""
    Journal(tmp_path / "nothing-yet")
    assert not (tmp_path / "nothing-yet").exists()
    for bad in ({"max_bytes": 0}, {"max_age": 0.0}, {"max_age": float("nan")}):
        with pytest.raises(ConfigError):
            Journal(tmp_path, **bad)
    with pytest.raises(ConfigError):
        Journal(tmp_path, min_free_bytes=-1)


def test_methods_need_open(tmp_path):
    """Using a journal before open() is a clear JournalError, not a crash."""
    with pytest.raises(JournalError, match="open"):
        Journal(tmp_path / "j").spill([event()])


def test_open_is_idempotent(make_journal, jdir):
    """Calling open() twice keeps the journal usable and its contents."""
    journal = make_journal()
    journal.spill(batch(2))
    journal.open()
    assert len(journal.ready()) == 1


def test_ready_is_oldest_first_and_names_sort_by_time(make_journal, clock):
    """ready() lists batches in creation order, whatever order the clock ticks in within a ns."""
    journal = make_journal()
    refs = []
    for _ in range(5):
        refs.append(journal.spill(batch(1)))
        clock.advance(0.5)
    refs.append(journal.spill(batch(1)))  # same clock value as the next: seq breaks the tie
    refs.append(journal.spill(batch(1)))
    assert [r.name for r in journal.ready()] == [r.name for r in refs]
    assert refs[1].created - refs[0].created == pytest.approx(0.5)
    assert refs[0].created == pytest.approx(1_795_000_000.0)


def test_claim_is_exclusive_between_instances(make_journal):
    """Two Journal objects on one directory never hold the same batch at once."""
    first, second = make_journal(), make_journal()
    first.spill(batch(2))
    (ref,) = first.ready()
    claim = first.claim(ref)
    assert claim is not None
    assert second.claim(ref) is None
    assert first.claim(ref) is None  # a second claim through the same journal too
    first.release(claim)
    again = second.claim(ref)
    assert again is not None
    second.ack(again)
    assert first.claim(ref) is None  # gone


def test_claim_of_a_batch_acknowledged_meanwhile_is_refused(make_journal):
    """A claimer that opened the file before another acknowledged it does not read it."""
    first, second = make_journal(), make_journal()
    first.spill(batch(2))
    (ref,) = first.ready()
    claim = first.claim(ref)
    first.ack(claim)
    assert second.claim(ref) is None
    assert second.ready() == []


def test_try_lead_is_exclusive_between_instances(make_journal):
    """Only one Journal holds the replay lock; resign hands it over."""
    first, second = make_journal(), make_journal()
    assert first.try_lead()
    assert first.try_lead()  # idempotent
    assert first.is_leader
    assert not second.try_lead()
    first.resign()
    assert not first.is_leader
    assert second.try_lead()
    assert not first.try_lead()


def test_spill_held_is_claimed_until_settled(make_journal):
    """A write-ahead batch cannot be claimed by a replayer until ack or release."""
    writer, replayer = make_journal(), make_journal()
    events = batch(3)
    claim = writer.spill_held(events)
    (ref,) = replayer.ready()
    assert ref.name == claim.name
    assert replayer.claim(ref) is None
    assert writer.read(claim) == events
    writer.release(claim)
    taken = replayer.claim(ref)
    assert taken is not None
    replayer.ack(taken)
    assert writer.ready() == []


def test_claim_is_unusable_after_ack_or_release(make_journal):
    """ack, read and settle refuse a claim that is no longer held; release is a no-op."""
    journal = make_journal()
    claim = journal.spill_held(batch(1))
    journal.ack(claim)
    for call in (journal.read, journal.ack):
        with pytest.raises(JournalError, match="not held"):
            call(claim)
    with pytest.raises(JournalError, match="not held"):
        journal.settle(claim, remaining=batch(1))
    journal.release(claim)


def test_settle_writes_new_files_and_keeps_the_queue_position(make_journal, jdir, clock):
    """settle puts what remains in a new ready file at the original's place and rejected
    events, with reasons, in rejected/; the original is gone."""
    journal = make_journal()
    first = journal.spill(batch(4))
    clock.advance(10)
    later = journal.spill(batch(1))
    claim = journal.claim(journal.ready()[0])
    events = journal.read(claim)
    journal.settle(
        claim,
        remaining=events[1:2],
        rejected=[(events[2], ["bad timestamp"]), (events[3], ["unknown customer", "x"])],
    )
    names = [r.name for r in journal.ready()]
    assert first.name not in names
    assert names[-1] == later.name  # the remaining batch still comes first
    assert names[0][:20] == first.name[:20]
    again = journal.claim(journal.ready()[0])
    assert journal.read(again) == events[1:2]
    (rejected,) = files(jdir / "rejected")
    info = inspect_file(jdir / "rejected" / rejected)
    assert info["ok"] is True
    assert info["reasons"] == [["bad timestamp"], ["unknown customer", "x"]]
    assert info["events"] == [orjson.loads(events[2]), orjson.loads(events[3])]
    assert journal.status().rejected_events == 2


def test_rejected_entry_keeps_exact_bytes(make_journal, jdir):
    """A rejected event is stored verbatim inside its reasons wrapper."""
    journal = make_journal()
    odd = b'{"idempotency_key":"k", "properties": {"a":1.0}}'
    claim = journal.spill_held([odd, event()])
    journal.settle(claim, rejected=[(odd, ['reason with "quotes"', "é"])])
    (name,) = files(jdir / "rejected")
    decoded = fmt.decode((jdir / "rejected" / name).read_bytes())
    assert decoded.events == [odd]
    assert decoded.reasons == [['reason with "quotes"', "é"]]


def test_settle_validates_before_touching_anything(make_journal):
    """An invalid outcome raises ValueError and the claim and file stay as they were."""
    journal = make_journal()
    claim = journal.spill_held(batch(2))
    with pytest.raises(ValueError, match="reasons"):
        journal.settle(claim, rejected=[(event(), "not a list")])
    assert len(journal.read(claim)) == 2


def test_expire_moves_old_batches_only(make_journal, jdir, clock):
    """Batches older than max_age move to expired/ unsent; the count of events is returned."""
    journal = make_journal(max_age=3600.0)
    journal.spill(batch(3))
    journal.spill(batch(2))
    clock.advance(1800)
    young = journal.spill(batch(4))
    clock.advance(1801)
    assert journal.expire() == 5
    assert [r.name for r in journal.ready()] == [young.name]
    assert len(files(jdir / "expired")) == 2
    status = journal.status()
    assert (status.expired_batches, status.expired_events) == (2, 5)
    assert status.ready_events == 4


def test_expire_skips_claimed_batches(make_journal, clock):
    """A batch being replayed is not expired under the replayer's feet."""
    journal, other = make_journal(max_age=60.0), make_journal(max_age=60.0)
    journal.spill(batch(1))
    claim = other.claim(other.ready()[0])
    clock.advance(61)
    assert journal.expire() == 0
    other.release(claim)
    assert journal.expire() == 1


def test_requeue_expired_gives_a_fresh_name(make_journal, jdir, clock):
    """Requeued expired batches go back to ready/ and are not expired again at once."""
    journal = make_journal(max_age=60.0)
    events = batch(2)
    journal.spill(events)
    clock.advance(120)
    assert journal.expire() == 2
    assert journal.requeue("expired") == 2
    assert journal.expire() == 0
    claim = journal.claim(journal.ready()[0])
    assert journal.read(claim) == events


def test_requeue_rejects_unknown_sources_and_names(make_journal):
    """requeue accepts only quarantine/expired and plain file names."""
    journal = make_journal()
    with pytest.raises(ValueError, match="quarantine"):
        journal.requeue("ready")
    with pytest.raises(ValueError, match="name"):
        journal.requeue("quarantine", "../ready/x.mlj")
    with pytest.raises(JournalError, match="no batch"):
        journal.requeue("quarantine", "missing.mlj")


def test_status_counts_everything(make_journal, jdir, clock):
    """status() reports batches, events, bytes and the oldest age of each directory."""
    journal = make_journal()
    assert journal.status().oldest_ready_age is None
    a = journal.spill(batch(3))
    clock.advance(30)
    b = journal.spill(batch(2))
    (jdir / "ready" / "00000000000000000002-1-1-ab.mlj").write_bytes(b"junk")
    status = journal.status()
    assert status.ready_batches == 3
    assert status.ready_events == 5  # the junk file's count is unknown until read
    assert status.ready_bytes == a.size + b.size + 4
    assert status.total_bytes == status.ready_bytes
    assert status.oldest_ready_age is not None
    assert status.oldest_ready_age > 1e9  # the junk file's name says 1970
    assert (status.rejected_batches, status.quarantined, status.expired_batches) == (0, 0, 0)


def test_inspect_file_reports_fields_and_errors(make_journal, jdir):
    """inspect_file decodes a good file fully and explains a bad one without raising."""
    journal = make_journal()
    events = batch(2)
    ref = journal.spill(events)
    info = inspect_file(ref.path)
    assert info["ok"] is True
    assert info["count"] == 2
    assert info["version"] == 2
    assert info["fingerprint"] == "00" * 16  # a journal without a fingerprint writes zeros
    assert info["events"] == [orjson.loads(e) for e in events]
    assert info["created"] == pytest.approx(ref.created)
    bad = bytearray(Path(ref.path).read_bytes())
    bad[-3] ^= 0x01
    broken = jdir / "broken.mlj"
    broken.write_bytes(bytes(bad))
    info = inspect_file(broken)
    assert info["ok"] is False
    assert "CRC" in str(info["error"])
    assert len(info["events"]) == 2  # shown as far as they decode
    with pytest.raises(JournalError):
        inspect_file(jdir / "missing.mlj")


def test_keys_survive_with_their_original_events(make_journal):
    """The keys read back are the keys spilled, in order, so a resend is de-duplicated."""
    journal = make_journal()
    events = batch(50)
    journal.spill(events)
    claim = journal.claim(journal.ready()[0])
    assert [key_of(e) for e in journal.read(claim)] == [key_of(e) for e in events]
