"""What a queue at its limit costs the claims of other queues.

Stores N waiting jobs of a paused queue at a higher priority than 200 jobs of `default`,
then times claims (which must skip the paused queue) and next_run_at, against claims
with no limits. Usage: python benchmarks/queue_claim.py [N]
"""

from __future__ import annotations

import os
import sys
import tempfile
import time
from pathlib import Path

from bgrun.queues import QueuePlan
from bgrun.store import NewJob, Role
from bgrun.store.sqlite import SqliteStore


def job(queue: str, priority: int) -> NewJob:
    return NewJob(target="jobs", method="noop", params_json="[]", priority=priority,
                  retries=0, timeout=None, run_at=0.0, cwd="/", python=sys.executable,
                  env_json="{}", allowlist="allowlist.toml", queue=queue)


def per_call(func: object, times: int = 100) -> float:
    start = time.perf_counter()
    for _ in range(times):
        func()  # type: ignore[operator]
    return (time.perf_counter() - start) / times * 1000


def main() -> None:
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 10_000
    folder = Path(tempfile.mkdtemp())
    store = SqliteStore(folder / "store.sqlite3", folder, Role.RUNNER)
    for _ in range(n):
        store.insert(job("paused", 5), 1.0)
    for _ in range(200):
        store.insert(job("default", 0), 1.0)
    paused = QueuePlan(None, {"paused": 0})
    claim = per_call(lambda: store.claim(time.time(), 0, os.getpid(), paused))
    look = per_call(lambda: store.next_run_at(paused))
    plain = per_call(lambda: store.claim(time.time(), 0, os.getpid()))
    print(f"{n} jobs of a paused queue ahead: claim {claim:.2f} ms, next_run_at"
          f" {look:.2f} ms; a claim with no limits {plain:.2f} ms")


if __name__ == "__main__":
    main()
