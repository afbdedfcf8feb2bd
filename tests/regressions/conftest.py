"""Fixtures of the regression suite (the fault server and journal dirs come from tests/)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.regressions.helpers import Proc


@pytest.fixture
def procs() -> Iterator[list[Proc]]:
    """Processes a test starts; any still running at teardown are killed with their group."""
    started: list[Proc] = []
    yield started
    for proc in started:
        proc.kill_group()
