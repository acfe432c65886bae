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


MAX_ID = 2**63 - 1  # SQLite's largest rowid


def parse_job_id(text: object) -> int | None:
    """The job number `text` spells, or None unless it is the one canonical spelling.

    ASCII digits only, no sign, no space, no underscore, no leading zero: `int()` would
    take '+1', ' 1 ', '1_0', '01' and fullwidth or Arabic-Indic digits, each a second
    name for a job that would pass where the first is refused or logged differently.
    """
    if not isinstance(text, str) or not 0 < len(text) <= 19:
        return None
    if not (text.isascii() and text.isdigit()) or text[0] == "0":
        return None
    key = int(text)
    return key if key <= MAX_ID else None


def job_key(job_id: object) -> int:
    """The store's key for `job_id`, or NoSuchJobError for anything but a canonical id."""
    key = parse_job_id(job_id)
    if key is None:
        shown = repr(job_id) if len(repr(job_id)) <= 40 else repr(job_id)[:37] + "..."
        raise NoSuchJobError(f"no job {shown}: a job id is a whole number in ASCII digits"
                             " (no sign, spaces or leading zero)")
    return key


def status_filter(status: str | None, now: float) -> tuple[list[str], list[object]]:
    if status is None:
        return [], []
    if status == "queued":
        return ["status = 'waiting'", "ready_at <= ?"], [now]
    if status == "scheduled":
        return ["status = 'waiting'", "ready_at > ?"], [now]
    return ["status = ?"], [status]
