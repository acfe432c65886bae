"""The store's queries for watching work move: progress, finished-per-minute, runners.

A mixin of `Store` (each method one short transaction or one read, like the rest of it),
kept apart so the job transitions stay in one readable file.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from contextlib import AbstractContextManager
from typing import NamedTuple

from bgrun.store.rows import job_key


class RunnerRow(NamedTuple):
    """A runner as it registered itself, with the job it runs now (None: idle)."""

    slot: int
    pid: int
    process_start: float
    started_at: float
    queues: str | None  # comma-separated; None: every queue
    job_id: str | None
    target: str | None
    method: str | None
    job_started_at: float | None
    progress_json: str | None
    host: str | None = None  # BGRUN_HOST of the runner
    lease_age: float | None = None  # seconds since its last renew (leased stores only)


class WatchStore:
    """Progress, stats and runner rows (mixed into `Store`, which provides the two below)."""

    def _write(self) -> AbstractContextManager[sqlite3.Connection]:
        raise NotImplementedError

    def _read(self, sql: str, args: tuple[object, ...] = ()) -> list[sqlite3.Row]:
        raise NotImplementedError

    def set_progress(self, job_id: str, attempt: int, progress_json: str) -> bool:
        """Store attempt `attempt`'s newest report; False if that attempt is over."""
        with self._write() as db:
            cur = db.execute(
                "UPDATE jobs SET progress = ? WHERE id = ? AND status = 'running'"
                " AND attempts = ?",
                (progress_json, job_key(job_id), attempt),
            )
            return bool(cur.rowcount)

    def finished_per_minute(self, first: int, last: int) -> list[tuple[int, int, int]]:
        """(minute, completed, failed) for each minute from `first` to `last` (epoch // 60)."""
        # Two range counts per minute on jobs_finished (status, finished_at): no table row
        # is read and nothing is sorted, unlike one GROUP BY over the hour's jobs.
        rows = self._read(
            "WITH RECURSIVE minutes(m) AS (SELECT ? UNION ALL SELECT m + 1 FROM minutes"
            " WHERE m < ?) SELECT m AS minute,"
            " (SELECT COUNT(*) FROM jobs INDEXED BY jobs_finished WHERE status = 'completed'"
            "  AND finished_at >= m * 60.0 AND finished_at < (m + 1) * 60.0) AS completed,"
            " (SELECT COUNT(*) FROM jobs INDEXED BY jobs_finished WHERE status = 'failed'"
            "  AND finished_at >= m * 60.0 AND finished_at < (m + 1) * 60.0) AS failed"
            " FROM minutes",
            (first, last),
        )
        return [(int(r["minute"]), int(r["completed"]), int(r["failed"])) for r in rows]

    def active_by_queue(self, now: float) -> dict[str, dict[str, int]]:
        """How many jobs are queued, scheduled and running now, per queue (none: omitted)."""
        # Waiting jobs are counted from the jobs_queue_next index alone (queue, ready_at of
        # waiting jobs): no table row is read, so 100,000 waiting jobs stay cheap. Running
        # jobs are few (at most the slots of every runner).
        waiting = self._read(
            "SELECT queue, SUM(ready_at <= ?) AS queued, SUM(ready_at > ?) AS scheduled"
            " FROM jobs INDEXED BY jobs_queue_next WHERE status = 'waiting' GROUP BY queue",
            (now, now),
        )
        running = self._read(
            "SELECT queue, COUNT(*) AS running FROM jobs WHERE status = 'running'"
            " GROUP BY queue", (),
        )
        counts: dict[str, dict[str, int]] = {}
        for r in waiting:
            counts[r["queue"]] = {"queued": int(r["queued"]), "scheduled": int(r["scheduled"]),
                                  "running": 0}
        for r in running:
            counts.setdefault(r["queue"], {"queued": 0, "scheduled": 0, "running": 0})
            counts[r["queue"]]["running"] = int(r["running"])
        return dict(sorted(counts.items()))

    host = ""  # BGRUN_HOST of this process (set by the store)

    def register_runner(self, slot: int, pid: int, process_start: float, now: float,
                        queues: str | None = None) -> None:
        """Record the runner that now holds `slot` (replacing a dead one's row)."""
        with self._write() as db:
            db.execute(
                "INSERT OR REPLACE INTO runners (slot, pid, process_start, started_at, queues,"
                " host) VALUES (?, ?, ?, ?, ?, ?)",
                (slot, pid, process_start, now, queues, self.host or None),
            )

    def unregister_runner(self, slot: int, pid: int) -> None:
        """Remove the row of the runner `pid` from `slot` (it released the slot)."""
        with self._write() as db:
            db.execute("DELETE FROM runners WHERE slot = ? AND pid = ?", (slot, pid))

    def runner_rows(self) -> list[RunnerRow]:
        """Every registered runner, live or not, with its running job; by slot."""
        rows = self._read(
            "SELECT r.slot, r.pid, r.process_start, r.started_at, r.queues, r.host,"
            " j.id AS job_id,"
            " j.target, j.method, j.started_at AS job_started_at, j.progress"
            " FROM runners r LEFT JOIN jobs j"
            " ON j.status = 'running' AND j.runner_slot = r.slot AND j.runner_pid = r.pid"
            " ORDER BY r.slot"
        )
        return list(_runner_rows(rows))


def _runner_rows(rows: list[sqlite3.Row]) -> Iterator[RunnerRow]:
    for r in rows:  # by column name, like every row the store reads
        job_id = r["job_id"]
        yield RunnerRow(slot=int(r["slot"]), pid=int(r["pid"]),
                        process_start=float(r["process_start"]),
                        started_at=float(r["started_at"]), queues=r["queues"],
                        job_id=None if job_id is None else str(job_id), target=r["target"],
                        method=r["method"], job_started_at=r["job_started_at"],
                        progress_json=r["progress"], host=r["host"])
