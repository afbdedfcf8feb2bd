"""Billable metrics of the reference server: definitions, their file, and a thread-safe registry.

A metric aggregates one event name's events: ``count`` them, or ``sum``, ``max``, ``unique``
(distinct values) or ``latest`` (the value in the latest event) of one property. Definitions
come from ``meterline serve --metrics FILE`` (TOML or JSON) and from ``POST /v1/metrics``;
the registry lives in memory, so metrics made over HTTP last as long as the process.
"""

from __future__ import annotations

import json
import re
import sys
import threading
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from os import PathLike
from pathlib import Path
from typing import Any, Union

from meterline.server._problem import Problem, bad_request

AGGREGATIONS = ("count", "sum", "max", "unique", "latest")
_NAME = re.compile(r"[A-Za-z0-9_.:-]{1,100}")
_FIELDS = frozenset({"name", "event_name", "aggregation", "property"})


class MetricError(ValueError):
    """A metric definition (or the file holding them) is not valid."""


class MetricConflictError(MetricError):
    """A metric of that name exists with another definition."""


@dataclass(frozen=True)
class Metric:
    """One billable metric: ``aggregation`` over ``property`` of ``event_name``'s events."""

    name: str
    event_name: str
    aggregation: str
    property: str | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not _NAME.fullmatch(self.name):
            raise MetricError(
                f"metric name {self.name!r} must be 1 to 100 letters, digits or _ . : -"
            )
        if not isinstance(self.event_name, str) or not self.event_name:
            raise MetricError(f"metric {self.name}: `event_name` must be a non-empty string")
        if self.aggregation not in AGGREGATIONS:
            raise MetricError(
                f"metric {self.name}: `aggregation` must be one of {', '.join(AGGREGATIONS)}"
            )
        if self.aggregation == "count":
            if self.property is not None:
                raise MetricError(f"metric {self.name}: a count takes no `property`")
        elif not isinstance(self.property, str) or not self.property:
            raise MetricError(f"metric {self.name}: {self.aggregation} needs a `property`")

    @classmethod
    def from_mapping(cls, data: object) -> Metric:
        """A metric from a JSON/TOML object with ``name``, ``event_name``, ``aggregation``."""
        if not isinstance(data, Mapping):
            raise MetricError("a metric must be an object")
        unknown = sorted(set(data) - _FIELDS)
        if unknown:
            raise MetricError(f"unknown metric field(s): {', '.join(map(str, unknown))}")
        missing = [k for k in ("name", "event_name", "aggregation") if k not in data]
        if missing:
            raise MetricError(f"a metric needs {', '.join(f'`{k}`' for k in missing)}")
        return cls(data["name"], data["event_name"], data["aggregation"], data.get("property"))

    def as_dict(self) -> dict[str, Any]:
        """The JSON form ``GET /v1/metrics`` answers with."""
        return {
            "name": self.name,
            "event_name": self.event_name,
            "aggregation": self.aggregation,
            "property": self.property,
        }


MetricSource = Union[str, "PathLike[str]", Iterable[Union["Metric", Mapping[str, Any]]]]


def load_metrics(path: str | PathLike[str]) -> list[Metric]:
    """The metrics of a ``.toml`` or ``.json`` file: ``[[metric]]`` tables or ``{"metric": []}``.

    TOML needs Python 3.11's ``tomllib`` (the server imports nothing outside the standard
    library, so on 3.10 give a ``.json`` file); JSON always works.
    """
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise MetricError(f"cannot read the metrics file {path}: {exc.strerror}") from None
    try:
        data = json.loads(text) if path.suffix.lower() == ".json" else _toml_loads(text)
    except ValueError as exc:  # json.JSONDecodeError and tomllib.TOMLDecodeError
        raise MetricError(f"{path} is not valid: {exc}") from None
    if not isinstance(data, dict) or set(data) - {"metric"}:
        raise MetricError(f"{path}: expected only `metric` entries (a list of metric tables)")
    entries = data.get("metric", [])
    if not isinstance(entries, list):
        raise MetricError(f"{path}: `metric` must be a list of tables")
    try:
        return check_unique([Metric.from_mapping(entry) for entry in entries])
    except MetricError as exc:
        raise MetricError(f"{path}: {exc}") from None


def _toml_loads(text: str) -> Any:
    if sys.version_info >= (3, 11):
        import tomllib

        return tomllib.loads(text)
    raise MetricError(  # pragma: no cover - Python 3.10 has no tomllib
        "a TOML metrics file needs Python 3.11; give the metrics as a .json file"
    )


def check_unique(metrics: Iterable[Metric]) -> list[Metric]:
    """``metrics`` as a list, refusing two different definitions of one name."""
    seen: dict[str, Metric] = {}
    for metric in metrics:
        if seen.get(metric.name, metric) != metric:
            raise MetricError(f"metric {metric.name} is defined twice, differently")
        seen[metric.name] = metric
    return list(seen.values())


class MetricRegistry:
    """The server's metrics by name; safe from any thread."""

    def __init__(self, metrics: Iterable[Metric] = ()) -> None:
        self._lock = threading.Lock()
        self._metrics = {m.name: m for m in check_unique(metrics)}

    def all(self) -> list[Metric]:
        """Every metric, sorted by name."""
        with self._lock:
            return [self._metrics[name] for name in sorted(self._metrics)]

    def define(self, metric: Metric) -> bool:
        """Add ``metric``; False when it already exists, identical. A different one raises."""
        with self._lock:
            known = self._metrics.get(metric.name)
            if known is None:
                self._metrics[metric.name] = metric
                return True
        if known != metric:
            raise MetricConflictError(
                f"a different metric named {metric.name} exists; metrics cannot be changed"
            )
        return False


def as_metrics(source: MetricSource) -> list[Metric]:
    """The metrics of a file path, or of an iterable of ``Metric`` objects and mappings."""
    if isinstance(source, (str, PathLike)):
        return load_metrics(source)
    return check_unique(m if isinstance(m, Metric) else Metric.from_mapping(m) for m in source)


def define_from_body(registry: MetricRegistry, body: Any) -> tuple[Metric, bool]:
    """Define the metric of a ``POST /v1/metrics`` body: a 400 if invalid, 409 if it differs."""
    try:
        metric = Metric.from_mapping(body)
        return metric, registry.define(metric)
    except MetricConflictError as exc:
        raise Problem(409, "Metric already defined", str(exc)) from None
    except MetricError as exc:
        raise bad_request(str(exc)) from None
