"""The on-disk journal: what could not be delivered yet, kept until acknowledged.

One package, one job per module::

    _journal   the Journal API: spill, claim, read, ack, settle, recover, expire, status
    _store     writing and listing batch files (tmp -> fsync -> rename -> fsync the directory)
    _format    the batch file format: header, CRCs, the events' exact bytes
    _inspect   one file as an operator sees it (``meterline journal inspect``)
    _values    what the Journal hands out: BatchRef, Claim, JournalStatus
    _layout    the directory tree and its safety checks (0700, no symlinks)
    _maint     recovery of dead writers, quarantine, expiry
    _fsops     the file-system seam (tests inject faults through it)

The journal knows files, not the network: it never imports the transport, the retry policy
or a destination; the delivery module decides what goes to it and what comes back out.
"""

from ._fsops import FileOps, OsFileOps
from ._inspect import inspect_file
from ._journal import Journal, ready_count
from ._values import BatchRef, Claim, JournalStatus

__all__ = [
    "BatchRef",
    "Claim",
    "FileOps",
    "Journal",
    "JournalStatus",
    "OsFileOps",
    "inspect_file",
    "ready_count",
]
