"""Which keys a journal directory holds, and where, read from the files as documented.

The batch format (README, "The journal"): a header whose bytes 6-8 give its length and
8-12 its flags, then the events' exact bytes as JSON Lines; in a rejected file (flag 1)
each line is ``{"reasons": [...], "event": <the event>}``. Read here without importing
meterline, so the checker does not depend on how the library lays out its modules.
"""

from __future__ import annotations

import json
import os
import struct
from dataclasses import dataclass, field

from tests.chaos.dialects import KEY_FIELDS

MAGIC = b"\x89MLJ"
FLAG_REJECTED = 0x1
FOLDERS = ("ready", "rejected", "expired", "quarantine", "tmp")


@dataclass
class JournalView:
    """For each key: the folders holding it, with the reasons of a rejected entry."""

    where: dict[str, list[str]] = field(default_factory=dict)
    reasons: dict[str, list[str]] = field(default_factory=dict)
    bodies: dict[str, dict[str, object]] = field(default_factory=dict)
    unreadable: list[str] = field(default_factory=list)  # files this reader could not parse
    files: dict[str, int] = field(default_factory=dict)  # folder -> batch files

    def add(self, key: str, folder: str, body: dict[str, object]) -> None:
        self.where.setdefault(key, []).append(folder)
        self.bodies.setdefault(key, body)


def read(directory: str) -> JournalView:
    view = JournalView()
    for folder in FOLDERS:
        path = os.path.join(directory, folder)
        try:
            names = sorted(os.listdir(path))
        except FileNotFoundError:
            continue
        for name in names:
            if name.startswith(".") or name.endswith(".reason"):
                continue
            full = os.path.join(path, name)
            if not os.path.isfile(full):
                continue
            view.files[folder] = view.files.get(folder, 0) + 1
            _read_file(view, folder, full)
    return view


def _read_file(view: JournalView, folder: str, path: str) -> None:
    with open(path, "rb") as f:
        data = f.read()
    if len(data) < 12 or data[:4] != MAGIC:
        if data:  # an empty tmp file is a writer that died before writing
            view.unreadable.append(f"{folder}/{os.path.basename(path)}: not a batch file")
        return
    (header_len,) = struct.unpack_from("<H", data, 6)
    (flags,) = struct.unpack_from("<I", data, 8)
    payload = data[header_len:]
    if not payload:
        return
    for line in payload.split(b"\n"):
        try:
            doc = json.loads(line)
            if flags & FLAG_REJECTED:
                reasons = doc["reasons"]
                event = doc["event"]
            else:
                reasons, event = None, doc
            key = next(event[f] for f in KEY_FIELDS if isinstance(event.get(f), str))
        except (ValueError, KeyError, TypeError, StopIteration):
            view.unreadable.append(f"{folder}/{os.path.basename(path)}: a line is not an event")
            continue
        view.add(key, folder, event)
        if reasons is not None:
            view.reasons[key] = list(reasons)
