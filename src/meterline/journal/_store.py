"""The crash-safe steps every journal operation is made of (private to the journal).

A :class:`Store` is one journal directory as seen by one process: the descriptors it
holds (remembered so a forked child can drop them), the byte count behind max_bytes,
and the steps: write a file via tmp/ (fsync, rename, fsync the directory), take a file
(flock, then check the path still names it), load and verify, move without replacing,
quarantine with a reason. Every OSError leaves as a JournalError with its errno.

Why this module is long: ``Store`` is one object whose steps share one mutex, the table of
descriptors a forked child must drop, and the byte count behind max_bytes; every write
step updates the count and every open registers its descriptor. Split into several
classes, each would reach into the others' state under the same lock, and the crash-safety
order of a step (write, fsync, rename, fsync the directory) would no longer read in one
place.
"""

from __future__ import annotations

import errno
import logging
import os
import secrets
import threading
import time
from collections.abc import Callable
from datetime import datetime, timezone

from meterline._errors import (
    JournalCorruptError,
    JournalError,
    JournalForeignError,
    JournalFullError,
)

from . import _format as fmt
from ._fsops import FileOps
from ._layout import FILE_MODE, SUBDIRS

log = logging.getLogger("meterline.journal")

NOFOLLOW_CLOEXEC = getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_CLOEXEC", 0)
READ = os.O_RDONLY | NOFOLLOW_CLOEXEC
_CREATE = os.O_RDWR | os.O_CREAT | os.O_EXCL | NOFOLLOW_CLOEXEC
_RESCAN_SECONDS = 2.0  # other processes add files too: re-count at most this often
_LOG_EVERY = 30.0  # the same kind of disk error is logged at most this often


class Store:
    """One journal directory, its open descriptors, and its byte count.

    ``fingerprint`` is the reader's (None: read every file) and ``write_fingerprint`` what
    every file written here carries.
    """

    def __init__(
        self,
        directory: str,
        fs: FileOps,
        clock: Callable[[], float],
        fingerprint: bytes | None = None,
        key_field: str = fmt.KEY_FIELD,
    ) -> None:
        self.dir = directory
        self.key_field = key_field
        self.fs = fs
        self.clock = clock
        self.fingerprint = fingerprint
        self.write_fingerprint = fmt.NO_FINGERPRINT if fingerprint is None else fingerprint
        self.paths = {sub: os.path.join(directory, sub) for sub in SUBDIRS}
        self.skip: set[str] = set()  # ready/ names this process set aside: never offered
        self._mutex = threading.Lock()
        self._fds: dict[int, tuple[int, int]] = {}  # every descriptor we hold -> (dev, ino)
        self._on_disk = 0  # bytes in ready/ + rejected/ at the last scan, kept up to date
        self._reserved = 0  # bytes of spills in progress
        self._scanned_at = -_RESCAN_SECONDS
        self._seq = 0
        self._log_mutex = threading.Lock()  # apart: errors are built while holding _mutex
        self._logged: dict[tuple[str, int | None], float] = {}

    # -- descriptors -------------------------------------------------------------------

    def open(self, path: str, flags: int) -> tuple[int, os.stat_result]:
        """Open and remember the descriptor, so that a forked child can drop it."""
        fd = self.fs.open(path, flags, FILE_MODE)
        try:
            st = self.fs.fstat(fd)
        except BaseException:
            self.fs.close(fd)
            raise
        with self._mutex:
            self._fds[fd] = (st.st_dev, st.st_ino)
        return fd, st

    def close(self, fd: int) -> None:
        with self._mutex:
            self._fds.pop(fd, None)
        try:
            self.fs.close(fd)
        except OSError as exc:
            log.warning("closing a journal file failed: %s", exc)

    def drop_inherited(self) -> None:
        """In a forked child: close our copies of the parent's descriptors, unlocking
        nothing (see ``Journal.after_fork_in_child``), and start afresh."""
        self._mutex = threading.Lock()
        self._log_mutex = threading.Lock()
        inherited, self._fds = self._fds, {}
        self._reserved = 0
        for fd, ident in inherited.items():
            try:
                st = self.fs.fstat(fd)
            except OSError:
                continue  # closed already by the child's own code: nothing of ours to drop
            if (st.st_dev, st.st_ino) != ident:
                continue  # the number now names something else: not ours to close
            try:
                self.fs.close(fd)  # never flock(LOCK_UN): that would unlock the parent too
            except OSError as exc:
                log.warning("closing an inherited journal descriptor failed: %s", exc)

    def take(self, where: str, name: str) -> tuple[int, os.stat_result] | None:
        """Open and flock ``where/name`` without blocking, or None if it is gone or held.

        After the lock, the path must still name the same file: a claimer that opened a
        batch just before another process acknowledged (unlinked) or moved it gets None.
        """
        path = os.path.join(self.paths[where], name)
        try:
            fd, st = self.open(path, READ)
        except FileNotFoundError:
            return None
        except OSError as exc:
            if exc.errno == errno.ELOOP:  # O_NOFOLLOW met a symlink: never a batch of ours
                log.warning("ignoring the symlink %s/%s", where, name)
                return None
            raise self.disk_error("claim", f"opening {where}/{name} failed", exc) from exc
        try:
            if self.fs.lock(fd, blocking=False) and self.same_path(st, path):
                return fd, self.fs.fstat(fd)  # fresh: a dead writer may have grown it
        except OSError as exc:
            self.close(fd)
            raise self.disk_error("claim", f"locking {where}/{name} failed", exc) from exc
        self.close(fd)
        return None

    def same_path(self, st: os.stat_result, path: str) -> bool:
        try:
            now = self.fs.lstat(path)
        except FileNotFoundError:
            return False
        return (now.st_dev, now.st_ino) == (st.st_dev, st.st_ino)

    # -- reading -----------------------------------------------------------------------

    def load(self, fd: int, *, fingerprint: bytes | None = None) -> fmt.Batch:
        """Read and verify a whole file; the header first, so a lying length costs nothing.

        With a ``fingerprint``, a file written for another one is refused after its header
        (``fmt.ForeignBatchError``): its payload is not ours to judge. Raises OSError,
        ``fmt.BatchFormatError``, ``fmt.FutureBatchError`` or ``fmt.ForeignBatchError``.
        """
        size = self.fs.fstat(fd).st_size
        head = self._pread(fd, min(size, fmt.MAX_HEADER), 0)
        header = fmt.decode_header(head)
        if fmt.is_foreign(header, fingerprint):
            raise fmt.ForeignBatchError(header)
        expected = header.header_len + header.payload_len
        if expected != size:
            raise fmt.BatchFormatError(f"file is {size} bytes, its header says {expected}")
        return fmt.decode(head + self._pread(fd, size - len(head), len(head)), self.key_field)

    def load_checked(self, fd: int, where: str, name: str, size: int) -> fmt.Batch:
        """``load`` with this store's fingerprint, but a corrupt file is quarantined
        (JournalCorruptError), while a file of a newer format (JournalError) or written for
        another fingerprint (JournalForeignError) is left in place and set aside: skipped
        from now on, with one WARNING per file."""
        try:
            return self.load(fd, fingerprint=self.fingerprint)
        except OSError as exc:
            raise self.disk_error("read", f"reading {where}/{name} failed", exc) from exc
        except fmt.FutureBatchError as exc:
            if self.set_aside(name):
                log.warning("left %s/%s in place for a newer meterline: %s", where, name, exc)
            raise JournalError(f"{where}/{name}: {exc}; left in place") from exc
        except fmt.ForeignBatchError as exc:
            if self.set_aside(name):
                log.warning(
                    "left %s/%s in place: %s, not this journal's %s (another destination, "
                    "endpoint or credential)",
                    where,
                    name,
                    exc,
                    fmt.short(self.write_fingerprint),
                )
            raise JournalForeignError(
                f"{where}/{name}: {exc}, another destination, endpoint or credential; left in place"
            ) from exc
        except fmt.BatchFormatError as exc:
            target = self.quarantine(where, name, str(exc), size)
            raise JournalCorruptError(
                errno.EBADMSG, f"{where}/{name} failed its checks ({exc}); quarantined", target
            ) from exc

    def set_aside(self, name: str) -> bool:
        """Never offer ready/``name`` again in this process; False if it already was."""
        with self._mutex:
            if name in self.skip:
                return False
            self.skip.add(name)
            return True

    def set_aside_names(self) -> frozenset[str]:
        with self._mutex:
            return frozenset(self.skip)

    def peek(
        self, where: str, name: str
    ) -> tuple[fmt.Header | fmt.FutureBatchError | None, os.stat_result] | None:
        """A file's header as ``fmt.peek`` sees it (payload unchecked), and its stat; None
        if the file is gone."""
        try:
            fd = self.fs.open(os.path.join(self.paths[where], name), READ)
        except FileNotFoundError:
            return None
        except OSError as exc:
            if exc.errno == errno.ELOOP:
                return None  # a symlink: never a batch of ours (take() warns about it)
            raise self.disk_error("status", f"reading {where}/{name} failed", exc) from exc
        try:
            st = self.fs.fstat(fd)
            return fmt.peek(self._pread(fd, min(st.st_size, fmt.MAX_HEADER), 0)), st
        except OSError as exc:
            raise self.disk_error("status", f"reading {where}/{name} failed", exc) from exc
        finally:
            self.fs.close(fd)

    def _pread(self, fd: int, size: int, offset: int) -> bytes:
        chunks = []
        while size > 0:
            chunk = self.fs.pread(fd, size, offset)
            if not chunk:
                break
            chunks.append(chunk)
            size -= len(chunk)
            offset += len(chunk)
        return b"".join(chunks)

    # -- writing -----------------------------------------------------------------------

    def commit(self, data: bytes, dest: str, created_ns: int | None) -> tuple[int, str]:
        """tmp file (0600, O_EXCL, flocked) -> write all -> fsync -> rename into ``dest``
        -> fsync ``dest``; return the still-locked descriptor and the name.

        On any failure the file is removed and the error raised: a failed fsync is never
        retried on the same descriptor, and nothing half-written stays behind.
        """
        fd, name = self._create_tmp(created_ns)
        tmp = os.path.join(self.paths["tmp"], name)
        final = os.path.join(self.paths[dest], name)
        step = "write"
        try:
            self._write_all(fd, data)
            step = "fsync"
            self.fs.fsync(fd)
            step = "rename"
            self.fs.rename(tmp, final)
            step = "directory fsync"
            self.fs.fsync_dir(self.paths[dest])
        except BaseException as exc:
            if step == "directory fsync":  # complete, but maybe not durably named: remove
                self._discard(fd, final, None)
            else:  # a rename reported failed may have happened anyway: try both
                self._discard(fd, tmp, final if step == "rename" else None)
            if isinstance(exc, OSError):
                raise self.disk_error("spill", f"spill failed at {step}", exc) from exc
            raise
        return fd, name

    def _create_tmp(self, created_ns: int | None) -> tuple[int, str]:
        """A new tmp/ file, locked before anything is written to it.

        Between our create and our lock, ``recover()`` elsewhere may lock the still empty
        file (and remove it). We never wait for that lock (its holder could be a forked
        child that inherited it); we leave that file to its holder and take a new name.
        """
        for _attempt in range(5):
            name = self.new_name(created_ns)
            path = os.path.join(self.paths["tmp"], name)
            try:
                fd, st = self.open(path, _CREATE)
            except OSError as exc:
                raise self.disk_error("spill", "spill failed at open", exc) from exc
            try:
                self.fs.fchmod(fd, FILE_MODE)
                if self.fs.lock(fd, blocking=False) and self.same_path(st, path):
                    return fd, name
            except BaseException as exc:
                self._discard(fd, path, None)
                if isinstance(exc, OSError):
                    raise self.disk_error("spill", "spill failed preparing tmp", exc) from exc
                raise
            self.close(fd)  # recover() holds or removed it, empty: its business, new name
        raise JournalError(errno.EAGAIN, "spill failed: every new tmp file was taken")

    def _write_all(self, fd: int, data: bytes) -> None:
        done = 0
        while done < len(data):
            written = self.fs.write(fd, data[done:] if done else data)
            if written <= 0:
                raise OSError(errno.EIO, "write made no progress")
            done += written

    def _discard(self, fd: int, path: str, fallback: str | None) -> None:
        """Remove a file we failed to commit, before closing it (so no one claims it)."""
        for candidate in (path, fallback):
            if candidate is None:
                continue
            try:
                self.fs.unlink(candidate)
                break
            except FileNotFoundError:
                continue  # the rename took effect after all: its target is the one
            except OSError as exc:
                log.error("could not remove the uncommitted file %s: %s", candidate, exc)
                break
        self.close(fd)

    def remove(self, where: str, name: str, size: int) -> None:
        """Delete an acknowledged batch durably (unlink, then fsync the directory)."""
        try:
            self.fs.unlink(os.path.join(self.paths[where], name))
        except FileNotFoundError:
            log.warning("acknowledged batch %s was already gone from %s/", name, where)
        except OSError as exc:
            raise self.disk_error("ack", f"deleting acknowledged {name} failed", exc) from exc
        else:
            self.count(-size)
        try:
            self.fs.fsync_dir(self.paths[where])
        except OSError as exc:
            raise self.disk_error("ack", "ack failed at directory fsync", exc) from exc

    def move(self, src: str, name: str, dest: str, target: str) -> str:
        """Rename ``src/name`` to ``dest/target`` (a fresh name if taken), fsync both."""
        target = self._free_name(dest, target)
        self.fs.rename(os.path.join(self.paths[src], name), os.path.join(self.paths[dest], target))
        self.fs.fsync_dir(self.paths[dest])
        self.fs.fsync_dir(self.paths[src])
        return target

    def quarantine(self, where: str, name: str, reason: str, size: int) -> str:
        """Move a file that failed its checks to quarantine/ next to a ``.reason`` text."""
        try:
            target = self._free_name("quarantine", name)
            when = datetime.fromtimestamp(self.clock(), timezone.utc).isoformat()
            text = f"{reason}\nfrom: {where}/{name}\nat: {when}\npid: {os.getpid()}\n"
            self._write_reason(target, text.encode())
            self.move(where, name, "quarantine", target)
        except OSError as exc:
            self.set_aside(name)  # do not offer it again to this process
            what = f"moving corrupt {where}/{name} ({reason}) to quarantine/"
            raise self.disk_error("quarantine", what, exc) from exc
        if where in ("ready", "rejected"):
            self.count(-size)
        log.warning("quarantined %s/%s: %s", where, name, reason)
        return os.path.join(self.paths["quarantine"], target)

    def _write_reason(self, name: str, data: bytes) -> None:
        path = os.path.join(self.paths["quarantine"], name + ".reason")
        fd = self.fs.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | NOFOLLOW_CLOEXEC)
        try:
            self.fs.fchmod(fd, FILE_MODE)
            self._write_all(fd, data)
            self.fs.fsync(fd)
        finally:
            self.fs.close(fd)

    def drop_reason(self, name: str) -> None:
        try:
            self.fs.unlink(os.path.join(self.paths["quarantine"], name + ".reason"))
        except FileNotFoundError:
            return
        self.fs.fsync_dir(self.paths["quarantine"])

    def _free_name(self, where: str, name: str) -> str:
        """``name``, or a new name with the same time if ``where`` already has it."""
        try:
            self.fs.lstat(os.path.join(self.paths[where], name))
        except FileNotFoundError:
            return name
        return self.new_name(fmt.name_time_ns(name))

    # -- names and bytes -----------------------------------------------------------------

    def new_name(self, created_ns: int | None) -> str:
        with self._mutex:
            self._seq += 1
            seq = self._seq
        if created_ns is None:
            created_ns = int(self.clock() * 1_000_000_000)
        return fmt.make_name(created_ns, os.getpid(), seq, secrets.token_hex(8))

    def names(self, where: str) -> list[str]:
        """The batch files of one directory, sorted (so by time)."""
        try:
            return sorted(n for n in self.fs.listdir(self.paths[where]) if fmt.is_batch_name(n))
        except OSError as exc:
            raise self.disk_error("list", f"listing {where}/ failed", exc) from exc

    def reserve(self, size: int, max_bytes: int, min_free: int) -> None:
        """Count ``size`` bytes in advance, or raise JournalFullError; see ``unreserve``."""
        if time.monotonic() - self._scanned_at >= _RESCAN_SECONDS:
            self.rescan()
        with self._mutex:
            used = self._on_disk + self._reserved
            if used + size > max_bytes:
                raise self._full(f"{used} + {size} bytes would pass max_bytes {max_bytes}")
            self._reserved += size
        try:
            vfs = self.fs.statvfs(self.dir)
        except OSError as exc:
            self.unreserve(size, written=False)
            raise self.disk_error("spill", "checking free space", exc) from exc
        free = vfs.f_bavail * vfs.f_frsize
        if free - size < min_free:
            self.unreserve(size, written=False)
            raise self._full(f"{free} bytes free; the reserve is {min_free}")

    def unreserve(self, size: int, *, written: bool) -> None:
        with self._mutex:
            self._reserved -= size
            if written:
                self._on_disk += size

    def count(self, delta: int) -> None:
        with self._mutex:
            self._on_disk = max(0, self._on_disk + delta)

    def set_total(self, total: int) -> None:
        with self._mutex:
            self._on_disk = total
            self._scanned_at = time.monotonic()

    def rescan(self) -> None:
        """Re-count the bytes in ready/ and rejected/ (other processes write there too)."""
        total = 0
        for where in ("ready", "rejected"):
            for name in self.names(where):
                try:
                    total += self.fs.lstat(os.path.join(self.paths[where], name)).st_size
                except FileNotFoundError:
                    continue  # acknowledged since the listing
                except OSError as exc:
                    raise self.disk_error("list", f"measuring {where}/ failed", exc) from exc
        self.set_total(total)

    # -- errors --------------------------------------------------------------------------

    def _full(self, detail: str) -> JournalFullError:
        self._log_error(("full", None), "journal full, batch refused: %s", detail)
        return JournalFullError(errno.ENOSPC, f"journal full: {detail}", self.dir)

    def disk_error(self, kind: str, what: str, exc: OSError) -> JournalError:
        """A JournalError keeping ``exc``'s errno; logged at ERROR, once per burst."""
        self._log_error((kind, exc.errno), "%s: %s", what, exc)
        if exc.errno is None:
            return JournalError(f"{what}: {exc}")
        return JournalError(exc.errno, f"{what}: {exc.strerror}", exc.filename)

    def _log_error(self, key: tuple[str, int | None], msg: str, *args: object) -> None:
        now = time.monotonic()
        with self._log_mutex:
            last = self._logged.get(key)
            if last is not None and now - last < _LOG_EVERY:
                return
            self._logged[key] = now
        log.error(msg, *args)
