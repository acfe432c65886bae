"""The PostgreSQL backend of the store contract: several hosts, one queue.

What each method promises is written once, in base.Store; here is only how PostgreSQL
keeps it under many concurrent writers on many hosts:

- claims lock the best ready job with `FOR UPDATE SKIP LOCKED` on the claim index, so
  racing claims never wait for each other nor take one job twice;
- a limited queue's count and free slot are read under an advisory lock of that queue
  (never count-then-claim unlocked), and the partial unique index on (queue, slot)
  stands behind it;
- unique keys are a partial unique index with `ON CONFLICT DO NOTHING`;
- every write about an attempt names it (`attempts = %s AND status = 'running'`);
- transactions that make jobs ready NOTIFY `bgrun_jobs` (sent at commit).
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import psycopg

from bgrun.errors import Failure, InvalidStateError, NoSuchJobError, StoreError
from bgrun.queues import QueuePlan
from bgrun.records import AttemptRecord, JobRecord, Outcome, State
from bgrun.store import pgsql
from bgrun.store.base import EVERY_QUEUE
from bgrun.store.listing import list_statement
from bgrun.store.pgclaim import open_queues, pick, queue_slot
from bgrun.store.pgwatch import PgWatch
from bgrun.store.rows import LaunchSpec, NewJob, RunningAttempt, attempt_record, job_key

__all__ = ["PgStore"]

_VERDICTS = (Outcome.COMPLETED, Outcome.FAILED, Outcome.CANCELLED)
Cursor = psycopg.Cursor[Any]


class PgStore(PgWatch):
    """base.Store on a PostgreSQL database (see PgWatch for the session and leases)."""

    # -- queueing ----------------------------------------------------------------------

    def insert(self, job: NewJob, now: float) -> tuple[str, bool]:
        args = {"target": job.target, "method": job.method, "params": job.params_json,
                "priority": job.priority, "retries": job.retries, "timeout": job.timeout,
                "unique_key": job.unique_key, "now": now, "run_at": job.run_at,
                "cwd": job.cwd, "python": job.python, "env": job.env_json,
                "allowlist": job.allowlist, "held": job.held, "queue": job.queue,
                "queued_on": job.queued_on or None}
        for _ in range(100):  # a holder that finishes between our two statements: again
            rows, _ = self._db.run(pgsql.INSERT_NOTIFY, args)
            if rows:
                return str(rows[0]["id"]), True
            held = self._db.read(pgsql.UNIQUE_HOLDER, {"key": job.unique_key})
            if held:
                return str(held[0]["id"]), False
        raise StoreError(f"store {self.describe()}: unique key {job.unique_key!r} kept"
                         " changing hands; nothing stored")

    # -- the runner's side ---------------------------------------------------------------

    def claim(self, now: float, slot: int, runner_pid: int, plan: QueuePlan = EVERY_QUEUE
              ) -> JobRecord | None:
        with self._sure(slot, runner_pid):
            return self._claim(now, slot, runner_pid, plan)

    @contextmanager
    def _sure(self, slot: int, runner_pid: int) -> Iterator[None]:
        """A claim whose answer was lost (the session broke at its commit) may have taken a
        job: that job would run nowhere, while this runner's live lease kept it from a
        takeover. The runner's next claim first hands back, uncounted, every job running
        under its (host, slot, pid) that this store did not give it."""
        if (slot, runner_pid) in self._unsure:
            known = [int(j) for j, (_, pid) in self._claimed.items() if pid == runner_pid]
            self._db.run(pgsql.HAND_BACK_UNKNOWN, {"host": self.host or None, "slot": slot,
                                                   "pid": runner_pid, "known": known})
            self._unsure.discard((slot, runner_pid))
        try:
            yield
        except StoreError:
            self._unsure.add((slot, runner_pid))
            raise

    def _claim(self, now: float, slot: int, runner_pid: int, plan: QueuePlan
               ) -> JobRecord | None:
        if not any(plan.may_serve(queue) for queue in plan.limits):
            return self._claim_unlimited(now, slot, runner_pid, plan)
        try:
            with self._db.write() as cur:
                full: set[str] = set()
                while (found := pick(cur, now, plan, full)) is not None:
                    key, queue = found
                    limit = plan.limits.get(queue)
                    taken = None if limit is None else queue_slot(cur, queue, limit)
                    if limit is None or taken is not None:
                        return self._take(cur, key, now, slot, runner_pid, taken)
                    full.add(queue)  # filled since we looked: try the other queues
                return None
        except psycopg.errors.UniqueViolation:
            return None  # a slot taken by a runner that ignores the lock (never by ours)

    def _claim_unlimited(self, now: float, slot: int, runner_pid: int, plan: QueuePlan
                         ) -> JobRecord | None:
        """claim() where no queue it serves has a limit: one statement, one round trip."""
        args = {"now": now, "slot": slot, "pid": runner_pid, "host": self.host or None}
        if plan.serves is None:
            rows, _ = self._db.run(pgsql.CLAIM_ANY, args)
        else:
            rows, _ = self._db.run(pgsql.CLAIM_ANY_IN, {**args, "queues": sorted(plan.serves)})
        if not rows:
            return None
        self._claimed[str(rows[0]["id"])] = (int(rows[0]["attempts"]), runner_pid)
        return self._record(rows[0])

    def claim_one(self, job_id: str, now: float, slot: int, runner_pid: int,
                  plan: QueuePlan = EVERY_QUEUE) -> JobRecord | None:
        key = job_key(job_id)
        try:
            with self._sure(slot, runner_pid), self._db.write() as cur:
                row = cur.execute(pgsql.LOCK_WAITING, {"id": key}).fetchone()
                if row is None:
                    return None
                limit = plan.limits.get(row["queue"])
                taken = None if limit is None else queue_slot(cur, row["queue"], limit)
                if limit is not None and taken is None:
                    return None
                return self._take(cur, key, now, slot, runner_pid, taken)
        except psycopg.errors.UniqueViolation:
            return None

    def _take(self, cur: Cursor, key: int, now: float, slot: int, runner_pid: int,
              taken: int | None) -> JobRecord | None:
        """Claim locked waiting job `key` (with slot `taken` of its limited queue)."""
        args = {"id": key, "now": now, "slot": slot, "pid": runner_pid,
                "host": self.host or None, "queue_slot": taken}
        row = cur.execute(pgsql.CLAIM_ONE, args).fetchone()
        if row is None:  # (locked and waiting: only a lease that is not live stops it)
            return None
        self._claimed[str(key)] = (int(row["attempts"]), runner_pid)
        return self._record(row)

    def release_holds(self, holders: list[int]) -> int:
        rows, _ = self._db.run(pgsql.RELEASE_HOLD, {"holders": holders})
        return int(rows[0]["n"]) if rows else 0

    def holders(self) -> list[int]:
        return [int(r["held"]) for r in self._db.read(pgsql.HOLDERS)]

    def launch_spec(self, job_id: str) -> LaunchSpec:
        rows = self._db.read(pgsql.LAUNCH_SPEC, {"id": job_key(job_id)})
        if not rows:
            raise NoSuchJobError(f"no job {job_id}")
        return LaunchSpec(python=rows[0]["python"], env_json=rows[0]["env"])

    def set_child(self, job_id: str, pid: int, started: float) -> None:
        attempt, runner = self._claimed.get(job_id, (None, None))
        self._db.run(pgsql.SET_CHILD, {"pid": pid, "started": started, "id": job_key(job_id),
                                       "host": self.host or None, "attempt": attempt,
                                       "runner": runner})

    def child_of(self, job_id: str) -> tuple[int, float] | None:
        rows = self._db.read(pgsql.CHILD_OF, {"id": job_key(job_id)})
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
                "traceback": traceback, "result": result_json, "progress": progress_json,
                "own": own}
        rows, _ = self._db.run(pgsql.FINISH_ALL, args)  # (waking runners if it must)
        self._claimed.pop(job_id, None)
        return State(rows[0]["status"]) if rows else None

    def hand_back(self, job_id: str, attempt: int) -> bool:
        args = {"id": job_key(job_id), "attempt": attempt}
        with self._db.write() as cur:
            if not cur.execute(pgsql.HAND_BACK, args).rowcount:
                return False
            cur.execute(pgsql.DROP_ATTEMPT, args)
            cur.execute(pgsql.NOTIFY)
        self._claimed.pop(job_id, None)
        return True

    def next_run_at(self, plan: QueuePlan = EVERY_QUEUE) -> float | None:
        with self._db.write() as cur:  # (one snapshot per statement; no lock taken)
            full: set[str] = set()
            queues = open_queues(cur, plan, full)
            if queues is None:
                row = cur.execute(pgsql.NEXT_READY).fetchone()
            else:
                row = cur.execute(pgsql.NEXT_READY_IN, {"queues": queues}).fetchone()
        return None if row is None or row["at"] is None else float(row["at"])

    def running(self) -> list[RunningAttempt]:
        return [RunningAttempt(str(r["id"]), int(r["attempts"]), int(r["runner_slot"]),
                               int(r["runner_pid"]), r["runner_host"] or "", bool(r["lapsed"]))
                for r in self._db.read(pgsql.RUNNING)]

    # -- users' side ---------------------------------------------------------------------

    def get(self, job_id: str) -> JobRecord:
        rows = self._db.read(pgsql.GET, {"id": job_key(job_id)})
        if not rows:
            raise NoSuchJobError(f"no job {job_id}")
        return self._record(rows[0])

    def list_jobs(self, *, status: str | None = None, target: str | None = None,
                  queue: str | None = None, limit: int = 50, before: str | None = None,
                  now: float | None = None) -> list[JobRecord]:
        statement, args = list_statement(pgsql, status=status, target=target, queue=queue,
                                         limit=limit, before=before, now=now)
        return [self._record(r) for r in self._db.read(statement, args)]

    def counts(self, now: float | None = None) -> dict[str, int]:
        rows = self._db.read(pgsql.COUNTS, {"now": time.time() if now is None else now})
        return {str(r["word"]): int(r["n"]) for r in rows}

    def attempts_of(self, job_id: str) -> list[AttemptRecord]:
        return [attempt_record(r)
                for r in self._db.read(pgsql.ATTEMPTS_OF, {"id": job_key(job_id)})]

    def cancel(self, job_id: str, now: float) -> JobRecord:
        key = job_key(job_id)
        error = Failure.CANCELLED.says("cancelled before it ran")
        with self._db.write() as cur:
            row = cur.execute(pgsql.CANCEL, {"id": key, "now": now, "error": error}).fetchone()
            if row is not None:
                return self._record(row)
            state = _state_of(cur, job_id, key)
        raise InvalidStateError(f"job {job_id} is {state}: nothing to cancel")

    def is_cancel_requested(self, job_id: str) -> bool:
        rows = self._db.read(pgsql.CANCEL_REQUESTED, {"id": job_key(job_id)})
        return bool(rows and rows[0]["cancel_requested"])

    def retry(self, job_id: str, now: float) -> JobRecord:
        key = job_key(job_id)
        try:
            with self._db.write() as cur:
                row = cur.execute(pgsql.RETRY, {"id": key, "now": now}).fetchone()
                if row is not None:
                    cur.execute(pgsql.NOTIFY)
                    return self._record(row)
                state = _state_of(cur, job_id, key)
        except psycopg.errors.UniqueViolation:  # jobs_unique_live: its key is live again
            holder = self._db.read(pgsql.KEY_HOLDER, {"id": key})
            raise InvalidStateError(
                f"job {job_id} cannot be retried: job {holder[0]['id'] if holder else '?'}"
                " holds its unique key and has not finished") from None
        raise InvalidStateError(f"job {job_id} is {state}: only failed or cancelled"
                                " jobs can be retried")

    def delete(self, job_ids: list[str]) -> list[str]:
        keys = [job_key(j) for j in job_ids]
        with self._db.write() as cur:
            rows = cur.execute(pgsql.DELETE, {"ids": keys}).fetchall()
        deleted = {int(r["id"]) for r in rows}
        return [str(k) for k in dict.fromkeys(keys) if k in deleted]

    def finished_before(self, cutoff: float) -> list[str]:
        return [str(r["id"]) for r in self._db.read(pgsql.FINISHED_BEFORE, {"cutoff": cutoff})]


def _state_of(cur: Cursor, job_id: str, key: int) -> str:
    """The status of a job an action refused, for the refusal (NoSuchJobError if none)."""
    row = cur.execute(pgsql.STATUS_OF, {"id": key}).fetchone()
    if row is None:
        raise NoSuchJobError(f"no job {job_id}")
    return str(row["status"])

