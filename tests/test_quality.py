"""The code stays ruff- and mypy-clean (strict), also as type-checked for Windows."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", *args], cwd=ROOT, capture_output=True,
                          text=True, timeout=600)


def test_ruff_is_clean():
    result = run("ruff", "check", "bgrun", "tests", "examples", "benchmarks")
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize("platform", ["linux", "win32"])
def test_mypy_strict_is_clean(platform):
    result = run("mypy", "--strict", "--platform", platform, "bgrun")
    assert result.returncode == 0, result.stdout + result.stderr
