"""The names of batch files: they sort by creation time and are unique across processes."""

from __future__ import annotations

import re

__all__ = ["SUFFIX", "is_batch_name", "make_name", "name_time_ns"]

SUFFIX = ".mlj"
_NAME = re.compile(r"\A(\d{20})-\d+-\d+-[0-9a-f]+\.mlj\Z")


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
