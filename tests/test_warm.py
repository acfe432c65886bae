"""Warm children (`reuse = N` for a target in the allowlist): one child runs up to N jobs
of that target in a row, and is discarded after any job that does not complete, when
the allowlist changes, and when its runner leaves or dies. Real runners, real signals."""

from __future__ import annotations

import os
import signal
import sys
from pathlib import Path

import psutil
import pytest

from bgrun import allowlist, run_background_job
from bgrun.errors import AllowlistError
from tests.conftest import runner_processes, wait_until

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="warm children are POSIX only")

WARMJOBS = '''\
import os
import subprocess
import sys
import time

STATE = None


def state(value=None):
    """This process's pid and the module state it finds (then sets, if given)."""
    global STATE
    seen = STATE
    if value is not None:
        STATE = value
    return {"pid": os.getpid(), "seen": seen}


def fail():
    global STATE
    STATE = "from the failed job"
    raise RuntimeError("warm job failed")


def say(text):
    print(f"out:{text}")
    print(f"err:{text}", file=sys.stderr)
    sys.stdout.write(f"partial:{text}")  # no newline: flushed before the next job's output
    return os.getpid()


def nap(seconds, pidfile=None):
    """Sleep (after starting a grandchild that sleeps too, if `pidfile` is given)."""
    if pidfile is not None:
        child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
        with open(pidfile + ".tmp", "w") as f:
            f.write(f"{os.getpid()} {child.pid}")
        os.replace(pidfile + ".tmp", pidfile)
    time.sleep(seconds)
    return os.getpid()


def leave_thread():
    import threading

    threading.Thread(target=time.sleep, args=(0.2,)).start()
    return os.getpid()


def report(done, message):
    import bgrun

    bgrun.progress(done, done, message)
    return os.getpid()


def kill_runner():
    """Kill the runner that supervises this child, and return at once."""
    import signal

    os.kill(os.getppid(), signal.SIGKILL)
    return os.getpid()


def env_value(name):
    return {"pid": os.getpid(), "value": os.environ.get(name)}
'''

RULE = ('\n[jobs."warmjobs"]\n'
        'methods = ["state", "fail", "say", "nap", "leave_thread", "env_value", "report",'
        ' "kill_runner"]\n')


@pytest.fixture
def warm(project, monkeypatch):
    """A project whose `warmjobs` target runs in warm children of 3 jobs each, served by
    one runner that stays for the whole test."""
    monkeypatch.setenv("BGRUN_RUNNER_IDLE", "30")
    monkeypatch.setenv("BGRUN_CONCURRENCY", "1")
    (project.path / "warmjobs.py").write_text(WARMJOBS)
    with open(project.path / "allowlist.toml", "a") as f:
        f.write(RULE + "reuse = 3\n")
    return project


def run(method: str, *params: object, expect: str = "completed", **options: object):
    job = run_background_job("warmjobs", method, list(params), check_import=False, **options)
    assert job.wait(timeout=30) == expect, job.info()
    return job


def pid_of(job) -> int:
    result = job.result
    return int(result["pid"] if isinstance(result, dict) else result)


def runners(project) -> list[psutil.Process]:
    """The project's runners (a forked warm child keeps a runner's command line)."""
    return [p for p in runner_processes(project) if p.name() != "bgrun-job"]


def gone(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


@pytest.mark.parametrize("mode", ["fork", "spawn"])
def test_a_child_runs_n_jobs_then_a_new_child_takes_over(warm, monkeypatch, mode):
    monkeypatch.setenv("BGRUN_MODE", mode)
    pids = [pid_of(run("state")) for _ in range(7)]
    assert pids[0] == pids[1] == pids[2]
    assert pids[3] == pids[4] == pids[5]
    assert len({pids[0], pids[3], pids[6]}) == 3
    (runner,) = runners(warm)
    assert runner.pid not in pids
    wait_until(lambda: gone(pids[0]) and gone(pids[3]), timeout=10)  # each exited after N
    if mode == "spawn":
        assert any("_spawned.py" in part for part in psutil.Process(pids[6]).cmdline())


def test_module_state_lives_on_between_jobs_but_never_past_a_failure(warm):
    first = run("state", "set by job 1")
    second = run("state")
    assert second.result == {"pid": pid_of(first), "seen": "set by job 1"}  # reuse: shared
    failed = run("fail", expect="failed")
    assert "RuntimeError: warm job failed" in failed.info()["error"]
    third = run("state")
    assert third.result["seen"] is None  # neither job 1's state nor the failed job's
    assert pid_of(third) != pid_of(first)
    wait_until(lambda: gone(pid_of(first)), timeout=10)


def test_a_cancel_ends_the_whole_tree_and_the_child(warm):
    first = run("state")
    pidfile = warm.path / "tree.pid"
    job = run_background_job("warmjobs", "nap", [60, str(pidfile)], check_import=False)
    wait_until(pidfile.exists)
    child, grandchild = (int(p) for p in pidfile.read_text().split())
    assert child == pid_of(first)  # the warm child ran it
    assert job.cancel() in ("cancelled", "running")
    assert job.wait(timeout=30) == "cancelled"
    wait_until(lambda: gone(child) and gone(grandchild), timeout=10)
    after = run("state")
    assert pid_of(after) not in (child, grandchild)
    assert after.result["seen"] is None


def test_a_timeout_discards_the_child(warm):
    first = run("state", "before the timeout")
    assert run("state").result == {"pid": pid_of(first), "seen": "before the timeout"}
    timed_out = run("nap", 60, expect="failed", timeout=0.5)
    assert timed_out.info()["error"].startswith("Timeout")
    wait_until(lambda: gone(pid_of(first)), timeout=10)
    after = run("state")
    assert pid_of(after) != pid_of(first)
    assert after.result["seen"] is None


def test_the_child_is_discarded_when_the_allowlist_changes(warm):
    first = run("state", "old allowlist")
    assert pid_of(run("state")) == pid_of(first)
    with open(warm.path / "allowlist.toml", "a") as f:
        f.write("# an edit: the file's signature changes\n")
    changed = run("state")
    assert pid_of(changed) != pid_of(first)
    assert changed.result["seen"] is None
    wait_until(lambda: gone(pid_of(first)), timeout=10)
    assert pid_of(run("state")) == pid_of(changed)  # the new child is warm in turn


@pytest.mark.parametrize("mode", ["fork", "spawn"])
def test_each_job_s_output_goes_to_its_own_log(warm, monkeypatch, mode):
    monkeypatch.setenv("BGRUN_MODE", mode)
    one = run("say", "one")
    two = run("say", "two")
    assert pid_of(one) == pid_of(two)  # one warm child wrote both
    logs = {job.id: job.output() for job in (one, two)}
    for job, text, other in ((one, "one", "two"), (two, "two", "one")):
        log = logs[job.id]
        for line in (f"out:{text}", f"err:{text}", f"partial:{text}"):
            assert line in log
        assert other not in log, log
        assert "attempt 1 started" in log


def test_each_job_s_progress_is_its_own(warm):
    jobs = [run("report", done, f"job {done}") for done in (1, 2)]
    assert pid_of(jobs[0]) == pid_of(jobs[1])
    for done, job in zip((1, 2), jobs, strict=True):
        progress = job.info()["progress"]
        assert (progress["done"], progress["message"]) == (done, f"job {done}")


def test_a_job_gets_its_own_id_in_its_environment(warm):
    jobs = [run("env_value", "BGRUN_JOB_ID") for _ in range(2)]
    assert pid_of(jobs[0]) == pid_of(jobs[1])
    assert [job.result["value"] for job in jobs] == [job.id for job in jobs]


def test_a_job_that_leaves_a_thread_running_retires_its_child(warm):
    first = pid_of(run("state"))
    assert pid_of(run("leave_thread")) == first
    assert pid_of(run("state")) != first
    wait_until(lambda: gone(first), timeout=10)


def test_a_child_killed_while_idle_is_replaced(warm):
    first = run("state", "kept")
    assert run("state").result == {"pid": pid_of(first), "seen": "kept"}
    os.kill(pid_of(first), signal.SIGKILL)
    wait_until(lambda: gone(pid_of(first)))
    after = run("state")  # not lost to the dead child: a fresh one runs it
    assert pid_of(after) != pid_of(first)
    assert after.result["seen"] is None


def test_a_job_that_returns_after_its_runner_died_is_still_completed(warm):
    first = run("state")
    job = run("kill_runner")  # its verdict reaches the result file, where settling looks
    assert pid_of(job) == pid_of(first)
    assert job.info()["attempts"] == 1
    wait_until(lambda: gone(pid_of(first)), timeout=10)


def test_the_child_ends_when_its_runner_leaves_or_dies(warm, monkeypatch):
    first = run("state")
    assert pid_of(run("state")) == pid_of(first)
    (runner,) = runners(warm)
    os.kill(runner.pid, signal.SIGKILL)
    wait_until(lambda: gone(pid_of(first)), timeout=10)  # EOF on its socket: it exits
    monkeypatch.setenv("BGRUN_RUNNER_IDLE", "0.5")
    idle = run("state")  # a new runner (started by this call), which will leave when idle
    wait_until(lambda: not runners(warm), timeout=20)
    wait_until(lambda: gone(pid_of(idle)), timeout=10)


def test_a_target_without_the_key_still_gets_a_child_per_job(warm):
    (warm.path / "coldjobs.py").write_text(WARMJOBS)
    with open(warm.path / "allowlist.toml", "a") as f:
        f.write('\n[jobs."coldjobs"]\nmethods = ["state"]\n')
    first = run("state", "warm")
    assert run("state").result == {"pid": pid_of(first), "seen": "warm"}
    cold = [run_background_job("coldjobs", "state", ["cold"], check_import=False)
            for _ in range(2)]
    for job in cold:
        assert job.wait(timeout=30) == "completed"
    assert [job.result["seen"] for job in cold] == [None, None]
    assert len({pid_of(first), *(pid_of(job) for job in cold)}) == 3
    wait_until(lambda: gone(pid_of(first)), timeout=10)  # it serves consecutive jobs only
    again = run("state")
    assert again.result["seen"] is None


RANGE = "warmjobs.reuse must be a whole number from 1 to 1000000"
TYPE = "warmjobs.reuse has the wrong type"


@pytest.mark.parametrize(("value", "says"), [("0", RANGE), ("-2", RANGE), ("2000000", RANGE),
                                             ("true", TYPE), ('"3"', TYPE), ("1.5", TYPE)])
def test_a_bad_reuse_value_is_one_clear_line(tmp_path: Path, value: str, says: str):
    path = tmp_path / "allowlist.toml"
    path.write_text(f'[jobs."warmjobs"]\nmethods = ["state"]\nreuse = {value}\n')
    with pytest.raises(AllowlistError) as caught:
        allowlist.load(path)
    message = str(caught.value)
    assert message.startswith(f"{path}:3: ")
    assert says in message
    assert "\n" not in message


def test_a_good_reuse_value_is_kept(tmp_path: Path):
    path = tmp_path / "allowlist.toml"
    path.write_text('[jobs."warmjobs"]\nmethods = ["state"]\nreuse = 50\n')
    assert allowlist.load(path).rules["warmjobs"].reuse == 50
    path.write_text('[jobs."warmjobs"]\nmethods = ["state"]\n')
    assert allowlist.load(path).rules["warmjobs"].reuse is None
