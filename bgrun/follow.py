"""Following a job's captured output while it runs (`bgrun logs -f`, `bgrun run`)."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

from bgrun.context import Context
from bgrun.outcopy import read_from_store
from bgrun.records import JobRecord

STORE_PAUSE = 0.5  # seconds between two reads of the store's copy (a runner copies each 0.5 s)


def follow(ctx: Context, job_id: str, write: Callable[[bytes], object],
           done: Callable[[], bool] | None = None, pause: float = 0.1) -> JobRecord:
    """Write the job's output as it grows until the job ends (or `done()` says so)."""
    offset = 0
    while True:
        job = ctx.store.get(job_id)
        finished = job.status_at(time.time()).finished or (done is not None and done())
        offset = _copy_new(ctx, job, offset, write)
        if finished:
            _copy_new(ctx, job, offset, write)
            return job
        time.sleep(pause if not ctx.store.keeps_output else max(pause, STORE_PAUSE))


def _copy_new(ctx: Context, job: JobRecord, offset: int, write: Callable[[bytes], object]
              ) -> int:
    """Write what the output has past `offset`: from the file, or, where the store keeps
    the output and the file is not on this host, from the store's copy of it."""
    path = Path(job.output)
    if read_from_store(ctx.store, job, ctx.config.host):
        stored = ctx.store.output_of(job.id)
        data = b"" if stored is None else stored[0]
        if len(data) > offset:
            write(data[offset:])
        return max(offset, len(data))
    return _copy_file(path, offset, write)


def _copy_file(path: Path, offset: int, write: Callable[[bytes], object]) -> int:
    try:
        with path.open("rb") as f:
            f.seek(offset)
            while chunk := f.read(65536):
                write(chunk)
                offset += len(chunk)
    except FileNotFoundError:
        pass
    return offset
