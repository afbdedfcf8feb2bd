"""FileOps doubles for the journal tests: fault injection and a power-cut model."""

from __future__ import annotations

import errno
import itertools
import os
import random
from collections import defaultdict
from collections.abc import Callable

from meterline.journal._fsops import OsFileOps

__all__ = ["FaultyFileOps", "NoSyncFileOps", "PowerCut", "PowerCutFileOps"]


class NoSyncFileOps(OsFileOps):
    """Real files without fsync, for tests that loop over thousands of cases."""

    def fsync(self, fd: int) -> None:
        pass

    def fsync_dir(self, path: str) -> None:
        pass


class FaultyFileOps(OsFileOps):
    """Real files; ``fail(op, err, skip)`` makes the (skip+1)-th next call of ``op`` raise,
    and ``before(op, action)`` stages a race.

    ``write_limit`` caps every write (short writes); ``free_bytes`` fakes statvfs; ``calls``
    records ``(op, argument)`` for every call.
    """

    def __init__(self) -> None:
        self.faults: dict[str, list[tuple[int, int]]] = defaultdict(list)  # op -> [(skip, errno)]
        self.calls: list[tuple[str, object]] = []
        self.hooks: dict[str, list[Callable[[], object]]] = defaultdict(list)
        self.write_limit: int | None = None
        self.free_bytes: int | None = None

    def fail(self, op: str, err: int = errno.EIO, skip: int = 0) -> None:
        self.faults[op].append((skip, err))

    def before(self, op: str, action: Callable[[], object]) -> None:
        """Run ``action`` once, just before the next call of ``op`` (to stage a race)."""
        self.hooks[op].append(action)

    def _hit(self, op: str, arg: object) -> None:
        self.calls.append((op, arg))
        if self.hooks.get(op):
            self.hooks[op].pop(0)()
        pending = self.faults.get(op)
        if not pending:
            return
        skip, err = pending[0]
        if skip > 0:
            pending[0] = (skip - 1, err)
            return
        pending.pop(0)
        raise OSError(err, os.strerror(err), arg if isinstance(arg, str) else None)

    def open(self, path: str, flags: int, mode: int = 0o600) -> int:
        self._hit("open", path)
        return super().open(path, flags, mode)

    def write(self, fd: int, data: bytes) -> int:
        self._hit("write", fd)
        if self.write_limit is not None:
            data = data[: self.write_limit]
        return super().write(fd, data)

    def fsync(self, fd: int) -> None:
        self._hit("fsync", fd)
        super().fsync(fd)

    def fchmod(self, fd: int, mode: int) -> None:
        self._hit("fchmod", fd)
        super().fchmod(fd, mode)

    def lock(self, fd: int, *, blocking: bool) -> bool:
        self._hit("lock", fd)
        return super().lock(fd, blocking=blocking)

    def rename(self, src: str, dst: str) -> None:
        self._hit("rename", src)
        super().rename(src, dst)

    def unlink(self, path: str) -> None:
        self._hit("unlink", path)
        super().unlink(path)

    def fsync_dir(self, path: str) -> None:
        self._hit("fsync_dir", path)
        super().fsync_dir(path)

    def pread(self, fd: int, size: int, offset: int) -> bytes:
        self._hit("pread", fd)
        return super().pread(fd, size, offset)

    def statvfs(self, path: str) -> os.statvfs_result:
        self._hit("statvfs", path)
        real = super().statvfs(path)
        if self.free_bytes is None:
            return real
        fields = list(real)
        fields[4] = self.free_bytes // real.f_frsize  # f_bavail
        return os.statvfs_result(fields)


class PowerCut(BaseException):
    """The machine lost power: this operation and every later one never happen."""


class PowerCutFileOps(OsFileOps):
    """Real files plus a model of what survives a power cut.

    Metadata operations (create, rename, unlink) form an ordered log, and
    ``fsync_dir(d)`` makes the log durable up to the last operation on ``d`` (a journaling
    file system commits in order; POSIX promises less, so nothing else commits). A file's
    data is durable as of its last ``fsync``; ``fsync`` does no real I/O here. After
    ``crash_after`` operations every call raises :class:`PowerCut`; ``crash()`` then
    rewrites the tree to what survived. With an ``rng``, the crash also keeps a random
    number of further metadata operations and a random amount of unsynced data, which
    is how real disks behave on a bad day.
    """

    def __init__(self, root: str, crash_after: int | None = None) -> None:
        self.root = os.path.abspath(root)
        self.crash_after = crash_after
        self.free_bytes: int | None = None  # fake statvfs free space, as in FaultyFileOps
        self.ops = 0
        self.dead = False
        self._ids = itertools.count()
        self.names: dict[str, dict[str, int]] = {}  # dir -> name -> file id, as now
        self.content: dict[int, bytearray] = {}  # file id -> bytes written so far
        self.synced: dict[int, bytes] = {}  # file id -> bytes as of its last fsync
        self.log: list[tuple[str, ...]] = []
        self.committed = 0
        self.fd_file: dict[int, int] = {}
        for dirpath, _dirs, files in os.walk(self.root):
            entries = self.names.setdefault(dirpath, {})
            for name in files:
                fid = next(self._ids)
                with open(os.path.join(dirpath, name), "rb") as handle:
                    data = handle.read()
                entries[name] = fid
                self.content[fid] = bytearray(data)
                self.synced[fid] = data
        self.base = {d: dict(e) for d, e in self.names.items()}

    # -- the clock of the disaster
    def _tick(self) -> None:
        if self.dead:
            raise PowerCut
        if self.crash_after is not None and self.ops >= self.crash_after:
            self.dead = True
            raise PowerCut
        self.ops += 1

    def _split(self, path: str) -> tuple[str, str] | None:
        path = os.path.abspath(path)
        if not path.startswith(self.root + os.sep) and path != self.root:
            return None
        return os.path.dirname(path), os.path.basename(path)

    # -- metadata and data
    def open(self, path: str, flags: int, mode: int = 0o600) -> int:
        self._tick()
        where = self._split(path)
        existed = where is not None and where[1] in self.names.get(where[0], {})
        fd = super().open(path, flags, mode)
        if where is None:
            return fd
        directory, name = where
        if not existed and flags & os.O_CREAT:
            fid = next(self._ids)
            self.names.setdefault(directory, {})[name] = fid
            self.content[fid] = bytearray()
            self.log.append(("create", directory, name, str(fid)))
        fid = self.names[directory][name]
        if flags & os.O_TRUNC:
            self.content[fid] = bytearray()
        self.fd_file[fd] = fid
        return fd

    def close(self, fd: int) -> None:
        self._tick()
        self.fd_file.pop(fd, None)
        super().close(fd)

    def write(self, fd: int, data: bytes) -> int:
        self._tick()
        written = super().write(fd, data)
        if fd in self.fd_file:
            self.content[self.fd_file[fd]] += data[:written]
        return written

    def fsync(self, fd: int) -> None:
        self._tick()
        if fd in self.fd_file:
            fid = self.fd_file[fd]
            self.synced[fid] = bytes(self.content[fid])

    def fsync_dir(self, path: str) -> None:
        self._tick()
        path = os.path.abspath(path)
        for index in range(len(self.log) - 1, self.committed - 1, -1):
            op = self.log[index]
            if path in (op[1], op[3] if op[0] == "rename" else None):
                self.committed = index + 1
                break

    def rename(self, src: str, dst: str) -> None:
        self._tick()
        super().rename(src, dst)
        sdir, sname = self._split(src) or ("", "")
        ddir, dname = self._split(dst) or ("", "")
        fid = self.names[sdir].pop(sname)
        self.names.setdefault(ddir, {})[dname] = fid
        self.log.append(("rename", sdir, sname, ddir, dname))

    def unlink(self, path: str) -> None:
        self._tick()
        super().unlink(path)
        directory, name = self._split(path) or ("", "")
        self.names[directory].pop(name)
        self.log.append(("unlink", directory, name))

    def mkdir(self, path: str, mode: int) -> None:
        self._tick()
        super().mkdir(path, mode)
        self.names.setdefault(os.path.abspath(path), {})
        self.base.setdefault(os.path.abspath(path), {})  # directories survive, for simplicity

    # -- everything else only counts
    def pread(self, fd: int, size: int, offset: int) -> bytes:
        self._tick()
        return super().pread(fd, size, offset)

    def fchmod(self, fd: int, mode: int) -> None:
        self._tick()
        super().fchmod(fd, mode)

    def fstat(self, fd: int) -> os.stat_result:
        self._tick()
        return super().fstat(fd)

    def lock(self, fd: int, *, blocking: bool) -> bool:
        self._tick()
        return super().lock(fd, blocking=blocking)

    def chmod(self, path: str, mode: int) -> None:
        self._tick()
        super().chmod(path, mode)

    def listdir(self, path: str) -> list[str]:
        self._tick()
        return super().listdir(path)

    def lstat(self, path: str) -> os.stat_result:
        self._tick()
        return super().lstat(path)

    def statvfs(self, path: str) -> os.statvfs_result:
        self._tick()
        real = super().statvfs(path)
        if self.free_bytes is None:
            return real
        fields = list(real)
        fields[4] = self.free_bytes // real.f_frsize
        return os.statvfs_result(fields)

    # -- the crash
    def crash(self, rng: random.Random | None = None) -> None:
        """Close every descriptor (the process died) and rewrite the tree to what survived."""
        self.dead = True
        for fd in list(self.fd_file):
            os.close(fd)
        self.fd_file.clear()
        upto = self.committed
        if rng is not None:
            upto = rng.randint(self.committed, len(self.log))
        names = {d: dict(e) for d, e in self.base.items()}
        for op in self.log[:upto]:
            if op[0] == "create":
                names.setdefault(op[1], {})[op[2]] = int(op[3])
            elif op[0] == "rename":
                fid = names[op[1]].pop(op[2])
                names.setdefault(op[3], {})[op[4]] = fid
            else:
                names[op[1]].pop(op[2])
        for dirpath, _dirs, files in os.walk(self.root):
            for name in files:
                os.unlink(os.path.join(dirpath, name))
        for directory, entries in names.items():
            for name, fid in entries.items():
                data = self.synced.get(fid, b"")
                current = bytes(self.content[fid])
                if rng is not None and current != data and current.startswith(data):
                    data = current[: rng.randint(len(data), len(current))]
                with open(os.path.join(directory, name), "wb") as handle:
                    handle.write(data)
