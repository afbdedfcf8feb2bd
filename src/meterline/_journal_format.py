"""The on-disk format of a journal batch file, and batch file names.

A batch file is a 32-byte little-endian header followed by the payload::

    offset size field
         0    4 magic          b"\\x89MLJ"
         4    2 version        1
         6    2 header_len     32 (the header CRC is always the last 4 bytes of the header)
         8    4 flags          0, or FLAG_REJECTED
        12    4 count          number of events
        16    8 payload_len    bytes after the header
        24    4 payload_crc    CRC32 of the payload
        28    4 header_crc     CRC32 of header bytes [0, header_len - 4)

The payload is the events joined by ``b"\\n"`` (JSON Lines, no trailing newline): each
line is the exact bytes the worker serialized, a JSON object with a string
``idempotency_key``. In a rejected file (``FLAG_REJECTED``) each line is instead
``{"reasons":[...],"event":<the event bytes, verbatim>}``, so the event comes back exact.

Every future version keeps the first 8 bytes and the trailing header CRC, so the header
CRC is verified before the version is believed: a flipped bit in the version field is
corruption, while a sound header of a newer version is left alone (a rollback never
destroys data). Nothing here does I/O.
"""

from __future__ import annotations

import re
import struct
import zlib
from collections.abc import Sequence
from dataclasses import dataclass

import orjson

MAGIC = b"\x89MLJ"
VERSION = 1
FLAG_REJECTED = 0x1
KNOWN_FLAGS = FLAG_REJECTED
SUFFIX = ".mlj"

_PREFIX = struct.Struct("<4sHH")  # magic, version, header_len: the same in every version
_HEADER = struct.Struct("<4sHHIIQII")
HEADER_SIZE = _HEADER.size  # 32
_MIN_HEADER = _PREFIX.size + 4
MAX_HEADER = 4096  # a future header may grow, up to this
_NAME = re.compile(r"\A(\d{20})-\d+-\d+-[0-9a-f]+\.mlj\Z")
_REJECTED_KEYS = frozenset(("reasons", "event"))


class BatchFormatError(Exception):
    """The bytes are not a sound batch file; the message says why (for ``.reason``)."""


class FutureBatchError(Exception):
    """A sound header written by a newer meterline: leave the file alone."""


@dataclass(frozen=True, slots=True)
class Header:
    """The fields of a verified version-1 header."""

    version: int
    header_len: int
    flags: int
    count: int
    payload_len: int
    payload_crc: int
    header_crc: int


@dataclass(frozen=True, slots=True)
class Batch:
    """A verified batch: its header, exact event bytes and, for a rejected file, reasons."""

    header: Header
    events: list[bytes]
    reasons: list[list[str]] | None


def check_events(events: Sequence[bytes]) -> None:
    """Raise ValueError unless each event is bytes, one line, and a JSON object with a
    string ``idempotency_key``: what ``decode`` will demand of it."""
    for index, event in enumerate(events):
        if not isinstance(event, bytes):
            raise ValueError(f"event {index} must be bytes, not {type(event).__name__}")
        if b"\n" in event:
            raise ValueError(f"event {index} contains a newline")
    bad = first_bad(events)
    if bad is not None:
        raise ValueError(f"event {bad[0]} is {bad[1]}")


def first_bad(lines: Sequence[bytes]) -> tuple[int, str] | None:
    """The index of the first line that is not a JSON object with a string
    ``idempotency_key``, and why; None if all are. One tight loop: this is the hot path
    of both spill and read."""
    loads, decode_error = orjson.loads, orjson.JSONDecodeError
    for index, line in enumerate(lines):
        try:
            obj = loads(line)
        except decode_error:
            return index, "not valid JSON"
        if type(obj) is not dict:
            return index, "not a JSON object"
        if type(obj.get("idempotency_key")) is not str:
            return index, "without a string idempotency_key"
    return None


def encode(events: Sequence[bytes]) -> bytes:
    """A whole batch file for ``events``; ValueError if the batch is empty or invalid."""
    if not events:
        raise ValueError("a batch needs at least one event")
    check_events(events)
    return _pack(b"\n".join(events), len(events), 0)


def encode_rejected(items: Sequence[tuple[bytes, Sequence[str]]]) -> bytes:
    """A rejected file: each event (verbatim) with the server's reasons."""
    if not items:
        raise ValueError("a batch needs at least one event")
    check_events([event for event, _ in items])
    lines = []
    for event, reasons in items:
        if isinstance(reasons, (str, bytes)) or not all(isinstance(r, str) for r in reasons):
            raise ValueError("reasons must be a sequence of str")
        lines.append(_rejected_prefix(list(reasons)) + event + b"}")
    return _pack(b"\n".join(lines), len(lines), FLAG_REJECTED)


def _rejected_prefix(reasons: list[str]) -> bytes:
    return b'{"reasons":' + orjson.dumps(reasons) + b',"event":'


def _pack(payload: bytes, count: int, flags: int) -> bytes:
    head = _HEADER.pack(
        MAGIC, VERSION, HEADER_SIZE, flags, count, len(payload), zlib.crc32(payload), 0
    )
    return head[:-4] + struct.pack("<I", zlib.crc32(head[:-4])) + payload


def decode_header(data: bytes) -> Header:
    """Verify and parse the header at the start of ``data`` (the payload is not checked)."""
    if not data:
        raise BatchFormatError("empty file")
    if len(data) < _PREFIX.size:
        raise BatchFormatError(f"truncated header ({len(data)} bytes)")
    magic, version, header_len = _PREFIX.unpack_from(data)
    if magic != MAGIC:
        raise BatchFormatError(f"unknown magic {magic!r}")
    if not _MIN_HEADER <= header_len <= MAX_HEADER:
        raise BatchFormatError(f"impossible header length {header_len}")
    if len(data) < header_len:
        raise BatchFormatError(f"truncated header ({len(data)} of {header_len} bytes)")
    (stored,) = struct.unpack_from("<I", data, header_len - 4)
    computed = zlib.crc32(data[: header_len - 4])
    if stored != computed:
        raise BatchFormatError(f"header CRC mismatch (stored {stored:#010x}, {computed:#010x})")
    if version > VERSION:
        raise FutureBatchError(f"format version {version} is newer than {VERSION}")
    if version != VERSION or header_len != HEADER_SIZE:
        raise BatchFormatError(f"unknown version {version} / header length {header_len}")
    fields = _HEADER.unpack_from(data)
    header = Header(version, header_len, *fields[3:])
    if header.flags & ~KNOWN_FLAGS:
        raise FutureBatchError(f"unknown flags {header.flags:#x}")
    return header


def decode(data: bytes) -> Batch:
    """Verify every check of a batch file and return its events, exactly as spilled."""
    header = decode_header(data)
    payload = data[header.header_len :]
    if len(payload) != header.payload_len:
        raise BatchFormatError(f"payload is {len(payload)} bytes, header says {header.payload_len}")
    crc = zlib.crc32(payload)
    if crc != header.payload_crc:
        raise BatchFormatError(f"payload CRC mismatch (stored {header.payload_crc:#010x})")
    lines = payload.split(b"\n")
    if len(lines) != header.count:
        raise BatchFormatError(f"payload has {len(lines)} lines, header says {header.count}")
    if not header.flags & FLAG_REJECTED:
        bad = first_bad(lines)
        if bad is not None:
            raise BatchFormatError(f"event {bad[0]} is {bad[1]}")
        return Batch(header, lines, None)
    events, reasons = [], []
    for index, line in enumerate(lines):
        event, why = _split_rejected(line, index)
        events.append(event)
        reasons.append(why)
    return Batch(header, events, reasons)


def _split_rejected(line: bytes, index: int) -> tuple[bytes, list[str]]:
    try:
        obj = orjson.loads(line)
    except orjson.JSONDecodeError:
        raise BatchFormatError(f"rejected entry {index}: not valid JSON") from None
    if not isinstance(obj, dict) or obj.keys() != _REJECTED_KEYS:
        raise BatchFormatError(f"rejected entry {index}: not a reasons/event object")
    reasons = obj["reasons"]
    if not isinstance(reasons, list) or not all(isinstance(r, str) for r in reasons):
        raise BatchFormatError(f"rejected entry {index}: reasons is not a list of strings")
    prefix = _rejected_prefix(reasons)
    if not line.startswith(prefix) or not line.endswith(b"}"):
        raise BatchFormatError(f"rejected entry {index}: not in canonical form")
    event = line[len(prefix) : -1]
    bad = first_bad([event])
    if bad is not None:
        raise BatchFormatError(f"rejected entry {index}: the event is {bad[1]}")
    return event, reasons


def peek_count(head: bytes) -> int | None:
    """The event count in a sound version-1 header, or None (for ``status()``; unverified)."""
    try:
        return decode_header(head).count
    except (BatchFormatError, FutureBatchError):
        return None  # the count is unknown until read() checks the file; status shows 0


def inspect_bytes(data: bytes) -> dict[str, object]:
    """Every header field as stored, the check result, and the events decoded as far as
    they go (for ``meterline journal inspect``); never raises."""
    info: dict[str, object] = {"size": len(data), "ok": False, "future": False, "error": None}
    lines: list[bytes] = []
    if len(data) >= HEADER_SIZE:
        magic, version, header_len, flags, count, payload_len, payload_crc, header_crc = (
            _HEADER.unpack_from(data)
        )
        info.update(
            magic=magic.hex(),
            version=version,
            header_len=header_len,
            flags=flags,
            count=count,
            payload_len=payload_len,
            payload_crc=payload_crc,
            header_crc=header_crc,
            computed_header_crc=zlib.crc32(data[: HEADER_SIZE - 4]),
            computed_payload_crc=zlib.crc32(data[HEADER_SIZE:]),
        )
        lines = data[HEADER_SIZE:].split(b"\n") if len(data) > HEADER_SIZE else []
    reasons: list[list[str]] | None = None
    try:
        batch = decode(data)
    except FutureBatchError as exc:
        info.update(future=True, error=str(exc))
    except BatchFormatError as exc:
        info["error"] = str(exc)
    else:
        info["ok"] = True
        lines, reasons = batch.events, batch.reasons
    info["events"] = [_best_effort(line) for line in lines]
    info["reasons"] = reasons
    return info


def _best_effort(line: bytes) -> object:
    try:
        return orjson.loads(line)
    except orjson.JSONDecodeError:
        return line.decode("utf-8", errors="replace")  # shown as text: what is there


def make_name(time_ns: int, pid: int, seq: int, token: str) -> str:
    """``{time_ns:020d}-{pid}-{seq:06d}-{hex}.mlj``: sorts by time, unique across processes."""
    return f"{time_ns:020d}-{pid:010d}-{seq % 1_000_000:06d}-{token}{SUFFIX}"


def name_time_ns(name: str) -> int | None:
    """The creation time (ns since the epoch) written in a batch name, if it has one."""
    match = _NAME.match(name)
    return int(match.group(1)) if match else None


def is_batch_name(name: str) -> bool:
    """Whether a directory entry is a batch file (and not a sidecar or a stray file)."""
    return name.endswith(SUFFIX) and not name.startswith(".")
