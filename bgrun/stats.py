"""Jobs finished per minute and jobs waiting or running per queue: the dashboard's chart.

Shared by `GET /api/stats` and anyone else who wants the numbers; the store answers
from its `jobs_finished` index, so the look stays quick with many jobs.
"""

from __future__ import annotations

import time
from typing import Any

from bgrun.records import iso
from bgrun.store import Store

MAX_MINUTES = 24 * 60


def finished_stats(store: Store, minutes: int = 60, now: float | None = None) -> dict[str, Any]:
    """Completed and failed jobs per minute over the last `minutes` (oldest first, zeros
    included; the last one is the current, unfinished minute), and per-queue counts now."""
    now = time.time() if now is None else now
    last = int(now // 60)
    first = last - minutes + 1
    return {
        "minutes": minutes,
        "now": iso(now),
        "per_minute": [{"minute": iso(m * 60.0), "completed": completed, "failed": failed}
                       for m, completed, failed in store.finished_per_minute(first, last)],
        "queues": store.active_by_queue(now),
    }
