"""Backfills in the reference server's database: create, settle, close, revert, list.

A backfill is ``pending`` until it is closed (by ``close`` or once its ``close_time`` has
passed), then ``reflected``: only then do the events ingested with its id count (see
``COUNTED``). With ``replace_existing_events`` its close also stops the events that were
already in its timeframe (and customer scope) from counting; a revert undoes both, and
removes its events from ``events`` (to ``event_versions``), so their keys may be sent again.
Every function takes a connection inside the caller's transaction.
"""

from __future__ import annotations

import secrets
import sqlite3
from typing import Any, NamedTuple

from meterline.server._problem import RESOURCE_NOT_FOUND, Problem
from meterline.server._sqlite import EVENT_COLUMNS
from meterline.server._time import format_instant

_COLUMNS = (
    "seq, id, status, created_at, start_us, end_us, close_us, closed_at, reverted_at,"
    " customer_id, external_customer_id, deprecation_filter, replace_existing_events,"
    " events_ingested"
)
OPEN_STATES = ("pending", "pending_revert")


class Window(NamedTuple):
    """What an event ingested into a backfill must fit: its timeframe and customer scope."""

    start_us: int
    end_us: int
    customer_id: str | None
    external_customer_id: str | None


class NewBackfill(NamedTuple):
    """A checked ``NewBackfill`` request body."""

    start_us: int
    end_us: int
    close_us: int
    customer_id: str | None
    external_customer_id: str | None
    replace_existing_events: bool


def create(db: sqlite3.Connection, new: NewBackfill, now_us: int) -> dict[str, Any]:
    """Insert a pending backfill; 409 if it overlaps a pending (or pending_revert) one."""
    overlapping = db.execute(
        "SELECT id FROM backfills WHERE status IN (?, ?) AND start_us < ? AND end_us > ?",
        (*OPEN_STATES, new.end_us, new.start_us),
    ).fetchone()
    if overlapping is not None:
        raise Problem(
            409,
            "Conflicting backfill",
            f"the timeframe overlaps the pending backfill {overlapping[0]}",
        )
    backfill_id = "bf_" + secrets.token_hex(8)
    db.execute(
        "INSERT INTO backfills (id, status, created_at, start_us, end_us, close_us,"
        " customer_id, external_customer_id, replace_existing_events)"
        " VALUES (?, 'pending', ?, ?, ?, ?, ?, ?, ?)",
        (
            backfill_id,
            format_instant(now_us),
            new.start_us,
            new.end_us,
            new.close_us,
            new.customer_id,
            new.external_customer_id,
            int(new.replace_existing_events),
        ),
    )
    return fetch(db, backfill_id)


def settle(db: sqlite3.Connection, now_us: int) -> None:
    """Reflect every pending backfill whose ``close_time`` has passed."""
    due = db.execute(
        "SELECT id, close_us FROM backfills WHERE status = 'pending' AND close_us <= ?",
        (now_us,),
    ).fetchall()
    for backfill_id, close_us in due:
        _reflect(db, backfill_id, close_us)


def require_pending(db: sqlite3.Connection, backfill_id: str) -> Window:
    """The window of a pending backfill; 404 for an unknown id, 409 for a closed one."""
    row = _row(db, backfill_id)
    if row["status"] != "pending":
        raise Problem(
            409,
            "Backfill not open",
            f"backfill {backfill_id} is {row['status']}; events can only be added while pending",
        )
    return Window(row["start_us"], row["end_us"], row["customer_id"], row["external_customer_id"])


def close(db: sqlite3.Connection, backfill_id: str, now_us: int) -> dict[str, Any]:
    """Reflect a pending backfill now; 409 if it is not pending."""
    require_pending(db, backfill_id)
    _reflect(db, backfill_id, now_us)
    return fetch(db, backfill_id)


def revert(db: sqlite3.Connection, backfill_id: str, now_us: int) -> dict[str, Any]:
    """Undo a pending or reflected backfill at once (it becomes ``reverted``); 409 otherwise."""
    row = _row(db, backfill_id)
    if row["status"] not in ("pending", "reflected"):
        raise Problem(409, "Backfill already reverted", f"backfill {backfill_id} is reverted")
    now = format_instant(now_us)
    db.execute("UPDATE events SET replaced_by = NULL WHERE replaced_by = ?", (backfill_id,))
    db.execute(
        f"INSERT OR REPLACE INTO event_versions ({EVENT_COLUMNS}, version, recorded_at,"
        f" superseded_at) SELECT {EVENT_COLUMNS}, version, recorded_at, ?"
        " FROM events WHERE backfill_id = ?",
        (now, backfill_id),
    )
    db.execute("DELETE FROM events WHERE backfill_id = ?", (backfill_id,))
    db.execute(
        "UPDATE backfills SET status = 'reverted', reverted_at = ? WHERE id = ?",
        (now, backfill_id),
    )
    return fetch(db, backfill_id)


def fetch(db: sqlite3.Connection, backfill_id: str) -> dict[str, Any]:
    """The ``Backfill`` resource; 404 if there is none with this id."""
    return _resource(_row(db, backfill_id))


def page(
    db: sqlite3.Connection,
    limit: int,
    after_seq: int | None,
    customer: str | None,
    status: str | None,
) -> tuple[list[dict[str, Any]], int | None]:
    """Backfills newest first, and the ``seq`` to continue after (None: no more)."""
    sql = f"SELECT {_COLUMNS} FROM backfills WHERE 1 = 1"
    args: list[object] = []
    if after_seq is not None:
        sql += " AND seq < ?"
        args.append(after_seq)
    if customer is not None:
        sql += " AND (customer_id = ? OR external_customer_id = ?)"
        args += [customer, customer]
    if status is not None:
        sql += " AND status = ?"
        args.append(status)
    rows = db.execute(f"{sql} ORDER BY seq DESC LIMIT ?", [*args, limit + 1]).fetchall()
    found = [_as_dict(row) for row in rows]
    more = len(found) > limit
    found = found[:limit]
    return [_resource(row) for row in found], (found[-1]["seq"] if more else None)


def _reflect(db: sqlite3.Connection, backfill_id: str, close_us: int) -> None:
    row = _row(db, backfill_id)
    if row["replace_existing_events"]:
        sql = (
            "UPDATE events SET replaced_by = ? WHERE replaced_by IS NULL"
            " AND ts_us >= ? AND ts_us < ? AND (backfill_id IS NULL OR backfill_id IN"
            " (SELECT id FROM backfills WHERE status = 'reflected'))"
        )
        args: list[object] = [backfill_id, row["start_us"], row["end_us"]]
        for name in ("customer_id", "external_customer_id"):
            if row[name] is not None:
                sql += f" AND {name} = ?"
                args.append(row[name])
        db.execute(sql, args)
    db.execute(
        "UPDATE backfills SET status = 'reflected', closed_at = ?, close_us = ? WHERE id = ?",
        (format_instant(close_us), close_us, backfill_id),
    )


def _row(db: sqlite3.Connection, backfill_id: str) -> dict[str, Any]:
    row = db.execute(f"SELECT {_COLUMNS} FROM backfills WHERE id = ?", (backfill_id,)).fetchone()
    if row is None:
        raise Problem(
            404,
            "Backfill not found",
            f"no backfill with id {backfill_id!r}",
            type_=RESOURCE_NOT_FOUND,
        )
    return _as_dict(row)


def _as_dict(row: tuple[Any, ...]) -> dict[str, Any]:
    return dict(zip((c.strip() for c in _COLUMNS.split(",")), row, strict=True))


def _resource(row: dict[str, Any]) -> dict[str, Any]:
    """Orb's ``Backfill``: ``customer_id`` is the scope's id, whichever field named it."""
    customer = row["customer_id"] if row["customer_id"] is not None else row["external_customer_id"]
    return {
        "id": row["id"],
        "status": row["status"],
        "created_at": row["created_at"],
        "timeframe_start": format_instant(row["start_us"]),
        "timeframe_end": format_instant(row["end_us"]),
        "events_ingested": row["events_ingested"],
        "close_time": format_instant(row["close_us"]),
        "reverted_at": row["reverted_at"],
        "customer_id": customer,
        "external_customer_id": row["external_customer_id"],
        "deprecation_filter": row["deprecation_filter"],
        "replace_existing_events": bool(row["replace_existing_events"]),
    }
