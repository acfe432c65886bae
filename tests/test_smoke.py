"""First look: a job queued from the API runs in the background and completes."""

from __future__ import annotations

import time

from bgrun import run_background_job


def test_job_runs_in_background_and_completes(project):
    start = time.monotonic()
    job = run_background_job("jobs", "sleep", [1.0])
    returned_after = time.monotonic() - start
    assert returned_after < 0.9  # it did not wait for the job
    assert job.status in ("queued", "running")
    assert job.wait(timeout=30) == "completed"
    assert job.result == 1.0
    assert "sleeping 1.0" in job.output()
