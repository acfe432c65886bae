"""The runner: claims ready jobs one at a time and supervises each attempt.

One loop, in this order:
- settle the jobs a dead runner left in our slot (once, at start);
- claim the best ready job; if more are ready and a slot is free, start another runner;
- run the attempt in its own child process, and record its verdict;
- with nothing ready: count as idle (open the wake FIFO), look at the store once more,
  then sleep until woken, until the next scheduled job, or one tick;
- retire when code it preloaded changed on disk (BGRUN_PRELOAD), starting a fresh runner;
- leave after `runner_idle` seconds with nothing to do: stop counting as idle, release
  the slot, look at the store once more, and only then exit. While scheduled jobs wait,
  one runner (the keeper) stays.
"""

from __future__ import annotations

import contextlib
import os
import time
from types import FrameType

from bgrun import allowlist
from bgrun.attempt import marker, run_attempt
from bgrun.context import Context
from bgrun.errors import BgrunError, ConfigError, StoreError, StoreGoneError
from bgrun.lease import (
    Fenced,
    Lease,
    LeaseLost,
    note_abandoned,
    note_fenced,
    record_while_held,
    tolerant,
    wait_for_store,
)
from bgrun.locks import FileLock
from bgrun.preload import PRELOADED
from bgrun.procstart import process_start
from bgrun.queues import QueuePlan
from bgrun.records import JobRecord, JobStatus, Outcome
from bgrun.settle import (
    settle_every,
    settle_orphans,
    start_runner,
)
from bgrun.slots import Waker, any_slot_free, take_free_slot, try_acquire, worker_waiting
from bgrun.warm import WarmPool
from bgrun.watchlink import STOP, WatchLink

SPREAD_EVERY = 0.25  # seconds between looks for a free slot while busy (a look costs a query)


class Runner:
    """One runner process, holding one slot for its life."""

    def __init__(self, ctx: Context, slot: int, lock: FileLock, *, linger: bool = False,
                 requeue_on_stop: bool = False, queues: frozenset[str] | None = None) -> None:
        self.ctx = ctx
        self.slot = slot
        self.lock = lock
        self.linger = linger  # a foreground worker never leaves on idleness
        self.requeue_on_stop = requeue_on_stop
        self.queues = queues  # None: every queue (runners started on demand)
        # A worker that serves some queues only must not answer callers' wake-ups: a
        # caller that woke it would count on it for a job it never takes. It polls.
        self.waker = Waker(ctx.state, answers=queues is None)
        self.keeper: FileLock | None = None
        self.stopping = False
        self.child: tuple[int, float] | None = None  # the running attempt's (pid, start)
        self.last_spread = float("-inf")  # a runner's first attempt always looks
        self.watch = WatchLink(ctx)  # a watcher notices this runner's death (watcher.py)
        self.last_handover_look = float("-inf")
        self.warm = WarmPool()  # targets with `reuse` run in a warm child (warm.py)
        self.slept = False  # the last pass ended in a sleep (see _claim)
        self.lease = Lease(ctx, slot)
        self.marker = ""  # the running attempt's tag (attempt.marker)

    def register(self) -> None:
        """Be seen in the runners view (`bgrun runners`) while holding this slot; on a
        leased store, this is also the runner's lease (renewed by self.lease)."""
        pid = os.getpid()
        queues = None if self.queues is None else ",".join(sorted(self.queues))
        self.ctx.store.register_runner(self.slot, pid, process_start(pid), time.time(), queues)
        self.lease.registered(self.slot)

    def serve(self) -> None:
        """Run jobs until there is nothing left to do (or a stop signal).

        On a leased store an unreachable store, or a lost lease, never ends the runner:
        it claims nothing until the store is back (`_outage`), then goes on.
        """
        self.register()
        self.watch.slot_taken(self.slot)
        while not self.stopping:
            try:
                self._serve()
                return
            except (StoreError, LeaseLost) as exc:
                if (not self.lease.active or isinstance(exc, StoreGoneError)
                        or not self.lock.is_locked):  # (it was leaving its slot)
                    raise
                self._outage(exc)
        self.waker.busy()

    def _serve(self) -> None:
        settle_orphans(self.ctx, my_slot=self.slot)
        idle_since = last_settle = time.monotonic()
        looked_again = False
        while not self.stopping:
            self._check_watcher()
            if not self.lease.keep():
                raise LeaseLost(self.lease.why())
            if self._hand_over():
                return
            if time.monotonic() - last_settle >= settle_every(self.ctx):
                settle_orphans(self.ctx, my_slot=self.slot)  # other runners may have died
                last_settle = time.monotonic()
            plan = self._plan()
            job = self._claim(plan)
            if job is not None:
                self.waker.busy()
                if not self._run(job):  # spreads once its attempt has started (_child_started)
                    break
                if PRELOADED.stale:
                    self._retire()
                    return
                idle_since = time.monotonic()
                looked_again = False
                continue
            self.waker.idle()
            self.last_spread = float("-inf")  # the next burst's first attempt looks again
            next_at = self.ctx.store.next_run_at(plan)  # once more, now callers can wake us
            now = time.time()
            due = next_at is not None and next_at <= now
            if due and not looked_again:
                looked_again = True  # a job became ready meanwhile: claim it now
                continue
            looked_again = False  # (a second miss is not retried at once: no busy loop)
            if self._may_leave(next_at, idle_since) and self._leave():
                return
            self._sleep(next_at - now if next_at is not None and not due else None)
            self.slept = True
        self.waker.busy()

    def _claim(self, plan: QueuePlan) -> JobRecord | None:
        """Claim the best ready job; after a sleep, only if a read finds one ready.

        A claim is a write transaction even when it finds nothing, and a caller's poke
        wakes us while it may be queueing its next job: the read leaves the store's write
        lock to that caller (a writer that meets a held lock sleeps a millisecond or more)
        when the job woken for is scheduled, or another runner took it.
        """
        if self.slept:
            self.slept = False
            next_at = self.ctx.store.next_run_at(plan)
            if next_at is None or next_at > time.time():
                return None
        return self.ctx.store.claim(time.time(), self.slot, os.getpid(), plan)

    def _sleep(self, until_next: float | None) -> None:
        """Sleep while idle: until woken, the next scheduled job, or one tick.

        On a store that notifies, until it says jobs became ready (or the next look for
        dead runners, or the lease's next renew), the wake FIFO only counting us idle.
        """
        tick = self.ctx.config.tick
        if self.ctx.store.notifies:
            longest = min(settle_every(self.ctx), self.lease.every)
            self.ctx.store.wait_for_work(min(until_next or longest, longest))
            return
        self.waker.sleep(min(until_next or tick, tick))

    def _outage(self, exc: BaseException) -> None:
        """Claim nothing until the store is back (lease.wait_for_store)."""
        self.waker.busy()  # callers must not count on us meanwhile
        wait_for_store(self.ctx, self.lease, exc, self.register, lambda: self.stopping)

    def _plan(self) -> QueuePlan:
        """The queues this runner serves, under the limits of its allowlist as it is now.

        Read before every claim (a cached parse while the file is unchanged), so a limit
        changed in the allowlist holds from the next claim. A broken allowlist raises
        AllowlistError: with its limits unknown, nothing may be claimed.
        """
        return QueuePlan(self.queues, allowlist.load(self.ctx.config.allowlist).limits)

    def _may_leave(self, next_at: float | None, idle_since: float) -> bool:
        if self.linger or time.monotonic() - idle_since < self.ctx.config.runner_idle:
            return False
        if next_at is None:
            return True
        # Only scheduled jobs wait: one runner, the keeper, stays for them.
        if self.keeper is None:
            keeper = FileLock(self.ctx.state / "keeper.lock")
            if try_acquire(keeper):
                self.keeper = keeper
        return self.keeper is None

    def _hand_over(self) -> bool:
        """Give our slot to a `bgrun worker` waiting for one; True to exit.

        Looked at between attempts, at most every SPREAD_EVERY; a worker is the permanent
        runner, so the on-demand one yields (see worker.py).
        """
        if self.linger or time.monotonic() - self.last_handover_look < SPREAD_EVERY:
            return False
        self.last_handover_look = time.monotonic()
        if not worker_waiting(self.ctx.state):
            return False
        self._give_up_slot(STOP)  # left for the worker: the watcher starts no runner for it
        return True

    def _give_up_slot(self, mark: str = "") -> None:
        """Stop counting as idle, and release the keeper lock (if held) and the slot."""
        self.waker.busy()
        self.ctx.store.unregister_runner(self.slot, os.getpid())
        if self.keeper is not None:
            self.keeper.release()
            self.keeper = None
        self.watch.slot_left(self.slot, mark)
        self.lock.release()

    def _leave(self) -> bool:
        """Give up the slot; True to exit, False if a last look found work (slot retaken)."""
        self._give_up_slot()
        next_at = self.ctx.store.next_run_at(self._plan())
        if next_at is None or next_at > time.time():
            return True
        taken = take_free_slot(self.ctx.state, self.ctx.config.concurrency)
        if taken is None:
            return True  # every slot has a runner, and they will claim it
        self.slot, self.lock = taken
        self.register()
        self.watch.slot_taken(self.slot)
        return False

    def _retire(self) -> None:
        """Leave to a fresh runner: this one's preloaded code changed on disk."""
        self._give_up_slot()
        start_runner(self.ctx)

    def _spread(self) -> None:
        """Start another runner while more jobs are ready and a slot is free (bursts).

        Looked at on the first attempt of a burst, then every SPREAD_EVERY: a slot frees
        only when a runner leaves, and a runner's own start takes longer than that.
        """
        if time.monotonic() - self.last_spread < SPREAD_EVERY:
            return
        self.last_spread = time.monotonic()
        # Ready jobs of any queue count (runners started on demand serve them all), but
        # not those of a queue at its limit: another runner could not take them either.
        plan = QueuePlan(None, allowlist.load(self.ctx.config.allowlist).limits)
        next_at = self.ctx.store.next_run_at(plan)
        if next_at is not None and next_at <= time.time() and any_slot_free(
            self.ctx.state, self.ctx.config.concurrency
        ):
            start_runner(self.ctx)

    def _run(self, job: JobRecord) -> bool:
        """Run one claimed attempt and record it; False when the runner must stop.

        LeaseLost when the lease was lost meanwhile: the attempt's tree was ended and
        nothing recorded (another runner takes the job over).
        """
        ctx = self.ctx
        try:
            ctx.log.event(job=job.id, target=job.target, method=job.method, queue=job.queue,
                          status=JobStatus.RUNNING, attempt=job.attempts, pid=os.getpid())
        except ConfigError:  # the log cannot be written: the job waits for a fixed folder
            ctx.store.hand_back(job.id, job.attempts)
            raise
        self.marker = marker(job, os.getpid())
        try:
            verdict = run_attempt(ctx.config, ctx.store, job, self._child_started,
                                  self._on_tick, self.warm)
        except (StoreGoneError, LeaseLost) as exc:
            note_abandoned(ctx, job, exc)
            raise
        except Fenced:
            note_fenced(ctx, job)
            return True
        except BaseException:
            # Nothing supervises the attempt from here: never leave its tree running (on a
            # shared store another host may run the job again once our lease lapses).
            self.lease.end_child()
            raise
        finally:
            self.child = None
            self.lease.child_done()
        if not self.lease.keep():  # (its verdict must not land: it may be taken over)
            lost = LeaseLost(self.lease.why())
            note_abandoned(ctx, job, lost)
            raise lost
        if verdict.outcome == Outcome.HANDBACK or (self.stopping and self.requeue_on_stop
                                                   and verdict.outcome == Outcome.FAILED):
            if ctx.store.hand_back(job.id, job.attempts):
                ctx.log.event(job=job.id, target=job.target, method=job.method, queue=job.queue,
                              status=JobStatus.QUEUED, attempt=job.attempts - 1,
                              error=verdict.error if verdict.outcome == Outcome.HANDBACK else None,
                              note="handed back")
            else:
                note_fenced(ctx, job)
            return False
        if not record_while_held(self.ctx, self.lease, job, verdict):
            note_fenced(ctx, job)
        return True

    def _on_tick(self) -> None:
        """Every tick of a running attempt: the watcher, and the lease (LeaseLost).

        The store may be out of reach meanwhile (a cut): the lease, not that error, says
        when the attempt must end, so the watcher's settle is tried again next tick.
        """
        tolerant(self.ctx.store, self._check_watcher)
        if not self.lease.keep():
            raise LeaseLost(self.lease.why())

    def _check_watcher(self) -> None:
        """Replace a killed watcher within a tick; settle what died with it at once."""
        if self.watch.check():
            settle_orphans(self.ctx, my_slot=self.slot)

    def _child_started(self, pid: int, started: float) -> None:
        self.child = (pid, started)
        self.lease.watch_child(pid, started, self.marker)
        # Only now: a job handed back (broken allowlist) must not start a relay of runners.
        tolerant(self.ctx.store, self._spread)  # optional: a store error must not end the job

    def stop(self, signum: int, frame: FrameType | None) -> None:
        """Signal handler: finish (or, with requeue, end and hand back) the job, then exit.

        It must not touch the store: the main thread may hold its lock right now.
        """
        self.stopping = True
        child = self.child
        if child is not None and self.requeue_on_stop:
            from bgrun.proctree import terminate_tree

            terminate_tree(child[0], child[1], grace=0.0)

    def close(self) -> None:
        """Let go of everything on the way out: the warm child, the slot if still held
        (work may be left behind: a stop, a broken allowlist), the watcher link."""
        self.warm.close()  # (its child exits on EOF; it would also when we exit)
        if self.lock.is_locked:
            with contextlib.suppress(BgrunError):  # the row of a dead slot is ignored anyway
                self.ctx.store.unregister_runner(self.slot, os.getpid())
            self.watch.slot_left(self.slot, STOP)
            self.lock.release()
        self.watch.close()
