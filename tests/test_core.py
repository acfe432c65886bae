"""The core promises, with real runners and real job processes."""

from __future__ import annotations

import json
import os
import stat
import sys
import time

import pytest

from bgrun import (
    BadParamsError,
    MethodNotFoundError,
    NotAllowedError,
    TargetNotFoundError,
    run_background_job,
)
from tests.conftest import wait_until


def test_retries_are_counted_and_logged(project):
    job = run_background_job("jobs", "fail", ["nope"], retries=2)
    assert job.wait(30) == "failed"
    info = project.show(job.id)
    assert (info["attempts"], info["retries"]) == (3, 2)
    assert info["error"] == "ValueError: nope"
    assert len(project.marks("fail")) == 3
    statuses = [e["status"] for e in project.events() if e["job"] == job.id]
    assert statuses == ["queued", "running", "retrying", "running", "retrying", "running",
                        "failed"]
    errors = [e for e in project.events(errors=True) if e["job"] == job.id]
    assert [e["status"] for e in errors] == ["retrying", "retrying", "failed"]
    assert all("raise ValueError(message)" in e["traceback"] for e in errors)


def test_no_retry_by_default_and_allowlist_default_applies(project):
    (project.path / "allowlist.toml").write_text(
        '[jobs."jobs"]\nmethods = ["fail"]\nretries = 1\n'
    )
    assert run_background_job("jobs", "fail").wait(30) == "failed"
    assert len(project.marks("fail")) == 2  # the allowlist's retries = 1
    assert run_background_job("jobs", "fail", retries=0).wait(30) == "failed"
    assert len(project.marks("fail")) == 3  # the call wins


def test_delay_is_respected(project):
    queued = time.time()
    job = run_background_job("jobs", "record", ["delayed"], delay=1.5)
    assert job.status == "scheduled"
    assert job.wait(30) == "completed"
    info = job.info()
    # Times read in two processes: allow 10 ms for the VM's clock reads (seen: 10 us off).
    assert project.marks("delayed")[0]["t"] - queued >= 1.5 - 0.01
    events = [e for e in project.events() if e["job"] == job.id]
    assert events[0]["status"] == "scheduled"
    from datetime import datetime

    start = datetime.fromisoformat(info["started_at"])
    made = datetime.fromisoformat(info["created_at"])
    assert (start - made).total_seconds() >= 1.5


def test_priority_order_at_concurrency_one(project, monkeypatch):
    monkeypatch.setenv("BGRUN_CONCURRENCY", "1")
    blocker = run_background_job("jobs", "sleep", [1.0])
    wait_until(lambda: blocker.status == "running")
    low = run_background_job("jobs", "record", ["order", "low"], priority=1)
    high1 = run_background_job("jobs", "record", ["order", "high1"], priority=9)
    high2 = run_background_job("jobs", "record", ["order", "high2"], priority=9)
    mid = run_background_job("jobs", "record", ["order", "mid"], priority=5)
    for job in (low, high1, high2, mid):
        assert job.wait(30) == "completed"
    starts = [m["tag"] for m in project.marks("order") if m.get("start")]
    assert starts == ["high1", "high2", "mid", "low"]


def test_concurrency_limit_reached_never_exceeded(project, monkeypatch):
    monkeypatch.setenv("BGRUN_CONCURRENCY", "3")
    jobs = [run_background_job("jobs", "record", ["overlap", n, 0.6]) for n in range(9)]
    for job in jobs:
        assert job.wait(60) == "completed"
    spans = {}
    for mark in project.marks("overlap"):
        spans.setdefault(mark["tag"], []).append(mark["t"])
    points = sorted([(s, 1) for s, _ in spans.values()] + [(e, -1) for _, e in spans.values()],
                    key=lambda p: (p[0], p[1]))
    running = peak = 0
    for _, delta in points:
        running += delta
        peak = max(peak, running)
    assert peak == 3


def test_timeout_ends_the_attempt(project):
    started = time.monotonic()
    job = run_background_job("jobs", "sleep", [30], timeout=0.5)
    assert job.wait(30) == "failed"
    assert time.monotonic() - started < 10
    assert job.info()["error"].startswith("Timeout:")


def test_async_functions_and_methods_are_awaited(project):
    assert run_background_job("jobs", "async_add", [2, 3]).wait(30) == "completed"
    job = run_background_job("jobs.Greeter", "agreet", ["ada"])
    assert job.wait(30) == "completed"
    assert job.result == "async hello ada"


def test_kwargs_class_methods_and_module_functions(project):
    job = run_background_job("jobs.Greeter", "greet", {"name": "ada", "punctuation": "?"})
    assert job.wait(30) == "completed"
    assert job.result == "hello ada?"
    assert "hello ada?" in job.output()
    job = run_background_job("jobs", "echo", [1, 2.5, None, True, {"a": [1]}])
    assert job.wait(30) == "completed"
    assert job.result == {"args": [1, 2.5, None, True, {"a": [1]}], "kwargs": {}}


def test_job_runs_where_and_how_it_was_queued(project, monkeypatch):
    monkeypatch.setenv("MY_SETTING", "from-the-caller")
    job = run_background_job("jobs", "env_value", ["MY_SETTING"])
    assert job.wait(30) == "completed"
    assert job.result == "from-the-caller"
    job = run_background_job("jobs", "where")
    assert job.wait(30) == "completed"
    assert job.result["cwd"] == str(project.path)
    assert job.result["path0"] == str(project.path)
    assert os.path.realpath(job.result["python"]) == os.path.realpath(sys.executable)
    assert "MY_SETTING" not in json.dumps(job.info())  # the environment is never shown


def test_results_that_are_not_json_or_too_big(project):
    job = run_background_job("jobs", "not_json")
    assert job.wait(30) == "completed"
    assert job.result == "{1, 2, 3}"
    job = run_background_job("jobs", "big_result")
    assert job.wait(30) == "completed"
    assert len(job.result) < 70_000 and job.result.endswith("...")


@pytest.mark.parametrize(("method", "args", "error"), [
    ("exit_code", [3], "Crashed: exit code 3"),
    ("kill_self", [9], "Crashed: killed by SIGKILL"),
])
def test_exit_status_is_the_verdict_when_the_child_says_nothing(project, method, args, error):
    job = run_background_job("jobs", method, args)
    assert job.wait(30) == "failed"
    assert job.info()["error"] == error


def test_sys_exit_zero_is_a_clean_end_and_other_codes_fail(project):
    assert run_background_job("jobs", "sys_exit", [0]).wait(30) == "completed"
    job = run_background_job("jobs", "sys_exit", [5])
    assert job.wait(30) == "failed"
    assert job.info()["error"] == "SystemExit: 5"


def test_refusals_are_distinct_and_store_nothing(project):
    with pytest.raises(NotAllowedError):
        run_background_job("os", "system", ["true"])
    with pytest.raises(NotAllowedError):
        run_background_job("jobs", "_private")
    with pytest.raises(MethodNotFoundError):
        (project.path / "allowlist.toml").write_text('[jobs."jobs"]\nmethods = ["missing"]\n')
        run_background_job("jobs", "missing")
    (project.path / "allowlist.toml").write_text(
        '[jobs."nosuchmodule"]\nmethods = ["f"]\n[jobs."jobs.NoClass"]\nmethods = ["f"]\n'
        '[jobs."jobs"]\nmethods = ["echo"]\n'
    )
    with pytest.raises(TargetNotFoundError, match="module nosuchmodule not found"):
        run_background_job("nosuchmodule", "f")
    with pytest.raises(TargetNotFoundError):
        run_background_job("jobs.NoClass", "f")
    with pytest.raises(BadParamsError):
        run_background_job("jobs", "echo", {"a": float("nan")})
    with pytest.raises(BadParamsError):
        run_background_job("jobs", "echo", {1: "int key"})  # type: ignore[dict-item]
    assert not (project.log_dir / "bgrun.sqlite3").exists()  # refusals make no store
    rejected = [e for e in project.events() if e["status"] == "rejected"]
    assert len(rejected) == 7 and all(e["job"] == "-" for e in rejected)
    assert len(project.events(errors=True)) == 7


def test_missing_dependency_of_the_target_is_not_called_module_not_found(project):
    (project.path / "needsdep.py").write_text("import not_installed_dep\n\ndef f():\n    pass\n")
    (project.path / "allowlist.toml").write_text('[jobs."needsdep"]\nmethods = ["f"]\n')
    with pytest.raises(Exception, match="module not_installed_dep not found") as info:
        run_background_job("needsdep", "f")
    assert not isinstance(info.value, TargetNotFoundError)


def test_refused_names_are_never_imported(project):
    script = (
        "import sys, bgrun\n"
        "for target, method in [('poison', 'other'), ('poison.x', 'run'), ('os', 'system'),"
        " ('builtins', 'eval'), ('poison', '__init__'), ('p\\u043eison', 'run')]:\n"
        "    try:\n"
        "        bgrun.run_background_job(target, method)\n"
        "    except bgrun.BgrunError as exc:\n"
        "        print(type(exc).__name__)\n"
        "print('poison' in sys.modules)\n"
    )
    out = project.python(script)
    assert out.returncode == 0, out.stderr
    lines = out.stdout.split()
    assert lines[-1] == "False"
    assert len(lines) == 7  # every one refused


def test_target_removed_from_allowlist_after_queueing_fails_not_allowed(project, monkeypatch):
    job = run_background_job("jobs", "record", ["late"], delay=1.0)
    (project.path / "allowlist.toml").write_text('[jobs."jobs"]\nmethods = ["noop"]\n')
    assert job.wait(30) == "failed"
    info = job.info()
    assert info["error"].startswith("NotAllowed:")
    assert info["attempts"] == 1
    assert project.marks("late") == []


def test_unique_key_returns_the_live_job(project):
    first = run_background_job("jobs", "sleep", [1.0], unique="nightly")
    second = run_background_job("jobs", "sleep", [1.0], unique="nightly")
    assert second.id == first.id
    assert first.wait(30) == "completed"
    third = run_background_job("jobs", "sleep", [0.1], unique="nightly")
    assert third.id != first.id


def test_log_folder_and_files_are_private(project):
    assert run_background_job("jobs", "echo", ["secret"]).wait(30) == "completed"
    with pytest.raises(NotAllowedError):
        run_background_job("jobs", "nope")
    assert stat.S_IMODE(project.log_dir.stat().st_mode) == 0o700
    files = [p for p in project.log_dir.rglob("*") if p.is_file() or p.is_fifo()]
    assert any(p.name.endswith("-wal") for p in files)
    assert any(p.name == "background_jobs_errors.log" for p in files)
    for path in files:
        assert stat.S_IMODE(path.stat().st_mode) == 0o600, path
    for folder in [p for p in project.log_dir.rglob("*") if p.is_dir()]:
        assert stat.S_IMODE(folder.stat().st_mode) == 0o700, folder


def test_log_lines_cannot_be_forged(project):
    evil = 'x\n2026-01-01T00:00:00+00:00 job=1 class=a method=b status=completed attempt=1 "\u2028'
    job = run_background_job("jobs", "hostile_output", retries=0)
    assert job.wait(30) == "failed"
    with pytest.raises(NotAllowedError):
        run_background_job("jobs", evil)
    echo = run_background_job("jobs", "echo", [evil, "\x1b[2J\r\x85"])
    assert echo.wait(30) == "completed"
    for errors in (False, True):
        name = "background_jobs_errors.log" if errors else "background_jobs.log"
        raw = (project.log_dir / name).read_text()
        lines = raw.split("\n")[:-1]
        assert len(lines) == len(project.events(errors=errors))
        assert all(line[:4].isdigit() and "+00:00 job=" in line[:40] for line in lines)
        assert not any(c in raw for c in "\r\x1b\x85\u2028")
    failed = next(e for e in project.events(errors=True) if e["job"] == job.id)
    assert failed["error"].startswith("RuntimeError: bad\n2026-01-01")  # kept, escaped
    refused = next(e for e in project.events() if e["status"] == "rejected")
    assert refused["method"] == evil


def test_many_waiting_jobs_do_not_mean_many_processes(project):
    from tests.conftest import processes_of, script_processes

    jobs = [run_background_job("jobs", "noop", delay=60) for _ in range(200)]
    time.sleep(0.5)
    # BGRUN_CONCURRENCY=2 runners at most, plus the one watcher that notices their death
    # (issue 13's budget: concurrency + 1 while jobs exist).
    processes = processes_of(project.path)
    watchers = [p for p in script_processes(project, "_watcher_main.py") if p in processes]
    assert len(watchers) <= 1
    assert 1 <= len(processes) - len(watchers) <= 2
    assert {job.status for job in jobs[:3]} == {"scheduled"}

