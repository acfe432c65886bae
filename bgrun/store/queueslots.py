"""Queue limits inside a claim: which queues are full, which job to take, which slot.

A queue with a limit N has the slots 0 to N - 1. A claim takes the lowest free one in
the same transaction as the job, and a partial unique index over (queue, queue_slot) of
running jobs makes a second holder of a slot impossible: on a backend with concurrent
writers a racing claim fails instead of exceeding the limit. A running job keeps its
slot until its attempt is settled, so a runner that dies holding one still counts (its
job reads `running` until someone settles it), and a limit lowered below the number
running lets no claim through until enough of them have ended.
"""

from __future__ import annotations

import sqlite3

from bgrun.queues import QueuePlan
from bgrun.store import sql


def full_queues(db: sqlite3.Connection, plan: QueuePlan) -> list[str]:
    """The limited queues this plan serves that have no free slot now (paused ones too)."""
    return sorted(
        queue for queue, limit in plan.limits.items()
        if plan.may_serve(queue)
        and db.execute(sql.RUNNING_IN_QUEUE, {"queue": queue}).fetchone()[0] >= limit
    )


def free_slot(db: sqlite3.Connection, queue: str, limit: int) -> int:
    """The lowest slot of `queue` no running job holds (the caller saw the queue not full)."""
    taken = {r[0] for r in db.execute(sql.QUEUE_SLOTS_TAKEN, {"queue": queue})}
    return next(n for n in range(limit) if n not in taken)


def pick(db: sqlite3.Connection, now: float, plan: QueuePlan) -> tuple[int, str] | None:
    """(id, queue) of the best ready job a runner with `plan` may take now, or None.

    Priority decides, then readiness. With no queue full and every queue served, one
    walk of jobs_claim finds it. Otherwise each queue it may take from gives its head
    (jobs_queue_claim) and the best head wins: a full queue's thousands of waiting jobs
    are never walked through, so a queue at its limit slows no claim of another.
    """
    full = full_queues(db, plan)
    if not full and plan.serves is None:
        heads = [db.execute(sql.BEST_READY, {"now": now}).fetchone()]
    else:
        heads = [db.execute(sql.BEST_READY_IN, {"queue": queue, "now": now}).fetchone()
                 for queue in _open_queues(db, plan, full)]
    best = min((h for h in heads if h is not None), key=lambda h: (-h[2], h[3], h[0]),
               default=None)
    return None if best is None else (int(best[0]), str(best[1]))


def next_ready(db: sqlite3.Connection, plan: QueuePlan) -> float | None:
    """When the earliest job a runner with `plan` may take becomes ready (None: none
    waits, or only in queues at their limit)."""
    full = full_queues(db, plan)
    if not full and plan.serves is None:
        times = [db.execute(sql.NEXT_READY).fetchone()]
    else:
        times = [db.execute(sql.NEXT_READY_IN, {"queue": queue}).fetchone()
                 for queue in _open_queues(db, plan, full)]
    return min((float(t[0]) for t in times if t is not None), default=None)


def _open_queues(db: sqlite3.Connection, plan: QueuePlan, full: list[str]) -> list[str]:
    """The queues `plan` may take from now: those served, or else every queue with a
    waiting job, minus the full ones."""
    if plan.serves is not None:
        names = sorted(plan.serves)
    else:
        names = [str(r[0]) for r in db.execute(sql.WAITING_QUEUES)]
    return [name for name in names if name not in full]
