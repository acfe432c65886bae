"""Runner slots and wake-ups, in the store's state folder.

A runner holds one slot lock for its whole life; the OS releases it when the holder
dies, so trying a slot's lock is how anyone tells whether its runner is alive (no clocks,
no heartbeats that a stepped system clock could fool). The keeper lock marks the one
runner that stays alive while only scheduled (future) jobs wait.

An idle runner keeps the wake FIFO open; a caller that has just committed a job writes a
byte into it. Opening it fails (ENXIO) when no runner is idle, which is how a caller
knows it must start one. Windows has no FIFOs: there idle runners poll every tick.
"""

from __future__ import annotations

import errno
import os
import select
import sys
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path

from bgrun.files import private_dir
from bgrun.launcher import WINDOWS
from bgrun.locks import FileLock


def state_dir(store: Path) -> Path:
    """The folder of lock files and the wake FIFO that belong to the store `store`
    (made if missing)."""
    return private_dir(state_path(store))


def state_path(store: Path) -> Path:
    """Where state_dir(store) is, without making it."""
    return store.with_name(store.name + ".d")


def slot_lock(state: Path, slot: int) -> FileLock:
    """The lock of runner slot `slot` (not yet acquired)."""
    return FileLock(state / f"slot-{slot}.lock")


def try_acquire(lock: FileLock) -> bool:
    """Take `lock` if nobody holds it, without waiting."""
    return lock.acquire(timeout=0)


def take_free_slot(state: Path, concurrency: int) -> tuple[int, FileLock] | None:
    """Acquire the lowest free slot, or None when `concurrency` runners are alive."""
    for slot in range(concurrency):
        lock = slot_lock(state, slot)
        if try_acquire(lock):
            return slot, lock
    return None


def waiting_lock(state: Path) -> FileLock:
    """The lock a `bgrun worker` holds while it waits for a slot (not yet acquired)."""
    return FileLock(state / "worker-waiting.lock")


def worker_waiting(state: Path) -> bool:
    """True while a `bgrun worker` waits for a slot (an on-demand runner then hands over)."""
    lock = waiting_lock(state)
    if try_acquire(lock):
        lock.release()
        return False
    return True


def any_slot_free(state: Path, concurrency: int) -> bool:
    """True if a runner could start now (a slot nobody holds)."""
    taken = take_free_slot(state, concurrency)
    if taken is None:
        return False
    taken[1].release()
    return True


@contextmanager
def slot_if_dead(state: Path, slot: int) -> Iterator[bool]:
    """Hold slot `slot` for a moment if its runner is dead; yields whether it was."""
    lock = slot_lock(state, slot)
    dead = try_acquire(lock)
    try:
        yield dead
    finally:
        if dead:
            lock.release()


class Waker:
    """The runner's side of the wake FIFO: open while idle, closed while busy."""

    def __init__(self, state: Path, *, answers: bool = True) -> None:
        self.path = state / "wake.fifo"
        self.answers = answers  # False: never counted as idle, never woken (it polls)
        self._fd: int | None = None

    def idle(self) -> None:
        """Start accepting wake-ups (callers now count this runner as idle)."""
        if sys.platform == "win32" or self._fd is not None or not self.answers:
            return
        _make_fifo(self.path)
        # O_RDWR: a reader that is also a writer never sees end-of-file (no busy loop).
        self._fd = os.open(self.path, os.O_RDWR | os.O_NONBLOCK)

    def busy(self) -> None:
        """Stop accepting wake-ups: callers no longer count on this runner being idle."""
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

    def sleep(self, seconds: float) -> None:
        """Wait up to `seconds`, or less if a caller writes a wake-up."""
        if self._fd is None:
            select.select([], [], [], max(seconds, 0.0)) if not WINDOWS else _sleep(seconds)
            return
        ready, _, _ = select.select([self._fd], [], [], max(seconds, 0.0))
        if ready:
            with suppress(BlockingIOError):
                os.read(self._fd, 4096)


def poke(state: Path) -> bool:
    """Wake an idle runner of this store; False when none is idle (or on Windows)."""
    if sys.platform == "win32":
        return False
    try:
        fd = os.open(state / "wake.fifo", os.O_WRONLY | os.O_NONBLOCK)
    except OSError as exc:
        if exc.errno in (errno.ENXIO, errno.ENOENT):
            return False
        raise
    try:
        os.write(fd, b"!")
    except BlockingIOError:
        pass  # the FIFO is full of wake-ups already
    finally:
        os.close(fd)
    return True


def _make_fifo(path: Path) -> None:
    if sys.platform == "win32":
        return
    with suppress(FileExistsError):
        os.mkfifo(path, 0o600)


def _sleep(seconds: float) -> None:
    import time

    time.sleep(max(seconds, 0.0))
