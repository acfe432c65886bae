"""The dashboard's token never reaches a runner or a job, whoever starts them."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import urllib.request

import pytest

from bgrun import control, run_background_job
from tests.conftest import runner_processes, wait_until

pytest.importorskip("flask")

TOKEN = "env-token-0123456789abcdefXYZ"
PEEK = '''
import os


def peek():
    """What of the dashboard's token this job could read, from where."""
    def has(path):
        with open(path, "rb") as f:
            return b"BGRUN_DASHBOARD_TOKEN" in f.read()

    return {"os_environ": "BGRUN_DASHBOARD_TOKEN" in os.environ,
            "exec_environ": has("/proc/self/environ"),
            "runner_environ": has(f"/proc/{os.getppid()}/environ"),
            "runner": open(f"/proc/{os.getppid()}/cmdline", "rb").read().decode()}
'''


def test_the_token_is_a_private_variable():
    from bgrun.dashboard.security import TOKEN_ENV
    from bgrun.launcher import PRIVATE_VARS, without_secrets

    assert TOKEN_ENV in PRIVATE_VARS
    assert without_secrets({TOKEN_ENV: "x", "PATH": "/bin"}) == {"PATH": "/bin"}


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
@pytest.mark.parametrize("mode", ["spawn", "fork"])
def test_a_job_retried_from_the_dashboard_never_sees_its_token(project, monkeypatch, mode):
    (project.path / "peekjobs.py").write_text(PEEK)
    with (project.path / "allowlist.toml").open("a") as f:
        f.write('\n[jobs."peekjobs"]\nmethods = ["peek"]\n')
    monkeypatch.setenv("BGRUN_MODE", mode)
    monkeypatch.setenv("BGRUN_DASHBOARD_TOKEN", TOKEN)  # the queuer has it too
    job = run_background_job("peekjobs", "peek", delay=3600)
    control.cancel_job(project.ctx, job.id, by="test")
    wait_until(lambda: not runner_processes(project))  # the next runner is the dashboard's
    proc = subprocess.Popen(
        [sys.executable, "-m", "bgrun", "dashboard", "--port", "0"], cwd=project.path,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=dict(os.environ))
    try:
        url = re.search(r"serving on (http://\S+/)", proc.stdout.readline()).group(1)
        request = urllib.request.Request(f"{url}api/jobs/{job.id}/retry", method="POST",
                                         headers={"Authorization": f"Bearer {TOKEN}"})
        with urllib.request.urlopen(request, timeout=10) as response:
            assert response.status == 200
        runners = wait_until(lambda: runner_processes(project))
        for runner in runners:
            assert "BGRUN_DASHBOARD_TOKEN" not in runner.environ()
        seen = project.wait(job.id)
    finally:
        proc.terminate()
        proc.communicate(timeout=10)
    assert seen["status"] == "completed", seen["error"]
    result = seen["result"]
    assert "_runner_main.py" in result.pop("runner")
    assert result == {"os_environ": False, "exec_environ": False, "runner_environ": False}


def test_the_stored_environment_of_a_job_has_no_token(project, monkeypatch):
    monkeypatch.setenv("BGRUN_DASHBOARD_TOKEN", TOKEN)
    monkeypatch.setenv("OTHER_SETTING", "kept")
    job = run_background_job("jobs", "noop", delay=3600)
    stored = json.loads(project.ctx.store.launch_spec(job.id).env_json)
    assert "BGRUN_DASHBOARD_TOKEN" not in stored and stored["OTHER_SETTING"] == "kept"
