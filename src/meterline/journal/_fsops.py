"""The file-system seam of the journal.

Every I/O the journal does goes through a :class:`FileOps`, so tests can inject a failure
at any single step (open, short write, fsync, rename, directory fsync...) or simulate a
power cut. :class:`OsFileOps` is the real implementation: thin wrappers over :mod:`os`
and ``fcntl.flock``. ``fcntl`` is imported on first use, so this module imports anywhere.
"""

from __future__ import annotations

import os
from typing import Protocol

__all__ = ["FileOps", "OsFileOps"]


class FileOps(Protocol):
    """The file operations the journal needs; each one may raise :class:`OSError`."""

    def open(self, path: str, flags: int, mode: int = 0o600) -> int:
        """``os.open``: return a file descriptor."""
        ...

    def close(self, fd: int) -> None:
        """``os.close``; releases a ``flock`` held through this descriptor only."""
        ...

    def write(self, fd: int, data: bytes) -> int:
        """``os.write``: may write fewer bytes than given; return how many."""
        ...

    def pread(self, fd: int, size: int, offset: int) -> bytes:
        """``os.pread``: at most ``size`` bytes at ``offset``; ``b""`` at the end."""
        ...

    def fsync(self, fd: int) -> None:
        """``os.fsync``."""
        ...

    def fchmod(self, fd: int, mode: int) -> None:
        """``os.fchmod``."""
        ...

    def fstat(self, fd: int) -> os.stat_result:
        """``os.fstat``."""
        ...

    def lock(self, fd: int, *, blocking: bool) -> bool:
        """Exclusive ``flock``; False when non-blocking and another description holds it."""
        ...

    def rename(self, src: str, dst: str) -> None:
        """``os.rename`` (atomic within one file system)."""
        ...

    def unlink(self, path: str) -> None:
        """``os.unlink``."""
        ...

    def fsync_dir(self, path: str) -> None:
        """Make the entries of directory ``path`` durable."""
        ...

    def mkdir(self, path: str, mode: int) -> None:
        """``os.mkdir`` (the mode is filtered by the umask; callers chmod afterwards)."""
        ...

    def chmod(self, path: str, mode: int) -> None:
        """``os.chmod`` without following a symlink at ``path``."""
        ...

    def listdir(self, path: str) -> list[str]:
        """``os.listdir``."""
        ...

    def lstat(self, path: str) -> os.stat_result:
        """``os.lstat``."""
        ...

    def statvfs(self, path: str) -> os.statvfs_result:
        """``os.statvfs``."""
        ...


class OsFileOps:
    """The real :class:`FileOps`: the operating system, nothing added."""

    def open(self, path: str, flags: int, mode: int = 0o600) -> int:
        return os.open(path, flags, mode)

    def close(self, fd: int) -> None:
        os.close(fd)

    def write(self, fd: int, data: bytes) -> int:
        return os.write(fd, data)

    def pread(self, fd: int, size: int, offset: int) -> bytes:
        return os.pread(fd, size, offset)

    def fsync(self, fd: int) -> None:
        os.fsync(fd)

    def fchmod(self, fd: int, mode: int) -> None:
        os.fchmod(fd, mode)

    def fstat(self, fd: int) -> os.stat_result:
        return os.fstat(fd)

    def lock(self, fd: int, *, blocking: bool) -> bool:
        import fcntl  # POSIX only: imported here so that this module imports anywhere

        operation = fcntl.LOCK_EX if blocking else fcntl.LOCK_EX | fcntl.LOCK_NB
        try:
            fcntl.flock(fd, operation)
        except BlockingIOError:
            return False
        return True

    def rename(self, src: str, dst: str) -> None:
        os.rename(src, dst)

    def unlink(self, path: str) -> None:
        os.unlink(path)

    def fsync_dir(self, path: str) -> None:
        fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)

    def mkdir(self, path: str, mode: int) -> None:
        os.mkdir(path, mode)

    def chmod(self, path: str, mode: int) -> None:
        # Journal paths are checked with lstat first; a symlink is refused before this runs.
        os.chmod(path, mode)

    def listdir(self, path: str) -> list[str]:
        return os.listdir(path)

    def lstat(self, path: str) -> os.stat_result:
        return os.lstat(path)

    def statvfs(self, path: str) -> os.statvfs_result:
        return os.statvfs(path)
