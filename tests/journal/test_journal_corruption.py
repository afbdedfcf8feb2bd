"""Every way a batch file can be damaged ends in quarantine/, never at the server."""

from __future__ import annotations

from pathlib import Path

import orjson
import pytest

from meterline._errors import JournalCorruptError, JournalError
from meterline.journal import Journal
from meterline.journal import _format as fmt
from tests.journal.fsfakes import NoSyncFileOps
from tests.journal.helpers import FP_OURS, batch, craft, encode_v1, event, files

SMALL = [event("k-small")]
# A small file of each version this one reads: the current one with a fingerprint whose
# bits are all worth flipping, and the version 0.1 wrote.
GOOD = {"v2": fmt.encode(SMALL, fingerprint=FP_OURS), "v1": encode_v1(SMALL)}


def damaged_variants(good: bytes) -> list[tuple[str, bytes]]:
    """Every truncation, and every single-bit flip of the header and of the payload."""
    out = [(f"truncated to {n}", good[:n]) for n in range(len(good))]
    for bit in range(len(good) * 8):
        flipped = bytearray(good)
        flipped[bit // 8] ^= 1 << (bit % 8)
        out.append((f"bit {bit} flipped", bytes(flipped)))
    return out


def plant(journal: Journal, data: bytes, label: int) -> str:
    name = fmt.make_name(1_000_000_000 + label, 1, label, "ab")
    Path(journal.directory, "ready", name).write_bytes(data)
    return name


@pytest.mark.parametrize("version", sorted(GOOD))
def test_format_detects_every_truncation_and_bit_flip(version):
    """The decoder refuses every truncation and every single-bit flip of a small file of
    either version, the fingerprint field included."""
    good = GOOD[version]
    assert fmt.decode(good).events == SMALL
    for label, data in damaged_variants(good):
        try:
            fmt.decode(data)
        except fmt.BatchFormatError:
            continue
        pytest.fail(f"accepted a damaged file: {label}")


@pytest.mark.parametrize("version", sorted(GOOD))
def test_every_damaged_file_is_quarantined_and_the_rest_flows(tmp_path, clock, version):
    """Each truncated or bit-flipped file, of either version, goes to quarantine/ with a
    reason and returns nothing, even to a journal keyed with the file's own fingerprint (a
    flipped fingerprint bit is corruption, never a foreign file), while a good batch
    spilled alongside still replays."""
    journal = Journal(
        tmp_path / "j", clock=clock, min_free_bytes=0, fs=NoSyncFileOps(), fingerprint=FP_OURS
    )
    journal.open()
    good = GOOD[version]
    variants = damaged_variants(good)
    for index, (label, data) in enumerate(variants):
        name = plant(journal, data, index)
        claim = journal.claim(next(r for r in journal.ready() if r.name == name))
        assert claim is not None
        try:
            journal.read(claim)
        except JournalCorruptError:
            pass
        else:
            pytest.fail(f"read a damaged file: {label}")
        reason = Path(journal.directory, "quarantine", name + ".reason").read_text()
        assert reason.strip(), label
        assert journal.ready() == []
    quarantine = Path(journal.directory, "quarantine")
    assert journal.set_aside() == 0
    assert len(files(quarantine)) == len(variants)
    assert journal.status().quarantined == len(variants)
    events = batch(3)
    journal.spill(events)
    claim = journal.claim(journal.ready()[0])
    assert journal.read(claim) == events
    journal.close()


@pytest.mark.parametrize(
    ("label", "data", "reason"),
    [
        ("zero length", b"", "empty file"),
        ("unknown magic", b"PK\x03\x04" + fmt.encode(SMALL)[4:], "magic"),
        ("text file", b'{"idempotency_key":"k"}\n', "magic"),
        ("garbage JSON", craft(b'{"idempotency_key":"a"}\nnot json', 2), "not valid JSON"),
        ("JSON array", craft(b"[1,2]", 1), "not a JSON object"),
        ("no key", craft(b'{"key":"a"}', 1), "idempotency_key"),
        ("numeric key", craft(b'{"idempotency_key":1}', 1), "idempotency_key"),
        ("count too high", craft(b'{"idempotency_key":"a"}', 2), "lines"),
        ("count zero", craft(b'{"idempotency_key":"a"}', 0), "lines"),
        ("trailing newline", craft(b'{"idempotency_key":"a"}\n', 1), "lines"),
        ("empty payload", craft(b"", 1), "not valid JSON"),
        ("version zero", craft(b'{"idempotency_key":"a"}', 1, version=0), "version"),
        ("v1, 48-byte header", craft(b'{"idempotency_key":"a"}', 1, version=1, layout=2), "48"),
        ("v2, 32-byte header", craft(b'{"idempotency_key":"a"}', 1, layout=1), "32"),
        ("trailing bytes", fmt.encode(SMALL) + b"\0", "bytes"),
        ("bad rejected entry", craft(b'{"reasons":["r"],"event":1}', 1, flags=1), "event"),
        (
            "non-canonical rejected",
            craft(b'{"event":{"idempotency_key":"a"},"reasons":[]}', 1, flags=1),
            "canonical",
        ),
    ],
)
def test_crafted_bad_files_are_quarantined(make_journal, jdir, label, data, reason):
    """Files with valid CRCs but bad contents, and files that are not batches, are
    quarantined with a reason naming the problem."""
    journal = make_journal()
    name = plant(journal, data, 1)
    claim = journal.claim(journal.ready()[0])
    with pytest.raises(JournalCorruptError) as caught:
        journal.read(claim)
    assert caught.value.filename == str(jdir / "quarantine" / name)
    assert files(jdir / "ready") == []
    text = (jdir / "quarantine" / f"{name}.reason").read_text()
    assert reason in text
    assert "from: ready/" in text


def test_future_version_is_left_in_place(make_journal, jdir, caplog):
    """A sound file from a newer meterline is neither sent nor moved, and is skipped."""
    journal = make_journal(fingerprint=FP_OURS)
    future = craft(b"whatever a newer format holds", 7, version=3)
    name = plant(journal, future, 1)
    journal.spill(batch(2))
    claim = journal.claim(journal.ready()[0])
    assert claim is not None
    assert claim.name == name
    with pytest.raises(JournalError, match="newer") as caught:
        journal.read(claim)
    assert not isinstance(caught.value, JournalCorruptError)
    assert (jdir / "ready" / name).read_bytes() == future
    assert files(jdir / "quarantine") == []
    listed = [r.name for r in journal.ready()]
    assert len(listed) == 1
    assert name not in listed
    other = journal.claim(journal.ready()[0])
    assert len(journal.read(other)) == 2
    assert "newer meterline" in caplog.text
    assert (journal.replayable(), journal.set_aside()) == (1, 1)  # the other one is still there
    assert journal.status().ready_newer_batches == 1
    assert name in [r.name for r in make_journal().ready()]  # a fresh process sees it again


@pytest.mark.parametrize("version", [1, 2])
def test_unknown_flags_are_treated_as_a_newer_format(make_journal, jdir, version):
    """A sound header with flags this version does not know is left alone."""
    journal = make_journal()
    name = plant(journal, craft(b'{"idempotency_key":"a"}', 1, version=version, flags=0x80), 1)
    with pytest.raises(JournalError, match="flags"):
        journal.read(journal.claim(journal.ready()[0]))
    assert (jdir / "ready" / name).exists()


def test_corrupt_rejected_file_can_be_inspected_but_is_never_replayed(make_journal, jdir):
    """A rejected file in ready/ (operator move) replays its events exactly."""
    journal = make_journal()
    events = batch(2)
    data = fmt.encode_rejected([(e, ["why"]) for e in events])
    plant(journal, data, 1)
    claim = journal.claim(journal.ready()[0])
    assert journal.read(claim) == events


def test_quarantine_keeps_names_unique(make_journal, jdir):
    """Quarantining a file whose name is already in quarantine/ does not overwrite it."""
    journal = make_journal()
    name = plant(journal, b"first", 1)
    with pytest.raises(JournalCorruptError):
        journal.read(journal.claim(journal.ready()[0]))
    plant(journal, b"second", 1)
    with pytest.raises(JournalCorruptError) as caught:
        journal.read(journal.claim(journal.ready()[0]))
    assert Path(caught.value.filename).name != name
    contents = sorted((jdir / "quarantine" / n).read_bytes() for n in files(jdir / "quarantine"))
    assert contents == [b"first", b"second"]


def test_requeue_from_quarantine(make_journal, jdir):
    """A quarantined file that now passes goes back to ready/; one that fails stays."""
    journal = make_journal()
    events = batch(2)
    good = fmt.encode(events)
    bad_name = plant(journal, good[:-1], 1)
    with pytest.raises(JournalCorruptError):
        journal.read(journal.claim(journal.ready()[0]))
    assert journal.requeue() == 0  # still truncated
    with pytest.raises(JournalCorruptError, match="still fails"):
        journal.requeue("quarantine", bad_name)
    (jdir / "quarantine" / bad_name).write_bytes(good)  # an operator repaired it
    assert journal.requeue("quarantine", bad_name) == 2
    assert files(jdir / "quarantine", "") == []  # the reason went with it
    claim = journal.claim(journal.ready()[0])
    assert claim.name == bad_name
    assert journal.read(claim) == events


def test_inspect_of_a_quarantined_file_shows_the_reason(make_journal, jdir):
    """The CLI sees why a file was quarantined next to what it contains."""
    from meterline.journal import inspect_file

    journal = make_journal()
    name = plant(journal, craft(b'{"idempotency_key":"a"}\n[]', 2), 1)
    with pytest.raises(JournalCorruptError):
        journal.read(journal.claim(journal.ready()[0]))
    info = inspect_file(jdir / "quarantine" / name)
    assert info["ok"] is False
    assert "not a JSON object" in str(info["reason"])
    assert info["events"] == [orjson.loads(b'{"idempotency_key":"a"}'), []]
