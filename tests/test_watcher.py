"""The watcher: a dead runner is noticed within 2 s with no bgrun command run by anyone.

After each kill these tests only read the store file with sqlite3: `bgrun list`, `show`,
`wait` and a handle's `status` settle dead runners' jobs themselves, and must not help.
"""

from __future__ import annotations

import contextlib
import os
import random
import signal
import sqlite3
import time
from pathlib import Path

import psutil
import pytest

from bgrun import run_background_job
from tests.conftest import processes_of, wait_until

NOTICE = 2.0  # seconds: the promise (SPEC, Semantics)
JOB_SECONDS = 3.0


def rows(project) -> dict[str, tuple[str, int, int | None]]:
    """id -> (stored status, attempts, runner pid), read straight from the store file."""
    db = sqlite3.connect(project.log_dir / "bgrun.sqlite3", timeout=10)
    try:
        found = db.execute("SELECT id, status, attempts, runner_pid FROM jobs").fetchall()
    finally:
        db.close()
    return {str(i): (s, a, p) for i, s, a, p in found}


def alive(pid: int | None) -> bool:
    try:
        return pid is not None and psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def bgrun_processes(project, script: str) -> list[psutil.Process]:
    """The project's runners (`_runner_main`) or watchers (`_watcher_main`) once started:
    not a forked job child (it keeps its runner's command line), nor the first half of
    a detached start (it exits at once)."""
    found = []
    for proc in processes_of(project.path):
        try:
            if any(script in part for part in proc.cmdline()) and proc.ppid() == 1:
                found.append(proc)
        except psutil.Error:
            continue
    return found


def served(project, victim: int, first: str, want: int) -> bool:
    """The victim's job is settled and `want` jobs run under live runners again."""
    now = rows(project)
    status, _, pid = now[first]
    if status == "running" and pid == victim:
        return False
    live = [r for r in now.values() if r[0] == "running" and r[2] != victim and alive(r[2])]
    unfinished = sum(1 for r in now.values() if r[0] in ("waiting", "running"))
    return len(live) >= min(want, unfinished)


def queue_three(project, monkeypatch, concurrency: int, mode: str) -> list[str]:
    monkeypatch.setenv("BGRUN_CONCURRENCY", str(concurrency))
    monkeypatch.setenv("BGRUN_MODE", mode)
    ids = [run_background_job("jobs", "record", ["w", i, JOB_SECONDS], retries=1).id
           for i in range(3)]
    wait_until(lambda: sum(r[0] == "running" for r in rows(project).values()) == concurrency)
    wait_until(lambda: len(project.marks("w")) >= concurrency)  # the children run user code
    return ids


def assert_all_complete(project, ids: list[str], killed_first: bool) -> None:
    wait_until(lambda: all(rows(project)[i][0] == "completed" for i in ids), timeout=30)
    attempts = {i: rows(project)[i][1] for i in ids}
    assert attempts[ids[0]] == (2 if killed_first else 1)
    assert all(attempts[i] == 1 for i in ids[1:])
    ends = [m["tag"] for m in project.marks("w") if m.get("end")]
    assert sorted(ends) == [0, 1, 2]  # each job completed exactly once


@pytest.mark.parametrize("mode", ["fork", "spawn"])
@pytest.mark.parametrize("concurrency", [1, 2])
def test_dead_runner_is_settled_and_replaced_with_nobody_looking(project, monkeypatch,
                                                                  concurrency, mode):
    ids = queue_three(project, monkeypatch, concurrency, mode)
    victim = rows(project)[ids[0]][2]
    assert victim is not None
    child = next(m["pid"] for m in project.marks("w") if m["tag"] == 0)
    os.kill(victim, signal.SIGKILL)
    killed = time.monotonic()
    wait_until(lambda: served(project, victim, ids[0], concurrency), timeout=15, pause=0.02)
    took = time.monotonic() - killed
    assert took < NOTICE, f"noticed after {took:.2f} s"
    wait_until(lambda: not alive(child), timeout=5)  # its orphaned child was ended
    assert_all_complete(project, ids, killed_first=True)


def test_watcher_killed_then_runner_killed(project, monkeypatch):
    ids = queue_three(project, monkeypatch, 1, "fork")
    watcher = wait_until(lambda: bgrun_processes(project, "_watcher_main"))[0]
    watcher.kill()
    watcher.wait(5)
    # the runner replaces it within a tick (BGRUN_TICK), with nobody else looking
    again = wait_until(lambda: bgrun_processes(project, "_watcher_main"), timeout=NOTICE)
    assert again[0].pid != watcher.pid
    victim = rows(project)[ids[0]][2]
    assert victim is not None
    os.kill(victim, signal.SIGKILL)
    killed = time.monotonic()
    wait_until(lambda: served(project, victim, ids[0], 1), timeout=15, pause=0.02)
    assert time.monotonic() - killed < NOTICE
    assert_all_complete(project, ids, killed_first=True)


def lock_holders(project) -> set[int]:
    """Pids holding a slot lock or the watcher lock of the project (from /proc/locks)."""
    state = project.log_dir / "bgrun.sqlite3.d"
    inodes = {p.stat().st_ino for p in state.glob("*.lock")
              if p.name.startswith("slot-") or p.name == "watcher.lock"}
    held = set()
    for line in Path("/proc/locks").read_text().splitlines():
        parts = line.split()
        if len(parts) > 5 and parts[1] == "FLOCK" and int(parts[5].split(":")[-1]) in inodes:
            held.add(int(parts[4]))
    return held


def test_no_bgrun_process_remains_once_the_queue_is_empty(project, monkeypatch):
    monkeypatch.setenv("BGRUN_CONCURRENCY", "2")
    ids = [run_background_job("jobs", "record", ["idle", i, 1.0]).id for i in range(4)]
    most_watchers = most_serving = 0
    while not all(r[0] == "completed" for r in rows(project).values()):
        most_watchers = max(most_watchers, len(bgrun_processes(project, "_watcher_main")))
        most_serving = max(most_serving, len(lock_holders(project)))
        time.sleep(0.02)
    # The budget: concurrency + 1 processes holding a slot or the watcher lock, and never
    # two watchers. (A runner started by an enqueue that finds a slot free exits at once
    # when it finds them all taken: it is counted by no lock.)
    assert most_watchers == 1
    assert 2 <= most_serving <= 2 + 1
    assert len(ids) == len(rows(project))
    # runners leave after BGRUN_RUNNER_IDLE (1 s); the watcher follows them
    wait_until(lambda: not bgrun_processes(project, "_runner_main")
               and not bgrun_processes(project, "_watcher_main"), timeout=10)
    assert not lock_holders(project)
    state = project.log_dir / "bgrun.sqlite3.d"
    assert all(m.read_text() in ("", "stop") for m in state.glob("slot-*.mark"))


def test_a_stopped_runner_keeps_its_job_until_it_continues(project, monkeypatch):
    """SIGSTOP is not death: the runner keeps its slot lock, nobody settles its job (it
    must not run twice), and it records the verdict once continued."""
    monkeypatch.setenv("BGRUN_CONCURRENCY", "1")
    job = run_background_job("jobs", "record", ["stopped", 0, 1.0], retries=1)
    wait_until(lambda: project.marks("stopped"))
    runner = rows(project)[job.id][2]
    assert runner is not None
    os.kill(runner, signal.SIGSTOP)
    try:
        time.sleep(NOTICE + 0.5)  # past the job's end, and past the promise
        assert rows(project)[job.id] == ("running", 1, runner)
        assert psutil.Process(runner).status() == psutil.STATUS_STOPPED
    finally:
        os.kill(runner, signal.SIGCONT)
    wait_until(lambda: rows(project)[job.id][0] == "completed", timeout=15)
    assert rows(project)[job.id][1] == 1
    assert [m["tag"] for m in project.marks("stopped") if m.get("end")] == [0]


def test_a_job_that_kills_its_own_process_group_kills_only_itself(project):
    job = run_background_job("jobs", "kill_own_group")
    wait_until(lambda: rows(project).get(job.id, ("",))[0] == "running")
    runner = rows(project)[job.id][2]
    wait_until(lambda: rows(project)[job.id][0] == "failed", timeout=15)
    assert alive(runner)  # neither the runner nor the watcher shares the job's group
    watcher = wait_until(lambda: bgrun_processes(project, "_watcher_main"), timeout=10)[0]
    assert os.getpgid(watcher.pid) != os.getpgid(runner)
    info = job.info()
    assert info["error"] == "Crashed: killed by SIGKILL"


def test_a_runner_leaving_work_behind_on_purpose_is_not_restarted(project):
    """A broken allowlist: the runner hands the job back and leaves (mark STOP); the
    watcher must not start runner after runner for it, each logging the same problem."""
    job = run_background_job("jobs", "record", ["kept", 0, 0.5], delay=0.5)
    allowlist = project.path / "allowlist.toml"
    allowlist.write_text(allowlist.read_text() + "\n[jobs.\n")

    def problems() -> int:
        return sum("AllowlistError" in e.get("error", "") for e in project.events(errors=True))

    wait_until(problems, timeout=15)
    wait_until(lambda: not bgrun_processes(project, "_runner_main")
               and not bgrun_processes(project, "_watcher_main"), timeout=15)
    logged = problems()
    time.sleep(2.0)
    assert problems() == logged
    assert rows(project)[job.id][:2] == ("waiting", 0)


# -- random kills, with nobody looking ---------------------------------------------------

LAST: list[object] = []  # the last trial's kill, for a failure's report
KINDS = ["runner", "child", "watcher", "runner+child", "watcher+runner", "runners"]


def feasible(kind: str, runners: int, watchers: int) -> str:
    """`kind`, or the nearest kill that leaves a bgrun process alive to notice it."""
    if "watcher" in kind and (not watchers or (kind != "watcher" and runners < 2)):
        kind = "runner"
    if kind == "runners" and runners < 2:
        kind = "runner"
    return kind if runners or kind == "watcher" else "child"


def victims(project, kind: str, rng: random.Random) -> tuple[list[psutil.Process], str]:
    """The processes to kill for `kind`; never the watcher and every runner together
    (every bgrun process dead at once is a reboot: `bgrun recover` at boot)."""
    serving = lock_holders(project)  # (not a runner that is about to find no free slot)
    runners = [r for r in bgrun_processes(project, "_runner_main") if r.pid in serving]
    watchers = bgrun_processes(project, "_watcher_main")
    pids = {r.pid for r in runners}
    children = []
    for proc in processes_of(project.path):
        with contextlib.suppress(psutil.Error):
            if proc.ppid() in pids and "_watcher_main" not in " ".join(proc.cmdline()):
                children.append(proc)
    kind = feasible(kind, len(runners), len(watchers))
    runner = rng.choice(runners) if runners else None
    if kind == "runner":
        chosen = [runner]
    elif kind == "child":
        chosen = children[:1] and [rng.choice(children)]
    elif kind == "watcher":
        chosen = watchers[:1]
    elif kind == "runner+child":
        chosen = [runner, *(c for c in children if c.ppid() == runner.pid)]
    elif kind == "watcher+runner":
        chosen = [*watchers[:1], runner]
    else:
        chosen = runners
    return chosen, kind


def kill_trial(project, rng: random.Random, tag0: int) -> tuple[str, float | None]:
    """Queue jobs, kill some processes at a random moment, and say how long until the
    death was noticed (None: nothing was killed)."""
    for tag in range(tag0, tag0 + 2):
        run_background_job("jobs", "record", ["t", tag, rng.uniform(0.3, 1.2)], retries=4)
    wait_until(lambda: any(r[0] == "running" for r in rows(project).values()), timeout=30)
    time.sleep(rng.uniform(0.0, 0.4))
    before = rows(project)
    chosen, kind = victims(project, rng.choice(KINDS), rng)
    if not chosen:
        return kind, None
    killed_pids = {p.pid for p in chosen}
    LAST[:] = [kind, sorted(killed_pids)]
    old_watchers = {p.pid for p in bgrun_processes(project, "_watcher_main")}
    for proc in chosen:
        with contextlib.suppress(psutil.Error):
            proc.send_signal(signal.SIGKILL)
    killed = time.monotonic()
    children = {str(m["tag"] + 1) for m in project.marks("t") if m["pid"] in killed_pids}
    orphans = {i: r[1] for i, r in before.items()
               if r[0] == "running" and (r[2] in killed_pids or i in children)}
    if kind == "watcher":
        wait_until(lambda: {p.pid for p in bgrun_processes(project, "_watcher_main")}
                   - old_watchers or not bgrun_processes(project, "_runner_main"),
                   timeout=30, pause=0.01)
    elif orphans:
        def settled() -> bool:
            now = rows(project)
            return all(now[i][0] != "running" or now[i][1] != a for i, a in orphans.items())
        wait_until(settled, timeout=30, pause=0.01)
    else:
        return kind, None  # it ran no job: nothing to settle
    return kind, time.monotonic() - killed


def drained(project, stall: float = 20.0) -> None:
    """Wait until every job has finished, failing only if none finishes for `stall` s
    (the trials queue faster than one runner drains: a backlog is not a stall)."""
    done, since = -1, time.monotonic()
    while True:
        now = sum(r[0] in ("completed", "failed") for r in rows(project).values())
        if now == len(rows(project)):
            return
        if now > done:
            done, since = now, time.monotonic()
        assert time.monotonic() - since < stall, f"stuck: {len(rows(project)) - now} jobs"
        time.sleep(0.1)


@pytest.mark.slow
@pytest.mark.parametrize("concurrency", [1, 2])
def test_random_kills_are_noticed_with_nobody_looking(project, monkeypatch, concurrency):
    """Runner, child, watcher, or several at once; only the store is read afterwards.
    KILL_TRIALS sets the number of trials (100 for the figures in the README)."""
    monkeypatch.setenv("BGRUN_CONCURRENCY", str(concurrency))
    trials = int(os.environ.get("KILL_TRIALS", "8"))
    rng = random.Random(13 + concurrency)
    noticed: list[tuple[str, float]] = []
    for trial in range(trials):
        kind, took = kill_trial(project, rng, 2 * trial)
        if took is not None:
            noticed.append((kind, took))
    drained(project)
    final = rows(project)
    stuck = [i for i, r in final.items() if r[0] not in ("completed", "failed")]
    ends = [m["tag"] for m in project.marks("t") if m.get("end")]
    completed = {int(i) - 1 for i, r in final.items() if r[0] == "completed"}
    lost = len(final) != 2 * trials or not completed <= set(ends)
    twice = len(ends) - len(set(ends))
    worst = max((t for _, t in noticed), default=0.0)
    print(f"\nconcurrency {concurrency}: {trials} trials, {len(noticed)} kills "
          f"({', '.join(sorted({k for k, _ in noticed}))}); lost {int(lost)}, stuck "
          f"{len(stuck)}, run twice {twice}, failed "
          f"{sum(r[0] == 'failed' for r in final.values())}; worst notice {worst:.2f} s, "
          f"by kind: { {k: round(max(t for j, t in noticed if j == k), 2) for k, _ in noticed} }")
    assert not lost and not stuck and twice == 0
    assert worst < NOTICE
    wait_until(lambda: not lock_holders(project), timeout=15)  # and nothing is left
