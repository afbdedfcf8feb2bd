"""Events, a fake clock and small helpers shared by the journal tests."""

from __future__ import annotations

import itertools
from pathlib import Path
from typing import Any

import orjson

_keys = itertools.count()


def event(key: str | None = None, *, customer: str = "cust_42", n: int = 1, **extra: Any) -> bytes:
    """One Orb ingest event, serialized once with orjson like the worker does (~200 bytes)."""
    if key is None:
        key = f"key-{next(_keys):08d}-5f0c2a7e-8d7b-4b1e-9d8e"
    body = {
        "idempotency_key": key,
        "external_customer_id": customer,
        "event_name": "api_call",
        "timestamp": "2026-11-22T04:00:00.000000Z",
        "properties": {"tokens": 812, "model": "small", "region": "eu-west-1", "n": n, **extra},
    }
    return orjson.dumps(body)


def batch(size: int, **kw: Any) -> list[bytes]:
    """``size`` fresh events with unique keys."""
    return [event(n=i, **kw) for i in range(size)]


def key_of(body: bytes) -> str:
    key = orjson.loads(body)["idempotency_key"]
    assert isinstance(key, str)
    return key


class FakeClock:
    """A wall clock that moves only when told."""

    def __init__(self, now: float = 1_795_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


def files(directory: Path, suffix: str = ".mlj") -> list[str]:
    """Sorted names of the batch files in one journal subdirectory."""
    return sorted(p.name for p in directory.iterdir() if p.name.endswith(suffix))
