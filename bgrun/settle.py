"""Noticing dead runners, settling their jobs, and making sure runners are alive.

A running job's runner is alive exactly while its slot lock is held (see slots.py); any
bgrun process can take a dead runner's slot lock for a moment and settle its jobs.
Settling is a conditional write, so two processes settling at once record one verdict.
"""

from __future__ import annotations

import contextlib
import os
import time
from pathlib import Path
from typing import TYPE_CHECKING

from bgrun.config import Config
from bgrun.context import RUNNER_SCRIPT, Context, runner_python
from bgrun.errors import Failure
from bgrun.jobfiles import result_path
from bgrun.launcher import start_detached
from bgrun.records import JobRecord, JobStatus, Outcome, State
from bgrun.slots import any_slot_free, poke, slot_if_dead

# bgrun.attempt (and policy) are imported where a verdict is recorded, not by every
# caller that queues a job: `bgrun exec` is a whole process, imports included.
if TYPE_CHECKING:
    from bgrun.attempt import Verdict
    from bgrun.store.rows import RunningAttempt

SETTLE_EVERY = 2.0  # seconds between one process's looks for dead runners (runners, waiters)
_last_look: dict[tuple[int, Path], float] = {}


def settle_every(ctx: Context) -> float:
    """Seconds between two looks for dead runners by one process, for this store."""
    # On a leased store a lapsed lease is seen by that look alone (one query), and the
    # lease row lasts one look less than BGRUN_LEASE (Config.lease_term), so a killed
    # host's jobs are taken over within BGRUN_LEASE.
    return ctx.config.takeover_look if ctx.store.leased else SETTLE_EVERY


def settle_orphans(ctx: Context, my_slot: int | None = None) -> int:
    """Settle every running job whose runner is dead; return how many were settled.

    `my_slot`: the caller is the runner holding that slot, so the slot's running jobs
    that are not its own were left by the dead runner before it. On a leased store
    (several hosts) a job of another host is settled once its runner's lease lapsed,
    and one of this host also when its slot lock is free (faster than the lease).
    """
    by_slot: dict[int, list[RunningAttempt]] = {}
    settled = 0
    for attempt in ctx.store.running():
        if ctx.store.leased and attempt.host != ctx.config.host:
            if attempt.lapsed:
                settled += settle_lost(ctx, attempt.job_id, attempt.attempt, here=False)
            continue
        by_slot.setdefault(attempt.runner_slot, []).append(attempt)
    dead_holders = _dead_holders(ctx)
    if dead_holders:
        ctx.store.release_holds(dead_holders)
    for slot, attempts in by_slot.items():
        settled += _settle_slot(ctx, slot, attempts, slot == my_slot)
    if settled or dead_holders:
        ensure_runner(ctx)  # a settled job may be waiting for its retry now
    return settled


def _dead_holders(ctx: Context) -> list[int]:
    """The foreground runs (`bgrun run`) holding a waiting job that died.

    On a leased store a foreground run holds a lease too (foreground.py), and one of
    another host has no lock here: it is dead once its lease lapsed.
    """
    holders = ctx.store.holders()
    if holders and ctx.store.leased:
        live = {r.slot for r in ctx.store.runner_rows()
                if r.lease_age is not None and r.lease_age <= ctx.config.lease_term}
        holders = [h for h in holders if h not in live]
    dead = []
    for holder in holders:
        with slot_if_dead(ctx.state, holder) as free:
            if free:
                dead.append(holder)
    return dead


def _settle_slot(ctx: Context, slot: int, attempts: list[RunningAttempt], mine: bool) -> int:
    """Settle the running attempts of this host's slot `slot` whose runner is dead."""
    if mine:
        lost = [a for a in attempts if a.runner_pid != os.getpid()]
    else:
        with slot_if_dead(ctx.state, slot) as dead:
            # A live slot holder whose lease lapsed (frozen, or cut off from the store)
            # ends its own attempt: it is taken over as on any other host.
            lost = attempts if dead else [a for a in attempts if a.lapsed]
            return sum(settle_lost(ctx, a.job_id, a.attempt, lapsed=not dead) for a in lost)
    return sum(settle_lost(ctx, a.job_id, a.attempt) for a in lost)


def settle_mine(ctx: Context, slot: int) -> int:
    """Settle the attempts still running in the store under this very runner.

    For a runner that had lost the store: whatever it claimed or ran before is over
    (it ended those trees), though a renewed lease would hide them from everyone else.
    """
    mine = [a for a in ctx.store.running()
            if a.host == ctx.config.host and a.runner_slot == slot
            and a.runner_pid == os.getpid()]
    return sum(settle_lost(ctx, a.job_id, a.attempt, lapsed=True) for a in mine)


def settle_orphans_now_and_then(ctx: Context) -> None:
    """settle_orphans, at most every settle_every() per process and store.

    For a caller that queues many jobs: the look costs two queries and a lock try per
    slot, and every live runner makes the same look every SETTLE_EVERY anyway.
    """
    key = (os.getpid(), ctx.config.store)
    now = time.monotonic()
    if now - _last_look.get(key, float("-inf")) >= settle_every(ctx):
        _last_look[key] = now
        settle_orphans(ctx)


def settle_lost(ctx: Context, job_id: str, attempt: int, *, here: bool = True,
                lapsed: bool = False) -> bool:
    """Record the verdict of an attempt whose runner died (or, `lapsed`, lost its lease:
    it ends that tree itself); end its orphaned tree first.

    `here`: its runner ran on this host. One of another host is only recorded: its tree
    and its result file are on that host (its runner ends the tree when it loses its
    lease, or the tree died with the host).
    """
    from bgrun.attempt import Verdict, marker, read_verdict

    job = ctx.store.get(job_id)
    if job.stored_status != State.RUNNING or job.attempts != attempt:
        return False
    runner = f"pid {job.runner_pid}" + ("" if here else f" on {job.host}")
    what = "lost its lease" if lapsed or not here else "died"
    verdict = Verdict(Outcome.FAILED, Failure.RUNNER_LOST.says(
        f"the runner ({runner}) {what} while the job ran"))
    if not here:
        return record(ctx, job, verdict) is not None
    child = ctx.store.child_of(job_id)
    if child is not None:
        from bgrun.proctree import kill_tree  # psutil: only paid for when settling

        kill_tree(child[0], child[1], marker(job, job.runner_pid or 0))
    told = read_verdict(-9, result_path(ctx.config.log_dir, job_id), ctx.config.max_result_bytes)
    if told.outcome == Outcome.COMPLETED:
        verdict = told
    return record(ctx, job, verdict) is not None


def record(ctx: Context, job: JobRecord, verdict: Verdict, *, own: bool = False
           ) -> State | None:
    """Store the verdict of attempt `job.attempts`, scheduling a retry where one is left;
    write the event. Returns the state stored, or None if the attempt was settled already
    (or, `own` verdict of its runner on a leased store, if that runner's lease lapsed)."""
    from bgrun.policy import compute_backoff, may_retry

    now = time.time()
    config = ctx.config
    retry_at = None
    if (verdict.outcome == Outcome.FAILED and verdict.retryable
            and may_retry(job.attempts, job.retries)):
        retry_at = now + compute_backoff(job.attempts, config.backoff_base, config.backoff_max)
    state = ctx.store.finish(
        job.id, job.attempts, now, outcome=verdict.outcome, error=verdict.error,
        traceback=verdict.traceback, result_json=verdict.result_json, retry_at=retry_at,
        progress_json=verdict.progress_json, own=own,
    )
    if state is None:
        return None
    status = Outcome.RETRYING if state == State.WAITING else state
    ctx.log.event(
        job=job.id, target=job.target, method=job.method, queue=job.queue, status=status,
        attempt=job.attempts,
        error=verdict.error if state != State.COMPLETED else None, traceback=verdict.traceback,
        retry_in=None if retry_at is None else f"{retry_at - now:.1f}s",
    )
    return state


def ensure_runner(ctx: Context) -> None:
    """Make sure a runner will look at the store: wake an idle one, or start one.

    Callers commit before they call this, and an idle runner looks at the store once more
    after it starts counting itself idle, so no job is left without a runner.
    """
    if poke(ctx.state):
        return
    if any_slot_free(ctx.state, ctx.config.concurrency):
        start_runner(ctx)


def start_runner(ctx: Context) -> None:
    """Start a detached runner for this store (it exits at once if every slot is taken)."""
    start_runner_for(ctx.config)


def start_runner_for(config: Config) -> None:
    """start_runner() for the store `config` names, without opening it here.

    Nothing with BGRUN_START_RUNNERS=0 (a host whose jobs run on other hosts). A runner
    of a server store starts in our working directory: its jobs run there (SPEC).
    """
    if not config.start_runners:
        return
    env = dict(os.environ)
    env.update(config.as_environ())
    cwd = Path(config.store.parent)
    if config.store_url is not None:
        with contextlib.suppress(OSError):  # (our folder was deleted: the anchor's then)
            cwd = Path.cwd()
    start_detached([runner_python(config), RUNNER_SCRIPT], cwd=cwd, env=env)


def recover(ctx: Context) -> tuple[int, int]:
    """Settle orphaned jobs and make sure runners serve every waiting job.

    Returns (jobs settled, jobs waiting). Idempotent, and quick when nothing is to do.
    """
    settled = settle_orphans(ctx)
    counts = ctx.store.counts()
    waiting = counts.get(JobStatus.QUEUED, 0) + counts.get(JobStatus.SCHEDULED, 0)
    if waiting:
        ensure_runner(ctx)
    return settled, waiting
