"""Load and time: many callers at once, readers while runners write, a bounded soak, and
jobs across a (simulated) wall-clock jump. Nothing lost, nothing run twice, nothing stuck."""

from __future__ import annotations

import contextlib
import json
import sqlite3
import subprocess
import sys
import threading
import time
from collections import Counter
from pathlib import Path

import psutil
import pytest

from bgrun import get_job, run_background_job
from bgrun.joblog import EVENTS_LOG
from tests.conftest import processes_of, runner_processes, wait_until
from tests.test_hardening_logs import assert_log_is_whole

ENQUEUER = r"""
import json, sys
import bgrun
who, count, name = sys.argv[1], int(sys.argv[2]), sys.argv[3]
ids = []
for i in range(count):
    ids.append(bgrun.run_background_job("jobs", "record", [name, f"{who}-{i}"],
                                        check_import=i == 0).id)
print(json.dumps(ids))
"""


def enqueue_from(project, procs: int, each: int, name: str) -> list[str]:
    """`procs` processes queue `each` record jobs at once; return every id they got."""
    started = [subprocess.Popen([sys.executable, "-c", ENQUEUER, str(p), str(each), name],
                                cwd=project.path, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True) for p in range(procs)]
    results = [(proc, *proc.communicate(timeout=240)) for proc in started]  # all pipes read
    ids: list[str] = []
    for proc, out, err in results:
        assert proc.returncode == 0, err[-2000:]
        assert "locked" not in err and err == "", err[-2000:]
        ids += json.loads(out)
    return ids


def store_path(project) -> Path:
    return project.log_dir / "bgrun.sqlite3"


def statuses(project) -> Counter[str]:
    db = sqlite3.connect(store_path(project), timeout=30)
    try:
        return Counter(s for (s,) in db.execute("SELECT status FROM jobs"))
    finally:
        db.close()


def assert_each_ran_once(project, name: str, tags: set[str]) -> None:
    marks = project.marks(name)
    starts = Counter(m["tag"] for m in marks if m.get("start"))
    ends = Counter(m["tag"] for m in marks if m.get("end"))
    assert set(starts) == tags, f"lost: {len(tags - set(starts))}"
    assert max(starts.values()) == 1, [t for t, n in starts.items() if n > 1][:10]
    assert ends == starts


def test_1000_enqueues_from_8_processes(project, monkeypatch):
    monkeypatch.setenv("BGRUN_MODE", "fork")  # the warm mode: the runs take seconds
    ids = enqueue_from(project, 8, 125, "load")
    assert len(ids) == 1000 and len(set(ids)) == 1000
    wait_until(lambda: statuses(project).get("completed", 0) == 1000, timeout=180, pause=0.5)
    assert statuses(project) == Counter({"completed": 1000})
    assert_each_ran_once(project, "load", {f"{p}-{i}" for p in range(8) for i in range(125)})
    events = assert_log_is_whole(project.log_dir / EVENTS_LOG)
    per_job = Counter((e["job"], e["status"]) for e in events)
    for job_id in ids:
        assert per_job[(job_id, "queued")] == 1
        assert per_job[(job_id, "running")] == 1
        assert per_job[(job_id, "completed")] == 1
    assert not any("locked" in e.get("error", "") for e in events)


def test_long_reads_do_not_stall_runners(project, monkeypatch):
    """A reader holding a read transaction open (a long `list`) while runners write."""
    monkeypatch.setenv("BGRUN_MODE", "fork")
    first = run_background_job("jobs", "noop")
    assert first.wait(30) == "completed"
    reader = sqlite3.connect(store_path(project), timeout=30, isolation_level=None)
    reader.execute("BEGIN")
    assert reader.execute("SELECT count(*) FROM jobs").fetchone()[0] == 1  # snapshot taken
    jobs = [run_background_job("jobs", "record", ["reads", i], check_import=i == 0)
            for i in range(150)]
    stop = threading.Event()
    list_times: list[float] = []

    def list_loop() -> None:
        while not stop.is_set():
            started = time.monotonic()
            result = project.cli("list", "--limit", "0", "--json")
            assert result.returncode == 0, result.stderr
            json.loads(result.stdout)
            list_times.append(time.monotonic() - started)

    threads = [threading.Thread(target=list_loop) for _ in range(2)]
    for t in threads:
        t.start()
    try:
        started = time.monotonic()
        for job in jobs:
            assert job.wait(60) == "completed"
        elapsed = time.monotonic() - started
        # The old snapshot still reads 1 job: the reader was really open all along.
        assert reader.execute("SELECT count(*) FROM jobs").fetchone()[0] == 1
    finally:
        stop.set()
        for t in threads:
            t.join()
        reader.execute("COMMIT")
        reader.close()
    assert elapsed < 60
    assert list_times and max(list_times) < 15
    assert_each_ran_once(project, "reads", set(range(150)))


# -- time ----------------------------------------------------------------------------------


def _set_times(project, job_id: str, at: float) -> None:
    db = sqlite3.connect(store_path(project), timeout=30, isolation_level=None)
    try:
        db.execute("BEGIN IMMEDIATE")
        db.execute("UPDATE jobs SET ready_at = ?, run_at = ? WHERE id = ?", (at, at, int(job_id)))
        db.execute("COMMIT")
    finally:
        db.close()


def test_clock_jump_forward_runs_a_scheduled_job_once(project):
    """As if the wall clock jumped an hour ahead: a job due in an hour is due now."""
    jobs = [run_background_job("jobs", "record", ["jump", i], delay=3600) for i in range(3)]
    assert all(j.status == "scheduled" for j in jobs)
    time.sleep(0.5)
    for job in jobs:
        _set_times(project, job.id, time.time() - 1)  # the store's UTC epoch time is past
    for job in jobs:
        assert job.wait(20) == "completed"
        assert job.info()["attempts"] == 1
    time.sleep(1.0)  # a second look: nothing runs them again
    assert_each_ran_once(project, "jump", {0, 1, 2})


def test_clock_jump_backward_does_not_run_early_or_lose_the_job(project):
    """As if the wall clock jumped an hour back: a job due now is due in an hour."""
    job = run_background_job("jobs", "record", ["back", 1], delay=1.0)
    _set_times(project, job.id, time.time() + 3600)
    time.sleep(2.5)  # past its original time
    assert job.status == "scheduled" and project.marks("back") == []
    assert job.info()["attempts"] == 0
    _set_times(project, job.id, time.time())  # the clock comes back
    assert job.wait(20) == "completed"
    assert_each_ran_once(project, "back", {1})


# -- soak ----------------------------------------------------------------------------------


def _assert_flat(fds: dict[int, list[int]]) -> None:
    """Each runner's open descriptors stay flat across its attempts (no leak).

    The first looks may catch a runner still starting, before it opened its store. An
    attempt holds a few descriptors while it starts and runs (its output file, the
    progress pipe's ends, a pidfd: 11 to 14 in a soak whose first looks saw 11), so one
    look may see them and the next not; a leaked one stays in every later look. So the
    fewest in the last looks must be at most 2 more than the most in the first: a runner
    may open one or two for good on the way (the keeper lock, held while retries are
    scheduled: 11 in the first looks, 12 in every last one); a faster leak fails the cap."""
    assert len(fds) >= 1
    for pid, seen in fds.items():
        assert max(seen) <= 20, (pid, seen)
        steady = seen[2:]
        if len(steady) >= 10:
            assert min(steady[-5:]) <= max(steady[:5]) + 2, (pid, steady[:5], steady[-5:])


@pytest.mark.slow
@pytest.mark.timeout(360)
def test_soak_thousands_of_short_jobs(project, monkeypatch):
    """~2-3 minutes: bursts from several processes, warm-fork and spawned attempts, failures
    with retries; then every job accounted for, no process, file or descriptor leaked."""
    monkeypatch.setenv("BGRUN_RUNNER_IDLE", "3")
    fds: dict[int, list[int]] = {}
    stop = threading.Event()

    def sample() -> None:
        while not stop.is_set():
            for proc in runner_processes(project):
                with contextlib.suppress(psutil.Error):
                    count = proc.num_fds()  # read first: a runner that just left has none
                    fds.setdefault(proc.pid, []).append(count)
            stop.wait(0.5)

    sampler = threading.Thread(target=sample)
    sampler.start()
    all_ids: list[str] = []
    tags: set[str] = set()
    try:
        for round_, mode in enumerate(["fork", "fork", "spawn", "fork"]):
            monkeypatch.setenv("BGRUN_MODE", mode)
            each = 60 if mode == "spawn" else 200
            name = f"soak{round_}"
            all_ids += enqueue_from(project, 4, each, name)
            tags |= {f"{name}:{p}-{i}" for p in range(4) for i in range(each)}
            failing = [run_background_job("jobs", "fail", [f"r{round_}-{i}"], retries=1).id
                       for i in range(20)]
            all_ids += failing
            for job_id in all_ids:
                get_job(job_id).wait(240)
        total = len(all_ids)
        counts = statuses(project)
        assert counts["completed"] == total - 80 and counts["failed"] == 80, counts
        assert sum(counts.values()) == total
        marks: Counter[str] = Counter()
        for r in range(4):
            for m in project.marks(f"soak{r}"):
                if m.get("start"):
                    marks[f"soak{r}:{m['tag']}"] += 1
        assert set(marks) == tags and max(marks.values()) == 1
        assert len(project.marks("fail")) == 160  # two attempts each, no more
        # Descriptors of a runner stay flat across hundreds of attempts.
        _assert_flat(fds)
    finally:
        stop.set()
        sampler.join()
    # Runners leave once idle; no job process, zombie or runner stays behind.
    wait_until(lambda: not processes_of(project.path), timeout=30, pause=0.5)
    jobs_dir = project.log_dir / "jobs"
    assert not list(jobs_dir.glob("*.result")), "result files left behind"
    assert len(list(jobs_dir.glob("*.log"))) == total
    events = assert_log_is_whole(project.log_dir / EVENTS_LOG)
    final = Counter(e["status"] for e in events if e["status"] in ("completed", "failed"))
    assert final == Counter({"completed": total - 80, "failed": 80})
