"""Orb's ingest rules: request shapes, per-event checks, and the other endpoints' inputs.

Two kinds of failure are kept apart, as Orb does. A request whose *shape* is wrong (not
JSON, unknown keys, wrong types, nested properties) raises a 400 :class:`Problem` and nothing
in it is stored. An event with the right shape that breaks a *per-event* rule (customer ids,
timestamp bounds) is named with its reasons in the 400 that refuses its batch: Orb's 200
always has an empty ``validation_failed``.
"""

from __future__ import annotations

import json
import json.encoder
import re
from collections.abc import Callable
from typing import Any, NamedTuple

from meterline.server._backfill_store import Window
from meterline.server._problem import bad_request
from meterline.server._time import format_duration, format_instant, is_rfc3339_z, parse_instant

FUTURE_TOLERANCE_SECONDS = 300.0

INGEST_EVENT_KEYS = frozenset(
    {
        "customer_id",
        "external_customer_id",
        "event_name",
        "timestamp",
        "properties",
        "idempotency_key",
    }
)
AMEND_EVENT_KEYS = INGEST_EVENT_KEYS - {"idempotency_key"}
_SCALARS = (str, int, float)  # bool is an int; JSON null and containers are refused
_SCALAR_TYPES = frozenset({str, int, float, bool})
_OPTIONAL_ID_TYPES = frozenset({str, type(None)})
_SURROGATE_ESCAPE = re.compile(rb"\\u[dD][89a-fA-F]")
_COMPACT = json.JSONEncoder(separators=(",", ":"))


class ValidEvent(NamedTuple):
    """An event that passed every rule, in the column order of the ``events`` table."""

    idempotency_key: str
    customer: str
    customer_id: str | None
    external_customer_id: str | None
    event_name: str
    timestamp: str
    ts_us: int
    properties: str


def _flat_encoder() -> Callable[[dict[str, Any]], str]:
    """Compact JSON for flat dicts: json's C encoder built once (``encode()`` builds one per
    call, over a microsecond per event), checked against the plain encoder at import."""
    make = getattr(json.encoder, "c_make_encoder", None)
    if make is None:  # no C accelerator
        return _COMPACT.encode
    sample = {"s": "é\n", "i": -(2**70), "f": 0.1, "b": True, "z": False}
    try:
        encode = make(
            None, None, json.encoder.encode_basestring_ascii, None, ":", ",", False, False, True
        )
        if "".join(encode(sample, 0)) == _COMPACT.encode(sample):
            return lambda value: "".join(encode(value, 0))
    except TypeError:  # another signature in another Python version
        pass
    return _COMPACT.encode


encode_flat = _flat_encoder()


def parse_json(raw: bytes) -> Any:
    """Decode a JSON body, refusing NaN/Infinity, invalid UTF-8 and unpaired surrogates."""
    try:
        value = json.loads(raw, parse_constant=_refuse_constant)
        unpaired = _SURROGATE_ESCAPE.search(raw) is not None and not _encodable(value)
    except (ValueError, RecursionError) as exc:
        raise bad_request(f"the body is not valid JSON: {exc}") from None
    if unpaired:  # SQLite could not store such a string as UTF-8
        raise bad_request("the body contains an unpaired UTF-16 surrogate escape")
    return value


def _refuse_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON number")


def _encodable(value: Any) -> bool:
    if isinstance(value, str):
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            return False
        return True
    if isinstance(value, dict):
        return all(_encodable(k) and _encodable(v) for k, v in value.items())
    if isinstance(value, list):
        return all(_encodable(v) for v in value)
    return True


def ingest_events(body: Any) -> list[dict[str, Any]]:
    """Return the events of an ``IngestRequestBody``, or raise a 400 naming every shape error."""
    if not isinstance(body, dict):
        raise bad_request("the body must be a JSON object with an `events` array")
    errors: list[object] = [f"unknown field `{key}`" for key in sorted(body.keys() - {"events"})]
    events = body.get("events")
    if not isinstance(events, list):
        errors.append("`events` is required and must be an array")
        raise bad_request("; ".join(str(e) for e in errors), errors)
    for index, event in enumerate(events):
        if _plainly_valid(event):
            continue
        messages = shape_errors(event, INGEST_EVENT_KEYS, f"events[{index}]")
        if messages:
            key = event.get("idempotency_key") if isinstance(event, dict) else None
            if isinstance(key, str) and key:
                errors.append({"idempotency_key": key, "validation_errors": messages})
            else:
                errors.extend(messages)
    if errors:
        raise bad_request(f"{len(errors)} problem(s) with the request body", errors)
    return events


def _plainly_valid(event: Any) -> bool:
    """A quick yes for a well-formed ingest event; False means "let shape_errors look"."""
    return (
        type(event) is dict
        and event.keys() <= INGEST_EVENT_KEYS
        and type(event.get("event_name")) is str
        and type(event.get("timestamp")) is str
        and type(event.get("idempotency_key")) is str
        and event["idempotency_key"] != ""
        and type(event.get("properties")) is dict
        and _SCALAR_TYPES.issuperset(map(type, event["properties"].values()))
        and type(event.get("customer_id")) in _OPTIONAL_ID_TYPES
        and type(event.get("external_customer_id")) in _OPTIONAL_ID_TYPES
    )


def shape_errors(event: Any, allowed: frozenset[str], where: str) -> list[str]:
    """List what makes ``event`` break the schema (keys, types, flat properties)."""
    if not isinstance(event, dict):
        return [f"{where}: must be an object"]
    errors = [f"{where}: unknown field `{key}`" for key in sorted(event.keys() - allowed)]
    required = ("event_name", "timestamp", "properties", "idempotency_key")
    errors += [f"{where}: `{k}` is required" for k in required if k in allowed and k not in event]
    for name in ("customer_id", "external_customer_id"):
        value = event.get(name)
        if value is not None and not isinstance(value, str):
            errors.append(f"{where}.{name}: must be a string or null")
    for name in ("event_name", "timestamp", "idempotency_key"):
        if name in event and not isinstance(event[name], str):
            errors.append(f"{where}.{name}: must be a string")
    if event.get("idempotency_key") == "":
        errors.append(f"{where}.idempotency_key: must not be empty")
    properties = event.get("properties", {})
    if not isinstance(properties, dict):
        errors.append(f"{where}.properties: must be an object")
        return errors
    for key, value in properties.items():
        if not isinstance(value, _SCALARS):
            kind = "null" if value is None else "a nested " + type(value).__name__
            errors.append(
                f"{where}.properties.{key}: values must be strings, numbers or booleans, not {kind}"
            )
    return errors


def canonical(event: dict[str, Any]) -> str:
    """A stable text form of an event, for telling identical repeats from conflicts."""
    present = {k: v for k, v in event.items() if v is not None}
    return json.dumps(present, sort_keys=True, separators=(",", ":"))


def check_event(
    event: dict[str, Any],
    key: str,
    now_us: int | None,
    grace_us: int,
    window: Window | None = None,
) -> ValidEvent | list[str]:
    """Apply the per-event rules to a well-shaped event; ``now_us=None`` skips time bounds.

    In a backfill (``window``) the grace period gives way to the backfill's timeframe and
    the event must belong to the backfill's customer, when it has one.
    """
    errors: list[str] = []
    customer_id = event.get("customer_id")
    external_id = event.get("external_customer_id")
    if customer_id is not None and external_id is not None:
        errors.append("give exactly one of customer_id and external_customer_id, not both")
    elif customer_id is None and external_id is None:
        errors.append("one of customer_id or external_customer_id is required")
    elif (customer_id or external_id) == "":
        errors.append("the customer id must not be empty")
    if not event["event_name"]:
        errors.append("event_name must not be empty")
    ts_us = 0
    stamp = event["timestamp"]
    try:
        ts_us = parse_instant(stamp, require_utc=True)
    except ValueError as exc:
        errors.append(f"timestamp {exc}")
    else:
        if now_us is not None and ts_us > now_us + int(FUTURE_TOLERANCE_SECONDS * 1e6):
            errors.append("timestamp is more than 5 minutes in the future")
        elif window is not None:
            if not window.start_us <= ts_us < window.end_us:
                errors.append("timestamp is outside the backfill's timeframe")
        elif now_us is not None and ts_us < now_us - grace_us:
            grace = format_duration(grace_us / 1e6)
            errors.append(f"timestamp is older than the grace period ({grace})")
    if window is not None and not errors and not _in_scope(window, customer_id, external_id):
        errors.append("the event's customer is not the backfill's customer")
    customer = customer_id if customer_id is not None else external_id
    if errors or customer is None:
        return errors
    # tuple.__new__ skips the generated, slower ValidEvent.__new__ (this runs per event).
    return tuple.__new__(
        ValidEvent,
        (
            key,
            customer,
            customer_id,
            external_id,
            event["event_name"],
            stamp if is_rfc3339_z(stamp) else format_instant(ts_us),
            ts_us,
            encode_flat(event["properties"]),
        ),
    )


def _in_scope(window: Window, customer_id: str | None, external_id: str | None) -> bool:
    if window.customer_id is not None:
        return customer_id == window.customer_id
    return window.external_customer_id is None or external_id == window.external_customer_id


def unique_events(events: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Events by key, batch order; a key repeated with a different body rejects the batch."""
    unique: dict[str, dict[str, Any]] = {}
    conflicts: dict[str, None] = {}
    for event in events:
        key = event["idempotency_key"]
        first = unique.setdefault(key, event)
        if first is not event and canonical(first) != canonical(event):
            conflicts[key] = None
    if conflicts:
        message = "the key appears more than once in this batch with different bodies"
        errors: list[object] = [
            {"idempotency_key": key, "validation_errors": [message]} for key in conflicts
        ]
        raise bad_request(
            f"{len(conflicts)} idempotency key(s) repeated with different bodies;"
            " the whole batch was rejected",
            errors,
        )
    return unique
