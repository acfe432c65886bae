"""A log folder deleted, moved or replaced under live callers and runners loses no job."""

from __future__ import annotations

import json
import shutil
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest
from conftest import runner_processes, wait_until

from bgrun.config import Config
from bgrun.context import Context

# A long-lived caller, as a web app is: one process queueing in a loop; it prints, per
# request, when the call started and the id it got back (or the error).
CALLER = """
import json, os, time
from bgrun import run_background_job
i = 0
while not os.path.exists("stop"):
    t0 = time.time()
    try:
        job = run_background_job("jobs", "record", ["gone", i, 0.1])
        print(json.dumps({"i": i, "id": job.id, "t0": t0}), flush=True)
    except Exception as exc:
        print(json.dumps({"i": i, "error": f"{type(exc).__name__}: {exc}", "t0": t0}),
              flush=True)
    i += 1
    time.sleep(0.04)
"""


def _jobs_in(store: Path) -> dict[str, dict[str, object]]:
    db = sqlite3.connect(store.as_uri() + "?mode=ro", uri=True)
    try:
        rows = db.execute("SELECT id, params, status, finished_at FROM jobs").fetchall()
    finally:
        db.close()
    return {str(r[0]): {"params": json.loads(r[1]), "status": r[2], "finished_at": r[3]}
            for r in rows}


def _delete(logs: Path, aside: Path) -> None:
    while logs.exists():  # as `rm -rf` run again: live processes write into it meanwhile
        shutil.rmtree(logs, ignore_errors=True)


def _move(logs: Path, aside: Path) -> None:
    logs.rename(aside)


def _replace(logs: Path, aside: Path) -> None:
    """A restore from a backup: another store (with the same ids) now at the path."""
    logs.rename(aside)
    logs.with_name("logs.bak").rename(logs)


@pytest.mark.parametrize("action", [_delete, _move, _replace], ids=["delete", "move", "replace"])
def test_no_job_accepted_is_lost_when_the_log_folder_goes(project, action):
    config = Config.load()
    Context.open(config).store.close()  # the backup: an empty store, before any runner
    shutil.copytree(project.log_dir, project.path / "logs.bak")
    caller = subprocess.Popen([sys.executable, "-c", CALLER], cwd=project.path,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        wait_until(lambda: len(project.marks("gone")) >= 6)  # jobs run while we act
        old_runners = {p.pid for p in runner_processes(project)}
        old_children = _children(old_runners)
        assert old_runners
        action(project.log_dir, project.path / "logs.old")
        acted = time.time()
        # The old store's runners end their attempts and leave, while the caller goes on.
        wait_until(lambda: not _alive(old_runners), timeout=20)
        assert not _alive(old_children)  # their attempts were ended, not left orphaned
        time.sleep(1.5)
    finally:
        (project.path / "stop").touch()
        out, err = caller.communicate(timeout=30)
    assert caller.returncode == 0, err
    replies = [json.loads(line) for line in out.splitlines()]
    after = [r for r in replies if r["t0"] >= acted]
    accepted = [r for r in after if "id" in r]
    assert len(accepted) >= 5, after  # the caller kept queueing after the folder went
    assert all("Error" in r["error"] for r in after if "error" in r)  # one clear line each

    # Every id given back since is in the store at the path, and runs to its end.
    store = config.store

    def all_ended() -> bool:
        jobs = _jobs_in(store)
        return all(jobs.get(r["id"], {}).get("status") == "completed" for r in accepted)

    wait_until(all_ended, timeout=60)
    jobs = _jobs_in(store)
    for reply in accepted:
        assert jobs[reply["id"]]["params"] == ["gone", reply["i"], 0.1]
    # Nothing was written into the old store once it had gone (a moved one can be read).
    if action is not _delete:
        old = _jobs_in(project.path / "logs.old" / config.store.name)
        late = [j for j in old.values() if (j["finished_at"] or 0) >= acted]
        assert late == []


def _children(pids: set[int]) -> set[int]:
    found = set()
    for pid in pids:
        try:
            found |= {c.pid for c in psutil.Process(pid).children(recursive=True)}
        except psutil.Error:
            continue
    return found


def _alive(pids: set[int]) -> set[int]:
    alive = set()
    for pid in pids:
        try:
            if psutil.Process(pid).status() != psutil.STATUS_ZOMBIE:
                alive.add(pid)
        except psutil.Error:
            continue
    return alive
