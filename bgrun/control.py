"""Acting on stored jobs: wait, cancel, retry, delete, prune. Shared by CLI, API, dashboard."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

from bgrun.context import Context
from bgrun.errors import InvalidStateError, OutputGoneError, WaitTimeoutError
from bgrun.jobfiles import output_path
from bgrun.outcopy import read_from_store
from bgrun.records import JobRecord, JobStatus, State
from bgrun.settle import ensure_runner, recover, settle_every, settle_orphans

__all__ = ["recover", "settle_orphans"]


def wait_for(ctx: Context, job_id: str, timeout: float | None = None,
             on_poll: Callable[[JobRecord], object] | None = None) -> JobRecord:
    """Block until the job ends and return it; WaitTimeoutError after `timeout` seconds.

    `on_poll(job)` sees the job each time it is read (a progress bar draws from it).
    """
    start = time.monotonic()
    deadline = None if timeout is None else start + timeout
    last_settle = start
    pause = 0.01
    while True:
        job = ctx.store.get(job_id)
        if on_poll is not None:
            on_poll(job)
        if job.status_at(time.time()).finished:
            return job
        now = time.monotonic()
        if deadline is not None and now >= deadline:
            raise WaitTimeoutError(f"job {job_id} is still {job.status_at(time.time()).value}"
                                   f" after {timeout:g} s")
        if now - last_settle >= settle_every(ctx):
            settle_orphans(ctx)
            last_settle = now
        pause = min(pause * 1.5, 0.2)
        time.sleep(pause if deadline is None else max(0.0, min(pause, deadline - now)))


def cancel_job(ctx: Context, job_id: str, by: str) -> JobRecord:
    """Cancel a waiting job now, or have a running one's runner end its process tree.

    A running job reads `running` until its runner has ended the tree (within one tick
    plus the grace period); wait_for() tells when it is over.
    """
    before = ctx.store.get(job_id)
    job = ctx.store.cancel(job_id, time.time())
    if job.stored_status == State.CANCELLED:
        ctx.log.event(job=job.id, target=job.target, method=job.method, queue=job.queue,
                      status=JobStatus.CANCELLED, attempt=job.attempts, by=by)
    else:
        ctx.log.event(job=job.id, target=job.target, method=job.method, queue=job.queue,
                      status="cancel-requested", attempt=before.attempts, by=by)
        settle_orphans(ctx)  # no live runner to do it: settle it here
    return ctx.store.get(job_id)


def retry_job(ctx: Context, job_id: str, by: str) -> JobRecord:
    """Queue a failed or cancelled job again under the same id; attempts start from 0."""
    job = ctx.store.retry(job_id, time.time())
    ctx.log.event(job=job.id, target=job.target, method=job.method, queue=job.queue,
                  status=JobStatus.QUEUED, attempt=0, by=by, note="retry")
    ensure_runner(ctx)
    return job


def delete_jobs(ctx: Context, job_ids: list[str], by: str) -> list[str]:
    """Delete finished jobs and their output files; refuse one that has not finished."""
    queues = {}
    for job_id in job_ids:
        job = ctx.store.get(job_id)
        if not job.status_at(time.time()).finished:
            raise InvalidStateError(f"job {job_id} is {job.status_at(time.time()).value}:"
                                    " only finished jobs can be deleted")
        queues[job.id] = job.queue
    deleted = ctx.store.delete(job_ids)
    for job_id in deleted:
        output_path(ctx.config.log_dir, job_id).unlink(missing_ok=True)
        ctx.log.event(job=job_id, target="-", method="-", queue=queues.get(job_id),
                      status="deleted", by=by)
    return deleted


def prune(ctx: Context, older_than: float, by: str) -> list[str]:
    """Delete jobs that finished more than `older_than` seconds ago, with their output."""
    return delete_jobs(ctx, ctx.store.finished_before(time.time() - older_than), by)


def stored_output(ctx: Context, job: JobRecord) -> bytes | None:
    """The copy of the job's output the store keeps (PostgreSQL: the output file is on
    the host that ran it), or None where the store keeps none."""
    if not ctx.store.keeps_output:
        return None
    stored = ctx.store.output_of(job.id)
    return None if stored is None else stored[0]


OUTPUT_GRACE = 2.0  # seconds after a claim during which a missing output file is normal


def read_output(ctx: Context, job_id: str) -> bytes:
    """The job's captured stdout and stderr so far (empty before it first runs).

    OutputGoneError when the job ran but its file is gone: an empty answer would read as
    "the job printed nothing".
    """
    job = ctx.store.get(job_id)
    if read_from_store(ctx.store, job, ctx.config.host):
        stored = stored_output(ctx, job)
        if stored is not None:
            return stored
    try:
        return Path(job.output).read_bytes()
    except FileNotFoundError:
        if job.started_at is None or (job.stored_status == State.RUNNING
                                      and time.time() - job.started_at < OUTPUT_GRACE):
            return b""  # not run yet, or its runner is opening the file right now
        raise OutputGoneError(f"job {job_id} ran, but its output file {job.output} is gone"
                              " (deleted, or the log folder was moved)") from None
