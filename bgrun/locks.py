"""File locks: the OS releases them when their holder dies, which bgrun relies on.

POSIX: `fcntl.flock` on a private (0600) lock file, directly. filelock's FileLock does
the same job with a registry, fork tracking and path canonicalisation on every acquire,
and a job takes locks several times, so bgrun uses it only on Windows, where it wraps
`msvcrt.locking` (benchmarks/RESULTS.md has the cost of each).

A flock belongs to the open file description: two opens of one file in one process
still exclude each other, and a forked child holding a copy keeps the lock alive (a
forked job child closes every inherited descriptor for that reason).
"""

from __future__ import annotations

import os
import sys
import time
from _thread import allocate_lock  # threading.Lock, without threading's import
from pathlib import Path
from types import TracebackType


class FileLock:
    """An exclusive, non-reentrant lock on `path`, created 0600 if missing."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._threads = allocate_lock()  # one holder per object across threads, too
        self._fd: int | None = None
        self._fallback: object | None = None

    @property
    def is_locked(self) -> bool:
        """True while this object holds the lock."""
        return self._fd is not None or self._fallback is not None

    def acquire(self, timeout: float | None = None) -> bool:
        """Take the lock; wait at most `timeout` seconds (None: as long as it takes).

        Returns False if it could not be taken in time.
        """
        if not self._threads.acquire(timeout=-1 if timeout is None else timeout):
            return False
        try:
            taken = self._acquire_file(timeout)
        except BaseException:
            self._threads.release()
            raise
        if not taken:
            self._threads.release()
        return taken

    def _acquire_file(self, timeout: float | None) -> bool:
        if sys.platform == "win32":
            return self._acquire_windows(timeout)
        import fcntl

        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
        if timeout is None:
            fcntl.flock(fd, fcntl.LOCK_EX)
            self._fd = fd
            return True
        deadline = time.monotonic() + timeout
        pause = 0.001
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    os.close(fd)
                    return False
                time.sleep(pause)
                pause = min(pause * 2, 0.05)
                continue
            self._fd = fd
            return True

    def adopt(self, fd: int) -> None:
        """Hold the lock through `fd`: a descriptor of this file, locked, handed over by
        the process that started this one (POSIX)."""
        self._threads.acquire()
        self._fd = fd

    def release(self) -> None:
        """Let go of the lock (closing the descriptor releases the flock)."""
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
        elif self._fallback is not None:
            self._fallback.release()  # type: ignore[attr-defined]
            self._fallback = None
        else:
            return
        self._threads.release()

    def _acquire_windows(self, timeout: float | None) -> bool:
        from filelock import FileLock as PortableLock
        from filelock import Timeout

        lock = PortableLock(self.path, mode=0o600, thread_local=False)
        try:
            lock.acquire(timeout=-1 if timeout is None else timeout)
        except Timeout:
            return False
        self._fallback = lock
        return True

    def __enter__(self) -> FileLock:
        self.acquire()
        return self

    def __exit__(self, kind: type[BaseException] | None, value: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.release()
