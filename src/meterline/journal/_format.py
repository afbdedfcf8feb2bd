"""The on-disk format of a journal batch file (its names are ``_names``, re-exported here).

A batch file is a little-endian header followed by the payload. Version 2 (written by
this meterline) has a 48-byte header; version 1 (meterline 0.1, still read) had 32::

    offset size field
         0    4 magic          b"\\x89MLJ"
         4    2 version        2 (1 in files of meterline 0.1)
         6    2 header_len     48 (32 in version 1); the header CRC is always its last 4 bytes
         8    4 flags          0, or FLAG_REJECTED
        12    4 count          number of events
        16    8 payload_len    bytes after the header
        24    4 payload_crc    CRC32 of the payload
        28   16 fingerprint    where the batch may be replayed (absent in version 1)
        44    4 header_crc     CRC32 of header bytes [0, header_len - 4) (offset 28 in v1)

``fingerprint`` is 16 opaque bytes the writer is given (a one-way hash of destination,
endpoint and credential, see ``Config.journal_fingerprint``); all zeros from a writer
that has none. A version-1 file has no fingerprint (``Header.fingerprint`` is None): it
predates keying, and any replayer may send it.

The payload is the events joined by ``b"\\n"`` (JSON Lines, no trailing newline): each
line is the exact bytes the worker serialized for the destination, a JSON object with a
string idempotency key in the destination's own field (Orb's ``idempotency_key`` unless
the journal is told another). In a rejected file
(``FLAG_REJECTED``) each line is instead
``{"reasons":[...],"event":<the event bytes, verbatim>}``, so the event comes back exact.

Every version keeps the first 8 bytes and the trailing header CRC, so the header CRC is
verified before the version is believed: a flipped bit in the version field is
corruption, while a sound header of a newer version is left alone (a rollback never
destroys data). Nothing here does I/O.
"""

from __future__ import annotations

import struct
import zlib
from collections.abc import Sequence
from dataclasses import dataclass

import orjson

# Re-exported: the journal's modules and tests name a file's name and its format as one.
from ._names import SUFFIX as SUFFIX
from ._names import is_batch_name as is_batch_name
from ._names import make_name as make_name
from ._names import name_time_ns as name_time_ns

MAGIC = b"\x89MLJ"
VERSION = 2
FLAG_REJECTED = 0x1
KNOWN_FLAGS = FLAG_REJECTED
FINGERPRINT_SIZE = 16
NO_FINGERPRINT = bytes(FINGERPRINT_SIZE)  # written by a journal that was given none

PREFIX = struct.Struct("<4sHH")  # magic, version, header_len: the same in every version
_HEADER_V1 = struct.Struct("<4sHHIIQII")
HEADER = struct.Struct("<4sHHIIQI16sI")
HEADER_SIZE = HEADER.size  # 48: what this version writes
LAYOUTS = {1: _HEADER_V1, 2: HEADER}  # every version this one reads
_MIN_HEADER = PREFIX.size + 4
MAX_HEADER = 4096  # a future header may grow, up to this
_REJECTED_KEYS = frozenset(("reasons", "event"))


class BatchFormatError(Exception):
    """The bytes are not a sound batch file; the message says why (for ``.reason``)."""


class FutureBatchError(Exception):
    """A sound header written by a newer meterline: leave the file alone."""


class ForeignBatchError(Exception):
    """A sound header whose fingerprint is not the reader's: leave the file alone."""

    def __init__(self, header: Header) -> None:
        theirs = header.fingerprint or NO_FINGERPRINT
        super().__init__(f"written for fingerprint {short(theirs)}")
        self.fingerprint = theirs


@dataclass(frozen=True, slots=True)
class Header:
    """The fields of a verified header; ``fingerprint`` is None in a version-1 file."""

    version: int
    header_len: int
    flags: int
    count: int
    payload_len: int
    payload_crc: int
    fingerprint: bytes | None
    header_crc: int


@dataclass(frozen=True, slots=True)
class Batch:
    """A verified batch: its header, exact event bytes and, for a rejected file, reasons."""

    header: Header
    events: list[bytes]
    reasons: list[list[str]] | None


KEY_FIELD = "idempotency_key"  # Orb's; a journal for another destination names its own


def check_events(events: Sequence[bytes], key_field: str = KEY_FIELD) -> None:
    """Raise ValueError unless each event is bytes, one line, and a JSON object with a
    string in ``key_field`` (the destination's idempotency key): what ``decode`` will
    demand of it."""
    for index, event in enumerate(events):
        if not isinstance(event, bytes):
            raise ValueError(f"event {index} must be bytes, not {type(event).__name__}")
        if b"\n" in event:
            raise ValueError(f"event {index} contains a newline")
    bad = first_bad(events, key_field)
    if bad is not None:
        raise ValueError(f"event {bad[0]} is {bad[1]}")


def first_bad(lines: Sequence[bytes], key_field: str | None = KEY_FIELD) -> tuple[int, str] | None:
    """The index of the first line that is not a JSON object with a string ``key_field``,
    and why; None if all are (``key_field`` None: any object). One tight loop: this is the
    hot path of spill and read."""
    loads, decode_error = orjson.loads, orjson.JSONDecodeError
    for index, line in enumerate(lines):
        try:
            obj = loads(line)
        except decode_error:
            return index, "not valid JSON"
        if type(obj) is not dict:
            return index, "not a JSON object"
        if key_field is not None and type(obj.get(key_field)) is not str:
            return index, f"without a string {key_field}"
    return None


def is_foreign(header: Header, fingerprint: bytes | None) -> bool:
    """Whether a reader keyed with ``fingerprint`` must leave this file alone: a version-2
    file written for another fingerprint. A reader without one reads every file, and a
    version-1 file (no fingerprint: it predates keying) is read by every reader."""
    return (
        fingerprint is not None
        and header.fingerprint is not None
        and header.fingerprint != fingerprint
    )


def short(fingerprint: bytes) -> str:
    """A fingerprint as a short hex prefix, enough to tell journals apart in a log line."""
    return fingerprint[:4].hex() + "..."


def check_fingerprint(fingerprint: object) -> bytes:
    """``fingerprint`` if it is exactly 16 bytes, else ValueError."""
    if not isinstance(fingerprint, bytes) or len(fingerprint) != FINGERPRINT_SIZE:
        raise ValueError(f"a journal fingerprint is {FINGERPRINT_SIZE} bytes")
    return fingerprint


def encode(
    events: Sequence[bytes], *, fingerprint: bytes = NO_FINGERPRINT, key_field: str = KEY_FIELD
) -> bytes:
    """A whole batch file for ``events``; ValueError if the batch is empty or invalid."""
    check_fingerprint(fingerprint)
    if not events:
        raise ValueError("a batch needs at least one event")
    check_events(events, key_field)
    return _pack(b"\n".join(events), len(events), 0, fingerprint)


def encode_rejected(
    items: Sequence[tuple[bytes, Sequence[str]]],
    *,
    fingerprint: bytes = NO_FINGERPRINT,
    key_field: str = KEY_FIELD,
) -> bytes:
    """A rejected file: each event (verbatim) with the server's reasons."""
    check_fingerprint(fingerprint)
    if not items:
        raise ValueError("a batch needs at least one event")
    check_events([event for event, _ in items], key_field)
    lines = []
    for event, reasons in items:
        if isinstance(reasons, (str, bytes)) or not all(isinstance(r, str) for r in reasons):
            raise ValueError("reasons must be a sequence of str")
        lines.append(_rejected_prefix(list(reasons)) + event + b"}")
    return _pack(b"\n".join(lines), len(lines), FLAG_REJECTED, fingerprint)


def _rejected_prefix(reasons: list[str]) -> bytes:
    return b'{"reasons":' + orjson.dumps(reasons) + b',"event":'


def _pack(payload: bytes, count: int, flags: int, fingerprint: bytes) -> bytes:
    crc = zlib.crc32(payload)
    head = HEADER.pack(MAGIC, VERSION, HEADER_SIZE, flags, count, len(payload), crc, fingerprint, 0)
    return head[:-4] + struct.pack("<I", zlib.crc32(head[:-4])) + payload


def decode_header(data: bytes) -> Header:
    """Verify and parse the header at the start of ``data`` (the payload is not checked)."""
    if not data:
        raise BatchFormatError("empty file")
    if len(data) < PREFIX.size:
        raise BatchFormatError(f"truncated header ({len(data)} bytes)")
    magic, version, header_len = PREFIX.unpack_from(data)
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
    layout = LAYOUTS.get(version)
    if layout is None or header_len != layout.size:
        raise BatchFormatError(f"unknown version {version} / header length {header_len}")
    fields = layout.unpack_from(data)
    flags, count, payload_len, payload_crc = fields[3:7]
    fingerprint = None if version == 1 else fields[7]  # version 1 predates keying
    header = Header(
        version, header_len, flags, count, payload_len, payload_crc, fingerprint, fields[-1]
    )
    if header.flags & ~KNOWN_FLAGS:
        raise FutureBatchError(f"unknown flags {header.flags:#x}")
    return header


def decode(data: bytes, key_field: str | None = KEY_FIELD) -> Batch:
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
        bad = first_bad(lines, key_field)
        if bad is not None:
            raise BatchFormatError(f"event {bad[0]} is {bad[1]}")
        return Batch(header, lines, None)
    events, reasons = [], []
    for index, line in enumerate(lines):
        event, why = _split_rejected(line, index, key_field)
        events.append(event)
        reasons.append(why)
    return Batch(header, events, reasons)


def _split_rejected(line: bytes, index: int, key_field: str | None) -> tuple[bytes, list[str]]:
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
    bad = first_bad([event], key_field)
    if bad is not None:
        raise BatchFormatError(f"rejected entry {index}: the event is {bad[1]}")
    return event, reasons


def peek(head: bytes) -> Header | FutureBatchError | None:
    """The sound header at the start of ``head``, the FutureBatchError of a newer one, or
    None for a header that fails its checks (for ``status()``; the payload is unchecked)."""
    try:
        return decode_header(head)
    except FutureBatchError as exc:
        return exc
    except BatchFormatError:
        return None  # the count is unknown until read() checks the file; status shows 0
