"""The Windows branches this Linux machine cannot run: flags and fall-backs, mocked."""

from __future__ import annotations

import subprocess
from typing import ClassVar

import pytest

from bgrun import launcher


class FakePopen:
    calls: ClassVar[list[dict[str, object]]] = []
    refuse_breakaway = False

    def __init__(self, argv, **kwargs):
        flags = kwargs.get("creationflags", 0)
        FakePopen.calls.append({"argv": argv, **kwargs})
        if FakePopen.refuse_breakaway and flags & launcher.CREATE_BREAKAWAY_FROM_JOB:
            raise PermissionError(5, "Access is denied")
        self.pid = 1234


@pytest.fixture
def windows(monkeypatch):
    FakePopen.calls = []
    FakePopen.refuse_breakaway = False
    monkeypatch.setattr(launcher, "WINDOWS", True)
    monkeypatch.setattr(subprocess, "Popen", FakePopen)
    return FakePopen


def test_runner_starts_detached_outside_the_job_object(windows, tmp_path):
    launcher.start_detached(["python", "runner.py"], cwd=tmp_path, env={"A": "1"})
    (call,) = windows.calls
    flags = call["creationflags"]
    assert flags & launcher.DETACHED_PROCESS
    assert flags & launcher.CREATE_NEW_PROCESS_GROUP
    assert flags & launcher.CREATE_BREAKAWAY_FROM_JOB
    assert call["stdin"] is subprocess.DEVNULL and call["stdout"] is subprocess.DEVNULL
    assert call["close_fds"] is True
    assert "--daemonize" not in call["argv"]  # no fork on Windows
    assert "start_new_session" not in call


def test_breakaway_refused_by_the_job_falls_back(windows, tmp_path):
    windows.refuse_breakaway = True
    launcher.start_detached(["python", "runner.py"], cwd=tmp_path, env={})
    first, second = windows.calls
    assert first["creationflags"] & launcher.CREATE_BREAKAWAY_FROM_JOB
    assert not second["creationflags"] & launcher.CREATE_BREAKAWAY_FROM_JOB
    assert second["creationflags"] & launcher.DETACHED_PROCESS


def test_job_child_gets_its_own_group_and_no_console(windows, tmp_path):
    launcher.start_child(["python", "child.py"], cwd=str(tmp_path), env={}, output_fd=5)
    (call,) = windows.calls
    assert call["creationflags"] == launcher.CREATE_NEW_PROCESS_GROUP | launcher.CREATE_NO_WINDOW
    assert call["stdout"] == 5 and call["stderr"] == 5
    assert call["stdin"] is subprocess.PIPE


def test_posix_runner_start_waits_for_the_first_half(monkeypatch, tmp_path):
    calls = []

    class Waited(FakePopen):
        def wait(self):
            calls.append("waited")
            return 0

    monkeypatch.setattr(subprocess, "Popen", Waited)
    FakePopen.calls = []
    launcher.start_detached(["python", "runner.py"], cwd=tmp_path, env={})
    assert FakePopen.calls[0]["start_new_session"] is True
    assert FakePopen.calls[0]["argv"][-1] == "--daemonize"
    assert calls == ["waited"]
