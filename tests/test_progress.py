"""bgrun.progress(): checked everywhere, relayed by the runner, kept after the job ends."""

from __future__ import annotations

import json
import os
import shutil
import sqlite3
import sys
import time
from pathlib import Path

import pytest

import bgrun
from bgrun import run_background_job
from bgrun.records import Outcome
from bgrun.relay import parse
from bgrun.slots import slot_lock
from bgrun.store import schema
from bgrun.store.sqlite import SqliteStore
from tests.conftest import wait_until

MODES = ["spawn"] if sys.platform == "win32" else ["spawn", "fork"]


@pytest.mark.parametrize("args", [
    (-1,), (1, -2), (5, 4), (True,), (1, False), (float("nan"),), (float("inf"),),
    ("3",), (None,), (1, "10"), (1, 2, 3), (1, 2, "x" * 1025), (1, 2, "é" * 513),
])
def test_bad_values_are_a_value_error_outside_a_job(args):
    with pytest.raises(ValueError, match="progress: "):
        bgrun.progress(*args)


def test_good_values_do_nothing_outside_a_job():
    assert bgrun.progress(0) is None
    assert bgrun.progress(3, 3, "x" * 1024) is None
    assert bgrun.progress(0.5, 2.5, "é" * 512) is None
    assert bgrun.progress(0, 0) is None


@pytest.mark.parametrize("mode", MODES)
def test_a_job_reports_and_keeps_its_last_report(project, monkeypatch, mode):
    monkeypatch.setenv("BGRUN_MODE", mode)
    job = run_background_job("jobs", "report", [12, 0.3])
    seen = {}

    def moved():
        info = project.show(job.id)
        if info["progress"] is not None and info["status"] == "running":
            seen[info["progress"]["done"]] = info["progress"]
        return len(seen) >= 2

    wait_until(moved)
    assert all(r["total"] == 12 and r["message"] == f"step {d}" for d, r in seen.items())
    assert project.wait(job.id)["status"] == "completed"
    final = project.show(job.id)["progress"]
    assert (final["done"], final["total"], final["message"]) == (12, 12, "done")
    assert final["at"].endswith("+00:00")
    listed = json.loads(project.cli("list", "--json").stdout)[0]
    assert listed["progress"] == final
    assert "100%" in project.cli("list").stdout
    assert "12/12 (100%) done" in project.cli("show", job.id).stdout


@pytest.mark.parametrize("mode", MODES)
def test_the_last_of_many_quick_reports_lands(project, monkeypatch, mode):
    monkeypatch.setenv("BGRUN_MODE", mode)
    job = run_background_job("jobs", "report", [3000, 0.0, "all of them"])
    assert job.wait(30) == "completed"
    assert job.progress["done"] == 3000 and job.progress["message"] == "all of them"


def test_foreground_run_reports_too(project):
    result = project.cli("run", "jobs", "report", "--kw-json", "steps=2",
                         "--kw-json", "pause=0.1")
    assert result.returncode == 0, result.stderr
    job = json.loads(project.cli("list", "--json").stdout)[0]
    assert job["progress"]["done"] == 2


def test_no_progress_is_null_and_a_bad_value_fails_the_job(project):
    quiet = run_background_job("jobs", "noop")
    bad = run_background_job("jobs", "report_bad", ["over"])
    assert project.wait(quiet.id)["progress"] is None
    failed = project.wait(bad.id)
    assert failed["status"] == "failed"
    assert failed["error"] == "ValueError: progress: done (5) is more than total (4)"
    assert failed["progress"] is None


def test_junk_in_the_pipe_is_ignored(project):
    job = run_background_job("jobs", "report_hostile")
    assert project.wait(job.id)["status"] == "completed"
    report = project.show(job.id)["progress"]
    assert (report["done"], report["total"], report["message"]) == (7, 9, "valid")
    assert not (project.path / "pwned").exists()
    assert parse(b"__import__('os').system('true')") is None
    assert parse(b"(1, 2, 'x' * 5000)") is None
    assert parse(b"(True, None, None)") is None
    assert parse(b"(1, 2, 'ok')") == {"done": 1, "total": 2, "message": "ok"}


def test_a_spawned_job_that_does_not_report_imports_nothing_for_it(project, monkeypatch):
    # (A forked child has the runner's modules already: nothing to load either.)
    monkeypatch.setenv("BGRUN_MODE", "spawn")
    job = run_background_job("jobs", "modules")
    assert project.wait(job.id)["result"] == []


def test_a_new_attempt_starts_without_the_old_report(project):
    job = run_background_job("jobs", "noop", delay=3600)
    store, later = project.ctx.store, time.time() + 7200
    with slot_lock(project.ctx.state, 99):  # held: nobody settles our claims as orphans
        assert store.claim(later, 99, os.getpid()).id == job.id
        report = json.dumps({"done": 1, "total": 2, "message": None, "at": time.time()})
        assert store.set_progress(job.id, 1, report)
        assert store.get(job.id).progress_json == report
        store.finish(job.id, 1, time.time(), outcome=Outcome.FAILED, retry_at=time.time())
        assert store.get(job.id).progress_json == report  # kept while it waits
        assert store.claim(later, 99, os.getpid()).progress_json is None
        assert not store.set_progress(job.id, 1, report)  # attempt 1 is over: fenced
        store.finish(job.id, 2, time.time(), outcome=Outcome.COMPLETED)


def test_a_version_1_store_is_migrated(project, tmp_path):
    path = tmp_path / "old.db"
    shutil.copy(Path(__file__).parent / "data" / "store-v1.sqlite3", path)
    store = SqliteStore(path, tmp_path)
    assert store.get("1").progress_json is None
    assert store.runner_rows() == []
    store.close()
    with sqlite3.connect(path) as db:
        assert db.execute("PRAGMA user_version").fetchone()[0] == schema.VERSION


def test_a_job_can_report_after_its_child_checked_a_changed_allowlist(project, tmp_path):
    # The child loads bgrun's allowlist module under a stub package when the allowlist
    # changed since the runner's check; the job's own `import bgrun` must still get
    # the real package, progress() included.
    package = Path(bgrun.__file__).parent
    code = (
        f"import sys; sys.path.insert(0, {str(package)!r}); import _child;"
        f" spec = {{'allowlist': 'allowlist.toml', 'signature': [0, 0, 0],"
        f" 'package': {str(package)!r}, 'target': 'jobs', 'method': 'noop'}};"
        " print(_child._check_allowlist(spec)); import bgrun; bgrun.progress(1, 2, 'ok');"
        " print('reported')"
    )
    result = project.python(code)
    assert result.stdout.split() == ["None", "reported"], result.stderr
