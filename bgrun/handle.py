"""The handle `run_background_job()` returns: a job id with what users do with it."""

from __future__ import annotations

import time
from typing import Any

from bgrun import control
from bgrun.config import Config
from bgrun.context import context_for
from bgrun.records import JobRecord


class Job:
    """A stored job, looked up by id each time (the store is the truth, not this object)."""

    def __init__(self, job_id: str, config: Config | None = None, *, stored: bool = False,
                 existing: bool = False) -> None:
        self.id = job_id
        #: True when `run_background_job(..., unique=KEY)` found a live job with that key
        #: and returned it instead of queueing a new one.
        self.existing = existing
        self._config = config or Config.load()
        self._ctx = context_for(self._config, create=False)  # a handle never makes a store
        if not stored:  # (`stored`: the caller has just stored it)
            self._ctx.store.get(job_id)  # NoSuchJobError now rather than later

    def __repr__(self) -> str:
        return f"<bgrun.Job {self.id} {self.status}>"

    def _record(self) -> JobRecord:
        control.settle_orphans(self._ctx)  # a job whose runner died does not read "running"
        return self._ctx.store.get(self.id)

    def info(self) -> dict[str, Any]:
        """Everything `bgrun show --json` gives for this job (but its attempt history)."""
        from bgrun.waiting import Look, job_dict

        look = Look(self._ctx, time.time())
        job = self._record()
        return job_dict(job, look)

    @property
    def status(self) -> str:
        """The status word now: scheduled, queued, running, completed, failed or cancelled."""
        return self._record().status_at(time.time()).value

    @property
    def result(self) -> Any:
        """The method's return value (JSON data, or its repr), None until it completes."""
        return self.info()["result"]

    @property
    def progress(self) -> dict[str, Any] | None:
        """The job's last progress report: {"done", "total", "message", "at"}, or None."""
        return self.info()["progress"]  # type: ignore[no-any-return]

    def wait(self, timeout: float | None = None) -> str:
        """Block until the job ends; return its final status (WaitTimeoutError on timeout)."""
        return control.wait_for(self._ctx, self.id, timeout).status_at(time.time()).value

    def cancel(self) -> str:
        """Cancel the job (a running one's process tree ends); return its status now."""
        job = control.cancel_job(self._ctx, self.id, by="api")
        return job.status_at(time.time()).value

    def retry(self) -> str:
        """Queue a failed or cancelled job again under the same id."""
        return control.retry_job(self._ctx, self.id, by="api").status_at(time.time()).value

    def output(self) -> str:
        """The job's captured stdout and stderr so far."""
        return control.read_output(self._ctx, self.id).decode("utf-8", errors="replace")
