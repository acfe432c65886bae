"""Shared fixtures: a throw-away project folder with its own allowlist, store and logs."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psutil
import pytest

from bgrun.config import Config
from bgrun.context import Context, context_for
from bgrun.joblog import ERRORS_LOG, EVENTS_LOG, parse_line

FIXTURES = Path(__file__).parent / "fixtures"
FAST = {
    "BGRUN_CONCURRENCY": "2",
    "BGRUN_RUNNER_IDLE": "1",
    "BGRUN_TICK": "0.05",
    "BGRUN_BACKOFF_BASE": "0.05",
    "BGRUN_BACKOFF_MAX": "0.2",
    "BGRUN_CANCEL_GRACE": "1",
}


@dataclass
class Project:
    """A project folder as a user has one: allowlist.toml, a jobs module, logs/."""

    path: Path
    log_dir: Path

    @property
    def ctx(self) -> Context:
        return context_for(Config.load())

    def cli(self, *args: str, timeout: float = 60, **env: str) -> subprocess.CompletedProcess[str]:
        """Run `python -m bgrun ARGS` here, as a user would from a shell."""
        return subprocess.run(
            [sys.executable, "-m", "bgrun", *args], cwd=self.path, capture_output=True,
            text=True, timeout=timeout, env={**os.environ, **env},
        )

    def python(self, code: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
        """Run `python -c CODE` here: a fresh interpreter, as a user's script would be."""
        return subprocess.run([sys.executable, "-c", code], cwd=self.path,
                              capture_output=True, text=True, timeout=timeout)

    def show(self, job_id: str) -> dict[str, Any]:
        result = self.cli("show", job_id, "--json")
        assert result.returncode == 0, result.stderr
        return json.loads(result.stdout)  # type: ignore[no-any-return]

    def wait(self, job_id: str, timeout: float = 30) -> dict[str, Any]:
        from bgrun.control import wait_for

        return wait_for(self.ctx, job_id, timeout).to_dict(time.time())

    def events(self, errors: bool = False) -> list[dict[str, str]]:
        path = self.log_dir / (ERRORS_LOG if errors else EVENTS_LOG)
        if not path.exists():
            return []
        return [parse_line(line) for line in path.read_text().splitlines()]

    def marks(self, name: str) -> list[dict[str, Any]]:
        path = self.path / "marks" / name
        if not path.exists():
            return []
        return [json.loads(line) for line in path.read_text().splitlines()]


@pytest.fixture
def project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Project]:
    """A fresh project folder, the working directory for the test, with fast settings."""
    for name in ("jobs.py", "poison.py", "allowlist.toml"):
        shutil.copy(FIXTURES / name, tmp_path / name)
    log_dir = tmp_path / "logs"
    monkeypatch.chdir(tmp_path)
    for key in [k for k in os.environ if k.startswith("BGRUN_")]:
        monkeypatch.delenv(key)
    for key, value in FAST.items():
        monkeypatch.setenv(key, value)
    monkeypatch.setenv("JOBS_MARKS", str(tmp_path / "marks"))
    yield Project(tmp_path, log_dir)
    kill_processes_of(tmp_path)


def processes_of(folder: Path) -> list[psutil.Process]:
    """Every live process started for this project (runners and job trees)."""
    found = []
    for proc in psutil.process_iter():
        try:
            if proc.pid == os.getpid() or proc.status() == psutil.STATUS_ZOMBIE:
                continue
            env = proc.environ()
        except psutil.Error:
            continue
        if env.get("JOBS_MARKS", "").startswith(str(folder)):
            found.append(proc)
    return found


def runner_processes(project: Project) -> list[psutil.Process]:
    """Live runners of this project (job children excluded)."""
    return script_processes(project, "_runner_main.py")


def script_processes(project: Project, script: str) -> list[psutil.Process]:
    """Live processes of this project whose command line names `script`."""
    found = []
    for proc in processes_of(project.path):
        try:
            if any(script in part for part in proc.cmdline()):
                found.append(proc)
        except psutil.Error:
            continue
    return found


@contextlib.contextmanager
def watchers_frozen(project: Project) -> Iterator[None]:
    """The project's watchers stopped for the block (SIGSTOP), resumed after it: a test
    that kills a runner looks at what the watcher would otherwise settle at once."""
    # (a runner starts its watcher as a new interpreter: on a slow machine the test can
    # get here before it is up)
    watchers = wait_until(lambda: script_processes(project, "_watcher_main.py"), timeout=20)
    for watcher in watchers:
        watcher.suspend()
    # SIGSTOP is sent, not yet taken: a watcher busy on the other core can go on (and
    # take a dead runner's slot lock) until it has stopped.
    wait_until(lambda: all(w.status() == psutil.STATUS_STOPPED for w in watchers),
               timeout=10, pause=0.005)
    try:
        yield
    finally:
        for watcher in watchers:
            watcher.resume()


def kill_processes_of(folder: Path) -> None:
    """Kill every process of the project at once, as a power cut would.

    Stopped first, then killed: killed one by one, a watcher or runner that saw another
    die would start a replacement before its own turn came.
    """
    for _ in range(10):
        procs = processes_of(folder)
        if not procs:
            return
        for sig in (signal.SIGSTOP, signal.SIGKILL):
            for proc in procs:
                with contextlib.suppress(psutil.Error):
                    proc.send_signal(sig)
        psutil.wait_procs(procs, timeout=5)


def wait_until(predicate: Any, timeout: float = 20, pause: float = 0.05) -> Any:
    """Poll `predicate` until it returns something truthy; fail the test after `timeout`."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout} s")
        time.sleep(pause)


# -- PostgreSQL: one throwaway cluster per session, a database per test ---------------------

@pytest.fixture(scope="session")
def pg_server() -> Iterator[Any]:
    """A running PostgreSQL cluster of this session (tests/pgserver.py), removed at the end.

    Skipped, with the reason, where it cannot run: not root, or no server installed.
    """
    from tests.pgserver import running_server, why_not_here

    reason = why_not_here()
    if reason is not None:
        pytest.skip(reason)
    with running_server() as server:
        yield server


@pytest.fixture
def pg_url(pg_server: Any) -> Iterator[str]:
    """The URL of a fresh database holding bgrun's schema (copied from the template)."""
    name = pg_server.new_database()
    yield pg_server.url(name)
    pg_server.drop_database(name)
