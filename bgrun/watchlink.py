"""The runner's side of the watcher (bgrun/watcher.py): marks, start-up, and a cheap check.

- A runner writes a mark beside its slot lock: its pid while it holds the slot, nothing
  once it has left (it looked at the store once more itself), or STOP when it leaves
  work behind on purpose (a broken allowlist, an unwritable log, a stop signal). The
  watcher reads the mark when the slot's lock comes free: a pid means the holder died.
- A runner makes sure a watcher is alive: when it takes its slot, and then every tick
  (one non-blocking flock call on a descriptor kept open), so a killed watcher is
  replaced within a tick by any runner still alive.
- A runner that takes a slot tells the watcher through a FIFO, so the watcher starts
  blocking on that slot's lock without ever polling for it.
"""

from __future__ import annotations

import errno
import os
import sys
import time
from contextlib import suppress
from pathlib import Path
from typing import TYPE_CHECKING

from bgrun.context import Context, runner_python
from bgrun.locks import FileLock

if TYPE_CHECKING:
    import subprocess

WATCHER_SCRIPT = str(Path(__file__).resolve().with_name("_watcher_main.py"))
STOP = "stop"  # the mark of a runner that left waiting work behind on purpose


def mark_path(state: Path, slot: int) -> Path:
    """The file beside slot `slot`'s lock that says who holds it (or how it was left)."""
    return state / f"slot-{slot}.mark"


def write_mark(state: Path, slot: int, text: str) -> None:
    """Write slot `slot`'s mark; only its lock's holder may (so writes never race).

    Written in place, then cut to length: on a full disk a mark still overwrites the
    bytes of the one before (no new block), so a runner that fails for want of space
    still leaves STOP, and the watcher does not start runner after runner for it.
    A mark that cannot be written at all is left as it was: a wrong mark only makes
    the watcher look at the store once more.
    """
    data = text.encode()
    with suppress(OSError):
        fd = os.open(mark_path(state, slot), os.O_WRONLY | os.O_CREAT, 0o600)
        try:
            os.write(fd, data)  # (at offset 0: just opened, no O_APPEND)
            os.ftruncate(fd, len(data))
        finally:
            os.close(fd)


def read_mark(state: Path, slot: int) -> str:
    """Slot `slot`'s mark ("" when none was written)."""
    try:
        return mark_path(state, slot).read_text().strip()
    except (OSError, UnicodeDecodeError):
        return ""


def watcher_lock(state: Path) -> FileLock:
    """The lock a watcher holds for its life: at most one watcher per store."""
    return FileLock(state / "watcher.lock")


def watcher_fifo(state: Path) -> Path:
    """The FIFO through which runners tell the watcher that they took a slot."""
    return state / "watch.fifo"


def start_watcher(ctx: Context, lock_fd: int | None) -> subprocess.Popen[bytes] | None:
    """Start a detached watcher, handing it the watcher lock held through `lock_fd`.

    Returns the started script's first half (POSIX), for the caller to reap: a runner
    does not wait for an interpreter to start before it claims its first job. Without
    `lock_fd` (Windows) the watcher takes the lock itself, or exits if it is taken.
    """
    from bgrun.launcher import start_detached

    config = ctx.config
    env = dict(os.environ)
    env.update(config.as_environ())
    argv = [runner_python(config), WATCHER_SCRIPT]
    if lock_fd is not None:
        argv += ["--lock-fd", str(lock_fd)]
    return start_detached(argv, cwd=Path(config.store.parent), env=env, reap=False,
                          pass_fd=lock_fd)


class WatchLink:
    """A runner's link to the watcher: its slot's mark, and a watcher kept alive."""

    def __init__(self, ctx: Context) -> None:
        self.ctx = ctx
        self.last_check = float("-inf")
        self._probe: int | None = None  # a descriptor of the watcher lock, kept open
        self._launched: subprocess.Popen[bytes] | None = None  # to reap

    def slot_taken(self, slot: int) -> None:
        """Mark slot `slot` ours; start a watcher if none is alive, else tell it the news.

        Called before the slot's first claim, so a runner that dies at any moment after
        it has a job leaves a watcher (perhaps still starting) behind it.
        """
        write_mark(self.ctx.state, slot, str(os.getpid()))
        self.last_check = time.monotonic()
        if not self._start_if_none():
            poke_watcher(self.ctx.state)

    def slot_left(self, slot: int, mark: str = "") -> None:
        """Mark slot `slot` left (call it just before releasing the slot's lock)."""
        write_mark(self.ctx.state, slot, mark)

    def check(self) -> bool:
        """Start a watcher if none is alive (at most once a tick: one flock call).

        True if one had to be started: the caller then looks for dead runners itself,
        as the watcher may have died with one of them and the new one takes a moment.
        """
        moment = time.monotonic()
        if moment - self.last_check < self.ctx.config.tick:
            return False
        self.last_check = moment
        if self._launched is not None and self._launched.poll() is not None:
            self._launched = None  # reaped
        return self._start_if_none()

    def _start_if_none(self) -> bool:
        """Take the watcher lock if nobody holds it, and hand it to a new watcher.

        Handing it over (the started process inherits the locked descriptor) means only
        the runner that won the lock starts a watcher: never two, not even for a moment.
        """
        if sys.platform == "win32":
            lock = watcher_lock(self.ctx.state)
            if not lock.acquire(timeout=0):
                return False
            lock.release()
            self._launched = start_watcher(self.ctx, None)
            return True
        else:
            import fcntl

            fd = os.open(self.ctx.state / "watcher.lock", os.O_RDWR | os.O_CREAT, 0o600) \
                if self._probe is None else self._probe
            self._probe = None
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                self._probe = fd  # a watcher is alive: keep the descriptor for next time
                return False
            try:
                if self._launched is not None:
                    self._launched.wait()  # (exits within an interpreter's start)
                self._launched = start_watcher(self.ctx, fd)
            finally:
                os.close(fd)  # the watcher's copy holds the lock now (or nobody's does)
            return True

    def close(self) -> None:
        """Close the probe descriptor, and reap a watcher's first half."""
        if self._probe is not None:
            os.close(self._probe)
            self._probe = None
        if self._launched is not None:
            self._launched.wait()
            self._launched = None


def poke_watcher(state: Path) -> None:
    """Ask the watcher to look at the slots again (nothing happens if none listens)."""
    if sys.platform == "win32":
        return  # no FIFOs: a Windows watcher looks at the slots every tick
    try:
        fd = os.open(watcher_fifo(state), os.O_WRONLY | os.O_NONBLOCK)
    except OSError as exc:
        if exc.errno in (errno.ENXIO, errno.ENOENT):
            return  # no watcher reads it (yet): a starting watcher looks at every slot
        raise
    try:
        os.write(fd, b"!")
    except BlockingIOError:
        pass  # full of requests already
    finally:
        os.close(fd)
