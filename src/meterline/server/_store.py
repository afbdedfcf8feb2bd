"""The reference server's event store: live events plus an append-only version log.

One connection and one lock serve every thread: a write holds the lock for a single
transaction (one ``executemany`` per batch), which is what keeps duplicate detection exact.
``events`` holds the current version of each idempotency key; ``event_versions`` keeps every
version an amendment replaced and every event a backfill's revert removed, so nothing
ingested is ever overwritten or lost.
"""

from __future__ import annotations

import json
import sqlite3
import threading
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, TypeVar

from meterline.server._backfill_store import require_pending
from meterline.server._problem import Problem
from meterline.server._rows import (
    LOOKUP_CHUNK,
    SELECT_EVENTS,
    as_event,
    filtered,
    known_keys,
    not_found,
    same_json,
)
from meterline.server._rules import ValidEvent
from meterline.server._sqlite import COUNTED, EVENT_COLUMNS, Checkpointer, connect
from meterline.server._time import format_instant

_T = TypeVar("_T")


class StoreClosedError(RuntimeError):
    """The server was stopped while a request was being handled."""


@dataclass
class IngestOutcome:
    """What happened to each key of a batch, in batch order."""

    ingested: list[str] = field(default_factory=list)
    duplicate: list[str] = field(default_factory=list)
    deprecated: list[str] = field(default_factory=list)
    refused: bool = False  # nothing was stored: some key is invalid or deprecated


class _Refused(Exception):
    """Rolls back a batch that Orb would answer with a 400."""


class Store:
    """The reference server's database; every method is safe from any thread."""

    def __init__(self, path: str) -> None:
        self._lock = threading.Lock()
        db, wal = connect(path)
        self._db: sqlite3.Connection | None = db
        self._checkpointer = Checkpointer(path) if wal else None

    def close(self) -> None:
        """Close after any write in progress (the last close checkpoints); later calls raise."""
        if self._checkpointer is not None:
            self._checkpointer.stop()
        with self._lock:
            if self._db is not None:
                self._db.close()
                self._db = None

    @contextmanager
    def _locked(self) -> Iterator[sqlite3.Connection]:
        with self._lock:
            if self._db is None:
                raise StoreClosedError("the server is stopping")
            yield self._db

    @contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        with self._locked() as db:
            db.execute("BEGIN IMMEDIATE")
            try:
                yield db
            except BaseException:
                db.execute("ROLLBACK")
                raise
            db.execute("COMMIT")

    def run(self, work: Callable[[sqlite3.Connection], _T]) -> _T:
        """Run ``work`` in one write transaction (backfills, volume)."""
        with self._transaction() as db:
            return work(db)

    def ingest(
        self,
        valid: Sequence[ValidEvent],
        invalid: Sequence[str],
        now: str,
        backfill_id: str | None = None,
    ) -> IngestOutcome:
        """Insert the unknown keys of ``valid`` unless the batch is refused; classify every key.

        A batch is refused (nothing stored, ``outcome.refused``) when a key of ``invalid`` was
        never ingested or a key was deprecated: Orb answers such a batch with a 400. Keys are
        looked up only when some events failed validation or the insert stored fewer rows than
        it was given: rows that existed before have a rowid no greater than the largest one
        before the insert (rows are only deleted by a revert, which never makes rowids smaller
        than that). ``backfill_id`` must name a pending backfill (checked in the transaction).
        """
        outcome = IngestOutcome()
        keys = [e.idempotency_key for e in valid] + list(invalid)
        if not keys:
            return outcome
        known: dict[str, bool] = {}
        try:
            with self._transaction() as db:
                if backfill_id is not None:
                    require_pending(db, backfill_id)
                top = db.execute("SELECT coalesce(max(rowid), 0) FROM events").fetchone()[0]
                if invalid:
                    known = known_keys(db, keys, top)
                    if any(known.values()) or any(k not in known for k in invalid):
                        raise _Refused
                before = db.total_changes
                db.executemany(
                    f"INSERT OR IGNORE INTO events ({EVENT_COLUMNS}, recorded_at, backfill_id)"
                    " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    [(*e, now, backfill_id) for e in valid],
                )
                stored = db.total_changes - before
                if not invalid and stored < len(valid):
                    known = known_keys(db, keys, top)
                    if any(known.values()):
                        raise _Refused
                if backfill_id is not None:
                    db.execute(
                        "UPDATE backfills SET events_ingested = events_ingested + ? WHERE id = ?",
                        (stored, backfill_id),
                    )
        except _Refused:
            outcome.refused = True
        if not outcome.refused:
            outcome.ingested = [e.idempotency_key for e in valid if e.idempotency_key not in known]
        for key in keys:
            if key in known:
                (outcome.deprecated if known[key] else outcome.duplicate).append(key)
        return outcome

    def amend(self, event: ValidEvent, now: str) -> bool:
        """Replace the live version of ``event``'s key; False when nothing changed."""
        with self._transaction() as db:
            row = db.execute(
                "SELECT customer_id, external_customer_id, event_name, ts_us, properties,"
                " deprecated_at FROM events WHERE idempotency_key = ?",
                (event.idempotency_key,),
            ).fetchone()
            if row is None:
                raise not_found(event.idempotency_key)
            customer_id, external_id, name, ts_us, properties, deprecated_at = row
            errors = []
            if deprecated_at is not None:
                errors.append("the event is deprecated and cannot be amended")
            if ts_us != event.ts_us:
                errors.append(f"timestamp must match the original ({format_instant(ts_us)})")
            if (customer_id, external_id) != (event.customer_id, event.external_customer_id):
                errors.append("the customer id must match the original event's, field and value")
            if errors:
                raise Problem(400, "The amendment is not valid", "; ".join(errors), list(errors))
            if name == event.event_name and same_json(properties, event.properties):
                return False
            db.execute(
                f"INSERT INTO event_versions ({EVENT_COLUMNS}, version, recorded_at,"
                f" superseded_at) SELECT {EVENT_COLUMNS}, version, recorded_at, ?"
                " FROM events WHERE idempotency_key = ?",
                (now, event.idempotency_key),
            )
            db.execute(
                "UPDATE events SET event_name = ?, properties = ?, version = version + 1,"
                " recorded_at = ? WHERE idempotency_key = ?",
                (event.event_name, event.properties, now, event.idempotency_key),
            )
            return True

    def deprecate(self, key: str, now: str) -> None:
        """Mark ``key`` ignored for billing; deprecating twice is harmless."""
        with self._transaction() as db:
            cursor = db.execute(
                "UPDATE events SET deprecated_at = coalesce(deprecated_at, ?)"
                " WHERE idempotency_key = ?",
                (now, key),
            )
            if cursor.rowcount == 0:
                raise not_found(key)

    def find(self, keys: Sequence[str]) -> dict[str, dict[str, Any]]:
        """The current versions of ``keys`` (deprecated ones flagged), by key."""
        found: dict[str, dict[str, Any]] = {}
        with self._locked() as db:
            for start in range(0, len(keys), LOOKUP_CHUNK):
                chunk = keys[start : start + LOOKUP_CHUNK]
                marks = ",".join("?" * len(chunk))
                rows = db.execute(
                    f"{SELECT_EVENTS} WHERE {COUNTED} AND idempotency_key IN ({marks})", chunk
                ).fetchall()
                found.update((row[0], as_event(row)) for row in rows)
        return found

    def events(
        self, customer: str | None = None, *, include_deprecated: bool = False
    ) -> list[dict[str, Any]]:
        """Current versions in timestamp order, optionally for one customer."""
        sql, args = filtered(SELECT_EVENTS, customer, include_deprecated)
        with self._locked() as db:
            rows = db.execute(f"{sql} ORDER BY ts_us, idempotency_key", args).fetchall()
        return [as_event(row) for row in rows]

    def count(self, customer: str | None = None, *, include_deprecated: bool = False) -> int:
        """How many events count for billing (live versions only, unless asked)."""
        sql, args = filtered("SELECT count(*) FROM events", customer, include_deprecated)
        with self._locked() as db:
            return int(db.execute(sql, args).fetchone()[0])

    def versions(self, key: str) -> list[dict[str, Any]]:
        """Every version of ``key``, oldest first; the last one is the current version."""
        with self._locked() as db:
            old = db.execute(
                f"SELECT {EVENT_COLUMNS}, version, recorded_at, superseded_at"
                " FROM event_versions WHERE idempotency_key = ? ORDER BY version",
                (key,),
            ).fetchall()
            current = db.execute(
                f"SELECT {EVENT_COLUMNS}, version, recorded_at, deprecated_at"
                " FROM events WHERE idempotency_key = ?",
                (key,),
            ).fetchall()
        result = []
        for row in old:
            item = as_event((*row[:8], False))
            item.update(version=row[8], recorded_at=row[9], status="amended", superseded_at=row[10])
            result.append(item)
        for row in current:
            item = as_event((*row[:8], row[10] is not None))
            item.update(version=row[8], recorded_at=row[9], deprecated_at=row[10])
            item["status"] = "live" if row[10] is None else "deprecated"
            result.append(item)
        return result

    def usage(self, start_us: int, end_us: int, customer: str | None) -> list[dict[str, Any]]:
        """Count and numeric sums per customer and event name in ``[start, end)``."""
        sql = (
            "SELECT customer, event_name, properties FROM events"
            f" WHERE deprecated_at IS NULL AND {COUNTED} AND ts_us >= ? AND ts_us < ?"
        )
        args: list[object] = [start_us, end_us]
        if customer is not None:
            sql += " AND customer = ?"
            args.append(customer)
        groups: dict[tuple[str, str], dict[str, Any]] = {}
        with self._locked() as db:
            rows = db.execute(sql, args).fetchall()
        for who, name, properties in rows:
            group = groups.setdefault(
                (who, name), {"customer": who, "event_name": name, "count": 0, "sums": {}}
            )
            group["count"] += 1
            sums = group["sums"]
            for key, value in json.loads(properties).items():
                if isinstance(value, (int, float)) and not isinstance(value, bool):
                    sums[key] = sums.get(key, 0) + value
        return [groups[k] for k in sorted(groups)]
