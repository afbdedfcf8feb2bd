"""``meterline journal status|replay|inspect|requeue``: the operator's view of a journal."""

from __future__ import annotations

import argparse
import json
import os
import sys
import threading
import time
from pathlib import Path
from typing import NoReturn

from ._config import Config
from ._errors import ConfigError, JournalError, MeterlineError
from ._stats import ReplayResult
from .journal import Journal, inspect_file

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
        help="journal directory (default: $METERLINE_JOURNAL_DIR, else the per-user "
        "folder of this destination, endpoint and API key)",
    )
    parser.add_argument(
        "--destination",
        help="orb, metronome, lago, openmeter or stripe: where the batches go "
        "(default: $METERLINE_DESTINATION, else orb)",
    )
    parser.add_argument(
        "--base-url",
        help="ingest base URL (default: $METERLINE_BASE_URL, else the destination's)",
    )
    parser.add_argument(
        "--api-key",
        help="API key the batches are for (default: $METERLINE_API_KEY, which keeps it out "
        "of the process list); never printed",
    )


def _fail(message: str, code: int = 2) -> NoReturn:
    print(f"meterline: {message}", file=sys.stderr)
    raise SystemExit(code)


def _config(args: argparse.Namespace, *, need_key: bool = False) -> Config:
    """The configuration the command acts for; exit 2 when it cannot say which journal."""
    try:
        config = Config.from_env(
            args.api_key, args.base_url, args.dir, destination=args.destination
        )
    except ConfigError as exc:  # its message never holds the key
        _fail(str(exc))
    if need_key and config.api_key is None:
        _fail(
            "replay needs the API key the batches were written for: pass --api-key or set "
            "METERLINE_API_KEY"
        )
    if config.journal_dir is None and config.api_key is None:
        _fail(
            "which journal? The default folder is per destination, endpoint and API key: "
            "pass --dir, or give the key (--api-key or METERLINE_API_KEY)"
        )
    return config


def _open(config: Config) -> Journal:
    """The journal, keyed with the config's fingerprint when there is a key (else it reads
    every file, as an operator's tool)."""
    directory = config.resolved_journal_dir()
    if not directory.is_dir():
        _fail(f"no journal at {directory}", 1)
    fingerprint = config.journal_fingerprint if config.api_key is not None else None
    journal = Journal(directory, fingerprint=fingerprint, key_field=config.destination.key_field)
    try:
        journal.open()
    except ConfigError as exc:  # an unsafe directory
        _fail(str(exc))
    except JournalError as exc:
        _fail(str(exc), 1)
    return journal


def _status(args: argparse.Namespace) -> int:
    journal = _open(_config(args))
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
    if status.fingerprint is None:
        print("key         none given: every batch counts as this journal's")
    else:
        print(f"key         fingerprint {status.fingerprint[:8]}... (the API key's, one way)")
    print(
        f"ready       {status.ready_batches:,} batches, {status.ready_events:,} events, "
        f"{status.ready_bytes:,} bytes" + (f", oldest {_age(age)}" if age is not None else "")
    )
    aside = []
    if status.ready_foreign_batches:
        aside.append(
            f"{status.ready_foreign_batches:,} batches ({status.ready_foreign_events:,} "
            "events) for another destination, endpoint or key"
        )
    if status.ready_newer_batches:
        aside.append(f"{status.ready_newer_batches:,} from a newer meterline")
    if aside:
        print(f"  set aside {'; '.join(aside)}")
    if status.ready_legacy_batches:
        print(
            f"  legacy    {status.ready_legacy_batches:,} batches from meterline 0.1, without "
            "a fingerprint (any key replays them)"
        )
    print(f"rejected    {status.rejected_batches:,} batches, {status.rejected_events:,} events")
    print(f"quarantine  {status.quarantined:,} files")
    print(f"expired     {status.expired_batches:,} batches, {status.expired_events:,} events")
    print(f"total       {status.total_bytes:,} bytes")
    return 0


def _replay(args: argparse.Namespace) -> int:
    config = _config(args, need_key=True)
    journal = _open(config)  # keyed like the client: it tells our batches from others'
    try:
        return _replay_with(config, journal, args.timeout)
    finally:
        journal.close()


def _replay_with(config: Config, journal: Journal, timeout: float | None) -> int:
    from ._client import Client  # the CLI is the only place that needs both

    status = journal.status()
    if status.ready_batches == status.ready_foreign_batches + status.ready_newer_batches:
        print("nothing to replay")
        _left(0, status.ready_foreign_batches + status.ready_newer_batches)
        return 0
    total = status.ready_events - status.ready_foreign_events
    client = Client(
        config.api_key,
        destination=config.destination,
        base_url=config.base_url,
        journal_dir=config.resolved_journal_dir(),
    )
    done = threading.Event()
    outcome: list[ReplayResult | Exception] = []

    def run() -> None:
        try:
            outcome.append(client.replay(timeout=timeout))
        except Exception as exc:  # noqa: BLE001 - reported below, on the main thread
            outcome.append(exc)
        finally:
            done.set()

    start = time.monotonic()
    try:
        threading.Thread(target=run, name="meterline-journal-replay", daemon=True).start()
        while not done.wait(0.5):
            _bar(total - _ours(journal), total, start)
        _bar(total - _ours(journal), total, start)
        print()
    finally:
        client.close()
    result = outcome[0] if outcome else RuntimeError("the replay thread ended without a result")
    if isinstance(result, Exception):
        _fail(f"replay failed: {type(result).__name__}: {result}", 1)
    print(f"replayed    {result.replayed:,} events")
    print(f"rejected    {result.rejected:,} events (kept in rejected/ with the reasons)")
    print(f"expired     {result.expired:,} events (past journal_max_age: moved to expired/)")
    _left(result.remaining_batches, result.set_aside)
    if result.remaining_batches:
        print(
            f"meterline: {result.remaining_batches:,} batches still waiting (endpoint down, or "
            "another process is replaying); see the log",
            file=sys.stderr,
        )
    return 0 if result.remaining_batches == 0 and result.expired == 0 else 1


def _left(remaining: int, aside: int) -> None:
    print(
        f"left        {remaining:,} batches to retry, {aside:,} set aside (another "
        "destination, endpoint or key, or a newer format)"
    )


def _ours(journal: Journal) -> int:
    """Events in ready/ this key may send (progress; from headers, unverified)."""
    status = journal.status()
    return max(0, status.ready_events - status.ready_foreign_events)


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
    journal = _open(_config(args))
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
