"""The plain data that crosses the store's boundary: new jobs, launch specs, job keys."""

from __future__ import annotations

from typing import NamedTuple

from bgrun.errors import NoSuchJobError


class NewJob(NamedTuple):
    """Everything needed to store a job that passed validation."""

    target: str
    method: str
    params_json: str
    priority: int
    retries: int
    timeout: float | None
    run_at: float
    cwd: str
    python: str
    env_json: str
    allowlist: str
    unique_key: str | None = None
    held: int = 0  # a foreground `bgrun run` holds its job away from runners


class LaunchSpec(NamedTuple):
    """The private part of a claimed job a runner needs to start its attempt."""

    python: str
    env_json: str


def job_key(job_id: str) -> int:
    try:
        key = int(job_id)
    except (TypeError, ValueError):
        raise NoSuchJobError(f"no job {str(job_id)[:40]!r}: job ids are whole numbers") from None
    if key <= 0 or key >= 2**63:
        raise NoSuchJobError(f"no job {job_id}")
    return key


def status_filter(status: str | None, now: float) -> tuple[list[str], list[object]]:
    if status is None:
        return [], []
    if status == "queued":
        return ["status = 'waiting'", "ready_at <= ?"], [now]
    if status == "scheduled":
        return ["status = 'waiting'", "ready_at > ?"], [now]
    return ["status = ?"], [status]
