"""The wrong folder is a clear error, never a new, empty world (nothing made on disk)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from bgrun.errors import ExitCode

READING = [
    ["list"], ["list", "--json"], ["show", "1"], ["wait", "1"], ["logs", "1"],
    ["cancel", "1"], ["retry", "1"], ["prune", "--older-than", "1d"],
    ["dashboard", "--port", "0"],
]


def bgrun(folder: Path, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "bgrun", *args], cwd=folder,
                          capture_output=True, text=True, timeout=60,
                          env={**os.environ, **env})


def one_line(result: subprocess.CompletedProcess[str], code: int) -> str:
    assert result.returncode == code, (result.stdout, result.stderr)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    return lines[0]


@pytest.mark.parametrize("args", READING, ids=lambda a: " ".join(a))
def test_reading_commands_in_an_empty_folder_make_nothing_and_say_where(project, args):
    elsewhere = project.path / "elsewhere"
    elsewhere.mkdir()
    line = one_line(bgrun(elsewhere, *args), ExitCode.UNUSABLE)
    assert f"no job store at {elsewhere / 'logs' / 'bgrun.sqlite3'}" in line
    assert "BGRUN_LOG_DIR" in line and str(elsewhere) in line
    assert list(elsewhere.iterdir()) == []


def test_a_subfolder_of_the_project_points_at_the_project(project):
    assert project.cli("exec", "jobs", "noop").returncode == 0
    sub = project.path / "shop" / "shop"
    sub.mkdir(parents=True)
    line = one_line(bgrun(sub, "list"), ExitCode.UNUSABLE)
    assert f"{project.path} looks like a bgrun project: cd there" in line
    assert list(sub.iterdir()) == []
    # Pointed at the right store, it reads it, and says which with --verbose.
    pointed = bgrun(sub, "list", "--json", "--verbose", BGRUN_LOG_DIR=str(project.log_dir))
    assert pointed.returncode == 0, pointed.stderr
    assert pointed.stderr.strip() == f"bgrun: store {project.log_dir / 'bgrun.sqlite3'}"
    assert '"target": "jobs"' in pointed.stdout


def test_writing_commands_refused_in_an_empty_folder_make_no_folder(project):
    elsewhere = project.path / "elsewhere"
    elsewhere.mkdir()
    for args in (["exec", "jobs", "noop"], ["run", "jobs", "noop"], ["recover"], ["worker"]):
        line = one_line(bgrun(elsewhere, *args), ExitCode.UNUSABLE)
        assert "allowlist" in line
        assert list(elsewhere.iterdir()) == [], args
    code = ("import bgrun\ntry:\n    bgrun.run_background_job('jobs', 'noop')\n"
            "except bgrun.BgrunError as exc:\n    print(type(exc).__name__)\n"
            "try:\n    bgrun.get_job('1')\nexcept bgrun.BgrunError as exc:\n"
            "    print(type(exc).__name__)\n")
    out = subprocess.run([sys.executable, "-c", code], cwd=elsewhere, capture_output=True,
                         text=True, timeout=60)
    assert out.stdout.split() == ["AllowlistError", "NoStoreError"], out.stderr
    assert list(elsewhere.iterdir()) == []


def test_a_refusal_in_the_project_is_logged_but_makes_no_store(project):
    line = one_line(project.cli("exec", "os", "system", "id"), ExitCode.USAGE)
    assert "not in the allowlist" in line
    assert [e["status"] for e in project.events(errors=True)] == ["rejected"]
    assert not (project.log_dir / "bgrun.sqlite3").exists()


def test_check_and_recover_say_which_store_and_make_none(project):
    store = project.log_dir / "bgrun.sqlite3"
    checked = project.cli("check")  # (its exit code is about the fixture's targets)
    assert f"store {store} (none yet" in checked.stdout, checked.stderr
    recovered = project.cli("recover")
    assert recovered.returncode == 0, recovered.stderr
    assert "nothing to recover" in recovered.stdout
    assert not store.exists()
    assert project.cli("exec", "jobs", "noop").returncode == 0
    assert f"store {store} (1 job(s); sqlite, schema " in project.cli("check").stdout
    shown = project.cli("show", "1", "--verbose")
    assert shown.stderr.strip() == f"bgrun: store {store}"
