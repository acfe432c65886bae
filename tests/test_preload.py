"""Preloading (BGRUN_PRELOAD=1, fork mode): a job's module imported once, in the runner,
and never code that changed on disk since."""

from __future__ import annotations

import os
import sys
import time

import pytest

from bgrun import run_background_job
from tests.conftest import runner_processes, wait_until

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="fork mode is POSIX only")

VERSIONED = '''\
import os

with open({imports!r}, "a") as f:  # one line per import, with the importing process
    f.write(f"{{os.getpid()}}\\n")

VERSION = {version!r}


def version():
    return {{"version": VERSION, "pid": os.getpid()}}
'''


@pytest.fixture
def preload_project(project, monkeypatch):
    monkeypatch.setenv("BGRUN_MODE", "fork")
    monkeypatch.setenv("BGRUN_PRELOAD", "1")
    monkeypatch.setenv("BGRUN_RUNNER_IDLE", "30")  # one runner serves the whole test
    monkeypatch.setenv("BGRUN_CONCURRENCY", "1")
    write_module(project, "v1")
    with open(project.path / "allowlist.toml", "a") as f:
        f.write('\n[jobs."versioned"]\nmethods = ["version"]\n')
    return project


def write_module(project, version: str) -> None:
    imports = project.path / "imports.txt"
    (project.path / "versioned.py").write_text(VERSIONED.format(imports=str(imports),
                                                                version=version))


def imports_by_others(project) -> list[int]:
    """Pids that imported the module, other than this test process (its import check)."""
    path = project.path / "imports.txt"
    pids = [int(p) for p in path.read_text().split()] if path.exists() else []
    return [p for p in pids if p != os.getpid()]


def run(version_expected: str | None = None) -> dict:
    job = run_background_job("versioned", "version", check_import=False)
    assert job.wait(timeout=30) == "completed", job.info()
    if version_expected is not None:
        assert job.result["version"] == version_expected
    return job.result


@pytest.mark.parametrize("preload", ["1", "0"])
def test_a_preloaded_module_is_imported_once_by_the_runner(preload_project, monkeypatch,
                                                           preload):
    monkeypatch.setenv("BGRUN_PRELOAD", preload)
    pids = {run("v1")["pid"] for _ in range(4)}
    assert len(pids) == 4  # still a process per job
    importers = imports_by_others(preload_project)
    (runner,) = runner_processes(preload_project)
    if preload == "1":
        assert importers == [runner.pid]
    else:
        assert sorted(importers) == sorted(pids)


def test_changed_code_is_never_run_from_the_old_preload(preload_project):
    project = preload_project
    run("v1")
    (old_runner,) = runner_processes(project)
    time.sleep(0.05)
    write_module(project, "v2-longer")  # a new size: seen even where mtime is coarse
    deadline = time.monotonic() + 30
    while run()["version"] != "v2-longer":  # a job in the first second may run v1 still
        assert time.monotonic() < deadline, "the runner kept running the old code"
        time.sleep(0.2)
    run("v2-longer")
    wait_until(lambda: old_runner.pid not in {p.pid for p in runner_processes(project)})
    # (a runner started by a caller meanwhile finds no free slot and leaves)
    (new_runner,) = wait_until(lambda: len(runner_processes(project)) == 1
                               and runner_processes(project))
    assert new_runner.pid in imports_by_others(project)  # the fresh runner preloads v2
    run("v2-longer")


def test_a_name_refused_at_run_time_is_never_preloaded(preload_project):
    project = preload_project
    job = run_background_job("versioned", "version", delay=1.5, check_import=False)
    toml = (project.path / "allowlist.toml").read_text()
    (project.path / "allowlist.toml").write_text(toml.replace('"version"', '"other"'))
    assert job.wait(timeout=30) == "failed"
    assert job.info()["error"].startswith("NotAllowed")
    assert imports_by_others(project) == []
