"""Job records as read from the store, and the status words users see."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any, NamedTuple

from bgrun.params import shown_params


class JobStatus(StrEnum):
    """A job's status as users see it (SPEC.md's status words)."""

    SCHEDULED = "scheduled"  # waiting, and its start time (delay, back-off) is in the future
    QUEUED = "queued"  # waiting, ready, for a free slot
    RUNNING = "running"  # an attempt is under way
    COMPLETED = "completed"  # the method returned
    FAILED = "failed"  # no attempts left, or refused when it was about to run
    CANCELLED = "cancelled"  # cancelled by a user; never retried

    @property
    def finished(self) -> bool:
        """True for the three terminal states."""
        return self in (JobStatus.COMPLETED, JobStatus.FAILED, JobStatus.CANCELLED)


class State(StrEnum):
    """A job's state as the store keeps it (users see a JobStatus)."""

    #: SCHEDULED and QUEUED are one stored state, told apart when read (by ready time)
    WAITING = "waiting"
    RUNNING = "running"  #: claimed by a runner (or a foreground `bgrun run`)
    COMPLETED = "completed"
    FAILED = "failed"
    CANCELLED = "cancelled"

    @property
    def finished(self) -> bool:
        """True for the three terminal states."""
        return self in (State.COMPLETED, State.FAILED, State.CANCELLED)


class Outcome(StrEnum):
    """How one attempt ended: what its attempts row records, and `Verdict.outcome`."""

    COMPLETED = "completed"  #: the method returned
    FAILED = "failed"  #: no attempts left (or not retryable)
    CANCELLED = "cancelled"  #: a user cancelled it while it ran
    RETRYING = "retrying"  #: it failed and the job waits to run again
    #: never stored: the attempt is uncounted and the job waits again (a broken allowlist,
    #: a worker stopping with --requeue)
    HANDBACK = "handback"


def iso(ts: float | None) -> str | None:
    """A stored time (UTC epoch seconds) as ISO 8601 with its +00:00 offset."""
    if ts is None:
        return None
    return datetime.fromtimestamp(ts, UTC).isoformat(timespec="microseconds")


class AttemptRecord(NamedTuple):
    """One run of a job: when it started and ended, and how."""

    number: int
    started_at: float
    finished_at: float | None
    outcome: str | None  # an Outcome's value; None while it runs
    error: str | None


class JobRecord(NamedTuple):
    """A job as stored, minus its private environment."""

    id: str
    target: str
    method: str
    params_json: str
    stored_status: State
    priority: int
    attempts: int
    retries: int
    timeout: float | None
    unique_key: str | None
    created_at: float
    run_at: float
    started_at: float | None
    finished_at: float | None
    error: str | None
    traceback: str | None
    result_json: str | None
    cwd: str
    allowlist: str
    cancel_requested: bool
    runner_pid: int | None
    child_pid: int | None
    progress_json: str | None
    queue: str
    output: str
    host: str | None = None  # BGRUN_HOST where the current or last attempt ran
    queued_on: str | None = None  # BGRUN_HOST of the caller that queued it

    def status_at(self, now: float) -> JobStatus:
        """The status word at time `now` (a waiting job whose time has come is queued)."""
        if self.stored_status == State.WAITING:
            return JobStatus.SCHEDULED if self.run_at > now else JobStatus.QUEUED
        return JobStatus(self.stored_status)

    def to_dict(self, now: float) -> dict[str, Any]:
        """The job as `show --json` and the dashboard API give it."""
        params, kwargs = shown_params(self.params_json)
        return {
            "id": self.id,
            "target": self.target,
            "method": self.method,
            "params": params,
            "kwargs": kwargs,
            "status": self.status_at(now).value,
            "priority": self.priority,
            "queue": self.queue,
            "attempts": self.attempts,
            "retries": self.retries,
            "timeout": self.timeout,
            "unique": self.unique_key,
            "created_at": iso(self.created_at),
            "run_at": iso(self.run_at),
            "started_at": iso(self.started_at),
            "finished_at": iso(self.finished_at),
            "error": self.error,
            "traceback": self.traceback,
            "result": None if self.result_json is None else json.loads(self.result_json),
            "cwd": self.cwd,
            "output": self.output,
            "cancel_requested": self.cancel_requested,
            "progress": progress_of(self.progress_json),
            "host": self.host,
            "queued_on": self.queued_on,
        }


def progress_of(progress_json: str | None) -> dict[str, Any] | None:
    """A stored progress report as JSON gives it: done, total, message, at (ISO 8601)."""
    if progress_json is None:
        return None
    report: dict[str, Any] = json.loads(progress_json)
    return {"done": report["done"], "total": report["total"], "message": report["message"],
            "at": iso(report["at"])}
