"""The durable job store: one SQLite file in WAL mode, the only state bgrun shares.

Every write is one short `BEGIN IMMEDIATE` transaction: a deferred read-then-write
transaction meets SQLITE_BUSY under contention whatever busy_timeout says. Callers that
queue jobs use synchronous=FULL (a returned job id survives power loss); runners may use
NORMAL, which can lose their last transitions on power loss (the job then runs again,
at-least-once) but never on a process crash.
"""

from __future__ import annotations

import sqlite3
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from bgrun.errors import InvalidStateError, NoSuchJobError, StoreError
from bgrun.files import touch_private
from bgrun.records import AttemptRecord, JobRecord, Outcome, State
from bgrun.store.rows import LaunchSpec, NewJob, job_key, status_filter
from bgrun.store.schema import migrate, refuse_foreign
from bgrun.store.watch import WatchStore

__all__ = ["SqliteStore"]

_COLUMNS = (
    "id, target, method, params, status, priority, attempts, retries, timeout, unique_key,"
    " created_at, run_at, started_at, finished_at, error, traceback, result, cwd, allowlist,"
    " cancel_requested, runner_pid, child_pid, progress"
)
_ACTIVE = (State.WAITING.value, State.RUNNING.value)
OPEN_TIMEOUT = 30.0  # seconds to keep trying a store that other processes are opening


class SqliteStore(WatchStore):
    """The jobs table and its transitions; every method is one atomic transaction."""

    def __init__(self, path: Path, output_dir: Path, synchronous: str = "FULL") -> None:
        self.path = path
        self.output_dir = output_dir
        self._lock = threading.Lock()
        deadline = time.monotonic() + OPEN_TIMEOUT
        while True:
            try:
                self._db = self._connect(synchronous)
                return
            except sqlite3.DatabaseError as exc:
                # Switching a new file to WAL, and WAL recovery, can answer "locked" at once,
                # without SQLite's busy handler, while other processes open it too.
                locked = isinstance(exc, sqlite3.OperationalError) and "locked" in str(exc)
                if not locked or time.monotonic() > deadline:
                    raise StoreError(f"store {path} is unusable ({exc});"
                                     " it was left as it is") from None
            except OSError as exc:
                raise StoreError(f"store {path} cannot be opened: {exc.strerror or exc}"
                                 ) from None
            time.sleep(0.02)

    def _connect(self, synchronous: str) -> sqlite3.Connection:
        touch_private(self.path)
        db = sqlite3.connect(self.path, timeout=30, isolation_level=None,
                             check_same_thread=False)
        try:
            refuse_foreign(db, self.path)  # before WAL, which would rewrite its header
            mode = db.execute("PRAGMA journal_mode").fetchone()[0]
            if mode != "wal":  # WAL is a property of the file: set once, by its creator
                mode = db.execute("PRAGMA journal_mode=WAL").fetchone()[0]
            if mode != "wal":
                raise StoreError(
                    f"store {self.path}: SQLite cannot use WAL there (a network file"
                    " system?): put BGRUN_STORE on a local disk"
                )
            db.execute(f"PRAGMA synchronous={synchronous}")
            migrate(db, self.path)
        except BaseException:
            db.close()
            raise
        return db

    def close(self) -> None:
        """Close the connection (the file stays)."""
        self._db.close()

    @contextmanager
    def _write(self) -> Iterator[sqlite3.Connection]:
        with self._lock:
            try:
                self._db.execute("BEGIN IMMEDIATE")
            except sqlite3.DatabaseError as exc:
                raise StoreError(f"store {self.path}: {exc}") from None
            try:
                yield self._db
                self._db.execute("COMMIT")
            except BaseException as exc:
                if self._db.in_transaction:  # SQLite may have rolled back already (disk full)
                    self._db.execute("ROLLBACK")
                if isinstance(exc, sqlite3.DatabaseError):
                    raise StoreError(f"store {self.path}: {exc}") from None
                raise

    def _read(self, sql: str, args: tuple[object, ...] = ()) -> list[sqlite3.Row]:
        with self._lock:
            try:
                return self._db.execute(sql, args).fetchall()
            except sqlite3.DatabaseError as exc:
                raise StoreError(f"store {self.path}: {exc}") from None

    # -- queueing ---------------------------------------------------------------------

    def insert(self, job: NewJob, now: float) -> tuple[str, bool]:
        """Store `job`; return (id, True), or (id of the live job with its unique key, False)."""
        with self._write() as db:
            if job.unique_key is not None:
                row = db.execute(
                    "SELECT id FROM jobs WHERE unique_key = ? AND status IN (?, ?)",
                    (job.unique_key, *_ACTIVE),
                ).fetchone()
                if row is not None:
                    return str(row[0]), False
            cur = db.execute(
                "INSERT INTO jobs (target, method, params, status, priority, attempts, retries,"
                " timeout, unique_key, created_at, run_at, ready_at, cwd, python, env, allowlist,"
                " held) VALUES (?, ?, ?, 'waiting', ?, 0, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (job.target, job.method, job.params_json, job.priority, job.retries,
                 job.timeout, job.unique_key, now, job.run_at, job.run_at, job.cwd,
                 job.python, job.env_json, job.allowlist, job.held),
            )
            return str(cur.lastrowid), True

    # -- the runner's side ------------------------------------------------------------

    def claim(self, now: float, slot: int, runner_pid: int) -> JobRecord | None:
        """Mark the best ready job running (priority desc, then readiness) and count the attempt."""
        return self._claim(
            # INDEXED BY: left to itself the planner picks jobs_status and sorts every
            # waiting job, a cost that grows with the queue; the claim index finds the
            # first one at once (benchmarks/RESULTS.md has both).
            "(SELECT id FROM jobs INDEXED BY jobs_claim"
            " WHERE status = 'waiting' AND held = 0 AND ready_at <= ?"
            " ORDER BY priority DESC, ready_at, id LIMIT 1)",
            now, now, slot, runner_pid,
        )

    def claim_one(self, job_id: str, now: float, slot: int, runner_pid: int) -> JobRecord | None:
        """Claim this one waiting job (for `bgrun run`), whatever its priority or hold."""
        return self._claim("?", int(job_id), now, slot, runner_pid)

    def _claim(self, which: str, key: object, now: float, slot: int, runner_pid: int
               ) -> JobRecord | None:
        with self._write() as db:
            row = db.execute(
                f"UPDATE jobs SET status = 'running', attempts = attempts + 1, started_at = ?,"  # noqa: S608 - constant SQL, values bound
                f" runner_slot = ?, runner_pid = ?, child_pid = NULL, child_started = NULL,"
                f" progress = NULL"  # a new attempt starts from nothing
                f" WHERE id = {which} AND status = 'waiting' RETURNING {_COLUMNS}",
                (now, slot, runner_pid, key),
            ).fetchone()
            if row is None:
                return None
            db.execute(
                "INSERT INTO attempts (job_id, number, started_at) VALUES (?, ?, ?)",
                (row[0], row[6], now),
            )
            return self._record(row)

    def release_holds(self, holders: list[int]) -> int:
        """Let runners take the waiting jobs held by these (dead) foreground holders."""
        with self._write() as db:
            return sum(
                db.execute("UPDATE jobs SET held = 0 WHERE held = ? AND status = 'waiting'",
                           (h,)).rowcount for h in holders
            )

    def holders(self) -> list[int]:
        """The foreground holders (negative slots) of waiting jobs."""
        rows = self._read("SELECT DISTINCT held FROM jobs WHERE held != 0 AND status = 'waiting'")
        return [int(r[0]) for r in rows]

    def launch_spec(self, job_id: str) -> LaunchSpec:
        """The interpreter and environment the job was queued with (private: never shown)."""
        rows = self._read("SELECT python, env FROM jobs WHERE id = ?", (int(job_id),))
        if not rows:
            raise NoSuchJobError(f"no job {job_id}")
        return LaunchSpec(rows[0][0], rows[0][1])

    def set_child(self, job_id: str, pid: int, started: float) -> None:
        """Record the attempt's process (pid and start time, against pid reuse)."""
        with self._write() as db:
            db.execute(
                "UPDATE jobs SET child_pid = ?, child_started = ? WHERE id = ?",
                (pid, started, int(job_id)),
            )

    def child_of(self, job_id: str) -> tuple[int, float] | None:
        """The running attempt's (pid, start time), if it has one."""
        rows = self._read(
            "SELECT child_pid, child_started FROM jobs WHERE id = ? AND status = 'running'",
            (int(job_id),),
        )
        if not rows or rows[0][0] is None:
            return None
        return int(rows[0][0]), float(rows[0][1])

    def finish(
        self,
        job_id: str,
        attempt: int,
        now: float,
        *,
        outcome: Outcome,
        error: str | None = None,
        traceback: str | None = None,
        result_json: str | None = None,
        retry_at: float | None = None,
    ) -> State | None:
        """Settle attempt `attempt` of a running job; return the stored state it ends in.

        `outcome` is completed, failed or cancelled; a failure with `retry_at` goes back to
        waiting. A job cancelled while it ran ends cancelled unless it completed. Returns
        None when the attempt was already settled by someone else (exactly one verdict).
        """
        with self._write() as db:
            row = db.execute(
                "SELECT cancel_requested FROM jobs WHERE id = ? AND status = 'running'"
                " AND attempts = ?",
                (int(job_id), attempt),
            ).fetchone()
            if row is None:
                return None
            if row[0] and outcome != Outcome.COMPLETED:
                outcome, retry_at = Outcome.CANCELLED, None
            retrying = outcome == Outcome.FAILED and retry_at is not None
            state = State.WAITING if retrying else State(outcome.value)
            db.execute(
                "UPDATE jobs SET status = ?, error = ?, traceback = ?, result = ?,"
                " finished_at = ?, ready_at = COALESCE(?, ready_at), run_at = COALESCE(?, run_at),"
                " child_pid = NULL, runner_pid = NULL, runner_slot = NULL WHERE id = ?",
                (state.value, error, traceback, result_json, None if retrying else now,
                 retry_at, retry_at, int(job_id)),
            )
            db.execute(
                "UPDATE attempts SET finished_at = ?, outcome = ?, error = ?"
                " WHERE job_id = ? AND number = ?",
                (now, Outcome.RETRYING.value if retrying else outcome.value, error, int(job_id),
                 attempt),
            )
            return state

    def hand_back(self, job_id: str, attempt: int) -> bool:
        """Return a claimed job to waiting, its attempt uncounted (the allowlist broke, or
        a worker stopping with --requeue). False if it was settled meanwhile."""
        with self._write() as db:
            cur = db.execute(
                "UPDATE jobs SET status = 'waiting', attempts = attempts - 1, started_at = NULL,"
                " child_pid = NULL, runner_pid = NULL, runner_slot = NULL"
                " WHERE id = ? AND status = 'running' AND attempts = ?",
                (int(job_id), attempt),
            )
            if cur.rowcount:
                db.execute("DELETE FROM attempts WHERE job_id = ? AND number = ?",
                           (int(job_id), attempt))
            return bool(cur.rowcount)

    def next_run_at(self) -> float | None:
        """When the earliest job a runner may claim becomes ready (None when none waits)."""
        rows = self._read(
            "SELECT MIN(ready_at) FROM jobs INDEXED BY jobs_next"
            " WHERE status = 'waiting' AND held = 0"  # held jobs are a foreground's own
        )
        value = rows[0][0]
        return None if value is None else float(value)

    def running(self) -> list[tuple[str, int, int, int]]:
        """(id, attempt, runner slot, runner pid) of every running job, to find dead runners."""
        rows = self._read(
            "SELECT id, attempts, runner_slot, runner_pid FROM jobs WHERE status = 'running'"
        )
        return [(str(r[0]), int(r[1]), int(r[2]), int(r[3])) for r in rows]

    # -- users' side ------------------------------------------------------------------

    def get(self, job_id: str) -> JobRecord:
        """One job, or NoSuchJobError."""
        key = job_key(job_id)
        rows = self._read(f"SELECT {_COLUMNS} FROM jobs WHERE id = ?", (key,))  # noqa: S608
        if not rows:
            raise NoSuchJobError(f"no job {job_id}")
        return self._record(rows[0])

    def list_jobs(
        self,
        *,
        status: str | None = None,
        target: str | None = None,
        limit: int = 50,
        before: str | None = None,
        now: float | None = None,
    ) -> list[JobRecord]:
        """Jobs newest first, filtered by status word and target (or target.method), paged
        by `before` id."""
        now = time.time() if now is None else now
        where, args = status_filter(status, now)
        if target:  # a target, or a target.method as `list` prints it
            owner, _, method = target.rpartition(".")
            where.append("(target = ? OR (target = ? AND method = ?))")
            args.extend((target, owner, method))
        if before is not None:
            where.append("id < ?")
            args.append(job_key(before))
        sql = f"SELECT {_COLUMNS} FROM jobs"  # noqa: S608 - constant parts, values bound
        if where:
            sql += " WHERE " + " AND ".join(where)
        sql += " ORDER BY id DESC"
        if limit > 0:
            sql += f" LIMIT {int(limit)}"
        return [self._record(r) for r in self._read(sql, tuple(args))]

    def counts(self, now: float | None = None) -> dict[str, int]:
        """How many jobs are in each status word."""
        now = time.time() if now is None else now
        rows = self._read(
            "SELECT CASE WHEN status = 'waiting' THEN"
            " (CASE WHEN ready_at > ? THEN 'scheduled' ELSE 'queued' END) ELSE status END,"
            " COUNT(*) FROM jobs GROUP BY 1",
            (now,),
        )
        return {str(r[0]): int(r[1]) for r in rows}

    def attempts_of(self, job_id: str) -> list[AttemptRecord]:
        """Every recorded attempt of the job, oldest first."""
        rows = self._read(
            "SELECT number, started_at, finished_at, outcome, error FROM attempts"
            " WHERE job_id = ? ORDER BY rowid",
            (job_key(job_id),),
        )
        return [AttemptRecord(*r) for r in rows]

    def cancel(self, job_id: str, now: float) -> JobRecord:
        """Cancel a waiting job at once, or flag a running one for its runner to end."""
        key = job_key(job_id)
        with self._write() as db:
            row = db.execute("SELECT status FROM jobs WHERE id = ?", (key,)).fetchone()
            if row is None:
                raise NoSuchJobError(f"no job {job_id}")
            if row[0] == State.WAITING:
                db.execute(
                    "UPDATE jobs SET status = 'cancelled', finished_at = ?, cancel_requested = 1,"
                    " error = 'Cancelled: cancelled before it ran' WHERE id = ?",
                    (now, key),
                )
            elif row[0] == State.RUNNING:
                db.execute("UPDATE jobs SET cancel_requested = 1 WHERE id = ?", (key,))
            else:
                raise InvalidStateError(f"job {job_id} is {row[0]}: nothing to cancel")
        return self.get(job_id)

    def is_cancel_requested(self, job_id: str) -> bool:
        """True once someone asked to cancel the job."""
        rows = self._read("SELECT cancel_requested FROM jobs WHERE id = ?", (job_key(job_id),))
        return bool(rows and rows[0][0])

    def retry(self, job_id: str, now: float) -> JobRecord:
        """Queue a failed or cancelled job again, under the same id, attempts from 0."""
        key = job_key(job_id)
        with self._write() as db:
            row = db.execute("SELECT status FROM jobs WHERE id = ?", (key,)).fetchone()
            if row is None:
                raise NoSuchJobError(f"no job {job_id}")
            if row[0] not in (State.FAILED, State.CANCELLED):
                raise InvalidStateError(f"job {job_id} is {row[0]}: only failed or cancelled"
                                        " jobs can be retried")
            db.execute(
                "UPDATE jobs SET status = 'waiting', attempts = 0, ready_at = ?, run_at = ?,"
                " started_at = NULL, finished_at = NULL, error = NULL, traceback = NULL,"
                " result = NULL, cancel_requested = 0, held = 0 WHERE id = ?",
                (now, now, key),
            )
        return self.get(job_id)

    def delete(self, job_ids: list[str]) -> list[str]:
        """Delete finished jobs among `job_ids`; return the ids deleted."""
        keys = [job_key(j) for j in job_ids]
        deleted: list[str] = []
        with self._write() as db:
            for key in keys:
                cur = db.execute(
                    "DELETE FROM jobs WHERE id = ?"
                    " AND status IN ('completed', 'failed', 'cancelled')",
                    (key,),
                )
                if cur.rowcount:
                    db.execute("DELETE FROM attempts WHERE job_id = ?", (key,))
                    deleted.append(str(key))
        return deleted

    def finished_before(self, cutoff: float) -> list[str]:
        """Ids of jobs that finished before `cutoff`."""
        rows = self._read(
            "SELECT id FROM jobs WHERE status IN ('completed','failed','cancelled')"
            " AND finished_at < ?",
            (cutoff,),
        )
        return [str(r[0]) for r in rows]

    def _record(self, row: tuple[object, ...] | sqlite3.Row) -> JobRecord:
        values = list(row)
        job_id = str(values[0])
        values[0] = job_id
        values[19] = bool(values[19])
        values.append(str(self.output_dir / f"{job_id}.log"))
        return JobRecord(*values)
