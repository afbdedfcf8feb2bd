"""``meterline journal status|replay|inspect|requeue``: the operator's view of a journal."""

from __future__ import annotations

import argparse
import json
import os
import sys
import threading
import time
from pathlib import Path
from typing import Any

from ._config import Config
from ._errors import MeterlineError
from ._journal import Journal, inspect_file

__all__ = ["add_journal"]


def add_journal(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Declare ``journal`` and its four subcommands on the ``meterline`` parser."""
    journal = subparsers.add_parser(
        "journal",
        help="inspect and drain the on-disk journal",
        description="Inspect, replay and requeue the batches meterline keeps on disk.",
    )
    sub = journal.add_subparsers(title="journal commands", metavar="ACTION", required=True)

    status = sub.add_parser("status", help="counts, bytes and the oldest batch's age")
    _where(status)
    status.add_argument("--json", action="store_true", help="print one JSON object")
    status.set_defaults(handler=_status)

    replay = sub.add_parser("replay", help="send the backlog now, with a progress bar")
    _where(replay)
    replay.add_argument("--api-key", help="bearer token (default: $METERLINE_API_KEY)")
    replay.add_argument(
        "--timeout", type=float, default=None, help="give up after this many seconds"
    )
    replay.set_defaults(handler=_replay)

    inspect = sub.add_parser("inspect", help="show one batch file: header, checks, events")
    inspect.add_argument("file", type=Path)
    inspect.add_argument("--limit", type=int, default=20, help="events to print (default 20)")
    inspect.set_defaults(handler=_inspect)

    requeue = sub.add_parser(
        "requeue", help="move checked quarantined or expired batches back to ready/"
    )
    _where(requeue)
    requeue.add_argument("which", choices=("quarantine", "expired"))
    requeue.add_argument("name", nargs="?", help="one file name (default: all of them)")
    requeue.set_defaults(handler=_requeue)


def _where(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--dir",
        type=Path,
        help="journal directory (default: $METERLINE_JOURNAL_DIR, else the "
        "per-user default for --base-url)",
    )
    parser.add_argument("--base-url", help="ingest base URL (default: $METERLINE_BASE_URL)")


def _config(args: argparse.Namespace, **extra: Any) -> Config:
    return Config.from_env(extra.pop("api_key", None), args.base_url, args.dir, **extra)


def _open(args: argparse.Namespace) -> Journal:
    directory = _config(args).resolved_journal_dir()
    if not directory.is_dir():
        raise SystemExit(f"meterline: no journal at {directory}")
    Journal.check_directory(directory)
    journal = Journal(directory)
    journal.open()
    return journal


def _status(args: argparse.Namespace) -> int:
    journal = _open(args)
    try:
        status = journal.status()
    finally:
        journal.close()
    fields = {name: getattr(status, name) for name in status.__dataclass_fields__}
    fields["directory"] = str(journal.directory)
    if args.json:
        print(json.dumps(fields))
        return 0
    age = status.oldest_ready_age
    print(f"journal     {journal.directory}")
    print(
        f"ready       {status.ready_batches:,} batches, {status.ready_events:,} events, "
        f"{status.ready_bytes:,} bytes" + (f", oldest {_age(age)}" if age is not None else "")
    )
    print(f"rejected    {status.rejected_batches:,} batches, {status.rejected_events:,} events")
    print(f"quarantine  {status.quarantined:,} files")
    print(f"expired     {status.expired_batches:,} batches, {status.expired_events:,} events")
    print(f"total       {status.total_bytes:,} bytes")
    return 0


def _replay(args: argparse.Namespace) -> int:
    from ._client import Client  # the CLI is the only place that needs both

    config = _config(args)
    journal = _open(args)
    total = journal.status().ready_events
    if total == 0:
        print("nothing to replay")
        journal.close()
        return 0
    client = Client(
        args.api_key, base_url=config.base_url, journal_dir=config.resolved_journal_dir()
    )
    done = threading.Event()
    result: list[Any] = []

    def run() -> None:
        try:
            result.append(client.replay(timeout=args.timeout))
        finally:
            done.set()

    worker = threading.Thread(target=run, daemon=True)
    start = time.monotonic()
    worker.start()
    while not done.wait(0.5):
        _bar(total - journal.status().ready_events, total, start)
    left = journal.status().ready_events
    _bar(total - left, total, start)
    print()
    client.close()
    journal.close()
    if left:
        print(
            f"meterline: {left:,} events still waiting (endpoint down, or another process "
            "is replaying); see the log",
            file=sys.stderr,
        )
        return 1
    return 0


def _bar(done: int, total: int, start: float) -> None:
    width = 30
    filled = int(width * done / total) if total else width
    rate = done / max(1e-9, time.monotonic() - start)
    print(
        f"\r[{'#' * filled}{'.' * (width - filled)}] {done:,}/{total:,} events {rate:,.0f}/s",
        end="",
        flush=True,
    )


def _inspect(args: argparse.Namespace) -> int:
    info = inspect_file(args.file)
    events = info.pop("events", None)
    for key, value in info.items():
        print(f"{key:<16} {value}")
    if isinstance(events, list):
        for event in events[: args.limit]:
            print(json.dumps(event, ensure_ascii=False))
        if len(events) > args.limit:
            print(f"... {len(events) - args.limit} more")
    return 0 if info.get("ok", True) else 2


def _requeue(args: argparse.Namespace) -> int:
    journal = _open(args)
    try:
        moved = journal.requeue(args.which, args.name)
    except MeterlineError as exc:
        print(f"meterline: {exc}", file=sys.stderr)
        return 2
    finally:
        journal.close()
    print(f"requeued {moved:,} events from {args.which}/")
    return 0


def _age(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 7200:
        return f"{seconds / 60:.0f} min"
    if seconds < 172800:
        return f"{seconds / 3600:.1f} h"
    return f"{seconds / 86400:.1f} days"


if os.name != "posix":  # pragma: no cover - the journal needs flock
    raise ImportError("the meterline journal CLI needs a POSIX system")
