"""Where a job's files live: the one module that builds their paths.

Beside the event logs, `jobs/ID.log` holds a job's captured stdout and stderr (every
attempt appends) and `jobs/ID.result` the verdict its child writes for the runner, read
once then removed.
"""

from __future__ import annotations

import os
from pathlib import Path


def jobs_dir(log_dir: Path) -> Path:
    """The folder of every job's files."""
    return log_dir / "jobs"


def output_path(log_dir: Path, job_id: str) -> Path:
    """The job's captured output."""
    return Path(output_in(str(jobs_dir(log_dir)), job_id))


def output_in(jobs: str, job_id: str) -> str:
    """output_path, given the jobs folder as text (the store builds one per record read)."""
    return f"{jobs}{os.sep}{job_id}.log"


def result_path(log_dir: Path, job_id: str) -> Path:
    """The verdict file of the job's running attempt."""
    return jobs_dir(log_dir) / f"{job_id}.result"
