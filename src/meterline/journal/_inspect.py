"""What an operator sees of one batch file: every header field as stored, the checks'
results, the events decoded as far as they go and any quarantine reason
(``meterline journal inspect``). Reading only, and never raising for a bad file: reporting
it is the point.
"""

from __future__ import annotations

import os
import struct
import zlib

import orjson

from meterline._errors import JournalError

from . import _format as fmt

__all__ = ["inspect_bytes", "inspect_file"]


def inspect_file(path: str | os.PathLike[str]) -> dict[str, object]:
    """Header fields, check result, decoded events and any quarantine reason of one file.

    For the CLI: never raises for a bad file (reporting it is the point), JournalError if
    the file cannot be read.
    """
    path = os.fspath(path)
    try:
        with open(path, "rb") as handle:
            data = handle.read()
    except OSError as exc:
        raise JournalError(exc.errno, f"cannot read {path}: {exc.strerror}", path) from exc
    ns = fmt.name_time_ns(os.path.basename(path))
    try:
        with open(path + ".reason", encoding="utf-8", errors="replace") as handle:
            reason: str | None = handle.read()
    except FileNotFoundError:
        reason = None
    return {
        "path": path,
        "created": None if ns is None else ns / 1e9,
        **inspect_bytes(data),
        "reason": reason,
    }


def inspect_bytes(data: bytes) -> dict[str, object]:
    """Every header field as stored, the check result, and the events decoded as far as
    they go (for ``meterline journal inspect``); never raises."""
    info: dict[str, object] = {"size": len(data), "ok": False, "future": False, "error": None}
    lines: list[bytes] = []
    if len(data) >= fmt.PREFIX.size:
        magic, version, header_len = fmt.PREFIX.unpack_from(data)
        info.update(magic=magic.hex(), version=version, header_len=header_len)
    layout = _layout_of(data)
    if layout is not None and len(data) >= layout.size:
        fields = layout.unpack_from(data)
        size = layout.size
        info.update(
            flags=fields[3],
            count=fields[4],
            payload_len=fields[5],
            payload_crc=fields[6],
            fingerprint=fields[7].hex() if layout is fmt.HEADER else None,
            header_crc=fields[-1],
            computed_header_crc=zlib.crc32(data[: size - 4]),
            computed_payload_crc=zlib.crc32(data[size:]),
        )
        lines = data[size:].split(b"\n") if len(data) > size else []
    reasons: list[list[str]] | None = None
    try:
        batch = fmt.decode(data, key_field=None)  # any destination's file
    except fmt.FutureBatchError as exc:
        info.update(future=True, error=str(exc))
    except fmt.BatchFormatError as exc:
        info["error"] = str(exc)
    else:
        info["ok"] = True
        lines, reasons = batch.events, batch.reasons
    info["events"] = [_best_effort(line) for line in lines]
    info["reasons"] = reasons
    return info


def _layout_of(data: bytes) -> struct.Struct | None:
    """The header layout a (possibly damaged) file claims: by its version, else (a damaged
    version field) by its header length; None for a newer or unrecognizable header."""
    if len(data) < fmt.PREFIX.size:
        return None
    _magic, version, header_len = fmt.PREFIX.unpack_from(data)
    if version in fmt.LAYOUTS:
        return fmt.LAYOUTS[version]
    if version > fmt.VERSION:
        return None  # a newer layout: only its first 8 bytes are known
    return next((lay for lay in fmt.LAYOUTS.values() if lay.size == header_len), None)


def _best_effort(line: bytes) -> object:
    try:
        return orjson.loads(line)
    except orjson.JSONDecodeError:
        return line.decode("utf-8", errors="replace")  # shown as text: what is there
