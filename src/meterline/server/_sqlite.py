"""Opening the reference server's SQLite database: schema, pragmas, WAL checkpoints.

Events are written in WAL mode with ``synchronous=NORMAL``. For a database file, a second
connection checkpoints the WAL from a background thread, so copying pages into the main
file, and its fsync, stay off the request path.
"""

from __future__ import annotations

import logging
import sqlite3
import threading

SCHEMA_VERSION = 2
CACHE_KIB = 64 * 1024  # the key index is hit at random; keep its pages in memory
CHECKPOINT_INTERVAL = 0.25  # seconds between background WAL checkpoints
AUTOCHECKPOINT_PAGES = 32768  # the writer's own fallback if the checkpointer falls behind
EVENT_COLUMNS = (
    "idempotency_key, customer, customer_id, external_customer_id, event_name, timestamp,"
    " ts_us, properties"
)
SCHEMA = f"""
CREATE TABLE IF NOT EXISTS events (
    idempotency_key TEXT PRIMARY KEY,
    customer TEXT NOT NULL,
    customer_id TEXT,
    external_customer_id TEXT,
    event_name TEXT NOT NULL,
    timestamp TEXT NOT NULL,
    ts_us INTEGER NOT NULL,
    properties TEXT NOT NULL,
    version INTEGER NOT NULL DEFAULT 1,
    recorded_at TEXT NOT NULL,
    deprecated_at TEXT,
    backfill_id TEXT,
    replaced_by TEXT
);
CREATE INDEX IF NOT EXISTS events_by_time ON events (ts_us);
CREATE INDEX IF NOT EXISTS events_by_backfill ON events (backfill_id) WHERE backfill_id IS NOT NULL;
CREATE TABLE IF NOT EXISTS backfills (
    seq INTEGER PRIMARY KEY,
    id TEXT NOT NULL UNIQUE,
    status TEXT NOT NULL,
    created_at TEXT NOT NULL,
    start_us INTEGER NOT NULL,
    end_us INTEGER NOT NULL,
    close_us INTEGER NOT NULL,
    closed_at TEXT,
    reverted_at TEXT,
    customer_id TEXT,
    external_customer_id TEXT,
    deprecation_filter TEXT,
    replace_existing_events INTEGER NOT NULL,
    events_ingested INTEGER NOT NULL DEFAULT 0
);
CREATE TABLE IF NOT EXISTS event_versions (
    idempotency_key TEXT NOT NULL,
    customer TEXT NOT NULL,
    customer_id TEXT,
    external_customer_id TEXT,
    event_name TEXT NOT NULL,
    timestamp TEXT NOT NULL,
    ts_us INTEGER NOT NULL,
    properties TEXT NOT NULL,
    version INTEGER NOT NULL,
    recorded_at TEXT NOT NULL,
    superseded_at TEXT NOT NULL,
    PRIMARY KEY (idempotency_key, version)
);
PRAGMA user_version = {SCHEMA_VERSION};
"""
# Version 1 had neither backfills nor the two columns that tie events to them.
_FROM_V1 = (
    "ALTER TABLE events ADD COLUMN backfill_id TEXT;"
    " ALTER TABLE events ADD COLUMN replaced_by TEXT;"
)
# The events that count for billing, search and volume: not replaced by a closed backfill,
# and either live or ingested in a backfill that was closed (reflected) and not reverted.
COUNTED = (
    "replaced_by IS NULL AND (backfill_id IS NULL OR backfill_id IN"
    " (SELECT id FROM backfills WHERE status = 'reflected'))"
)


logger = logging.getLogger("meterline.server")


def connect(path: str) -> tuple[sqlite3.Connection, bool]:
    """Open (creating if needed) the database at ``path``; also says whether it is in WAL mode.

    Refuses a SQLite file with another schema version. The connection is in autocommit mode
    (transactions are explicit) and may be used from any thread, one at a time.
    """
    db = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
    try:
        db.execute("PRAGMA busy_timeout = 5000")
        wal = db.execute("PRAGMA journal_mode = WAL").fetchone()[0] == "wal"  # :memory: is not
        db.execute("PRAGMA synchronous = NORMAL")
        db.execute(f"PRAGMA cache_size = -{CACHE_KIB}")
        db.execute(f"PRAGMA wal_autocheckpoint = {AUTOCHECKPOINT_PAGES}")
        found = db.execute("PRAGMA user_version").fetchone()[0]
        if found not in (0, 1, SCHEMA_VERSION):
            raise sqlite3.DatabaseError(
                f"{path}: schema version {found}, expected {SCHEMA_VERSION}"
            )
        if found == 1:
            db.executescript(_FROM_V1)
        db.executescript(SCHEMA)
    except sqlite3.Error:
        db.close()
        raise
    return db, wal


class Checkpointer:
    """A daemon thread that runs ``wal_checkpoint(PASSIVE)`` on its own connection."""

    def __init__(self, path: str) -> None:
        self._path = path
        self._stop = threading.Event()
        self._thread = threading.Thread(
            target=self._run, name="meterline-reference-server-checkpoint", daemon=True
        )
        self._thread.start()

    def _run(self) -> None:
        db = sqlite3.connect(self._path, isolation_level=None)
        try:
            while not self._stop.wait(CHECKPOINT_INTERVAL):
                try:
                    db.execute("PRAGMA wal_checkpoint(PASSIVE)")
                except sqlite3.Error as exc:  # the writer's autocheckpoint covers for us
                    logger.warning("background WAL checkpoint failed: %s", exc)
        finally:
            db.close()

    def stop(self) -> None:
        """Stop the thread and close its connection."""
        self._stop.set()
        self._thread.join()
