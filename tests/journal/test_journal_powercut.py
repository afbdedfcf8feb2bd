"""Power cuts after every single I/O operation of spill -> replay -> ack/settle."""

from __future__ import annotations

import random
from collections import Counter
from pathlib import Path

import pytest

from meterline._errors import JournalCorruptError
from meterline.journal import Journal, inspect_file
from tests.journal.fsfakes import NoSyncFileOps, PowerCut, PowerCutFileOps
from tests.journal.helpers import FakeClock, batch, files, key_of


class Progress:
    """What the scenario was promised before the lights went out."""

    def __init__(self) -> None:
        self.journaled: set[str] = set()  # a spill or settle that wrote them returned
        self.delivered: set[str] = set()  # an ack or settle that removed them returned
        self.rejected: set[str] = set()  # a settle that filed them returned
        self.kept: set[str] = set()  # must be in ready/ or rejected/
        self.touched: set[str] = set()  # every key the scenario ever gave the journal


def scenario(journal: Journal, progress: Progress) -> None:
    """Spill, write-ahead spill, replay with ack, settle a partial outcome, spill again."""
    a, b, c = batch(3), batch(4), batch(2)
    progress.touched |= {key_of(e) for e in a + b + c}
    journal.spill(a)
    progress.journaled |= {key_of(e) for e in a}
    held = journal.spill_held(b)
    progress.journaled |= {key_of(e) for e in b}
    claim = journal.claim(journal.ready()[0])
    assert claim is not None
    assert journal.read(claim) == a
    progress.journaled -= {key_of(e) for e in a}  # while ack runs, A may or may not be gone
    journal.ack(claim)
    progress.delivered |= {key_of(e) for e in a}
    assert journal.read(held) == b
    progress.journaled -= {key_of(b[0]), key_of(b[3])}
    progress.kept.add(key_of(b[3]))  # while settle runs, b[3] is in ready/ or rejected/
    journal.settle(held, remaining=b[1:3], rejected=[(b[3], ["invalid"])])
    progress.delivered.add(key_of(b[0]))
    progress.rejected.add(key_of(b[3]))
    journal.spill(c)
    progress.journaled |= {key_of(e) for e in c}


def survey(root: Path) -> dict[str, Counter[str]]:
    """Keys per directory after recovery (quarantined files decoded as far as they go)."""
    found: dict[str, Counter[str]] = {}
    for sub in ("ready", "rejected", "quarantine", "expired", "tmp"):
        keys: Counter[str] = Counter()
        for name in files(root / sub):
            info = inspect_file(root / sub / name)
            for body in info["events"]:
                if isinstance(body, dict) and isinstance(body.get("idempotency_key"), str):
                    keys[body["idempotency_key"]] += 1
        found[sub] = keys
    return found


def count_operations(root: Path) -> int:
    sim = PowerCutFileOps(str(root))
    journal = Journal(root, fs=sim, clock=FakeClock(), min_free_bytes=0)
    journal.open()
    scenario(journal, Progress())
    journal.close()
    return sim.ops


def run_with_crash(root: Path, crash_after: int, rng: random.Random | None) -> None:
    sim = PowerCutFileOps(str(root.parent), crash_after=crash_after)
    clock = FakeClock()
    progress = Progress()
    try:
        journal = Journal(root, fs=sim, clock=clock, min_free_bytes=0)
        journal.open()
        scenario(journal, progress)
    except PowerCut:
        pass
    sim.crash(rng)

    # The next boot: recovery must not raise, and promises must hold.
    survivor = Journal(root, fs=NoSyncFileOps(), clock=clock, min_free_bytes=0)
    survivor.open()
    found = survey(root)
    ready, rejected = found["ready"], found["rejected"]
    everything = sum(found.values(), Counter())
    where = f"crash after {crash_after} ops, rng={rng is not None}"
    assert found["tmp"] == Counter(), where  # recovery dealt with every dead writer
    for key in progress.journaled:
        assert ready[key] >= 1, f"{where}: journaled {key} lost"
    for key in progress.kept:
        assert ready[key] + rejected[key] >= 1, f"{where}: {key} lost while settling"
    for key in progress.rejected:
        assert rejected[key] >= 1, f"{where}: rejected {key} lost"
        assert ready[key] == 0, f"{where}: rejected {key} is still in ready/"
    for key in progress.delivered:
        assert ready[key] == 0, f"{where}: acknowledged {key} came back"
    assert set(everything) <= progress.touched, f"{where}: invented keys"
    for name in files(root / "quarantine"):  # only writes that never returned
        reason = (root / "quarantine" / f"{name}.reason").read_text()
        assert "from: tmp/" in reason, f"{where}: {reason}"

    # And the survivor replays everything without a hitch.
    for ref in survivor.ready():
        claim = survivor.claim(ref)
        assert claim is not None
        try:
            events = survivor.read(claim)
        except JournalCorruptError:
            pytest.fail(f"{where}: a ready file was corrupt after recovery")
        assert all(key_of(e) in progress.touched for e in events)
        survivor.ack(claim)
    assert survivor.ready() == []
    survivor.close()


def test_power_cut_after_every_operation(tmp_path):
    """Whatever operation the power fails after: every returned spill survives, no
    acknowledged batch returns, nothing is invented, and recovery never raises."""
    total = count_operations(tmp_path / "count" / "j")
    assert total > 50
    for crash_after in range(total + 1):
        run_with_crash(tmp_path / f"strict{crash_after}" / "j", crash_after, None)


@pytest.mark.parametrize("seed", range(3))
def test_power_cut_on_a_disk_that_keeps_some_unsynced_writes(tmp_path, seed):
    """Same promises when the crash also keeps a random part of what was not yet synced."""
    total = count_operations(tmp_path / "count" / "j")
    rng = random.Random(seed)
    for crash_after in range(total + 1):
        run_with_crash(tmp_path / f"lenient{crash_after}" / "j", crash_after, rng)
