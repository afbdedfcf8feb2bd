"""Journal upkeep: dead writers' tmp/ files, expiry, requeue, and counts (private).

Each function takes files with ``Store.take`` (flock, then check the path), so it never
touches a batch that a replayer is sending or a writer is writing.
"""

from __future__ import annotations

import errno
import os
from collections.abc import Callable
from dataclasses import dataclass

from meterline._errors import JournalCorruptError, JournalError

from . import _format as fmt
from ._store import Store, log


def recover(store: Store) -> int:
    """Deal with the tmp/ files of dead writers (their flock is free); return promotions.

    A file that passes every check goes to ready/ (a rejected file to rejected/): its
    events were never delivered nor counted, and losing them is worse than a resend.
    Any other goes to quarantine/, except an empty file, which holds no event and is
    removed, and a file of a newer format, which is left alone.
    """
    try:
        names = sorted(store.fs.listdir(store.paths["tmp"]))
    except OSError as exc:
        raise store.disk_error("recover", "listing tmp/ failed", exc) from exc
    promoted = 0
    for name in names:
        if fmt.is_batch_name(name):
            promoted += _recover_one(store, name)
        else:
            log.warning("ignoring a stray file in %s: %s", store.paths["tmp"], name)
    return promoted


def _recover_one(store: Store, name: str) -> int:
    held = store.take("tmp", name)
    if held is None:
        return 0  # gone, or its writer is alive
    fd, st = held
    try:
        if st.st_size == 0:  # a writer locks before its first byte: this one died first
            store.fs.unlink(os.path.join(store.paths["tmp"], name))
            log.info("removed an empty tmp file left by a dead writer: %s", name)
            return 0
        try:
            batch = store.load(fd)
        except fmt.FutureBatchError as exc:
            log.warning("left tmp/%s alone: %s", name, exc)
            return 0
        except fmt.BatchFormatError as exc:
            store.quarantine("tmp", name, f"incomplete write by a process that died: {exc}", 0)
            return 0
        dest = "ready" if batch.reasons is None else "rejected"
        store.move("tmp", name, dest, name)  # same name: it keeps its place in time
        store.count(st.st_size)
        log.warning("recovered %s (%d events) from a writer that died", name, len(batch.events))
        return 1
    except JournalError:
        raise
    except OSError as exc:
        raise store.disk_error("recover", f"recovering tmp/{name} failed", exc) from exc
    finally:
        store.close(fd)


def expire(
    store: Store, cutoff: float, on_expired: Callable[[list[bytes]], None] | None = None
) -> int:
    """Move ready batches created before ``cutoff`` to expired/, each after passing its
    exact events to ``on_expired``; return how many events moved.

    Claimed, set-aside and foreign batches stay; a corrupt one is quarantined (by
    ``load_checked``). A callback that raises an Exception is logged and the batch moves
    all the same; anything else it raises (KeyboardInterrupt) leaves the batch in ready/,
    to be expired, and reported, again.
    """
    moved = 0
    for name in store.names("ready"):
        ns = fmt.name_time_ns(name)
        if name in store.skip or (ns is not None and ns / 1e9 > cutoff):
            continue
        held = store.take("ready", name)
        if held is None:
            continue  # being replayed right now, or gone
        fd, st = held
        try:
            if created(name, st) > cutoff:
                continue
            try:
                batch = store.load_checked(fd, "ready", name, st.st_size)
            except JournalError:
                continue  # quarantined, set aside or foreign, and logged: not ours to expire
            if on_expired is not None:
                try:
                    on_expired(batch.events)
                except Exception:  # noqa: BLE001 - a caller's bug must not strand the batch
                    log.exception("the expiry callback raised for %s; expiring it anyway", name)
            try:
                store.move("ready", name, "expired", name)
            except OSError as exc:
                raise store.disk_error("expire", f"expiring {name} failed", exc) from exc
            store.count(-st.st_size)
            moved += len(batch.events)
            log.warning("expired %s: %d events older than max_age", name, len(batch.events))
        finally:
            store.close(fd)
    return moved


def requeue(store: Store, which: str, name: str | None) -> int:
    """Move verified files from quarantine/ or expired/ back to ready/; return events."""
    if which not in ("quarantine", "expired"):
        raise ValueError(f"requeue from 'quarantine' or 'expired', not {which!r}")
    names = [check_name(name)] if name is not None else store.names(which)
    return sum(_requeue_one(store, which, each, explicit=name is not None) for each in names)


def _requeue_one(store: Store, which: str, name: str, *, explicit: bool) -> int:
    path = os.path.join(store.paths[which], name)
    held = store.take(which, name)
    if held is None:
        if not explicit:
            return 0
        try:
            store.fs.lstat(path)
        except FileNotFoundError:
            raise JournalError(errno.ENOENT, f"no batch {name} in {which}/", path) from None
        raise JournalError(errno.EBUSY, f"{which}/{name} is in use", path)
    fd, st = held
    try:
        try:
            batch = store.load(fd)
        except (fmt.BatchFormatError, fmt.FutureBatchError) as exc:
            log.warning("%s/%s still fails its checks and stays: %s", which, name, exc)
            if explicit:
                raise JournalCorruptError(
                    errno.EBADMSG, f"{which}/{name} still fails its checks: {exc}", path
                ) from exc
            return 0
        # An expired batch gets a name of now, or the next expire() moves it straight back.
        store.move(which, name, "ready", name if which == "quarantine" else store.new_name(None))
        store.count(st.st_size)
        if which == "quarantine":
            store.drop_reason(name)
        return len(batch.events)
    except JournalError:
        raise
    except OSError as exc:
        raise store.disk_error("requeue", f"requeueing {which}/{name} failed", exc) from exc
    finally:
        store.close(fd)


@dataclass(frozen=True, slots=True)
class Survey:
    """Counts over one directory, with how many files a reader keyed with the survey's
    fingerprint would leave alone (``foreign_*``, ``newer``) or reads as unkeyed
    (``legacy``: version 1)."""

    batches: int = 0
    events: int = 0
    size: int = 0
    oldest: float | None = None
    foreign_batches: int = 0
    foreign_events: int = 0
    newer: int = 0
    legacy: int = 0


def survey(store: Store, where: str) -> Survey:
    """Batches, events (from headers, unverified), bytes and oldest creation time."""
    batches = events = size = foreign_batches = foreign_events = newer = legacy = 0
    oldest: float | None = None
    for name in store.names(where):
        found = store.peek(where, name)
        if found is None:
            continue
        header, st = found
        batches += 1
        size += st.st_size
        when = created(name, st)
        oldest = when if oldest is None else min(oldest, when)
        if isinstance(header, fmt.FutureBatchError):
            newer += 1
        elif header is not None:  # a header that fails its checks counts 0 events until read
            events += header.count
            legacy += header.fingerprint is None
            if fmt.is_foreign(header, store.fingerprint):
                foreign_batches += 1
                foreign_events += header.count
    return Survey(batches, events, size, oldest, foreign_batches, foreign_events, newer, legacy)


def created(name: str, st: os.stat_result | None) -> float:
    """A batch's creation time: from its name, else its mtime, else 0."""
    ns = fmt.name_time_ns(name)
    if ns is not None:
        return ns / 1e9
    return st.st_mtime if st is not None else 0.0


def check_name(name: str) -> str:
    """``name`` if it is a plain file name (no path tricks), else ValueError."""
    if not name or name in (".", "..") or "/" in name or "\0" in name:
        raise ValueError(f"not a batch file name: {name!r}")
    return name
