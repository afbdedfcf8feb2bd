"""``/v1/metrics`` (define, list) and the metric values of ``GET /v1/usage``.

Only events that count for billing take part: not deprecated, not replaced by a closed
backfill, and not in a backfill that is still open (pending) or was reverted. Events are
read in timestamp order, then ingestion order, so ``latest`` is the value of the event
with the latest timestamp, and of the one ingested last among equal timestamps.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Callable
from typing import Any, TypeGuard

from meterline.server._messages import Request
from meterline.server._metrics import Metric, MetricRegistry, define_from_body
from meterline.server._rules import parse_json
from meterline.server._sqlite import COUNTED

Route = Callable[[Request, dict[str, str], Any], object]
_NO_PARAMS: frozenset[str] = frozenset()


def metric_routes(registry: MetricRegistry) -> tuple[dict[str, Route], frozenset[str]]:
    """The methods at ``/v1/metrics``: ``GET`` lists the metrics, ``POST`` defines one."""

    def listed(request: Request, params: dict[str, str], trace: Any) -> object:
        return {"data": [m.as_dict() for m in registry.all()]}

    def create(request: Request, params: dict[str, str], trace: Any) -> object:
        metric, created = define_from_body(registry, parse_json(request.read_body()))
        return {**metric.as_dict(), "created": created}

    return {"GET": listed, "POST": create}, _NO_PARAMS


def metric_values(
    db: sqlite3.Connection,
    metrics: list[Metric],
    start_us: int,
    end_us: int,
    customer: str | None,
) -> list[dict[str, Any]]:
    """One row per customer and metric, sorted by customer then metric name.

    The customers are those with any counted event in ``[start, end)``, or ``customer`` alone
    when given (reported even without events, so a report always names every metric).
    """
    if not metrics:
        return []
    sql = (
        "SELECT customer, event_name, properties FROM events"
        f" WHERE deprecated_at IS NULL AND {COUNTED} AND ts_us >= ? AND ts_us < ?"
    )
    args: list[object] = [start_us, end_us]
    if customer is not None:
        sql += " AND customer = ?"
        args.append(customer)
    by_event: dict[str, list[Metric]] = {}
    for metric in metrics:
        by_event.setdefault(metric.event_name, []).append(metric)
    customers: set[str] = set() if customer is None else {customer}
    state: dict[tuple[str, str], _Aggregate] = {}
    for who, name, properties in db.execute(f"{sql} ORDER BY ts_us, rowid", args):
        customers.add(who)
        wanted = by_event.get(name)
        if not wanted:
            continue
        values = json.loads(properties)
        for metric in wanted:
            state.setdefault((who, metric.name), _Aggregate(metric)).add(values)
    rows = []
    for who in sorted(customers):
        for metric in metrics:
            aggregate = state.get((who, metric.name)) or _Aggregate(metric)
            rows.append({"customer": who, "metric": metric.name, "value": aggregate.value()})
    return rows


def _number(value: object) -> TypeGuard[int | float]:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


class _Aggregate:
    """The running value of one metric for one customer."""

    def __init__(self, metric: Metric) -> None:
        self.metric = metric
        self.count = 0
        self.total: int | float = 0
        self.top: int | float | None = None
        self.last: int | float | None = None
        self.distinct: set[str] = set()

    def add(self, properties: dict[str, Any]) -> None:
        kind, name = self.metric.aggregation, self.metric.property
        if kind == "count":
            self.count += 1
            return
        value = properties.get(name) if name is not None else None
        if kind == "unique":
            if value is not None:
                self.distinct.add(json.dumps(value, sort_keys=True))
            return
        if not _number(value):
            return  # sum, max and latest read numbers only; other values are skipped
        if kind == "sum":
            self.total += value
        elif kind == "max":
            self.top = value if self.top is None else max(self.top, value)
        else:
            self.last = value

    def value(self) -> int | float | None:
        """count/sum/unique are 0 without events; max/latest are None (null)."""
        kind = self.metric.aggregation
        if kind == "count":
            return self.count
        if kind == "sum":
            return self.total
        if kind == "unique":
            return len(self.distinct)
        return self.top if kind == "max" else self.last
