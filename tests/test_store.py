"""The store on its own: opening races, claim order, one verdict per attempt."""

from __future__ import annotations

import subprocess
import sys
import time

from bgrun.records import Outcome
from bgrun.store import NewJob
from bgrun.store.sqlite import SqliteStore as Store

OPEN = ("import sys; from pathlib import Path; from bgrun.store.sqlite import SqliteStore as Store;"
        " Store(Path(sys.argv[1]), Path(sys.argv[2])).close()")


def new_job(priority: int = 0, run_at: float = 0.0) -> NewJob:
    return NewJob(target="jobs", method="noop", params_json="[]", priority=priority,
                  retries=0, timeout=None, run_at=run_at, cwd=".", python=sys.executable,
                  env_json="{}", allowlist="allowlist.toml")


def test_many_processes_create_one_store_at_once(tmp_path):
    """Seen in CI: switching a new file to WAL answered "database is locked" at once."""
    failures = []
    for round_ in range(6):
        folder = tmp_path / str(round_)
        folder.mkdir()
        procs = [subprocess.Popen([sys.executable, "-c", OPEN, str(folder / "s.db"),
                                   str(folder)], stderr=subprocess.PIPE, text=True)
                 for _ in range(8)]
        failures += [err for proc in procs for _, err in [proc.communicate()] if proc.returncode]
    assert failures == []


def test_claim_takes_priority_then_readiness_and_skips_the_future(tmp_path):
    store = Store(tmp_path / "s.db", tmp_path)
    now = time.time()
    low, _ = store.insert(new_job(1, now - 5), now)
    high_late, _ = store.insert(new_job(5, now - 1), now)
    high_early, _ = store.insert(new_job(5, now - 2), now)
    store.insert(new_job(9, now + 60), now)  # scheduled: not claimable yet
    order = [store.claim(now, 0, 1) for _ in range(4)]
    assert [job.id if job else None for job in order] == [high_early, high_late, low, None]
    store.close()


def test_an_attempt_gets_exactly_one_verdict(tmp_path):
    store = Store(tmp_path / "s.db", tmp_path)
    now = time.time()
    job_id, _ = store.insert(new_job(), now)
    job = store.claim(now, 0, 1)
    assert job is not None
    assert store.finish(job_id, 1, now, outcome=Outcome.COMPLETED, result_json="1") == "completed"
    assert store.finish(job_id, 1, now, outcome=Outcome.FAILED, error="late") is None
    assert store.get(job_id).stored_status == "completed"
    store.close()
