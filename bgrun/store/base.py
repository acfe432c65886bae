"""The store contract: what every backend does, and what each operation promises.

Every method is one atomic transaction unless it says otherwise: it happens entirely or
not at all, and no other process sees it half done. Every check-then-write is one
conditional statement (or a unique index), so it stays right under a backend with
concurrent writers. A method that cannot reach or use the store raises StoreError.
Times are UTC epoch seconds; job ids are decimal strings.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Protocol

from bgrun.queues import QueuePlan
from bgrun.records import AttemptRecord, JobRecord, Outcome, State
from bgrun.store.rows import LaunchSpec, NewJob, RunningAttempt
from bgrun.store.watch import RunnerRow

#: Every queue, no limits: what a store method assumes without a plan.
EVERY_QUEUE = QueuePlan()


class Role(StrEnum):
    """Who opens the store; the backend chooses its durability from it."""

    #: queues jobs and acts on them: once a call returns, its write survives power loss
    CALLER = "caller"
    #: records a job's transitions: may lose its last ones to a power loss (the job then
    #: runs again: at-least-once), never to a crash of a process
    RUNNER = "runner"


class Store(Protocol):
    """The jobs and their attempts, shared by every bgrun process of one configuration.

    Opened for one host (BGRUN_HOST): `insert` is told the caller's host, and a claim
    records this host as the attempt's.
    """

    #: "sqlite" or "postgresql" (`bgrun check` prints it)
    kind: str
    #: True: a runner is alive while its lease in the store is, timed by the store's
    #: clock (several hosts); False: while it holds its local slot lock (slots.py)
    leased: bool
    #: True: the store holds a copy of each job's output, readable from any host
    keeps_output: bool
    #: True: wait_for_work() wakes when jobs become ready (LISTEN/NOTIFY)
    notifies: bool

    def schema_version(self) -> int:
        """The version of the store's schema."""
        ...

    def describe(self) -> str:
        """Where the store is, for people: a path, or a URL without its password."""
        ...

    def close(self) -> None:
        """Release the connection; the stored jobs stay."""

    def check_current(self) -> None:
        """Raise StoreGoneError if the store this process opened is no longer the one its
        settings name (an SQLite file deleted, moved or replaced since it was opened).

        Every read and write checks it too, before it touches the store."""

    # -- queueing ----------------------------------------------------------------------

    def insert(self, job: NewJob, now: float) -> tuple[str, bool]:
        """Store `job` as waiting, ready at `job.run_at`; return (its new id, True).

        With `job.unique_key` set and a live (waiting or running) job holding that key,
        store nothing and return (that job's id, False): of several callers racing with
        one key, exactly one stores a job. Atomic.
        """
        ...

    # -- the runner's side ---------------------------------------------------------------

    def claim(self, now: float, slot: int, runner_pid: int, plan: QueuePlan = EVERY_QUEUE
              ) -> JobRecord | None:
        """Take the best ready job: highest priority, then earliest ready, then oldest.

        Only waiting jobs not held by a foreground run and ready at `now` qualify, of the
        queues `plan` serves, none of a queue that runs as many jobs as `plan` limits it
        to. The job becomes running under (`slot`, `runner_pid`), holding a free slot of
        its queue if the queue has a limit; its attempt count goes up by one and its
        attempt is recorded; returns it as claimed, or None when no job is ready (or,
        where `leased`, while that runner's lease is not live by the store's clock). Atomic:
        two racing claims never take the same job, nor one queue slot.
        """
        ...

    def claim_one(self, job_id: str, now: float, slot: int, runner_pid: int,
                  plan: QueuePlan = EVERY_QUEUE) -> JobRecord | None:
        """Claim this job as `claim` would, whatever its priority, hold or ready time.

        None when it is not waiting (cancelled meanwhile, claimed by another) or while
        its queue is at its limit in `plan`. Atomic.
        """
        ...

    def release_holds(self, holders: list[int]) -> int:
        """Let runners claim the waiting jobs held by these (dead) foreground holders.

        Returns how many jobs were released. Atomic.
        """
        ...

    def holders(self) -> list[int]:
        """The holders (negative slots) of waiting jobs held by a foreground run."""
        ...

    def launch_spec(self, job_id: str) -> LaunchSpec:
        """The interpreter and environment the job was queued with (private: never shown).

        Raises NoSuchJobError.
        """
        ...

    def set_child(self, job_id: str, pid: int, started: float) -> None:
        """Record the running attempt's process: pid and start time (against pid reuse).

        Does nothing when the job no longer runs.
        """
        ...

    def child_of(self, job_id: str) -> tuple[int, float] | None:
        """The running attempt's (pid, start time); None when not running or not started."""
        ...

    def finish(self, job_id: str, attempt: int, now: float, *, outcome: Outcome,
               error: str | None = None, traceback: str | None = None,
               result_json: str | None = None, retry_at: float | None = None,
               progress_json: str | None = None, own: bool = False) -> State | None:
        """Settle attempt `attempt` of a running job; return the state the job ends in.

        `outcome` is COMPLETED, FAILED or CANCELLED. A failure with `retry_at` sends the
        job back to waiting, ready at `retry_at` (its attempt recorded as RETRYING). A
        job whose cancel was asked while it ran ends CANCELLED unless it completed.
        Returns None, changing nothing, when that attempt is not the job's running one
        (settled already, by its runner or by whoever found its runner dead): each
        attempt gets exactly one verdict. `progress_json`, when given, is the attempt's
        last progress report, stored with the verdict (else the stored one stays).
        `own`: the attempt's own runner records it. Where `leased`, that also needs the
        runner's lease to be live by the store's clock (else None: it is taken over);
        elsewhere the caller's slot lock says it is alive. Atomic.
        """
        ...

    def hand_back(self, job_id: str, attempt: int) -> bool:
        """Return running attempt `attempt` to waiting, uncounted, its record removed.

        For an attempt that must not count (the allowlist broke, a worker stopping with
        --requeue). False, changing nothing, when it was settled meanwhile. Atomic.
        """
        ...

    def next_run_at(self, plan: QueuePlan = EVERY_QUEUE) -> float | None:
        """When the earliest job a runner with `plan` may claim is ready; None when none
        waits (jobs of a queue at its limit do not count until a slot frees)."""
        ...

    def running(self) -> list[RunningAttempt]:
        """Every running attempt with its runner's host, slot and pid, and (where
        `leased`) whether that runner's lease lapsed (to find dead runners)."""
        ...

    # -- users' side ---------------------------------------------------------------------

    def get(self, job_id: str) -> JobRecord:
        """One job. Raises NoSuchJobError."""
        ...

    def list_jobs(self, *, status: str | None = None, target: str | None = None,
                  queue: str | None = None, limit: int = 50, before: str | None = None,
                  now: float | None = None) -> list[JobRecord]:
        """Jobs, newest (highest id) first.

        `status` is a status word (a JobStatus value, told at `now`: queued and
        scheduled are both waiting, apart by ready time); `target` an exact target;
        `queue` a queue name;
        `before` a job id, for the page after it; `limit` 0 means all. Raises
        NoSuchJobError for a `before` that cannot be a job id, ValueError for a status
        that is no status word.
        """
        ...

    def counts(self, now: float | None = None) -> dict[str, int]:
        """How many jobs have each status word at `now` (words with none are left out)."""
        ...

    def attempts_of(self, job_id: str) -> list[AttemptRecord]:
        """The job's recorded attempts, oldest first (empty for an unknown job)."""
        ...

    def cancel(self, job_id: str, now: float) -> JobRecord:
        """Cancel a waiting job at once, or ask its runner to end a running one.

        Returns the job as it is after. Raises NoSuchJobError, and InvalidStateError
        for a finished job. Atomic: a cancel racing a claim either cancels the waiting
        job (the claim then gets nothing) or flags the running one.
        """
        ...

    def is_cancel_requested(self, job_id: str) -> bool:
        """True once someone asked to cancel the job."""
        ...

    def retry(self, job_id: str, now: float) -> JobRecord:
        """Queue a failed or cancelled job again, same id, attempts from 0, ready now.

        Returns the job as queued. Raises NoSuchJobError; InvalidStateError for a job
        that is not failed or cancelled, or whose unique key a live job holds now.
        Atomic.
        """
        ...

    def delete(self, job_ids: list[str]) -> list[str]:
        """Delete the finished jobs among `job_ids` with their attempts; return their ids.

        Jobs that are not finished (or do not exist) are skipped. Atomic as a whole.
        """
        ...

    def finished_before(self, cutoff: float) -> list[str]:
        """Ids of the jobs that finished before `cutoff`."""
        ...

    # -- watching work move: progress, stats, runners --------------------------------------

    def set_progress(self, job_id: str, attempt: int, progress_json: str) -> bool:
        """Store running attempt `attempt`'s newest progress report (a claim clears it).

        False, changing nothing, when that attempt is over. Atomic.
        """
        ...

    def finished_per_minute(self, first: int, last: int) -> list[tuple[int, int, int]]:
        """(minute, completed, failed) for each minute from `first` to `last` (epoch // 60)."""
        ...

    def active_by_queue(self, now: float) -> dict[str, dict[str, int]]:
        """How many jobs are queued, scheduled and running at `now`, per queue (none: omitted)."""
        ...

    def register_runner(self, slot: int, pid: int, process_start: float, now: float,
                        queues: str | None = None) -> None:
        """Record the runner that now holds this host's `slot`, replacing a dead one's row;
        where `leased`, its lease starts now, by the store's clock. Atomic."""
        ...

    def unregister_runner(self, slot: int, pid: int) -> None:
        """Remove the row of runner `pid` from `slot` (it released the slot)."""
        ...

    def runner_rows(self) -> list[RunnerRow]:
        """Every registered runner, live or not, with the job it runs now; by slot."""
        ...

    # -- several hosts: leases, output, wake-ups (no-ops where `leased` etc. are False) --

    def renew_runner(self, slot: int, pid: int) -> bool:
        """Extend the lease of this host's runner (`slot`, `pid`) by the store's lease
        time, from the store clock's now.

        False when its row is gone (its lease lapsed and it was taken over): the runner
        must then end its attempts, claim nothing, and register again. Atomic.
        """
        ...

    def put_output(self, job_id: str, attempt: int, data: bytes, truncated: bool) -> bool:
        """Replace the stored output of running attempt `attempt` with `data` (the first
        bytes of its output file; `truncated`: the file is longer).

        False, changing nothing, when that attempt is not the job's running one. Atomic.
        """
        ...

    def output_of(self, job_id: str) -> tuple[bytes, bool] | None:
        """(the stored output, truncated), or None when the store keeps none for it."""
        ...

    def wait_for_work(self, timeout: float) -> bool:
        """Wait up to `timeout` seconds for word that jobs became ready; True if it came.

        Only where `notifies`; the waiter looks at the store after it either way.
        """
        ...
