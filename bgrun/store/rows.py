"""The plain data that crosses the store's boundary, and stored rows read by column name."""

from __future__ import annotations

from typing import Any, NamedTuple, Protocol

from bgrun.errors import NoSuchJobError
from bgrun.jobfiles import output_in
from bgrun.records import AttemptRecord, JobRecord, State


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
    queue: str = "default"
    queued_on: str = ""  # BGRUN_HOST of the caller


class LaunchSpec(NamedTuple):
    """The private part of a claimed job a runner needs to start its attempt."""

    python: str
    env_json: str


class RunningAttempt(NamedTuple):
    """A running job's attempt and who supervises it (to find attempts whose runner died)."""

    job_id: str
    attempt: int
    runner_slot: int
    runner_pid: int
    host: str = ""  # BGRUN_HOST of its runner
    lapsed: bool = False  # the runner's lease ran out (leased stores only)


class Row(Protocol):
    """A stored row read by column name (sqlite3.Row; a dict row elsewhere)."""

    def __getitem__(self, key: str, /) -> Any: ...


_STATES = {s.value: s for s in State}  # (a dict: State(...) is slow per row)

#: The columns a JobRecord is made of (never `env`: it is private).
JOB_COLUMNS = (
    "id", "target", "method", "params", "status", "priority", "attempts", "retries", "timeout",
    "unique_key", "created_at", "run_at", "started_at", "finished_at", "error", "traceback",
    "result", "cwd", "allowlist", "cancel_requested", "runner_pid", "child_pid", "progress",
    "queue", "runner_host", "queued_on",
)


def job_record(row: Row, jobs: str) -> JobRecord:
    """The JobRecord of a row holding JOB_COLUMNS; `jobs`: the jobs folder, as text."""
    job_id = str(row["id"])
    return JobRecord(
        id=job_id, target=row["target"], method=row["method"], params_json=row["params"],
        stored_status=_STATES[row["status"]], priority=row["priority"],
        attempts=row["attempts"], retries=row["retries"], timeout=row["timeout"],
        unique_key=row["unique_key"], created_at=row["created_at"], run_at=row["run_at"],
        started_at=row["started_at"], finished_at=row["finished_at"], error=row["error"],
        traceback=row["traceback"], result_json=row["result"], cwd=row["cwd"],
        allowlist=row["allowlist"], cancel_requested=bool(row["cancel_requested"]),
        runner_pid=row["runner_pid"], child_pid=row["child_pid"],
        progress_json=row["progress"], queue=row["queue"], output=output_in(jobs, job_id),
        host=row["runner_host"], queued_on=row["queued_on"],
    )


def attempt_record(row: Row) -> AttemptRecord:
    """The AttemptRecord of an attempts row."""
    return AttemptRecord(number=row["number"], started_at=row["started_at"],
                         finished_at=row["finished_at"], outcome=row["outcome"],
                         error=row["error"])


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
