"""Queue limits inside a PostgreSQL claim: which queues are full, which job, which slot.

A queue with a limit N has the slots 0 to N - 1, and a running job of it holds one
(partial unique index jobs_queue_slot). Which queues are full is first read without a
lock, to leave them out of the search; the queue of the job found is then counted again
under its advisory lock, which every claim of that queue takes before it counts: two
claims never both see the last free slot, and a lowered limit lets none through until
enough running jobs have ended.
"""

from __future__ import annotations

from typing import Any

import psycopg

from bgrun.queues import QueuePlan
from bgrun.store import pgsql

Cursor = psycopg.Cursor[Any]


def full_queues(cur: Cursor, plan: QueuePlan) -> set[str]:
    """The limited queues this plan serves that have no free slot now (paused ones too)."""
    limited = [queue for queue in plan.limits if plan.may_serve(queue)]
    if not limited:
        return set()
    rows = cur.execute(pgsql.RUNNING_PER_QUEUE, {"queues": limited}).fetchall()
    running = {r["queue"]: int(r["n"]) for r in rows}
    return {queue for queue in limited if running.get(queue, 0) >= plan.limits[queue]}


def open_queues(cur: Cursor, plan: QueuePlan, full: set[str]) -> list[str] | None:
    """The queues a claim with `plan` may take from now (adding the full ones to `full`);
    None when that is every queue (nothing full, every queue served)."""
    full |= full_queues(cur, plan)
    if not full and plan.serves is None:
        return None
    if plan.serves is not None:
        names = sorted(plan.serves)
    else:
        names = [str(r["name"]) for r in cur.execute(pgsql.WAITING_QUEUES)]
    return [name for name in names if name not in full]


def pick(cur: Cursor, now: float, plan: QueuePlan, full: set[str]) -> tuple[int, str] | None:
    """(id, queue) of the best ready job a claim with `plan` may take, locked by this
    transaction (jobs locked by other claims are skipped), or None."""
    queues = open_queues(cur, plan, full)
    if queues is None:
        row = cur.execute(pgsql.PICK, {"now": now}).fetchone()
    elif queues:
        row = cur.execute(pgsql.PICK_IN, {"now": now, "queues": queues}).fetchone()
    else:
        return None
    return None if row is None else (int(row["id"]), str(row["queue"]))


def queue_slot(cur: Cursor, queue: str, limit: int) -> int | None:
    """The lowest free slot of limited `queue`, read under its lock; None when full."""
    cur.execute(pgsql.QUEUE_LOCK, {"queue": queue})
    row = cur.execute(pgsql.QUEUE_SLOTS, {"queue": queue}).fetchone()
    if row is None or int(row["n"]) >= limit:
        return None
    taken = set(row["taken"])
    return next((n for n in range(limit) if n not in taken), None)
