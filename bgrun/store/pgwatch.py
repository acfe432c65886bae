"""The PostgreSQL store's session, and its side for watching work and hosts: progress,
stats, runners and their leases, output copies, wake-ups (a base of pg.PgStore).

Leases are timed by the server's clock (`now()`), never a host's: hosts' clocks may
disagree, the server's is the one every host reads. Job times stay the callers' epoch
seconds, as on SQLite.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from bgrun.jobfiles import jobs_dir
from bgrun.records import JobRecord
from bgrun.store import pgschema
from bgrun.store.pgconnect import Listener, Session, describe_url
from bgrun.store.pgsql import CHANNEL, NOTIFY
from bgrun.store.rows import Row, job_key, job_record
from bgrun.store.watch import RunnerRow

_SET_PROGRESS = (
    "UPDATE bgrun.jobs SET progress = %(progress)s WHERE id = %(id)s AND status = 'running'"
    " AND attempts = %(attempt)s AND runner_host IS NOT DISTINCT FROM %(host)s"
)
_PER_MINUTE = (
    "SELECT m AS minute,"
    " (SELECT count(*) FROM bgrun.jobs WHERE status = 'completed'"
    "  AND finished_at >= m * 60.0 AND finished_at < (m + 1) * 60.0) AS completed,"
    " (SELECT count(*) FROM bgrun.jobs WHERE status = 'failed'"
    "  AND finished_at >= m * 60.0 AND finished_at < (m + 1) * 60.0) AS failed"
    " FROM generate_series(%(first)s::bigint, %(last)s::bigint) AS m ORDER BY m"
)
_ACTIVE = (
    "SELECT queue, count(*) FILTER (WHERE status = 'waiting' AND ready_at <= %(now)s)"
    "  AS queued,"
    " count(*) FILTER (WHERE status = 'waiting' AND ready_at > %(now)s) AS scheduled,"
    " count(*) FILTER (WHERE status = 'running') AS running"
    " FROM bgrun.jobs WHERE status IN ('waiting', 'running') GROUP BY queue ORDER BY queue"
)
_LEASE = "now() + make_interval(secs => %(lease)s)"
#: A runner takes this host's slot (replacing a dead runner's row), its lease from now.
#: Rows lapsed a day ago are dropped on the way (hosts that never came back).
_REGISTER = (
    "INSERT INTO bgrun.runners (host, slot, pid, process_start, started_at, queues,"
    " renewed_at, lease_until)"
    f" VALUES (%(host)s, %(slot)s, %(pid)s, %(start)s, %(now)s, %(queues)s, now(), {_LEASE})"
    " ON CONFLICT (host, slot) DO UPDATE SET pid = excluded.pid,"
    " process_start = excluded.process_start, started_at = excluded.started_at,"
    " queues = excluded.queues, renewed_at = excluded.renewed_at,"
    " lease_until = excluded.lease_until"
)
_DROP_LONG_LAPSED = "DELETE FROM bgrun.runners WHERE lease_until < now() - interval '1 day'"
#: Extend a live lease; a lapsed one is never revived (its jobs may be taken over).
_RENEW = (
    f"UPDATE bgrun.runners SET renewed_at = now(), lease_until = {_LEASE}"
    " WHERE host = %(host)s AND slot = %(slot)s AND pid = %(pid)s AND lease_until > now()"
)
_DROP_RUNNER = ("DELETE FROM bgrun.runners WHERE host = %(host)s AND slot = %(slot)s"
                " AND pid = %(pid)s")
_RUNNER_ROWS = (
    "SELECT r.host, r.slot, r.pid, r.process_start, r.started_at, r.queues,"
    " extract(epoch FROM now() - r.renewed_at)::double precision AS lease_age,"
    " j.id AS job_id, j.target, j.method, j.started_at AS job_started_at, j.progress"
    " FROM bgrun.runners r LEFT JOIN bgrun.jobs j ON j.status = 'running'"
    "  AND j.runner_host = r.host AND j.runner_slot = r.slot AND j.runner_pid = r.pid"
    " ORDER BY r.host, r.slot, j.id"
)
#: Replace the output copy of a running attempt of this host's (FOR SHARE: a verdict
#: committing meanwhile is waited for, and then the attempt is no longer running).
_PUT_OUTPUT = (
    "INSERT INTO bgrun.outputs (job_id, attempt, data, truncated)"
    " SELECT id, attempts, %(data)s, %(truncated)s FROM bgrun.jobs WHERE id = %(id)s"
    " AND status = 'running' AND attempts = %(attempt)s"
    " AND runner_host IS NOT DISTINCT FROM %(host)s FOR SHARE"
    " ON CONFLICT (job_id) DO UPDATE SET attempt = excluded.attempt, data = excluded.data,"
    " truncated = excluded.truncated"
)
_OUTPUT_OF = "SELECT data, truncated FROM bgrun.outputs WHERE job_id = %(id)s"


class PgWatch:
    """The session, and the store's methods beyond a job's transitions (see module doc)."""

    kind = "postgresql"
    leased = True  # a runner lives while its lease row does, by the server's clock
    keeps_output = True  # output is copied into the store: `logs` works from any host

    def __init__(self, url: str, log_dir: Path, *, host: str, lease: float,
                 notify: bool = True, create: bool = True) -> None:
        """Connect to the database `url` names and make or migrate bgrun's schema there.

        StoreError (one line, no password) when it cannot be reached or used, or is not
        bgrun's, or was made by a newer bgrun. `create=False`: NoStoreError, nothing made,
        where bgrun has no schema in that database yet.
        """
        self.url_shown = describe_url(url)
        self.log_dir = log_dir
        self.host = host
        self.lease = lease
        self.notifies = notify
        self._jobs = str(jobs_dir(log_dir))
        self._claimed: dict[str, tuple[int, int]] = {}  # job id: (attempt, runner pid)
        self._unsure: set[tuple[int, int]] = set()  # (slot, pid) whose claim's answer was lost
        self._db = Session(url, lease, self.url_shown)
        try:
            self._version = self._db.call(lambda conn: pgschema.migrate(conn, self.url_shown,
                                                                  create=create))
        except BaseException:
            self._db.close()
            raise
        self._listener = Listener(url, lease, self.url_shown, CHANNEL)

    def schema_version(self) -> int:
        return self._version

    def describe(self) -> str:
        return self.url_shown

    def check_current(self) -> None:
        """Nothing to check: a server store cannot be swapped under an open session."""

    def close(self) -> None:
        self._listener.close()
        self._db.close()

    def _record(self, row: Row) -> JobRecord:
        return job_record(row, self._jobs)

    def _args(self, **args: Any) -> dict[str, Any]:
        return {"host": self.host or None, "lease": self.lease, **args}

    # -- progress and stats ------------------------------------------------------------

    def set_progress(self, job_id: str, attempt: int, progress_json: str) -> bool:
        args = self._args(id=job_key(job_id), attempt=attempt, progress=progress_json)
        return bool(self._db.run(_SET_PROGRESS, args)[1])

    def finished_per_minute(self, first: int, last: int) -> list[tuple[int, int, int]]:
        rows = self._db.read(_PER_MINUTE, {"first": first, "last": last})
        return [(int(r["minute"]), int(r["completed"]), int(r["failed"])) for r in rows]

    def active_by_queue(self, now: float) -> dict[str, dict[str, int]]:
        return {str(r["queue"]): {"queued": int(r["queued"]), "scheduled": int(r["scheduled"]),
                                  "running": int(r["running"])}
                for r in self._db.read(_ACTIVE, {"now": now})}

    # -- runners and their leases ------------------------------------------------------

    def register_runner(self, slot: int, pid: int, process_start: float, now: float,
                        queues: str | None = None) -> None:
        args = self._args(slot=slot, pid=pid, start=process_start, now=now, queues=queues)
        with self._db.write() as cur:
            cur.execute(_DROP_LONG_LAPSED)
            cur.execute(_REGISTER, args)

    def renew_runner(self, slot: int, pid: int) -> bool:
        args = self._args(slot=slot, pid=pid)
        with self._db.write() as cur:
            if cur.execute(_RENEW, args).rowcount:
                return True
            cur.execute(_DROP_RUNNER, args)  # lapsed: gone, so no one reads it as live
            return False

    def unregister_runner(self, slot: int, pid: int) -> None:
        self._db.run(_DROP_RUNNER, self._args(slot=slot, pid=pid))

    def runner_rows(self) -> list[RunnerRow]:
        return [RunnerRow(slot=int(r["slot"]), pid=int(r["pid"]),
                          process_start=float(r["process_start"]),
                          started_at=float(r["started_at"]), queues=r["queues"],
                          job_id=None if r["job_id"] is None else str(r["job_id"]),
                          target=r["target"], method=r["method"],
                          job_started_at=r["job_started_at"], progress_json=r["progress"],
                          host=r["host"], lease_age=max(0.0, float(r["lease_age"])))
                for r in self._db.read(_RUNNER_ROWS)]

    # -- output copies and wake-ups ----------------------------------------------------

    def put_output(self, job_id: str, attempt: int, data: bytes, truncated: bool) -> bool:
        args = self._args(id=job_key(job_id), attempt=attempt, data=data,
                          truncated=truncated)
        return bool(self._db.run(_PUT_OUTPUT, args)[1])

    def output_of(self, job_id: str) -> tuple[bytes, bool] | None:
        rows = self._db.read(_OUTPUT_OF, {"id": job_key(job_id)})
        return None if not rows else (bytes(rows[0]["data"]), bool(rows[0]["truncated"]))

    def wait_for_work(self, timeout: float) -> bool:
        if not self.notifies:  # (BGRUN_PG_NOTIFY=0: no one asks; polling it is)
            time.sleep(timeout)
            return False
        return self._listener.wait(timeout)

    def notify(self) -> None:
        """Wake every listening runner (jobs may be claimable: a limit was raised)."""
        with self._db.write() as cur:
            cur.execute(NOTIFY)
