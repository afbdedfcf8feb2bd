"""Fixtures for the journal suite: journals in tmp_path, a fake clock, the umask."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from meterline.journal import Journal
from tests.journal.helpers import FakeClock


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def jdir(tmp_path: Path) -> Path:
    return tmp_path / "journal"


@pytest.fixture
def make_journal(jdir: Path, clock: FakeClock) -> Iterator[Callable[..., Journal]]:
    """Open journals on ``jdir`` (small reserve, fake clock); closed at teardown."""
    made: list[Journal] = []

    def make(directory: Path | None = None, **kw: Any) -> Journal:
        kw.setdefault("clock", clock)
        kw.setdefault("min_free_bytes", 0)
        journal = Journal(directory or jdir, **kw)
        journal.open()
        made.append(journal)
        return journal

    yield make
    for journal in made:
        journal.close()


@pytest.fixture
def umask() -> Iterator[Callable[[int], None]]:
    """Set the process umask for one test."""
    old = os.umask(0o022)
    os.umask(old)

    def set_umask(mask: int) -> None:
        os.umask(mask)

    yield set_umask
    os.umask(old)
