"""Following a job's captured output while it runs (`bgrun logs -f`, `bgrun run`)."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

from bgrun.context import Context
from bgrun.records import JobRecord


def follow(ctx: Context, job_id: str, write: Callable[[bytes], object],
           done: Callable[[], bool] | None = None, pause: float = 0.1) -> JobRecord:
    """Write the job's output as it grows until the job ends (or `done()` says so)."""
    offset = 0
    while True:
        job = ctx.store.get(job_id)
        finished = job.status_at(time.time()).finished or (done is not None and done())
        offset = _copy_new(Path(job.output), offset, write)
        if finished:
            _copy_new(Path(job.output), offset, write)
            return job
        time.sleep(pause)


def _copy_new(path: Path, offset: int, write: Callable[[bytes], object]) -> int:
    try:
        with path.open("rb") as f:
            f.seek(offset)
            while chunk := f.read(65536):
                write(chunk)
                offset += len(chunk)
    except FileNotFoundError:
        pass
    return offset
