"""The ``/v1/events/backfills`` endpoints: create, list, fetch, close and revert."""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from typing import Any
from urllib.parse import unquote

from meterline.server import _backfill_store as book
from meterline.server._backfills import LIST_PARAMS, limit_and_cursor, list_filters, new_backfill
from meterline.server._messages import Request
from meterline.server._rules import parse_json
from meterline.server._store import Store

Route = Callable[[Request, dict[str, str], Any], object]
_NO_PARAMS: frozenset[str] = frozenset()


def open_window(db: sqlite3.Connection, backfill_id: str, now_us: int) -> book.Window:
    """The window of a backfill that may take events now (404 unknown, 409 closed)."""
    book.settle(db, now_us)
    return book.require_pending(db, backfill_id)


def backfill_routes(
    rest: list[str], store: Callable[[], Store], now_us: Callable[[], int]
) -> tuple[dict[str, Route], frozenset[str]] | None:
    """The methods at ``/v1/events/backfills/<rest>``, or None when there is no such path."""

    def run(work: Callable[[sqlite3.Connection, int], object]) -> object:
        now = now_us()

        def settled(db: sqlite3.Connection) -> object:
            book.settle(db, now)
            return work(db, now)

        return store().run(settled)

    def create(request: Request, params: dict[str, str], trace: Any) -> object:
        body = parse_json(request.read_body())
        now = now_us()
        new = new_backfill(body, now)
        return run(lambda db, _: book.create(db, new, now))

    def listing(request: Request, params: dict[str, str], trace: Any) -> object:
        limit, after = limit_and_cursor(params)
        customer, status = list_filters(params)
        data, more = store().run(lambda db: _page(db, now_us(), limit, after, customer, status))
        cursor = None if more is None else str(more)
        return {
            "data": data,
            "pagination_metadata": {"has_more": more is not None, "next_cursor": cursor},
        }

    if not rest:
        return {"GET": listing, "POST": create}, LIST_PARAMS
    backfill_id = unquote(rest[0])
    if len(rest) == 1 and backfill_id:
        fetch: Route = lambda r, p, t: run(lambda db, _: book.fetch(db, backfill_id))  # noqa: E731
        return {"GET": fetch}, _NO_PARAMS
    if len(rest) == 2 and backfill_id and rest[1] in ("close", "revert"):
        action = book.close if rest[1] == "close" else book.revert

        def act(request: Request, params: dict[str, str], trace: Any) -> object:
            request.read_body()  # no body is expected; read it so the connection stays usable
            return run(lambda db, now: action(db, backfill_id, now))

        return {"POST": act}, _NO_PARAMS
    return None


def _page(
    db: sqlite3.Connection,
    now: int,
    limit: int,
    after: int | None,
    customer: str | None,
    status: str | None,
) -> tuple[list[dict[str, Any]], int | None]:
    book.settle(db, now)
    return book.page(db, limit, after, customer, status)
