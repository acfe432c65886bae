"""`bgrun run`: one job in the foreground, with the same checks, store records and logs."""

from __future__ import annotations

import contextlib
import os
import threading
import time
from collections.abc import Callable

from bgrun.attempt import Verdict, run_attempt
from bgrun.config import Config
from bgrun.context import Context, context_for
from bgrun.enqueue import Request, validate
from bgrun.follow import follow
from bgrun.locks import FileLock
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
    job = validate(config, req, now)._replace(held=slot)
    ctx = context_for(config)
    lock: FileLock = slot_lock(ctx.state, slot)
    with lock:
        job_id, _ = ctx.store.insert(job, now)
        ctx.log.event(job=job_id, target=job.target, method=job.method, status=JobStatus.QUEUED,
                      attempt=0, note="foreground")
        while True:
            claimed = ctx.store.claim_one(job_id, time.time(), slot, os.getpid())
            if claimed is None:
                return ctx.store.get(job_id)
            ctx.log.event(job=job_id, target=job.target, method=job.method,
                          status=JobStatus.RUNNING, attempt=claimed.attempts, pid=os.getpid())
            verdict = _attempt_following(ctx, claimed, write)
            state = record(ctx, claimed, verdict)
            if state != State.WAITING:
                break
            time.sleep(max(0.0, ctx.store.get(job_id).run_at - time.time()))
    with contextlib.suppress(OSError):
        os.unlink(lock.path)  # per-pid lock files would pile up otherwise
    return ctx.store.get(job_id)


def _attempt_following(ctx: Context, job: JobRecord, write: Callable[[bytes], object]
                       ) -> Verdict:
    verdicts: list[Verdict] = []
    worker = threading.Thread(
        target=lambda: verdicts.append(run_attempt(ctx.config, ctx.store, job)), daemon=True
    )
    worker.start()
    follow(ctx, job.id, write, done=lambda: not worker.is_alive(), pause=0.05)
    worker.join()
    return verdicts[0]
