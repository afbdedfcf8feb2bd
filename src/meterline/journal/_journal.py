"""The on-disk journal: batches that could not be delivered, kept until acknowledged.

Layout, one directory per destination, endpoint and credential (directories 0700, files
0600, whatever the umask)::

    tmp/         batches being written; each writer holds a flock on its file
    ready/       complete batches waiting for replay; names sort by creation time
    rejected/    events the server refused, each with the server's reasons
    quarantine/  files that failed their checks, each next to a ``<name>.reason`` text
    expired/     batches older than max_age, unsent, for a backfill
    locks/       replay.lock: the process holding its flock is the replay leader (a
                 keyed journal leads its own files: replay-<fingerprint>.lock)

A batch file is a header (magic, version, flags, count, payload length, CRC32 of the
payload, fingerprint, CRC32 of the header) then the events' exact bytes as JSON Lines
(``_format``). Never pickle.

Keying. A journal given a ``fingerprint`` (16 opaque bytes naming the destination,
endpoint and credential its batches may be replayed to) writes it into every file, and
``read()`` refuses a file written for another one: it stays in ready/, untouched, for
the client it belongs to, and this process sets it aside (JournalForeignError). Files of
meterline 0.1 (format version 1) carry no fingerprint: they predate keying and any
journal reads them. A journal without a fingerprint (operator tools) reads every file.

Crash safety. A batch is written to tmp/, fsynced, renamed into ready/, and ready/ is
fsynced before ``spill()`` returns, so a returned spill survives a power cut; a failed
fsync is never retried on the same descriptor (the file is removed, the call raises).
Every read checks lengths, both CRCs and each line; a file that fails goes to
quarantine/, never to the server and never away. Only ``ack()`` deletes a batch, after
the server acknowledged it, and ``settle()`` makes its outcome durable as new files
before it unlinks the original, so a crash can cause a resend (the server de-duplicates
by key) but never a loss. A claim is an exclusive flock, and the claimer then checks
that the path still names the same file, so a batch acknowledged meanwhile is never
read twice. A tmp/ file whose flock is free belongs to a dead writer: ``recover()``
promotes it if it passes every check and quarantines it otherwise.

Why this module is long: ``Journal`` is the package's one public class, and its methods
share the table of claims, the replay lock's descriptor and the pid check that resets both
after a fork; each method is a short sequence of ``_store`` steps under that state. The
jobs with state of their own are modules already (the steps in ``_store``, recovery and
expiry in ``_maint``, the format, the layout, inspection); the values it hands out are in
``_values``.
"""

from __future__ import annotations

import itertools
import os
import stat
import threading
import time
from collections.abc import Callable, Sequence

from meterline._errors import ConfigError, JournalError

from . import _format as fmt
from . import _maint as maint
from ._fsops import FileOps, OsFileOps
from ._layout import FILE_MODE, check_directory, make_layout
from ._store import NOFOLLOW_CLOEXEC, Store
from ._values import BatchRef, Claim, JournalStatus

__all__ = [
    "BatchRef",
    "Claim",
    "FileOps",
    "Journal",
    "JournalStatus",
    "OsFileOps",
    "ready_count",
]

_TOKENS = itertools.count(1)  # claim tokens, unique across Journal instances


class Journal:
    """Spill, claim, read, acknowledge and quarantine batches in one journal directory.

    Safe to share between threads; several processes may share the directory. The
    constructor does no I/O; call ``open()`` first. ``fingerprint`` (16 bytes, or None to
    write zeros and read every file) keys the files this journal writes and reads;
    ``key_field`` names the field of each event that holds its idempotency key (the
    destination's: Orb's ``idempotency_key``, Lago's ``transaction_id``...).
    """

    def __init__(
        self,
        directory: str | os.PathLike[str],
        *,
        max_bytes: int = 1 << 30,
        max_age: float = 7 * 86400.0,
        min_free_bytes: int = 64 << 20,
        clock: Callable[[], float] = time.time,
        fs: FileOps | None = None,
        fingerprint: bytes | None = None,
        key_field: str = "idempotency_key",
    ) -> None:
        if not max_bytes > 0:
            raise ConfigError(f"journal max_bytes must be positive, not {max_bytes!r}")
        if not max_age > 0:
            raise ConfigError(f"journal max_age must be positive seconds, not {max_age!r}")
        if not min_free_bytes >= 0:
            raise ConfigError(f"journal min_free_bytes must be >= 0, not {min_free_bytes!r}")
        if fingerprint is not None:
            try:
                fmt.check_fingerprint(fingerprint)
            except ValueError as exc:
                raise ConfigError(f"{exc}, or None") from None
        self._dir = os.path.abspath(os.fspath(directory))  # no trailing "/": lstat sees links
        self._max_bytes = max_bytes
        self._max_age = float(max_age)
        self._min_free = min_free_bytes
        self._clock = clock
        self._key_field = key_field
        self._store = Store(
            self._dir, fs if fs is not None else OsFileOps(), clock, fingerprint, key_field
        )
        self._mutex = threading.Lock()  # guards _claims
        self._lead_mutex = threading.Lock()  # one try_lead at a time
        self._claims: dict[int, tuple[int, Claim]] = {}  # token -> (fd, claim)
        self._leader_fd: int | None = None
        self._pid = os.getpid()
        self._opened = False

    @property
    def directory(self) -> str:
        """The absolute journal directory."""
        return self._dir

    @property
    def fingerprint(self) -> bytes | None:
        """The fingerprint this journal writes and reads by (None: reads every file)."""
        return self._store.fingerprint

    # -- lifecycle -----------------------------------------------------------------------

    @staticmethod
    def check_directory(directory: str | os.PathLike[str]) -> None:
        """Raise ConfigError if an existing journal directory is unsafe; creates nothing.

        Refused: a symlink (the last component; parents may be links), anything but a
        directory, a directory owned by another user, or one writable by group or others.
        """
        check_directory(os.path.abspath(os.fspath(directory)))

    def open(self) -> None:
        """Create the layout (0700), refuse an unsafe directory, recover dead writers' files.

        Idempotent. ConfigError for an unsafe directory; JournalError for I/O errors.
        """
        self._check_pid()
        if self._opened:
            return
        check_directory(self._dir)
        try:
            make_layout(self._store.fs, self._dir)
        except OSError as exc:
            raise self._store.disk_error("open", f"creating {self._dir} failed", exc) from exc
        self._store.rescan()
        self._opened = True
        self.recover()

    def close(self) -> None:
        """Release every claim and the leadership; ``open()`` may be called again."""
        self._check_pid()
        with self._mutex:
            held = [fd for fd, _ in self._claims.values()]
            self._claims.clear()
        for fd in held:
            self._store.close(fd)
        self.resign()
        self._opened = False

    def after_fork_in_child(self) -> None:
        """In a forked child: drop inherited claims and leadership without unlocking them.

        A flock belongs to the open file description, which ``fork()`` shares between
        parent and child, so ``flock(LOCK_UN)`` here would unlock the parent's claims and
        leader lock too. The child only ``os.close()``s its own copies of the descriptors
        (each checked to still name the file we opened), which leaves the parent's locks
        held, and starts with no claims, not leader, and new mutexes (another thread of
        the parent may have held one at the moment of the fork). Every method calls this
        by itself when it notices the pid changed (uWSGI forks without Python's hooks).
        """
        self._mutex = threading.Lock()
        self._lead_mutex = threading.Lock()
        self._claims = {}
        self._leader_fd = None
        self._pid = os.getpid()
        self._store.drop_inherited()

    # -- spill -------------------------------------------------------------------------

    def spill(self, events: Sequence[bytes]) -> BatchRef:
        """Write a batch durably to ready/: once this returns it survives a power cut.

        ValueError for an empty or invalid batch (before any I/O); JournalFullError past
        max_bytes or the free-space reserve; JournalError (errno kept) on a disk error,
        after which nothing is left in ready/ and the caller may spill the batch again.
        """
        fd, ref = self._spill(events)
        self._store.close(fd)
        return ref

    def spill_held(self, events: Sequence[bytes]) -> Claim:
        """Like ``spill()``, but return with the batch already claimed (write-ahead mode):
        the lock taken to write it is never let go, so no replayer can slip in."""
        fd, ref = self._spill(events)
        return self._register(fd, ref)

    def _spill(self, events: Sequence[bytes]) -> tuple[int, BatchRef]:
        self._require_open()
        data = fmt.encode(
            events, fingerprint=self._store.write_fingerprint, key_field=self._key_field
        )
        self._store.reserve(len(data), self._max_bytes, self._min_free)
        try:
            fd, name = self._store.commit(data, "ready", None)
        except BaseException:
            self._store.unreserve(len(data), written=False)
            raise
        self._store.unreserve(len(data), written=True)
        path = os.path.join(self._store.paths["ready"], name)
        return fd, BatchRef(name, path, len(events), len(data), maint.created(name, None))

    # -- replay --------------------------------------------------------------------------

    def ready(self) -> list[BatchRef]:
        """The batches in ready/, oldest first (minus files this process set aside)."""
        self._require_open()
        refs = []
        skip = self._store.set_aside_names()
        for name in self._store.names("ready"):
            if name in skip:
                continue
            path = os.path.join(self._store.paths["ready"], name)
            try:
                st = self._store.fs.lstat(path)
            except FileNotFoundError:
                continue  # acknowledged by another process since the listing
            except OSError as exc:
                raise self._store.disk_error("list", "listing ready/ failed", exc) from exc
            if not stat.S_ISREG(st.st_mode):
                continue  # a symlink or directory is never a batch: never followed
            refs.append(BatchRef(name, path, None, st.st_size, maint.created(name, st)))
        return refs

    def claim(self, ref: BatchRef) -> Claim | None:
        """Claim a ready batch (non-blocking flock), or None if it is held or gone."""
        self._require_open()
        name = maint.check_name(ref.name)
        held = self._store.take("ready", name)
        if held is None:
            return None
        fd, st = held
        path = os.path.join(self._store.paths["ready"], name)
        return self._register(fd, BatchRef(name, path, ref.events, st.st_size, ref.created))

    def read(self, claim: Claim) -> list[bytes]:
        """The claimed batch's events, verified and byte for byte as spilled.

        On corruption the file moves to quarantine/ next to a ``.reason`` and
        JournalCorruptError is raised. A file of a newer format (JournalError), or one
        written for another fingerprint than this journal's (JournalForeignError, after
        its header only), is left in place untouched and set aside: ``ready()`` in this
        process no longer offers it, and one WARNING per file is logged. A version-1 file
        has no fingerprint and is read by any journal. The claim is released whenever
        this raises.
        """
        fd = self._held(claim)
        try:
            return self._store.load_checked(fd, "ready", claim.name, claim.ref.size).events
        except BaseException:
            self.release(claim)
            raise

    def ack(self, claim: Claim) -> None:
        """The server acknowledged every event: delete the file durably and release.

        The claim is released even if this raises (a disk error: the batch may be sent
        again later, which the server de-duplicates).
        """
        fd = self._take(claim)
        try:
            self._store.remove("ready", claim.name, claim.ref.size)
        finally:
            self._store.close(fd)

    def settle(
        self,
        claim: Claim,
        *,
        remaining: Sequence[bytes] = (),
        rejected: Sequence[tuple[bytes, Sequence[str]]] = (),
    ) -> None:
        """A partial outcome: ``remaining`` becomes a new ready batch (in the original's
        place in time), ``rejected`` goes to rejected/ with the server's reasons, both with
        this journal's fingerprint, then the original is deleted. Events in neither were
        delivered.

        Each new file is durable before the original goes; a crash in between leaves both
        (the resend is de-duplicated by key). Not bounded by max_bytes: the journal
        shrinks. ValueError for invalid input before anything happens; otherwise the
        claim is released even if this raises, and the original is kept on failure.
        """
        keyed = self._store.write_fingerprint
        field = self._key_field
        again = fmt.encode(remaining, fingerprint=keyed, key_field=field) if remaining else None
        refused = (
            fmt.encode_rejected(rejected, fingerprint=keyed, key_field=field) if rejected else None
        )
        fd = self._take(claim)
        try:
            for data, dest, created_ns in (
                (again, "ready", fmt.name_time_ns(claim.name)),
                (refused, "rejected", None),
            ):
                if data is not None:
                    new_fd, _ = self._store.commit(data, dest, created_ns)
                    self._store.close(new_fd)
                    self._store.count(len(data))
            self._store.remove("ready", claim.name, claim.ref.size)
        finally:
            self._store.close(fd)

    def release(self, claim: Claim) -> None:
        """Give the claim up; the file stays in ready/. A no-op if it is not held."""
        self._check_pid()
        with self._mutex:
            entry = self._claims.get(claim.token)
            if entry is None or entry[1] != claim:
                return
            del self._claims[claim.token]
        self._store.close(entry[0])

    def _register(self, fd: int, ref: BatchRef) -> Claim:
        claim = Claim(ref, next(_TOKENS))
        with self._mutex:
            self._claims[claim.token] = (fd, claim)
        return claim

    def _held(self, claim: Claim) -> int:
        self._check_pid()
        with self._mutex:
            entry = self._claims.get(claim.token)
        if entry is None or entry[1] != claim:
            raise JournalError(f"the claim on {claim.name} is not held by this journal")
        return entry[0]

    def _take(self, claim: Claim) -> int:
        fd = self._held(claim)
        with self._mutex:
            self._claims.pop(claim.token, None)
        return fd

    # -- leadership ----------------------------------------------------------------------

    def try_lead(self) -> bool:
        """Take ``locks/replay.lock`` without blocking; True if this process leads replay.

        The descriptor is kept; the kernel releases the lock if the process dies.
        """
        self._require_open()
        with self._lead_mutex:  # two descriptors of ours would exclude each other
            if self._leader_fd is not None:
                return True
            # One leader per fingerprint: on a shared directory, the leader for one account
            # must not keep another account's client from replaying its own files.
            keyed = self.fingerprint
            name = "replay.lock" if keyed is None else f"replay-{keyed.hex()[:16]}.lock"
            path = os.path.join(self._store.paths["locks"], name)
            try:
                fd, _ = self._store.open(path, os.O_RDWR | os.O_CREAT | NOFOLLOW_CLOEXEC)
                try:
                    self._store.fs.fchmod(fd, FILE_MODE)
                    won = self._store.fs.lock(fd, blocking=False)
                except BaseException:
                    self._store.close(fd)
                    raise
            except OSError as exc:
                raise self._store.disk_error("lead", "taking the replay lock failed", exc) from exc
            if not won:
                self._store.close(fd)
                return False
            self._leader_fd = fd
            return True

    def resign(self) -> None:
        """Stop leading replay (a no-op if this process does not lead)."""
        self._check_pid()
        with self._lead_mutex:
            fd, self._leader_fd = self._leader_fd, None
            if fd is not None:
                self._store.close(fd)

    @property
    def is_leader(self) -> bool:
        """Whether this process holds the replay lock through this Journal."""
        self._check_pid()
        return self._leader_fd is not None

    # -- upkeep --------------------------------------------------------------------------

    def recover(self) -> int:
        """Promote or quarantine the tmp/ files of dead writers; return how many were
        promoted (``open()`` does this; call it again at any time)."""
        self._require_open()
        return maint.recover(self._store)

    def expire(self, on_expired: Callable[[list[bytes]], None] | None = None) -> int:
        """Move ready batches older than max_age (by the time in the name) to expired/,
        unsent; return how many events moved.

        Each batch is claimed and verified first: a corrupt one is quarantined, and
        claimed, set-aside and foreign ones are left alone. ``on_expired`` gets each
        batch's exact event bytes just before it moves; if it raises an Exception, that
        is logged and the batch moves all the same.
        """
        self._require_open()
        return maint.expire(self._store, self._clock() - self._max_age, on_expired)

    def replayable(self) -> int:
        """Batch files in ready/ that this process would still offer: every name minus
        those it set aside (newer format, foreign). Names only, nothing is opened; 0
        before the journal directory exists."""
        skip = self._store.set_aside_names()
        return sum(1 for name in self._ready_names() if name not in skip)

    def set_aside(self) -> int:
        """Files this process set aside (newer format, foreign) still in ready/. Names
        only, nothing is opened."""
        skip = self._store.set_aside_names()
        if not skip:
            return 0
        return sum(1 for name in self._ready_names() if name in skip)

    def _ready_names(self) -> list[str]:
        self._check_pid()
        path = self._store.paths["ready"]
        try:
            names = self._store.fs.listdir(path)
        except FileNotFoundError:
            return []
        except OSError as exc:
            raise self._store.disk_error("list", "listing ready/ failed", exc) from exc
        return [name for name in names if fmt.is_batch_name(name)]

    def requeue(self, which: str = "quarantine", name: str | None = None) -> int:
        """Operator action: move verified files from ``which`` (quarantine or expired) back
        to ready/; return how many events moved.

        A file that still fails its checks stays, with a WARNING (JournalCorruptError when
        it was named). Requeued expired batches are renamed to now, or the next
        ``expire()`` would move them straight back.
        """
        self._require_open()
        return maint.requeue(self._store, which, name)

    def status(self) -> JournalStatus:
        """Count batches, events (from each header) and bytes per directory."""
        self._require_open()
        ready, rejected, expired = (
            maint.survey(self._store, where) for where in ("ready", "rejected", "expired")
        )
        self._store.set_total(ready.size + rejected.size)
        oldest = ready.oldest
        return JournalStatus(
            ready_batches=ready.batches,
            ready_events=ready.events,
            ready_bytes=ready.size,
            rejected_batches=rejected.batches,
            rejected_events=rejected.events,
            quarantined=len(self._store.names("quarantine")),
            expired_batches=expired.batches,
            expired_events=expired.events,
            total_bytes=ready.size + rejected.size,
            oldest_ready_age=None if oldest is None else max(0.0, self._clock() - oldest),
            fingerprint=None if self.fingerprint is None else self.fingerprint.hex(),
            ready_foreign_batches=ready.foreign_batches,
            ready_foreign_events=ready.foreign_events,
            ready_newer_batches=ready.newer,
            ready_legacy_batches=ready.legacy,
        )

    def _require_open(self) -> None:
        self._check_pid()
        if not self._opened:
            raise JournalError("the journal is not open: call Journal.open() first")

    def _check_pid(self) -> None:
        if os.getpid() != self._pid:
            self.after_fork_in_child()


def ready_count(directory: str | os.PathLike[str]) -> int:
    """Batches waiting in ``ready/``, counted by name without opening the journal (0 if
    there is none yet); cheap enough for ``stats()``."""
    try:
        names = os.listdir(os.path.join(os.fspath(directory), "ready"))
    except OSError:
        return 0
    return sum(1 for name in names if fmt.is_batch_name(name))
