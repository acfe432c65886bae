"""The benchmark suite keeps working: run it on tiny sizes (no timing is asserted)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parent.parent / "benchmarks" / "bench.py"


@pytest.mark.timeout(300)
def test_benchmark_suite_runs_and_prints_its_table(tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith("BGRUN_")}
    result = subprocess.run([sys.executable, str(BENCH), "--tiny"], cwd=tmp_path, env=env,
                            capture_output=True, text=True, timeout=280)
    assert result.returncode == 0, result.stderr[-3000:]
    out = result.stdout
    assert "| benchmark | bgrun | baseline (same run) | ratio | goal | met |" in out
    for row in ("drain 4 no-op jobs, concurrency 2, spawn mode",
                "wake-up, idle runner → job's first line (spawn)",
                "wake-up, no runner alive → job's first line (spawn)",
                "enqueue latency (API, runner alive)",
                "claim+finish per job",
                "`bgrun list` first page",
                "runner processes alive",
                "job child peak RSS (spawn mode)",
                "| site |"):
        assert row in out, f"missing row {row!r} in:\n{out}"
    if sys.platform != "win32":
        assert "drain 4 no-op jobs, concurrency 2, fork mode" in out
        assert "wake-up, idle runner → job's first line (fork)" in out
