"""Why a queued job is still waiting: derived when read (`list`, `show`, the handle).

"queued" alone hides the two waits a user can act on: an allowlist that is missing or
broken (runners leave it alone, so nothing runs until it is fixed and `bgrun recover` is
run), and every runner slot busy (a long or stuck job holds each one: a timeout, a higher
BGRUN_CONCURRENCY or `bgrun cancel` helps). On a server store shared by several hosts,
a third: no live runner serves the job's queue (a web host with BGRUN_START_RUNNERS=0
and every worker host down). Nothing here is stored, and nothing takes a lock: a look
reads the store and the allowlist files, once per command.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from bgrun import allowlist
from bgrun.context import Context
from bgrun.errors import AllowlistError
from bgrun.records import JobRecord, JobStatus


class Look:
    """What the reasons look at, each read at most once per command."""

    def __init__(self, ctx: Context, now: float) -> None:
        self.ctx = ctx
        self.now = now
        self._allowlists: dict[str, str | None] = {}
        self._running: int | None = None
        self._in_queue: dict[str, int] = {}
        self._served: list[frozenset[str] | None] | None = None

    def allowlist_problem(self, path: str) -> str | None:
        """Why the allowlist at `path` is unusable, or None when it can be used."""
        if path not in self._allowlists:
            try:
                allowlist.load(Path(path))
                self._allowlists[path] = None
            except AllowlistError as exc:
                self._allowlists[path] = str(exc)
        return self._allowlists[path]

    def running_in_slots(self) -> int:
        """How many jobs runners are running now (a foreground `bgrun run` holds no slot)."""
        if self._running is None:
            # (slots are per host: on a store shared by several, this host's)
            here, shared = self.ctx.config.host, self.ctx.store.leased
            self._running = sum(1 for a in self.ctx.store.running() if a.runner_slot >= 0
                                and (not shared or a.host == here))
        return self._running


    def live_runners_serve(self, queue: str) -> bool:
        """True when a runner whose lease holds serves `queue` (leased stores only)."""
        if self._served is None:
            lease = self.ctx.config.lease_term
            self._served = [
                None if r.queues is None else frozenset(r.queues.split(","))
                for r in self.ctx.store.runner_rows()
                if r.lease_age is not None and r.lease_age < lease
            ]
        return any(q is None or queue in q for q in self._served)

    def running_in_queue(self, queue: str) -> int:
        """How many jobs of `queue` are running now."""
        if queue not in self._in_queue:
            running = self.ctx.store.list_jobs(status="running", queue=queue, limit=0)
            self._in_queue[queue] = len(running)
        return self._in_queue[queue]


#: One reason a ready job may wait: a phrase for users, or None when it does not apply.
Reason = Callable[[JobRecord, Look], "str | None"]


def allowlist_unusable(job: JobRecord, look: Look) -> str | None:
    """The job's allowlist is missing or broken: no runner runs anything under it."""
    problem = look.allowlist_problem(job.allowlist)
    if problem is None:
        return None
    return f"the allowlist is unusable (fix it, then run bgrun recover): {problem}"


def queue_at_limit(job: JobRecord, look: Look) -> str | None:
    """The job's queue is paused, or runs as many jobs as its limit allows."""
    if look.allowlist_problem(job.allowlist) is not None:
        return None
    limit = allowlist.load(Path(job.allowlist)).limits.get(job.queue)
    if limit is None:
        return None
    if limit == 0:
        return f"queue {job.queue} is paused (concurrency = 0 in {job.allowlist})"
    running = look.running_in_queue(job.queue)
    if running < limit:
        return None
    return f"queue {job.queue} is at its limit ({running} running, concurrency = {limit})"


def no_live_runner(job: JobRecord, look: Look) -> str | None:
    """On a store several hosts share: no runner alive on any host serves the job's queue.

    Runners started on demand serve every queue, so this is the wait of a host that
    starts none (BGRUN_START_RUNNERS=0) while every worker host is down or serves other
    queues. It is a look at the leases, not a promise: a worker may start any time.
    """
    if not look.ctx.store.leased or look.live_runners_serve(job.queue):
        return None
    return (f"no runner on any host serves queue {job.queue} now (start `bgrun worker`"
            " on a worker host)")


def every_slot_busy(job: JobRecord, look: Look) -> str | None:
    """Every runner slot is running a job: the next free one takes the best ready job."""
    if look.ctx.store.leased:
        return None  # slots are per host there; the jobs running are every host's
    concurrency = look.ctx.config.concurrency
    if look.running_in_slots() < concurrency:
        return None
    return f"every slot is busy ({concurrency} running, BGRUN_CONCURRENCY={concurrency})"


#: Asked in order; the first reason that answers is the one shown.
REASONS: list[Reason] = [allowlist_unusable, queue_at_limit, no_live_runner, every_slot_busy]


def job_dict(job: JobRecord, look: Look) -> dict[str, Any]:
    """The job as `show --json`, `list --json` and the dashboard's API give it."""
    return {**job.to_dict(look.now), "waiting_reason": waiting_reason(job, look)}


def waiting_reason(job: JobRecord, look: Look) -> str | None:
    """Why `job` is queued and not running, or None (not queued, or about to start)."""
    if job.status_at(look.now) is not JobStatus.QUEUED:
        return None
    for reason in REASONS:
        found = reason(job, look)
        if found is not None:
            return found
    return None
