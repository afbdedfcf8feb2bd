"""The exceptions meterline raises.

::

    MeterlineError
     ├── InvalidEventError (also ValueError)   a caller bug in report(): raised at once
     ├── ConfigError (also ValueError)         a bad option or an unsafe journal dir
     ├── ClientClosedError (also RuntimeError) report() after close()
     ├── DeliveryError                         only from explicit synchronous calls
     └── JournalError (also OSError)           only from explicit synchronous calls
          ├── JournalFullError                 journal_max_bytes or the free-space reserve reached
          ├── JournalCorruptError              a batch file failed its checks (moved to quarantine/)
          └── JournalForeignError              a batch written for another endpoint or credential

``report()`` raises only the first three; delivery and journal problems never reach it.
"""

from __future__ import annotations

__all__ = [
    "ClientClosedError",
    "ConfigError",
    "DeliveryError",
    "InvalidEventError",
    "JournalCorruptError",
    "JournalError",
    "JournalForeignError",
    "JournalFullError",
    "MeterlineError",
]


class MeterlineError(Exception):
    """Base class of every exception meterline raises."""


class InvalidEventError(MeterlineError, ValueError):
    """An event given to ``report()`` breaks a rule; ``field`` and ``rule`` say which."""

    def __init__(self, field: str, rule: str) -> None:
        self.field = field
        self.rule = rule
        super().__init__(f"{field}: {rule}")


class ConfigError(MeterlineError, ValueError):
    """An option is unknown or invalid, or the journal directory is unsafe."""


class ClientClosedError(MeterlineError, RuntimeError):
    """``report()`` was called after ``close()``."""


class DeliveryError(MeterlineError):
    """An explicit synchronous send (a replay from the CLI, say) failed."""


class JournalError(MeterlineError, OSError):
    """The journal could not be read or written."""


class JournalFullError(JournalError):
    """The journal reached ``journal_max_bytes`` or the free-space reserve."""


class JournalCorruptError(JournalError):
    """A batch file failed its checks; it was moved to ``quarantine/``."""


class JournalForeignError(JournalError):
    """A batch file was written for another destination, endpoint or credential; it is left
    in place for the client it belongs to and never sent with this one's credential."""
