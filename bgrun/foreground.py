"""`bgrun run`: one job in the foreground, with the same checks, store records and logs."""

from __future__ import annotations

import contextlib
import os
import threading
import time
from collections.abc import Callable, Iterator

from bgrun import allowlist
from bgrun.attempt import Verdict, marker, run_attempt
from bgrun.config import Config
from bgrun.context import Context, context_for
from bgrun.enqueue import Request, checked
from bgrun.errors import BgrunError
from bgrun.follow import follow
from bgrun.lease import Fenced, Lease, LeaseLost, note_abandoned, note_fenced
from bgrun.locks import FileLock
from bgrun.procstart import process_start
from bgrun.queues import QueuePlan
from bgrun.records import JobRecord, JobStatus, State
from bgrun.settle import record
from bgrun.slots import slot_lock


def run_foreground(config: Config, req: Request, write: Callable[[bytes], object]
                   ) -> JobRecord:
    """Validate, store and run the job here, attempt after attempt, streaming its output.

    The job is stored as claimed by this process: its slot is minus our pid, whose lock
    we hold, so if we die other bgrun processes settle the job as they would a runner's.
    The store (and its folder) is opened only for a request that passed the checks.
    """
    slot = -os.getpid()
    now = time.time()
    job = checked(config, req, now)._replace(held=slot)
    ctx = context_for(config)
    lock: FileLock = slot_lock(ctx.state, slot)
    with lock, _leased(ctx, slot) as lease:
        job_id, _ = ctx.store.insert(job, now)
        ctx.log.event(job=job_id, target=job.target, method=job.method, queue=job.queue,
                      status=JobStatus.QUEUED, attempt=0, note="foreground")
        while True:
            claimed = _claim_when_free(ctx, job_id, slot)
            if claimed is None:
                return ctx.store.get(job_id)
            ctx.log.event(job=job_id, target=job.target, method=job.method, queue=job.queue,
                          status=JobStatus.RUNNING, attempt=claimed.attempts, pid=os.getpid())
            verdict = _attempt_following(ctx, claimed, write, lease)
            state = None if verdict is None else record(ctx, claimed, verdict, own=True)
            if state != State.WAITING:
                break
            time.sleep(max(0.0, ctx.store.get(job_id).run_at - time.time()))
    with contextlib.suppress(OSError):
        os.unlink(lock.path)  # per-pid lock files would pile up otherwise
    return ctx.store.get(job_id)


@contextlib.contextmanager
def _leased(ctx: Context, slot: int) -> Iterator[Lease]:
    """On a leased store, a lease row for this run while it lasts (its attempts would
    read as lapsed without one, and be taken over); nothing elsewhere."""
    lease = Lease(ctx, slot)
    if not lease.active:
        yield lease
        return
    pid = os.getpid()
    ctx.store.register_runner(slot, pid, process_start(pid), time.time(), None)
    lease.registered(slot)
    try:
        yield lease
    finally:
        with contextlib.suppress(BgrunError):
            ctx.store.unregister_runner(slot, pid)


def _claim_when_free(ctx: Context, job_id: str, slot: int) -> JobRecord | None:
    """Claim our job as soon as its queue has a free slot; None once it no longer waits.

    A foreground run honours queue limits like any runner: it waits while its queue is
    full (or paused), and its allowlist is read again each time, as a runner's is.
    """
    while True:
        plan = QueuePlan(None, allowlist.load(ctx.config.allowlist).limits)
        claimed = ctx.store.claim_one(job_id, time.time(), slot, os.getpid(), plan)
        if claimed is not None or ctx.store.get(job_id).stored_status != State.WAITING:
            return claimed
        time.sleep(ctx.config.tick)


def _attempt_following(ctx: Context, job: JobRecord, write: Callable[[bytes], object],
                       lease: Lease) -> Verdict | None:
    """Run the attempt, following its output; None if it was taken over (fenced)."""
    verdicts: list[Verdict] = []

    def attempt() -> None:
        with contextlib.suppress(Fenced):  # (its tree was ended: nothing to record)
            verdicts.append(run_attempt(ctx.config, ctx.store, job, on_start=started))

    def started(pid: int, start: float) -> None:
        lease.child = (pid, start, marker(job, os.getpid()))

    worker = threading.Thread(target=attempt, daemon=True)
    worker.start()

    def done() -> bool:
        if not lease.keep():  # (renewed every quarter lease, from this loop)
            lease.end_child()  # lost: another host takes the job over
        return not worker.is_alive()

    follow(ctx, job.id, write, done=done, pause=0.05)
    worker.join()
    if not lease.held():
        note_abandoned(ctx, job, LeaseLost(lease.why()))
        return None
    if not verdicts:
        note_fenced(ctx, job)
        return None
    return verdicts[0]
