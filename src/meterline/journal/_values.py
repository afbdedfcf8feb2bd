"""The values a ``Journal`` hands out: a listed batch file, a claim on one, a status."""

from __future__ import annotations

from dataclasses import dataclass, field

__all__ = ["BatchRef", "Claim", "JournalStatus"]


@dataclass(frozen=True, slots=True)
class BatchRef:
    """A batch file as listed: ``events`` is None when not known without reading it."""

    name: str
    path: str
    events: int | None
    size: int
    created: float  # seconds since the epoch, from the name


@dataclass(frozen=True, slots=True)
class Claim:
    """An exclusive hold on one batch file; end it with ack, settle or release."""

    ref: BatchRef
    token: int = field(repr=False)  # opaque: which descriptor, in which Journal

    @property
    def name(self) -> str:
        return self.ref.name

    @property
    def path(self) -> str:
        return self.ref.path


@dataclass(frozen=True, slots=True)
class JournalStatus:
    """Counts over the journal directories at one moment (stats and the CLI).

    ``ready_*`` count every file in ready/ (from headers, unverified). Of those,
    ``ready_foreign_*`` were written for another fingerprint than ``fingerprint`` (hex;
    None when the journal has none, and then no file is foreign), ``ready_newer_batches``
    by a newer meterline (both left alone by this journal), and ``ready_legacy_batches``
    by meterline 0.1, without a fingerprint (replayed by any journal).
    """

    ready_batches: int
    ready_events: int
    ready_bytes: int
    rejected_batches: int
    rejected_events: int
    quarantined: int
    expired_batches: int
    expired_events: int
    total_bytes: int
    oldest_ready_age: float | None
    fingerprint: str | None = None
    ready_foreign_batches: int = 0
    ready_foreign_events: int = 0
    ready_newer_batches: int = 0
    ready_legacy_batches: int = 0
