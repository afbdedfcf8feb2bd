"""Events, a fake clock and small helpers shared by the journal tests."""

from __future__ import annotations

import itertools
import struct
import zlib
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import orjson

MAGIC = b"\x89MLJ"  # spelled out, not imported: these bytes are what 0.1 wrote
FP_OURS = bytes.fromhex("0f1e2d3c4b5a69788796a5b4c3d2e1f0")
FP_THEIRS = bytes.fromhex("a1a2a3a4a5a6a7a8a9aaabacadaeafb0")

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


def craft(
    payload: bytes,
    count: int,
    *,
    version: int = 2,
    flags: int = 0,
    fingerprint: bytes = bytes(16),
    layout: int | None = None,
) -> bytes:
    """A batch file with correct CRCs around whatever payload and fields we like: the
    32-byte layout of version 1, else (or with ``layout=2``) the 48-byte layout with a
    fingerprint."""
    fields = (MAGIC, version, 0, flags, count, len(payload), zlib.crc32(payload))
    if (layout or (1 if version == 1 else 2)) == 1:
        head = struct.pack("<4sHHIIQI", *fields[:2], 32, *fields[3:])
    else:
        head = struct.pack("<4sHHIIQI16s", *fields[:2], 48, *fields[3:], fingerprint)
    return head + struct.pack("<I", zlib.crc32(head)) + payload


def encode_v1(events: Sequence[bytes]) -> bytes:
    """A batch file exactly as meterline 0.1 wrote it (format version 1, no fingerprint)."""
    return craft(b"\n".join(events), len(events), version=1)


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
