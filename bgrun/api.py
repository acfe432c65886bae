"""The public functions: queue a job, and find one again."""

from __future__ import annotations

from bgrun.config import Config
from bgrun.enqueue import Request, submit
from bgrun.handle import Job


def run_background_job(
    target: str,
    method: str,
    params: list[object] | dict[str, object] | None = None,
    *,
    kwargs: dict[str, object] | None = None,
    retries: int | None = None,
    delay: float = 0,
    priority: int | None = None,
    timeout: float | None = None,
    unique: str | None = None,
    check_import: bool = True,
    queue: str | None = None,
) -> Job:
    """Queue `target.method(*params, **kwargs)` (or `(**params)`) as a durable background job.

    Returns at once with a handle whose `.id` names the job. Bad input raises a subclass
    of BgrunError and stores nothing. `kwargs`: keyword arguments beside a positional list
    `params` (a dict `params` alone is the keyword arguments). `unique`: while a job with
    that key is waiting or running, return its handle (with `.existing` True) instead of
    queueing another.
    `check_import=False` skips importing the target to check that it exists (for callers
    that must not load it).
    `queue`: the named queue it joins (the target's allowlist default, else `default`).
    """
    config = Config.load()
    request = Request(target, method, params, retries, delay, priority, timeout, unique,
                      check_import, kwargs=kwargs, queue=queue)
    job_id, created = submit(config, request)
    return Job(job_id, config, stored=True, existing=not created)


def get_job(job_id: str) -> Job:
    """The handle of an existing job (NoSuchJobError if there is none)."""
    return Job(str(job_id))
