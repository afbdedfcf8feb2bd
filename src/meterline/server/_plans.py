"""Plans for the reference server's entitlements (``meterline serve --plans plans.toml``).

A plans file (TOML, or JSON with the same shape) names plans, the features each one grants
with a limit per period, and the plan of each customer, whose features may override the
plan's::

    default_plan = "free"          # optional: the plan of a customer not listed

    [plans.free.features.api_call]
    limit = 100                    # omitted: unlimited
    period = "monthly"             # "monthly" (calendar month, UTC), "daily" (UTC day), "total"
    unit = "quantity"              # optional; the numeric property an event adds (else 1)

    [customers.acme]
    plan = "pro"
    [customers.acme.features.api_call]
    limit = 5000

A feature is an event name. Its usage is the sum, over the customer's counted events of that
name in the period, of the event's ``unit`` property when it is a number, else 1 per event.

Python 3.10 has no ``tomllib`` (and the server uses the standard library only): there a plans
file must be JSON; TOML needs Python 3.11+.
"""

from __future__ import annotations

import json
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

__all__ = ["PERIODS", "Feature", "Plans", "PlansError", "load_plans", "parse_plans"]

PERIODS = ("monthly", "daily", "total")
_TOP_KEYS = {"default_plan", "plans", "customers"}
_FEATURE_KEYS = {"limit", "period", "unit"}


class PlansError(ValueError):
    """A plans file that cannot be read or breaks the schema; the message names the key."""


@dataclass(frozen=True, slots=True)
class Feature:
    """One feature's entitlement: ``limit`` (None: unlimited) per ``period``."""

    limit: int | float | None
    period: str
    unit: str


@dataclass(frozen=True, slots=True)
class Plans:
    """The loaded plans: ``plans[name][feature]``, ``customers[id] = (plan, overrides)``."""

    plans: dict[str, dict[str, Feature]]
    customers: dict[str, tuple[str | None, dict[str, Feature]]]
    default_plan: str | None

    def entitlement(self, customer: str, feature: str) -> tuple[str | None, Feature | None]:
        """The customer's plan name and its entitlement to ``feature`` (None: not granted)."""
        plan, overrides = self.customers.get(customer, (self.default_plan, {}))
        if feature in overrides:
            return plan, overrides[feature]
        if plan is None:
            return None, None
        return plan, self.plans[plan].get(feature)


def load_plans(path: str | os.PathLike[str]) -> Plans:
    """Read and check a plans file: ``.json`` as JSON, anything else as TOML."""
    file = Path(path)
    try:
        raw = file.read_bytes()
    except OSError as exc:
        raise PlansError(f"cannot read the plans file {file}: {exc.strerror or exc}") from None
    if file.suffix.lower() == ".json":
        try:
            data = json.loads(raw)
        except ValueError as exc:
            raise PlansError(f"{file} is not valid JSON: {exc}") from None
    else:
        data = _toml(raw, file)
    return parse_plans(data)


def _toml(raw: bytes, file: Path) -> Any:
    if sys.version_info >= (3, 11):
        import tomllib

        try:
            return tomllib.loads(raw.decode("utf-8"))
        except ValueError as exc:  # UnicodeDecodeError and TOMLDecodeError
            raise PlansError(f"{file} is not valid TOML: {exc}") from None
    # Python 3.10: the server uses the standard library only, which has no TOML reader there.
    raise PlansError(  # pragma: no cover
        f"{file}: reading a TOML plans file needs Python 3.11+ (tomllib);"
        " on Python 3.10 give the same plans as a .json file"
    )


def parse_plans(data: object) -> Plans:
    """Check the parsed document ``data`` against the schema; ``PlansError`` names the key."""
    table = _table(data, "the plans file")
    _no_extra(table, _TOP_KEYS, "the plans file")
    plans: dict[str, dict[str, Feature]] = {}
    for name, body in _table(table.get("plans", {}), "plans").items():
        where = f"plans.{name}"
        plan = _table(body, where)
        _no_extra(plan, {"features"}, where)
        plans[name] = _features(plan.get("features", {}), f"{where}.features")
    default = table.get("default_plan")
    if default is not None and (not isinstance(default, str) or default not in plans):
        raise PlansError(f"default_plan {default!r} is not one of the plans {sorted(plans)}")
    customers: dict[str, tuple[str | None, dict[str, Feature]]] = {}
    for cid, body in _table(table.get("customers", {}), "customers").items():
        where = f"customers.{cid}"
        entry = _table(body, where)
        _no_extra(entry, {"plan", "features"}, where)
        plan_name = entry.get("plan", default)
        if plan_name is not None and (not isinstance(plan_name, str) or plan_name not in plans):
            raise PlansError(f"{where}.plan {plan_name!r} is not one of the plans {sorted(plans)}")
        customers[cid] = (plan_name, _features(entry.get("features", {}), f"{where}.features"))
    return Plans(plans, customers, default)


def _features(data: object, where: str) -> dict[str, Feature]:
    features: dict[str, Feature] = {}
    for name, body in _table(data, where).items():
        at = f"{where}.{name}"
        entry = _table(body, at)
        _no_extra(entry, _FEATURE_KEYS, at)
        limit = entry.get("limit")
        if limit is not None and (
            isinstance(limit, bool)
            or not isinstance(limit, (int, float))
            or not 0 <= limit < float("inf")  # NaN and inf refused: omit it for unlimited
        ):
            raise PlansError(f"{at}.limit must be a number >= 0 (omit it for unlimited)")
        period = entry.get("period", "monthly")
        if period not in PERIODS:
            raise PlansError(f"{at}.period must be one of {', '.join(PERIODS)}, got {period!r}")
        unit = entry.get("unit", "quantity")
        if not isinstance(unit, str) or not unit:
            raise PlansError(f"{at}.unit must be a property name")
        features[name] = Feature(limit, period, unit)
    return features


def _table(data: object, where: str) -> dict[str, Any]:
    if not isinstance(data, dict) or not all(isinstance(k, str) and k for k in data):
        raise PlansError(f"{where} must be a table of named entries")
    return data


def _no_extra(table: dict[str, Any], allowed: set[str], where: str) -> None:
    extra = sorted(set(table) - allowed)
    if extra:
        raise PlansError(f"{where}: unknown key(s) {', '.join(extra)}; allowed: {sorted(allowed)}")
