"""The journal's directory layout and its safety rules (private to the journal).

The journal holds customer ids and usage: data at rest. Its directories are 0700 and
its files 0600 whatever the umask, and a directory that is a symlink, is owned by
someone else or is writable by group or others is refused with ConfigError.
"""

from __future__ import annotations

import os
import stat

from meterline._errors import ConfigError

from ._fsops import FileOps

DIR_MODE = 0o700
FILE_MODE = 0o600
SUBDIRS = ("tmp", "ready", "rejected", "quarantine", "expired", "locks")


def unsafe(st: os.stat_result) -> str | None:
    """Why a journal directory (an lstat result) may not be used, or None."""
    if stat.S_ISLNK(st.st_mode):
        return "is a symlink"
    if not stat.S_ISDIR(st.st_mode):
        return "is not a directory"
    if st.st_uid != os.geteuid():
        return f"is owned by uid {st.st_uid}, not by this process (uid {os.geteuid()})"
    if st.st_mode & 0o022:
        return f"is writable by group or others (mode {stat.S_IMODE(st.st_mode):04o})"
    return None


def check_directory(path: str) -> None:
    """Raise ConfigError if the journal directory at absolute ``path`` is unsafe.

    Creates nothing. The last component must not be a symlink (parents may be: ``/var``
    is a link on some systems); a missing directory needs an existing directory above it.
    """
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        st = None
    except OSError as exc:
        raise ConfigError(f"journal directory {path!r} cannot be inspected: {exc}") from exc
    if st is None:
        parent = os.path.dirname(path)
        while parent != os.path.dirname(parent) and not os.path.lexists(parent):
            parent = os.path.dirname(parent)
        if not os.path.isdir(parent):
            raise ConfigError(f"journal directory {path!r}: {parent!r} is not a directory")
        return
    problem = unsafe(st)
    if problem is not None:
        raise ConfigError(f"journal directory {path!r} {problem}")


def make_layout(fs: FileOps, root: str) -> None:
    """Create (0700) or check every directory of the layout; fsync what was created.

    Missing ancestors are created private too. Existing journal directories with group or
    other bits are tightened to 0700; writable ones are refused (ConfigError).
    """
    missing = []
    parent = os.path.dirname(root)
    while not _exists(fs, parent) and parent != os.path.dirname(parent):
        missing.append(parent)
        parent = os.path.dirname(parent)
    for ancestor in reversed(missing):
        _make_dir(fs, ancestor, check=False)
    created_root = _make_dir(fs, root, check=True)
    created = [_make_dir(fs, os.path.join(root, sub), check=True) for sub in SUBDIRS]
    if any(created):
        fs.fsync_dir(root)
    if created_root:
        fs.fsync_dir(os.path.dirname(root))


def _exists(fs: FileOps, path: str) -> bool:
    try:
        fs.lstat(path)
    except FileNotFoundError:
        return False
    return True


def _make_dir(fs: FileOps, path: str, *, check: bool) -> bool:
    created = False
    try:
        fs.mkdir(path, DIR_MODE)
        created = True
    except FileExistsError:
        pass  # made earlier or by another process: checked below like any other
    st = fs.lstat(path)
    problem = unsafe(st) if check else None
    if problem is not None:
        raise ConfigError(f"journal directory {path!r} {problem}")
    if created or stat.S_IMODE(st.st_mode) != DIR_MODE:
        fs.chmod(path, DIR_MODE)  # the umask filtered mkdir's mode; set it exactly
    return created
