"""The README's systemd unit, run as its command lines (no systemd in the test machine).

`systemd-run` needs a running systemd (PID 1) and its bus; where there is none, the
unit's ExecStartPre= and ExecStart= lines run in order, in its WorkingDirectory, as
systemd would run them.
"""

from __future__ import annotations

import contextlib
import re
import shlex
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import psutil
from conftest import kill_processes_of, processes_of, wait_until

from bgrun import run_background_job
from bgrun.slots import any_slot_free

README = Path(__file__).resolve().parents[1] / "README.md"
BGRUN = str(Path(sys.executable).with_name("bgrun"))  # the console script, as installed


def unit_lines() -> dict[str, str]:
    """ExecStartPre= and ExecStart= of the README's unit, for this venv and project."""
    block = re.search(r"```ini\n(.*?\[Service\].*?)```", README.read_text(), re.S)
    assert block, "the README has no systemd unit"
    lines = dict(re.findall(r"^(ExecStartPre|ExecStart)=(.+)$", block.group(1), re.M))
    return {key: re.sub(r"^\S+/bin/bgrun\b", BGRUN, value) for key, value in lines.items()}


class Lines:
    """A process's stdout lines, read as they come (the worker never ends on its own)."""

    def __init__(self, proc: subprocess.Popen[str]) -> None:
        self.proc = proc
        self.lines: list[str] = []
        assert proc.stdout is not None
        out = proc.stdout
        self.reader = threading.Thread(target=lambda: self.lines.extend(iter(out.readline, "")),
                                       daemon=True)
        self.reader.start()

    def close(self) -> None:
        """Kill the process (if still alive) and close its pipes."""
        self.proc.kill()
        self.proc.wait()
        self.reader.join(5)
        for pipe in (self.proc.stdout, self.proc.stderr):
            if pipe is not None:
                pipe.close()

    def having(self, word: str) -> str | None:
        return next((line for line in self.lines if word in line), None)


def test_readme_unit_starts_when_on_demand_runners_hold_every_slot(project, monkeypatch):
    lines = unit_lines()
    assert list(lines) == ["ExecStartPre", "ExecStart"]
    # The machine "rebooted": jobs were queued and running; every bgrun process is gone.
    jobs = [run_background_job("jobs", "record", ["unit", n, 1.0], retries=2) for n in range(6)]
    wait_until(lambda: project.marks("unit"))
    # All of them at once, the watcher too: killed alone, the runners would be replaced
    # by the watcher at once, and those would drain the queue before the unit starts.
    kill_processes_of(project.path)
    wait_until(lambda: not processes_of(project.path))

    pre = subprocess.run(shlex.split(lines["ExecStartPre"]), cwd=project.path,
                         capture_output=True, text=True, timeout=60)
    assert pre.returncode == 0, pre.stderr
    # What made the unit fail: runners started on demand hold both slots (2) right now.
    state = project.ctx.state
    wait_until(lambda: not any_slot_free(state, 2))
    worker = subprocess.Popen(shlex.split(lines["ExecStart"]), cwd=project.path,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    out = Lines(worker)
    try:
        wait_until(lambda: out.having("waiting") or worker.poll() is not None)
        assert worker.poll() is None  # (old bgrun: exit 3, "every slot ... has a runner")
        wait_until(lambda: out.having("started"), timeout=30)  # a runner handed over
        assert all(job.wait(60) == "completed" for job in jobs)
        worker.send_signal(signal.SIGTERM)
        assert worker.wait(15) == 0
        wait_until(lambda: out.having("stopped"), timeout=5)
    finally:
        out.close()
    assert "slot" in (out.having("started") or "")


def test_worker_stopped_while_waiting_exits_0_and_leaves_no_job_behind(project, monkeypatch):
    monkeypatch.setenv("BGRUN_CONCURRENCY", "1")
    first = run_background_job("jobs", "record", ["wait", 0, 1.5])
    wait_until(lambda: project.marks("wait"))
    assert not any_slot_free(project.ctx.state, 1)  # the on-demand runner holds the slot
    worker = subprocess.Popen([BGRUN, "worker"], cwd=project.path, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True)
    out = Lines(worker)
    try:
        wait_until(lambda: out.having("waiting") or worker.poll() is not None)
        second = run_background_job("jobs", "record", ["wait", 1, 0.0])
        time.sleep(0.3)
        worker.send_signal(signal.SIGTERM)
        assert worker.wait(15) == 0
        wait_until(lambda: out.having("stopped"), timeout=5)
    finally:
        out.close()
    assert first.wait(30) == "completed"
    assert second.wait(30) == "completed"  # whoever holds the slot then runs it


def test_a_second_worker_waits_and_takes_over_when_the_first_stops(project, monkeypatch):
    monkeypatch.setenv("BGRUN_CONCURRENCY", "1")
    project.ctx  # the store, so both workers start alike
    procs = [subprocess.Popen([BGRUN, "worker"], cwd=project.path, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True)]
    first = Lines(procs[0])
    try:
        wait_until(lambda: first.having("started"))
        procs.append(subprocess.Popen([BGRUN, "worker"], cwd=project.path,
                                      stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True))
        second = Lines(procs[1])
        wait_until(lambda: second.having("waiting"))  # (a worker never hands its slot over)
        procs[0].send_signal(signal.SIGTERM)
        assert procs[0].wait(15) == 0
        wait_until(lambda: second.having("started"))
        assert run_background_job("jobs", "noop").wait(30) == "completed"
        procs[1].send_signal(signal.SIGTERM)
        assert procs[1].wait(15) == 0
    finally:
        first.close()
        if len(procs) > 1:
            second.close()


def service_settings() -> list[dict[str, str]]:
    """The [Service] settings of every systemd unit in the README."""
    blocks = re.findall(r"```ini\n(.*?\[Service\].*?)```", README.read_text(), re.S)
    return [dict(re.findall(r"^(\w+)=(.*)$", block, re.M)) for block in blocks]


def stop_unit_like_systemd(worker: subprocess.Popen[str], kill_mode: str) -> None:
    """SIGTERM as systemd sends it on stop: to the main process only (mixed), or to
    every process of the unit's control group at once (control-group, the default)."""
    procs = [psutil.Process(worker.pid)]
    if kill_mode == "control-group":
        procs += psutil.Process(worker.pid).children(recursive=True)
    for proc in procs:
        with contextlib.suppress(psutil.NoSuchProcess):
            proc.send_signal(signal.SIGTERM)


def test_every_readme_unit_stops_its_worker_so_the_running_job_finishes(project, monkeypatch):
    """KillMode=mixed: systemd signals the worker alone, which lets its job finish; the
    default (control-group) would signal the job's own process too and end it midway."""
    units = service_settings()
    assert len(units) >= 2 and all(u.get("KillMode") == "mixed" for u in units), units
    monkeypatch.setenv("BGRUN_CONCURRENCY", "1")
    project.ctx  # the store, so the worker starts at once
    outcomes = {}
    for mode in ("mixed", "control-group"):
        worker = subprocess.Popen([BGRUN, "worker"], cwd=project.path, stdout=subprocess.PIPE,
                                  stderr=subprocess.PIPE, text=True)
        out = Lines(worker)
        try:
            wait_until(lambda: out.having("started"))
            job = run_background_job("jobs", "record", [mode, 0, 1.5])
            wait_until(lambda: project.marks(mode))
            stop_unit_like_systemd(worker, mode)
            assert worker.wait(15) == 0
            outcomes[mode] = job.wait(30)
        finally:
            out.close()
    assert outcomes == {"mixed": "completed", "control-group": "failed"}
