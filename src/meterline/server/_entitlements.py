"""``GET /v1/entitlements/{customer}/{feature}``: a customer's entitlement to a feature.

The answer (200, JSON)::

    {"customer": "acme", "feature": "api_call", "plan": "free", "ok": true,
     "limit": 100, "used": 42, "remaining": 58, "period": "monthly",
     "period_start": "2026-12-01T00:00:00Z", "period_end": "2027-01-01T00:00:00Z"}

``ok`` is ``used < limit`` (always true without a limit). A customer without a plan, or a
feature its plan does not grant, is answered 200 with ``ok: false`` and ``limit: 0``: the
check worked, the answer is no. Without ``--plans`` the endpoint is a 404 saying so. Usage
counts the events the server counts for billing (not deprecated, not replaced, backfills
only once closed), by the server's clock.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Callable
from datetime import datetime, timezone
from typing import Any
from urllib.parse import unquote

from meterline.server._backfill_store import settle
from meterline.server._messages import Request
from meterline.server._plans import Feature, Plans
from meterline.server._problem import Problem
from meterline.server._sqlite import COUNTED
from meterline.server._store import Store
from meterline.server._time import format_instant

__all__ = ["Plans", "entitlement", "entitlement_routes", "period_window"]

Route = Callable[[Request, dict[str, str], Any], object]
_NO_PARAMS: frozenset[str] = frozenset()


def period_window(period: str, now_us: int) -> tuple[int | None, int | None]:
    """``[start, end)`` in microseconds of the period holding ``now_us`` (None: unbounded)."""
    if period == "total":
        return None, None
    now = datetime.fromtimestamp(now_us / 1e6, tz=timezone.utc)
    if period == "daily":
        start = now.replace(hour=0, minute=0, second=0, microsecond=0)
        end_us = _us(start) + 86400 * 1_000_000
        return _us(start), end_us
    start = now.replace(day=1, hour=0, minute=0, second=0, microsecond=0)
    end = (
        start.replace(year=start.year + 1, month=1)
        if start.month == 12
        else start.replace(month=start.month + 1)
    )
    return _us(start), _us(end)


def _us(moment: datetime) -> int:
    return round(moment.timestamp()) * 1_000_000


_HUGE = 1.7976931348623157e308  # the largest finite float: past it, more than any limit


def used(
    db: sqlite3.Connection,
    customer: str,
    feature: Feature,
    name: str,
    window: tuple[int | None, int | None],
) -> int | float:
    """The customer's usage of the feature ``name`` in ``window``."""
    sql = (
        "SELECT properties FROM events WHERE deprecated_at IS NULL"
        f" AND {COUNTED} AND customer = ? AND event_name = ?"
    )
    args: list[object] = [customer, name]
    start, end = window
    if start is not None and end is not None:
        sql += " AND ts_us >= ? AND ts_us < ?"
        args += [start, end]
    total: int | float = 0
    for (properties,) in db.execute(sql, args):
        value = json.loads(properties).get(feature.unit)
        number = isinstance(value, (int, float)) and not isinstance(value, bool)
        total += max(0, value) if number else 1  # a negative report gives no allowance back
    return total if total < _HUGE else _HUGE  # finite: JSON has no Infinity


def entitlement(
    plans: Plans, db: sqlite3.Connection, customer: str, name: str, now_us: int
) -> dict[str, object]:
    """The body of the answer for ``customer`` and the feature ``name``."""
    plan, feature = plans.entitlement(customer, name)
    body: dict[str, object] = {"customer": customer, "feature": name, "plan": plan}
    if feature is None:
        body.update(ok=False, limit=0, used=0, remaining=0, period=None)
        body.update(period_start=None, period_end=None)
        return body
    window = period_window(feature.period, now_us)
    count = used(db, customer, feature, name, window)
    limit = feature.limit
    body.update(
        ok=limit is None or count < limit,
        limit=limit,
        used=count,
        remaining=None if limit is None else max(0, limit - count),
        period=feature.period,
        period_start=None if window[0] is None else format_instant(window[0]),
        period_end=None if window[1] is None else format_instant(window[1]),
    )
    return body


def entitlement_routes(
    rest: list[str],
    plans: Plans | None,
    store: Callable[[], Store],
    now_us: Callable[[], int],
    path: str,
) -> tuple[dict[str, Route], frozenset[str]]:
    """The endpoint at ``/v1/entitlements/<rest>``; a 404 problem when there is no such path."""
    if len(rest) != 2 or not rest[0] or not rest[1]:
        raise Problem(404, "Not found", f"no endpoint at {path}; see /v1/entitlements/C/F")
    customer, name = unquote(rest[0]), unquote(rest[1])

    def answer(request: Request, params: dict[str, str], trace: Any) -> object:
        if plans is None:
            raise Problem(
                404,
                "No plans",
                "this server has no entitlements: start it with `meterline serve --plans FILE`",
            )
        now = now_us()

        def count(db: sqlite3.Connection) -> object:
            settle(db, now)  # backfills past their close_time count, as for /usage
            return entitlement(plans, db, customer, name, now)

        return store().run(count)

    return {"GET": answer}, _NO_PARAMS
