"""The runners view: every live runner, its slot and queues, and the job it runs now.

Runners write their own row when they take a slot and remove it when they give the slot
up; a runner killed outright leaves its row behind, so a row is shown only while its
process is alive: the same pid with the same start time (pid reuse), and, where the
start time disagrees (a stepped clock moves it), while its slot lock is held. On a store
shared by several hosts (leased) a row is shown while its lease is valid, and a row of
this host only while its process is alive too.
"""

from __future__ import annotations

from typing import Any

from bgrun.context import Context
from bgrun.procstart import process_start
from bgrun.records import iso, progress_of
from bgrun.slots import slot_if_dead
from bgrun.store.watch import RunnerRow


def live_runners(ctx: Context) -> list[dict[str, Any]]:
    """The live runners of this store, by slot, as `bgrun runners --json` gives them."""
    # (a foreground `bgrun run` holds a lease row too, under a negative slot: not a runner)
    return [runner_dict(row) for row in ctx.store.runner_rows()
            if row.slot >= 0 and is_live(ctx, row)]


def is_live(ctx: Context, row: RunnerRow) -> bool:
    """True while the runner that wrote `row` is alive and holds its slot."""
    if ctx.store.leased:
        if row.lease_age is None or row.lease_age > ctx.config.lease_term:
            return False  # lapsed: its jobs are taken over
        if row.host != ctx.config.host:
            return True  # (another host's process cannot be looked at from here)
    started = process_start(row.pid)
    if started == 0.0:  # no such process
        return False
    if abs(started - row.process_start) < 1.0:
        return True
    with slot_if_dead(ctx.state, row.slot) as dead:  # another process, or a stepped clock
        return not dead and started < row.started_at


def runner_dict(row: RunnerRow) -> dict[str, Any]:
    """One runner as JSON: host, pid, slot, queues (null: all), since, lease age (null
    where liveness is not a lease), idle, and its job."""
    job = None
    if row.job_id is not None:
        job = {"id": row.job_id, "target": row.target, "method": row.method,
               "since": iso(row.job_started_at), "progress": progress_of(row.progress_json)}
    return {
        "host": row.host,
        "pid": row.pid,
        "slot": row.slot,
        "queues": None if row.queues is None else row.queues.split(","),
        "started_at": iso(row.started_at),
        "lease_age": None if row.lease_age is None else round(row.lease_age, 1),
        "idle": job is None,
        "job": job,
    }
