"""The watcher: notices a dead runner the instant it dies, with nobody else looking.

One detached process per store, alive only while runners are (the first runner that
finds none starts it; its lock keeps it alone). It never forks a job, so it may use a
thread per held slot: each blocks on that slot's lock, and a blocking flock returns the
moment its holder exits or dies. The main thread then, still holding the slot:

- reads the slot's mark (watchlink.py): a pid means the runner died, nothing means it
  left, STOP means it left waiting work behind on purpose;
- settles the slot's running jobs through settle_orphans, like every other settle;
- releases the slot, and only then (unless STOP) looks at the store and makes sure a
  runner serves what waits. Looking after the release matters: while the watcher held
  the slot, a runner starting or retaking it, or a caller looking for a free slot,
  found it taken and counted on its holder.

It never claims a job. Runners tell it through a FIFO when they take a slot; it leaves
when no slot is held and no runner it started is still expected, looking at the slots
once more after releasing its own lock (a runner checks that lock after taking its slot,
so one of the two always sees the other).
"""

from __future__ import annotations

import os
import queue
import sys
import threading
import time
from contextlib import suppress

from bgrun import allowlist
from bgrun.config import Config
from bgrun.context import Context
from bgrun.errors import BgrunError
from bgrun.locks import FileLock
from bgrun.queues import QueuePlan
from bgrun.settle import ensure_runner, settle_orphans
from bgrun.slots import slot_lock, state_dir, try_acquire
from bgrun.store import Role
from bgrun.watchlink import STOP, read_mark, watcher_fifo, write_mark

EXPECT_RUNNER = 10.0  # seconds a watcher waits for a runner it started to take a slot
LOCK_WAIT = 0.2  # (Windows) a runner's check holds the watcher lock for a moment

# (slot, its lock, now ours); (-1, None): look at the slots; (-2, None): and not the store
Event = tuple[int, FileLock | None]


class Watcher:
    """The watcher's state: which slots a thread blocks on, and its event queue."""

    def __init__(self, ctx: Context, own: FileLock) -> None:
        self.ctx = ctx
        self.own = own
        self.events: queue.Queue[Event] = queue.Queue()
        self.watched: set[int] = set()
        self.expect_until = float("-inf")  # while a runner we started may still come

    def run(self) -> None:
        """Watch until no runner is left to watch."""
        self._listen()
        self._step((-1, None))
        while True:
            if not self.watched and time.monotonic() >= self.expect_until:
                if self._leave():
                    return
                continue
            try:
                event = self.events.get(timeout=self._wait())
            except queue.Empty:  # a runner we started never came, or (Windows) a tick
                event = (-2, None)
            self._step(event)

    def _step(self, event: Event) -> None:
        slot, lock = event
        try:
            if lock is not None:
                self._holder_gone(slot, lock)
            else:
                self.scan(look=slot == -1)
        except (BgrunError, OSError) as exc:  # the store, the log, a start: keep watching
            log_error(self.ctx, exc)

    def _wait(self) -> float | None:
        if sys.platform == "win32":
            return self.ctx.config.tick  # no FIFO: look at the slots every tick
        if self.watched:
            return None
        return max(self.expect_until - time.monotonic(), 0.0)

    def scan(self, look: bool = True) -> None:
        """Settle what dead runners left, block on every held slot, look if one was free.

        `look`: False after a wait ran out, so a runner that cannot start (or leaves at
        once on purpose) is not started again and again.
        """
        settle_orphans(self.ctx)
        probed_free = False
        for slot in range(self.ctx.config.concurrency):
            if slot in self.watched:
                continue
            lock = slot_lock(self.ctx.state, slot)
            if try_acquire(lock):
                lock.release()
                probed_free = True
            else:
                self._watch(slot)
        if probed_free and look and not self.watched:
            # Our probe may have turned away a runner that was starting; that matters
            # only if no runner is left (live ones serve the queue, and spread). Looking
            # while one runs would start runner after runner when each leaves at once
            # on purpose (a broken allowlist), since each runner's start makes us scan.
            self._look()

    def _watch(self, slot: int) -> None:
        self.watched.add(slot)
        threading.Thread(target=self._block_on, args=(slot,), daemon=True,
                         name=f"slot-{slot}").start()

    def _block_on(self, slot: int) -> None:
        lock = slot_lock(self.ctx.state, slot)
        lock.acquire()  # returns when the holder releases the slot or dies
        self.events.put((slot, lock))

    def _holder_gone(self, slot: int, lock: FileLock) -> None:
        """Slot `slot` is ours for a moment: settle what its holder left, then give it up."""
        self.watched.discard(slot)
        mark = read_mark(self.ctx.state, slot)
        try:
            settled = settle_orphans(self.ctx, my_slot=slot)  # its running jobs: orphans
            if mark:
                write_mark(self.ctx.state, slot, "")
        finally:
            lock.release()
        if settled or mark != STOP:
            self._look()

    def _look(self) -> None:
        """Make sure a runner serves the jobs that wait (after our slot holds ended)."""
        try:
            limits = allowlist.load(self.ctx.config.allowlist).limits
        except BgrunError:
            return  # runners leave on purpose while it is broken; `bgrun recover` resumes
        # Jobs of a paused or full queue do not count: a runner started for them would
        # leave at once, and its leaving would bring us back here, again and again.
        if self.ctx.store.next_run_at(QueuePlan(None, limits)) is not None:
            ensure_runner(self.ctx)
            self.expect_until = time.monotonic() + EXPECT_RUNNER

    def _leave(self) -> bool:
        """Give up the watcher lock; True to exit, False if a runner appeared meanwhile."""
        self.own.release()
        for slot in range(self.ctx.config.concurrency):
            lock = slot_lock(self.ctx.state, slot)
            if try_acquire(lock):
                lock.release()
                continue
            if not try_acquire(self.own):
                return True  # a new watcher has it
            self.scan()
            return False
        return True

    def _listen(self) -> None:
        """Turn each byte a runner writes into the FIFO into a look at the slots."""
        if sys.platform == "win32":
            return
        path = watcher_fifo(self.ctx.state)
        with suppress(FileExistsError):
            os.mkfifo(path, 0o600)
        fd = os.open(path, os.O_RDWR)  # also a writer: a read never sees end-of-file

        def listen() -> None:
            while os.read(fd, 4096):
                self.events.put((-1, None))

        threading.Thread(target=listen, daemon=True, name="fifo").start()


def watch(config: Config, lock_fd: int | None = None) -> bool:
    """Be this store's watcher until no runner is left; False if another one is alive.

    `lock_fd`: the watcher lock, taken and handed over by the runner that started us.
    """
    own = FileLock(state_dir(config.store) / "watcher.lock")
    if lock_fd is not None:
        own.adopt(lock_fd)
    elif not own.acquire(timeout=LOCK_WAIT):
        return False
    ctx = Context.open(config, Role.RUNNER, create=False)  # (never a new store)
    try:
        Watcher(ctx, own).run()
    finally:
        if own.is_locked:
            own.release()
    return True


def log_error(ctx: Context, exc: BgrunError | OSError) -> None:
    """Write a watcher's failure to the error log, if the log can be written."""
    kind = exc.kind if isinstance(exc, BgrunError) else type(exc).__name__
    with suppress(BgrunError):
        ctx.log.event(job="-", target="-", method="-", status="watcher-error",
                      error=f"{kind}: {exc}", pid=os.getpid())


def main(argv: list[str]) -> None:
    """Entry of a detached watcher: watch, and log (never print) anything unexpected."""
    from bgrun.runnerproc import log_crash

    lock_fd = int(argv[argv.index("--lock-fd") + 1]) if "--lock-fd" in argv else None
    config = Config.load()
    try:
        watch(config, lock_fd)
    except BgrunError as exc:
        log_crash(config, f"{exc.kind}: {exc}", None, "watcher-error")
    except Exception as exc:
        import traceback

        log_crash(config, f"{type(exc).__name__}: {exc}", traceback.format_exc(),
                  "watcher-error")
