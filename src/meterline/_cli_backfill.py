"""``meterline journal backfill``: send the journal's expired batches through Orb's backfills.

Batches that outlived ``journal_max_age`` sit in ``expired/``: older than the ingest grace
period, Orb would refuse them on ``/ingest``. A backfill takes them: for each stretch of at
most 31 days of their timestamps (Orb's limit) the command creates a backfill that adds
events (``replace_existing_events: false``, so nothing already counted is touched), ingests
the events with its ``backfill_id`` and closes it. A file is deleted only once every one of
its events was acknowledged and the backfill that took them was closed; a file with a
refused event stays in ``expired/`` (a later run sends it again, de-duplicated by key).
"""

from __future__ import annotations

import argparse
import os
import re
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import httpx
import orjson

from ._cli_journal import _config, _fail, _where
from ._config import Config
from .journal import _format as fmt

__all__ = ["add_backfill"]

MAX_SPAN = timedelta(days=31)  # Orb's default limit on one backfill's timeframe
_ATTEMPTS = 3
_FRACTION = re.compile(r"\.(\d+)")


@dataclass
class _File:
    path: Path
    events: list[bytes]
    keys: list[str]
    stamps: list[datetime]
    acked: set[str] = field(default_factory=set)
    refused: dict[str, list[str]] = field(default_factory=dict)


def add_backfill(journal: argparse.ArgumentParser) -> None:
    """Declare ``backfill`` among the subcommands of the ``journal`` parser."""
    sub = next(a for a in journal._actions if isinstance(a, argparse._SubParsersAction))
    backfill = sub.add_parser(
        "backfill",
        help="send expired/ batches through the destination's backfill API (Orb)",
        description="Send the batches in expired/ through Orb's backfills: create one per "
        "31 days of their timestamps, ingest with its backfill_id, close it. A file is "
        "deleted only after all its events were acknowledged and the backfill closed.",
    )
    _where(backfill)
    backfill.add_argument(
        "--dry-run", action="store_true", help="print what would be sent, send nothing"
    )
    backfill.set_defaults(handler=_backfill)


def _backfill(args: argparse.Namespace) -> int:
    config = _config(args)
    if config.destination.name != "orb":
        _fail(
            f"journal backfill needs a destination with a backfill API; only Orb has one, "
            f"not {config.destination.name} (requeue the batches or send them by hand)"
        )
    if not args.dry_run and config.api_key is None:
        _fail("backfill needs the API key: pass --api-key or set METERLINE_API_KEY")
    files, aside = _load(config)
    windows = _windows(files)
    total = sum(len(f.events) for f in files)
    print(f"expired     {len(files):,} batches, {total:,} events ({aside:,} files set aside)")
    for start, end, members in windows:
        count = sum(len(f.events) for f in members)
        verb = "would create" if args.dry_run else "creating"
        print(f"backfill    {verb} one for {_iso(start)} .. {_iso(end)}: {count:,} events")
    if args.dry_run or not files:
        return 0
    with httpx.Client(timeout=30.0) as http:
        sender = _Sender(http, config)
        for start, end, members in windows:
            sender.run(start, end, members)
    deleted = sum(_delete_if_done(f) for f in files)
    refused = {key: why for f in files for key, why in f.refused.items()}
    print(f"deleted     {deleted:,} of {len(files):,} expired batches")
    for key, why in list(refused.items())[:20]:
        print(f"refused     {key}: {'; '.join(why)}")
    if refused:
        print(
            f"meterline: {len(refused):,} events were refused; their batches stay in expired/",
            file=sys.stderr,
        )
    return 0 if deleted == len(files) else 1


def _load(config: Config) -> tuple[list[_File], int]:
    """The expired batches this key may send, oldest first, and how many were set aside."""
    directory = config.resolved_journal_dir() / "expired"
    if not directory.is_dir():
        _fail(f"no journal at {directory.parent}", 1)
    fingerprint = config.journal_fingerprint if config.api_key is not None else None
    key_field = config.destination.key_field
    files, aside = [], 0
    for name in sorted(os.listdir(directory)):
        if not fmt.is_batch_name(name):
            continue
        path = directory / name
        try:
            batch = fmt.decode(path.read_bytes(), key_field)
        except (OSError, fmt.BatchFormatError, fmt.FutureBatchError) as exc:
            print(f"skipped     {name}: {exc}", file=sys.stderr)
            aside += 1
            continue
        if fmt.is_foreign(batch.header, fingerprint):
            aside += 1
            continue
        try:
            docs = [orjson.loads(event) for event in batch.events]
            stamps = [_parse(doc["timestamp"]) for doc in docs]
            keys = [str(doc[key_field]) for doc in docs]
        except (KeyError, TypeError, ValueError) as exc:  # not events of Orb's shape
            print(
                f"skipped     {name}: an event has no readable timestamp ({exc})", file=sys.stderr
            )
            aside += 1
            continue
        files.append(_File(path, batch.events, keys, stamps))
    return files, aside


def _windows(files: Sequence[_File]) -> list[tuple[datetime, datetime, list[_File]]]:
    """Stretches of at most 31 days covering every event, with the files that have some."""
    stamps = sorted(s for f in files for s in f.stamps)
    windows: list[tuple[datetime, datetime, list[_File]]] = []
    index = 0
    while index < len(stamps):
        start = stamps[index]
        limit = start + MAX_SPAN
        while index < len(stamps) and stamps[index] < limit:
            index += 1
        end = min(stamps[index - 1] + timedelta(microseconds=1), limit)
        members = [f for f in files if any(start <= s < end for s in f.stamps)]
        windows.append((start, end, members))
    return windows


class _Sender:
    """One backfill at a time: create, ingest in batches, close."""

    def __init__(self, http: httpx.Client, config: Config) -> None:
        self._http = http
        self._base = (config.base_url or config.destination.default_base_url).rstrip("/")
        self._headers = {
            **config.destination.headers(config.api_key),
            "Content-Type": "application/json",
        }
        self._batch = config.destination.max_batch_events

    def run(self, start: datetime, end: datetime, members: Sequence[_File]) -> None:
        body = {
            "timeframe_start": _iso(start),
            "timeframe_end": _iso(end),
            "replace_existing_events": False,
        }
        backfill = self._call("POST", "/events/backfills", body)
        backfill_id = str(backfill["id"])
        pending = [
            (f, key, event)
            for f in members
            for key, event, stamp in zip(f.keys, f.events, f.stamps, strict=True)
            if start <= stamp < end
        ]
        sent = 0
        for offset in range(0, len(pending), self._batch):
            chunk = pending[offset : offset + self._batch]
            self._ingest(backfill_id, chunk)
            sent += len(chunk)
            print(f"\r  {backfill_id}  {sent:,}/{len(pending):,} events", end="", flush=True)
        print()
        closed = self._call("POST", f"/events/backfills/{backfill_id}/close", None)
        print(f"closed      {backfill_id}: {closed.get('status')}, {closed.get('events_ingested')}")

    def _ingest(self, backfill_id: str, chunk: list[tuple[_File, str, bytes]]) -> None:
        """Send a chunk; a 400 naming keys marks those refused and resends the rest once."""
        while chunk:
            payload = b'{"events":[' + b",".join(event for _, _, event in chunk) + b"]}"
            answer = self._post(f"/ingest?backfill_id={backfill_id}", payload)
            if answer.status_code == 200:
                for owner, key, _ in chunk:
                    owner.acked.add(key)
                return
            named = _named(answer)
            if answer.status_code != 400 or not named:
                _fail(f"ingest answered {answer.status_code}: {_detail(answer)}", 1)
            for owner, key, _ in chunk:
                if key in named:
                    owner.refused[key] = named[key]
            chunk = [item for item in chunk if item[1] not in named]

    def _call(self, method: str, path: str, body: object) -> dict[str, Any]:
        payload = None if body is None else orjson.dumps(body)
        answer = self._post(path, payload, method)
        if answer.status_code != 200:
            _fail(f"{method} {path} answered {answer.status_code}: {_detail(answer)}", 1)
        doc = answer.json()
        if not isinstance(doc, dict):
            _fail(f"{method} {path} answered with no object", 1)
        return doc

    def _post(self, path: str, payload: bytes | None, method: str = "POST") -> httpx.Response:
        """One request, retried twice on a connection error, a 429 or a 5xx."""
        for attempt in range(_ATTEMPTS):
            try:
                answer = self._http.request(
                    method, self._base + path, content=payload, headers=self._headers
                )
            except httpx.TransportError as exc:
                if attempt == _ATTEMPTS - 1:
                    _fail(f"{method} {path} failed: {type(exc).__name__}", 1)
            else:
                if answer.status_code != 429 and answer.status_code < 500:
                    return answer
                if attempt == _ATTEMPTS - 1:
                    return answer
            time.sleep(2**attempt)
        raise AssertionError("unreachable")


def _named(answer: httpx.Response) -> dict[str, list[str]]:
    try:
        doc = answer.json()
    except ValueError:
        return {}
    found: dict[str, list[str]] = {}
    entries = doc.get("validation_errors") if isinstance(doc, dict) else None
    for entry in entries if isinstance(entries, list) else []:
        if isinstance(entry, dict) and isinstance(entry.get("idempotency_key"), str):
            why = entry.get("validation_errors")
            found[entry["idempotency_key"]] = [str(w) for w in why] if isinstance(why, list) else []
    return found


def _detail(answer: httpx.Response) -> str:
    try:
        doc = answer.json()
    except ValueError:
        return answer.text[:200]
    return str(doc.get("detail") if isinstance(doc, dict) else doc)[:200]


def _delete_if_done(batch: _File) -> bool:
    if batch.refused or not set(batch.keys) <= batch.acked:
        return False
    batch.path.unlink()
    fd = os.open(batch.path.parent, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
    return True


def _parse(text: str) -> datetime:
    """A UTC timestamp as the destination wrote it (``...Z``, up to 9 fraction digits)."""
    text = _FRACTION.sub(lambda m: "." + m.group(1)[:6].ljust(6, "0"), text)
    return datetime.fromisoformat(text.replace("Z", "+00:00")).astimezone(timezone.utc)


def _iso(moment: datetime) -> str:
    return moment.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
