"""Job control and crash safety: cancel trees, dead runners, recover, worker, retry, prune."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time

import psutil
import pytest

from bgrun import run_background_job
from tests.conftest import (
    kill_processes_of,
    processes_of,
    runner_processes,
    wait_until,
    watchers_frozen,
)


def alive(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def test_cancel_running_job_ends_its_whole_tree(project):
    pidfile = project.path / "pids"
    job = run_background_job("jobs", "with_grandchild", [str(pidfile)])
    wait_until(pidfile.exists)
    pids = [int(p) for p in pidfile.read_text().split()]
    assert all(alive(p) for p in pids)
    start = time.monotonic()
    assert project.cli("cancel", job.id).returncode == 0
    assert job.wait(10) == "cancelled"
    wait_until(lambda: not any(alive(p) for p in pids), timeout=1.0 + 1.0 + 0.5)
    took = time.monotonic() - start
    assert took < 1.0 + 1.0 + 0.5  # grace (BGRUN_CANCEL_GRACE=1) + 1 s, + a tick
    info = job.info()
    assert info["status"] == "cancelled" and info["attempts"] == 1
    events = [e["status"] for e in project.events() if e["job"] == job.id]
    assert events[-2:] == ["cancel-requested", "cancelled"]


def test_cancel_scheduled_job_never_runs(project):
    job = run_background_job("jobs", "record", ["never"], delay=1.0, retries=3)
    assert job.cancel() == "cancelled"
    time.sleep(1.5)
    assert job.status == "cancelled"
    assert project.marks("never") == []
    assert project.cli("cancel", job.id).returncode == 3  # nothing left to cancel
    assert project.cli("cancel", "12345").returncode == 3


def test_cancelled_job_is_never_retried(project):
    job = run_background_job("jobs", "sleep", [30], retries=5)
    wait_until(lambda: job.status == "running")
    job.cancel()
    assert job.wait(10) == "cancelled"
    time.sleep(0.5)
    assert job.info()["attempts"] == 1


def test_runner_killed_mid_job_is_noticed_and_retried(project):
    job = run_background_job("jobs", "record", ["twice", None, 1.5], retries=1)
    wait_until(lambda: job.status == "running")
    wait_until(lambda: project.marks("twice"))
    child_pid = project.marks("twice")[0]["pid"]
    for runner in runner_processes(project):
        runner.send_signal(signal.SIGKILL)
    killed = time.monotonic()
    wait_until(lambda: job.info()["attempts"] == 2 or job.status != "running", timeout=10)
    detected = time.monotonic() - killed
    assert detected < 10
    assert job.wait(30) == "completed"
    wait_until(lambda: not alive(child_pid), timeout=5)  # the orphaned tree was ended
    errors = [e for e in project.events(errors=True) if e["job"] == job.id]
    assert errors and errors[0]["error"].startswith("RunnerLost:")


def test_runner_killed_with_no_retry_left_fails_runner_lost(project):
    job = run_background_job("jobs", "kill_parent_runner")
    assert job.wait(15) == "failed"
    info = job.info()
    assert info["error"].startswith("RunnerLost:") and info["attempts"] == 1


@pytest.mark.parametrize("every", [2.0, 0.0])
def test_a_queueing_caller_looks_for_dead_runners_now_and_then(project, monkeypatch, every):
    from bgrun import settle

    looks = []
    real = settle.settle_orphans

    def counted(ctx, my_slot=None):
        looks.append(ctx.config.store)
        return real(ctx, my_slot)

    monkeypatch.setattr(settle, "settle_orphans", counted)
    monkeypatch.setattr(settle, "SETTLE_EVERY", every)
    for _ in range(10):
        run_background_job("jobs", "echo", ["x"], delay=3600)
    assert len(looks) == (1 if every else 10)


def test_list_settles_orphans_too(project):
    job = run_background_job("jobs", "sleep", [30])
    wait_until(lambda: job.status == "running")
    # Frozen, the watcher cannot settle it first: while it does, it holds the dead slot's
    # lock, and `list` may show the job running still (2 runs in about 45 failed so).
    with watchers_frozen(project):
        for runner in runner_processes(project):
            runner.kill()
        psutil.wait_procs(runner_processes(project), timeout=5)
        listed = json.loads(project.cli("list", "--json").stdout)
    assert [j["status"] for j in listed if j["id"] == job.id] == ["failed"]


def test_pid_reuse_does_not_make_settling_signal_a_stranger(project):
    job = run_background_job("jobs", "record", ["reuse", None, 30])
    wait_until(lambda: project.marks("reuse"))
    time.sleep(0.1)  # start times are read in clock ticks (10 ms): be a tick apart at least
    child = psutil.Process(project.marks("reuse")[0]["pid"])
    started = child.create_time()
    stranger = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        runners = runner_processes(project)
        for runner in runners:  # stopped, not dead: their locks hold, nobody settles yet
            runner.suspend()
        child.kill()
        # The job's pid now "belongs" to the stranger, which started at another time.
        project.ctx.store.set_child(job.id, stranger.pid, started)
        for runner in runners:
            runner.kill()
        psutil.wait_procs(runners, timeout=5)
        assert job.wait(10) == "failed"
        assert stranger.poll() is None  # untouched
    finally:
        stranger.kill()
        stranger.wait()


def test_reboot_then_recover_runs_every_waiting_job(project):
    running = run_background_job("jobs", "record", ["reboot", "running", 30], retries=1)
    wait_until(lambda: running.status == "running")
    later = [run_background_job("jobs", "record", ["reboot", n], delay=2) for n in range(5)]
    kill_processes_of(project.path)  # every bgrun process and job dies: a reboot
    time.sleep(0.6)
    assert not runner_processes(project)
    result = project.cli("recover")
    assert result.returncode == 0, result.stderr
    assert "settled 1" in result.stdout
    for job in later:
        assert job.wait(30) == "completed"
    assert running.info()["attempts"] == 2  # retried after the "reboot"
    running.cancel()
    assert project.cli("recover").stdout.startswith("settled 0")  # idempotent


def test_long_lived_caller_leaves_no_zombies(project):
    script = (
        "import psutil, bgrun\n"
        "jobs = [bgrun.run_background_job('jobs', 'noop') for _ in range(500)]\n"
        "assert all(j.wait(120) == 'completed' for j in jobs)\n"
        "kids = psutil.Process().children()\n"
        "print(sum(k.status() == psutil.STATUS_ZOMBIE for k in kids), len(kids))\n"
    )
    out = project.python(script, timeout=240)
    assert out.returncode == 0, out.stderr
    zombies, children = out.stdout.split()
    assert zombies == "0" and children == "0"


def test_worker_finishes_its_job_on_sigterm(project, monkeypatch):
    monkeypatch.setenv("BGRUN_CONCURRENCY", "1")
    worker = subprocess.Popen([sys.executable, "-m", "bgrun", "worker"], cwd=project.path)
    try:
        wait_until(lambda: runner_processes(project) or True)
        time.sleep(1.0)  # the worker holds the only slot
        job = run_background_job("jobs", "record", ["graceful", None, 1.0])
        wait_until(lambda: project.marks("graceful"))
        worker.send_signal(signal.SIGTERM)
        assert worker.wait(15) == 0
        assert job.status == "completed"
    finally:
        worker.kill()


def test_worker_requeues_its_job_when_asked(project, monkeypatch):
    monkeypatch.setenv("BGRUN_CONCURRENCY", "1")
    worker = subprocess.Popen([sys.executable, "-m", "bgrun", "worker", "--requeue-on-stop"],
                              cwd=project.path)
    try:
        time.sleep(1.0)
        job = run_background_job("jobs", "record", ["handed", None, 30])
        wait_until(lambda: project.marks("handed"))
        worker.send_signal(signal.SIGTERM)
        assert worker.wait(15) == 0
        info = job.info()
        assert (info["status"], info["attempts"]) == ("queued", 0)  # handed back, uncounted
        assert [e.get("note") for e in project.events() if e["job"] == job.id][-1] == (
            "handed back")
        job.cancel()
    finally:
        worker.kill()


def test_retry_keeps_the_id_and_starts_attempts_again(project):
    job = run_background_job("jobs", "fail", retries=1)
    assert job.wait(30) == "failed"
    assert project.cli("retry", job.id).stdout.strip() == job.id
    assert job.wait(30) == "failed"
    assert job.info()["attempts"] == 2
    assert len(project.marks("fail")) == 4
    assert project.cli("retry", "999").returncode == 3
    running = run_background_job("jobs", "sleep", [5])
    assert project.cli("retry", running.id).returncode == 3


def test_prune_deletes_old_finished_jobs_and_their_output(project):
    done = run_background_job("jobs", "echo", ["bye"])
    assert done.wait(30) == "completed"
    output = project.path / "logs" / "jobs" / f"{done.id}.log"
    assert output.exists()
    assert project.cli("prune", "--older-than", "1h").stdout.startswith("deleted 0")
    time.sleep(1.1)
    assert project.cli("prune", "--older-than", "1s").stdout.startswith("deleted 1")
    assert not output.exists()
    assert project.cli("show", done.id).returncode == 3
    assert project.cli("prune", "--older-than", "soon").returncode == 2


def test_logs_rotate_by_size_keeping_n_files(project, monkeypatch):
    monkeypatch.setenv("BGRUN_LOG_MAX_BYTES", "2000")
    monkeypatch.setenv("BGRUN_LOG_BACKUPS", "2")
    jobs = [run_background_job("jobs", "noop") for _ in range(20)]
    for job in jobs:
        job.wait(30)
    names = sorted(p.name for p in project.log_dir.glob("background_jobs.log*"))
    assert names == ["background_jobs.log", "background_jobs.log.1", "background_jobs.log.2"]
    assert all(p.stat().st_size <= 2000 for p in project.log_dir.glob("background_jobs.log*"))


def test_logs_follow_until_the_job_ends(project):
    job = run_background_job("jobs", "sleep", [1.0])
    out = project.cli("logs", job.id, "-f", timeout=30)
    assert out.returncode == 0
    assert "sleeping 1.0" in out.stdout
    assert job.status == "completed"


@pytest.mark.slow
def test_random_kills_lose_no_job_and_leave_none_stuck(project):
    import random

    rng = random.Random(7)
    jobs = []
    for trial in range(50):
        job = run_background_job("jobs", "record", ["trial", trial, rng.uniform(0.05, 0.4)],
                                 retries=2)
        jobs.append(job)
        time.sleep(rng.uniform(0.0, 0.3))
        victims = processes_of(project.path)
        if victims:
            victim = rng.choice(victims)
            with contextlib.suppress(psutil.Error):
                victim.send_signal(signal.SIGKILL)
    project.cli("recover")
    for job in jobs:
        assert job.wait(60) in ("completed", "failed")
    finals = [job.info() for job in jobs]
    assert all(f["status"] in ("completed", "failed") for f in finals)
    ran = {m["tag"] for m in project.marks("trial") if m.get("end")}
    completed = {int(f["params"][1]) for f in finals if f["status"] == "completed"}
    assert completed <= ran
    failed = [f for f in finals if f["status"] == "failed"]
    assert all(f["attempts"] == 3 or f["error"].startswith(("RunnerLost", "Crashed"))
               for f in failed)
    os.environ.get("CI") and print(f"{len(completed)} completed, {len(failed)} failed")


def test_runner_does_not_spin_on_a_ready_job_it_may_not_claim(project):
    """A job held by a live foreground `bgrun run` is ready, but not a runner's to take."""

    from bgrun.enqueue import Request, validate
    from bgrun.settle import start_runner
    from bgrun.slots import slot_lock

    ctx = project.ctx
    holder = slot_lock(ctx.state, -os.getpid())
    assert holder.acquire(timeout=0)
    try:
        job = validate(ctx.config, Request("jobs", "noop"), time.time())._replace(
            held=-os.getpid())
        job_id, _ = ctx.store.insert(job, time.time())
        start_runner(ctx)
        runner = wait_until(lambda: runner_processes(project), timeout=10)[0]
        before = runner.cpu_times()
        time.sleep(1.0)
        after = runner.cpu_times()
        busy = (after.user + after.system) - (before.user + before.system)
        assert busy < 0.3, f"the runner spun: {busy:.2f} s of CPU in 1 s"
        assert ctx.store.get(job_id).stored_status == "waiting"  # still the holder's
    finally:
        holder.release()
