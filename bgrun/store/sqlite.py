"""The SQLite backend of the store contract: one file in WAL mode, on one machine.

What each method promises is written once, in base.Store; here is only how SQLite keeps
it. SQLite has a single writer, but nothing here leans on that: every check-then-write
is a conditional statement or the unique index, as a backend with concurrent writers
needs.
"""

from __future__ import annotations

import sqlite3
import time
from contextlib import AbstractContextManager
from pathlib import Path

from bgrun.errors import Failure, InvalidStateError, NoSuchJobError, StoreError
from bgrun.jobfiles import jobs_dir
from bgrun.queues import QueuePlan
from bgrun.records import AttemptRecord, JobRecord, Outcome, State
from bgrun.store import sql
from bgrun.store.base import EVERY_QUEUE, Role
from bgrun.store.connect import Connection, Params
from bgrun.store.listing import list_statement
from bgrun.store.queueslots import free_slot, full_queues, next_ready, pick
from bgrun.store.rows import (
    LaunchSpec,
    NewJob,
    Row,
    RunningAttempt,
    attempt_record,
    job_key,
    job_record,
)
from bgrun.store.watch import WatchStore

__all__ = ["SqliteStore"]

_VERDICTS = (Outcome.COMPLETED, Outcome.FAILED, Outcome.CANCELLED)


class SqliteStore(WatchStore):
    """base.Store on an SQLite file; `log_dir` is where the jobs' files live."""

    kind = "sqlite"
    leased = False  # a runner is alive while it holds its slot lock (slots.py)
    keeps_output = False  # output stays in the jobs folder, on this machine
    notifies = False  # idle runners wake by the FIFO (slots.Waker)

    def __init__(self, path: Path, log_dir: Path, role: Role = Role.CALLER, *,
                 create: bool = True, host: str = "") -> None:
        self.path = path
        self.log_dir = log_dir
        self.host = host
        self._jobs = str(jobs_dir(log_dir))
        self._db = Connection(path, role, create=create)

    def schema_version(self) -> int:
        return int(self._db.read("PRAGMA user_version")[0][0])

    def describe(self) -> str:
        return str(self.path)

    def check_current(self) -> None:
        """StoreGoneError if the file at the path is not the one this store has open."""
        self._db.check_file()

    def close(self) -> None:
        self._db.close()

    def _record(self, row: Row) -> JobRecord:
        return job_record(row, self._jobs)

    # For the WatchStore mixin (progress, stats, runners).
    def _write(self) -> AbstractContextManager[sqlite3.Connection]:
        return self._db.write()

    def _read(self, statement: str, args: Params | tuple[object, ...] = ()
              ) -> list[sqlite3.Row]:
        return self._db.read(statement, args)

    # -- queueing ----------------------------------------------------------------------

    def insert(self, job: NewJob, now: float) -> tuple[str, bool]:
        args = {"target": job.target, "method": job.method, "params": job.params_json,
                "priority": job.priority, "retries": job.retries, "timeout": job.timeout,
                "unique_key": job.unique_key, "now": now, "run_at": job.run_at,
                "cwd": job.cwd, "python": job.python, "env": job.env_json,
                "allowlist": job.allowlist, "held": job.held, "queue": job.queue,
                "queued_on": job.queued_on or None}
        with self._db.write() as db:
            row = db.execute(sql.INSERT, args).fetchone()
            if row is not None:
                return str(row["id"]), True
            # The unique index refused it: the holder is live, and our lock keeps it so.
            held = db.execute(sql.UNIQUE_HOLDER, {"key": job.unique_key}).fetchone()
            if held is None:
                raise StoreError(f"store {self.path}: unique key {job.unique_key!r} refused"
                                 " but held by no live job")
            return str(held["id"]), False

    # -- the runner's side ---------------------------------------------------------------

    def claim(self, now: float, slot: int, runner_pid: int, plan: QueuePlan = EVERY_QUEUE
              ) -> JobRecord | None:
        with self._db.write() as db:
            found = pick(db, now, plan)
            if found is None:
                return None
            return self._take(db, found[0], found[1], now, slot, runner_pid, plan)

    def claim_one(self, job_id: str, now: float, slot: int, runner_pid: int,
                  plan: QueuePlan = EVERY_QUEUE) -> JobRecord | None:
        key = job_key(job_id)
        with self._db.write() as db:
            row = db.execute(sql.QUEUE_OF_WAITING, {"id": key}).fetchone()
            if row is None or row["queue"] in full_queues(db, plan._replace(serves=None)):
                return None
            return self._take(db, key, row["queue"], now, slot, runner_pid, plan)

    def _take(self, db: sqlite3.Connection, key: int, queue: str, now: float, slot: int,
              runner_pid: int, plan: QueuePlan) -> JobRecord:
        """Claim waiting job `key`, with a free slot of its queue if the queue has a limit."""
        limit = plan.limits.get(queue)
        args = {"id": key, "now": now, "slot": slot, "pid": runner_pid,
                "host": self.host or None,
                "queue_slot": None if limit is None else free_slot(db, queue, limit)}
        row = db.execute(sql.CLAIM_ONE, args).fetchone()
        db.execute(sql.START_ATTEMPT, {"id": row["id"], "number": row["attempts"], "now": now})
        return self._record(row)

    def release_holds(self, holders: list[int]) -> int:
        with self._db.write() as db:
            return sum(db.execute(sql.RELEASE_HOLD, {"holder": h}).rowcount for h in holders)

    def holders(self) -> list[int]:
        return [int(r["held"]) for r in self._db.read(sql.HOLDERS)]

    def launch_spec(self, job_id: str) -> LaunchSpec:
        rows = self._db.read(sql.LAUNCH_SPEC, {"id": job_key(job_id)})
        if not rows:
            raise NoSuchJobError(f"no job {job_id}")
        return LaunchSpec(python=rows[0]["python"], env_json=rows[0]["env"])

    def set_child(self, job_id: str, pid: int, started: float) -> None:
        with self._db.write() as db:
            db.execute(sql.SET_CHILD, {"pid": pid, "started": started, "id": job_key(job_id)})

    def child_of(self, job_id: str) -> tuple[int, float] | None:
        rows = self._db.read(sql.CHILD_OF, {"id": job_key(job_id)})
        if not rows or rows[0]["child_pid"] is None:
            return None
        return int(rows[0]["child_pid"]), float(rows[0]["child_started"])

    def finish(self, job_id: str, attempt: int, now: float, *, outcome: Outcome,
               error: str | None = None, traceback: str | None = None,
               result_json: str | None = None, retry_at: float | None = None,
               progress_json: str | None = None, own: bool = False) -> State | None:
        if outcome not in _VERDICTS:
            raise ValueError(f"finish: {outcome} is not a verdict")
        args = {"id": job_key(job_id), "attempt": attempt, "now": now,
                "outcome": outcome.value, "retry_at": retry_at, "error": error,
                "traceback": traceback, "result": result_json, "progress": progress_json}
        with self._db.write() as db:
            row = db.execute(sql.FINISH, args).fetchone()
            if row is None:
                return None
            state = State(row["status"])
            told = Outcome.RETRYING if state == State.WAITING else Outcome(state.value)
            db.execute(sql.FINISH_ATTEMPT, {**args, "outcome": told.value})
            return state

    def hand_back(self, job_id: str, attempt: int) -> bool:
        args = {"id": job_key(job_id), "attempt": attempt}
        with self._db.write() as db:
            if not db.execute(sql.HAND_BACK, args).rowcount:
                return False
            db.execute(sql.DROP_ATTEMPT, args)
            return True

    def next_run_at(self, plan: QueuePlan = EVERY_QUEUE) -> float | None:
        with self._db.reading() as db:
            return next_ready(db, plan)

    def running(self) -> list[RunningAttempt]:
        return [RunningAttempt(str(r["id"]), int(r["attempts"]), int(r["runner_slot"]),
                               int(r["runner_pid"]), r["runner_host"] or "")
                for r in self._db.read(sql.RUNNING)]

    # -- several hosts: none here (one machine; liveness is the slot lock) ---------------

    def renew_runner(self, slot: int, pid: int) -> bool:
        return True

    def put_output(self, job_id: str, attempt: int, data: bytes, truncated: bool) -> bool:
        return False

    def output_of(self, job_id: str) -> tuple[bytes, bool] | None:
        return None

    def wait_for_work(self, timeout: float) -> bool:
        return False

    # -- users' side ---------------------------------------------------------------------

    def get(self, job_id: str) -> JobRecord:
        rows = self._db.read(sql.GET, {"id": job_key(job_id)})
        if not rows:
            raise NoSuchJobError(f"no job {job_id}")
        return self._record(rows[0])

    def list_jobs(self, *, status: str | None = None, target: str | None = None,
                  queue: str | None = None, limit: int = 50, before: str | None = None,
                  now: float | None = None) -> list[JobRecord]:
        statement, args = list_statement(sql, status=status, target=target, queue=queue,
                                         limit=limit, before=before, now=now)
        return [self._record(r) for r in self._db.read(statement, args)]

    def counts(self, now: float | None = None) -> dict[str, int]:
        rows = self._db.read(sql.COUNTS, {"now": time.time() if now is None else now})
        return {str(r["word"]): int(r["n"]) for r in rows}

    def attempts_of(self, job_id: str) -> list[AttemptRecord]:
        return [attempt_record(r) for r in self._db.read(sql.ATTEMPTS_OF,
                                                         {"id": job_key(job_id)})]

    def cancel(self, job_id: str, now: float) -> JobRecord:
        key = job_key(job_id)
        with self._db.write() as db:
            error = Failure.CANCELLED.says("cancelled before it ran")
            row = db.execute(sql.CANCEL, {"id": key, "now": now, "error": error}).fetchone()
            if row is not None:
                return self._record(row)
            state = self._state_of(db, job_id, key)
        raise InvalidStateError(f"job {job_id} is {state}: nothing to cancel")

    def is_cancel_requested(self, job_id: str) -> bool:
        rows = self._db.read(sql.CANCEL_REQUESTED, {"id": job_key(job_id)})
        return bool(rows and rows[0]["cancel_requested"])

    def retry(self, job_id: str, now: float) -> JobRecord:
        key = job_key(job_id)
        with self._db.write() as db:
            try:
                row = db.execute(sql.RETRY, {"id": key, "now": now}).fetchone()
            except sqlite3.IntegrityError:  # jobs_unique_live: its key is live again
                holder = db.execute(sql.KEY_HOLDER, {"id": key}).fetchone()
                raise InvalidStateError(
                    f"job {job_id} cannot be retried: job {holder['id'] if holder else '?'}"
                    " holds its unique key and has not finished") from None
            if row is not None:
                return self._record(row)
            state = self._state_of(db, job_id, key)
        raise InvalidStateError(f"job {job_id} is {state}: only failed or cancelled"
                                " jobs can be retried")

    @staticmethod
    def _state_of(db: sqlite3.Connection, job_id: str, key: int) -> str:
        """The status of a job an action refused, for the refusal (NoSuchJobError if none)."""
        row = db.execute(sql.STATUS_OF, {"id": key}).fetchone()
        if row is None:
            raise NoSuchJobError(f"no job {job_id}")
        return str(row["status"])

    def delete(self, job_ids: list[str]) -> list[str]:
        keys = [job_key(j) for j in job_ids]
        deleted: list[str] = []
        with self._db.write() as db:
            for key in keys:
                if db.execute(sql.DELETE, {"id": key}).rowcount:
                    db.execute(sql.DELETE_ATTEMPTS, {"id": key})
                    deleted.append(str(key))
        return deleted

    def finished_before(self, cutoff: float) -> list[str]:
        return [str(r["id"]) for r in self._db.read(sql.FINISHED_BEFORE, {"cutoff": cutoff})]
