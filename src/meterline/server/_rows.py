"""Rows of the ``events`` table as Orb ``Event`` resources, and the lookups the store shares."""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Sequence
from typing import Any

from meterline.server._problem import RESOURCE_NOT_FOUND, Problem
from meterline.server._sqlite import COUNTED

LOOKUP_CHUNK = 500  # stays below SQLITE_MAX_VARIABLE_NUMBER on old SQLite builds


SELECT_EVENTS = (
    "SELECT idempotency_key, customer, customer_id, external_customer_id, event_name,"
    " timestamp, ts_us, properties, deprecated_at IS NOT NULL FROM events"
)


def filtered(sql: str, customer: str | None, include_deprecated: bool) -> tuple[str, list[str]]:
    clauses, args = [COUNTED], []
    if not include_deprecated:
        clauses.append("deprecated_at IS NULL")
    if customer is not None:
        clauses.append("customer = ?")
        args.append(customer)
    return (f"{sql} WHERE {' AND '.join(clauses)}" if clauses else sql), args


def known_keys(db: sqlite3.Connection, keys: Sequence[str], top: int) -> dict[str, bool]:
    """Map each key among ``keys`` stored with a rowid up to ``top`` to whether it is deprecated."""
    known: dict[str, bool] = {}
    for start in range(0, len(keys), LOOKUP_CHUNK):
        chunk = keys[start : start + LOOKUP_CHUNK]
        marks = ",".join("?" * len(chunk))
        rows = db.execute(
            "SELECT idempotency_key, deprecated_at IS NOT NULL FROM events"
            f" WHERE idempotency_key IN ({marks}) AND rowid <= ?",
            [*chunk, top],
        )
        known.update((key, bool(deprecated)) for key, deprecated in rows)
    return known


def as_event(row: Sequence[Any]) -> dict[str, Any]:
    """An Orb ``Event`` resource from a row of ``SELECT_EVENTS``."""
    key, _customer, customer_id, external_id, name, timestamp, _ts, properties, dep = row
    return {
        "id": key,
        "customer_id": customer_id,
        "external_customer_id": external_id,
        "event_name": name,
        "properties": json.loads(properties),
        "timestamp": timestamp,
        "deprecated": bool(dep),
    }


def same_json(a: str, b: str) -> bool:
    """Equal JSON texts up to key order, telling 1, 1.0 and true apart."""

    def norm(text: str) -> str:
        return json.dumps(json.loads(text), sort_keys=True, separators=(",", ":"))

    return norm(a) == norm(b)


def not_found(key: str) -> Problem:
    return Problem(
        404,
        "Event not found",
        f"no event with id {key!r} has been ingested",
        type_=RESOURCE_NOT_FOUND,
    )
