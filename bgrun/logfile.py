"""An append descriptor kept open across events, re-checked against its path each time.

Opening and closing a log for every line (and once more to check that it can be
written, before a job is stored) was a good part of an enqueue's own time. A kept
descriptor is only right while the path still names the file it has open: a log
rotated, deleted, replaced (its folder too) or given another mode is opened afresh,
so a line never goes into a file nobody reads, and a log that can no longer be opened
refuses as it did before. One `stat` of the path tells all of it, and also gives the
size that rotation and the whole-line rollback need.

Windows keeps nothing open: there a file another process holds open cannot be renamed,
and every writer rotates the logs.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from pathlib import Path

from bgrun.files import open_append

#: What must be unchanged for a kept descriptor to be used: which file the path names
#: (device, inode) and who may write it (mode, owner, group).
Identity = tuple[int, int, int, int, int]

KEEP = sys.platform != "win32"


def identity(st: os.stat_result) -> Identity:
    return (st.st_dev, st.st_ino, st.st_mode, st.st_uid, st.st_gid)


class KeptAppend:
    """An O_APPEND descriptor on `path`, opened on first use and kept while it is current."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._name = str(path)
        self._fd: int | None = None
        self._identity: Identity | None = None
        self._pid = 0  # a forked process opens its own (its parent's may be closed on it)

    def current(self) -> tuple[int, int]:
        """(descriptor, size of the file now); OSError if it cannot be opened for appending.

        The size is exact for a writer holding the logs' lock (every writer does).
        """
        try:
            st = os.stat(self._name)
        except FileNotFoundError:
            st = None
        if (st is not None and self._fd is not None and self._pid == os.getpid()
                and identity(st) == self._identity):
            return self._fd, st.st_size
        self.forget()
        fd = open_append(self.path)
        try:
            st = os.fstat(fd)
        except OSError:
            os.close(fd)
            raise
        self._fd, self._identity, self._pid = fd, identity(st), os.getpid()
        return fd, st.st_size

    def __del__(self, _close: Callable[[int], None] = os.close,
                _getpid: Callable[[], int] = os.getpid) -> None:
        # A log made for one line (a refusal in a long-lived caller) must not leave its
        # descriptor open for the life of the process. Bound defaults, no globals: at
        # interpreter exit a module's names may be gone before this runs.
        fd, self._fd = self._fd, None
        if fd is not None and self._pid == _getpid():
            try:  # noqa: SIM105 - contextlib is a global too
                _close(fd)
            except OSError:
                pass

    def done(self) -> None:
        """The caller is done with the descriptor for now: closed where none is kept."""
        if not KEEP:
            self.forget()

    def forget(self) -> None:
        """Close the kept descriptor (this process's own only)."""
        fd, self._fd, self._identity = self._fd, None, None
        if fd is not None and self._pid == os.getpid():
            os.close(fd)

    def size(self) -> int | None:
        """The size of the file at the path now (None: there is none)."""
        try:
            return os.stat(self._name).st_size
        except FileNotFoundError:
            return None
