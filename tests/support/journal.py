"""Reading a journal directory from a test, the way an operator's tool would."""

from __future__ import annotations

from pathlib import Path

from meterline.journal import Journal


def ready_events(journal_dir: Path) -> int:
    """How many events wait in ready/ (claims held by other processes included)."""
    journal = Journal(journal_dir)
    journal.open()
    try:
        return journal.status().ready_events
    finally:
        journal.close()
