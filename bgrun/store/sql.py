"""The SQLite backend's statements, one named constant each (Procrastinate's idea).

Values are always bound (`:name`); the only text put together at run time is the
choice among these constants and a LIMIT made of an int. Stored states appear as
literals: they are State's values, and the partial indexes of schema.py use the same.
"""

from __future__ import annotations

from bgrun.store.rows import JOB_COLUMNS

COLUMNS = ", ".join(JOB_COLUMNS)
LIVE = "status IN ('waiting', 'running')"  # the states that hold a unique key

#: Store a job unless a live job holds its unique key (then nothing, and no row back).
#: The unique index is what guarantees it, under any number of writers; NOT EXISTS only
#: spares the id that SQLite's AUTOINCREMENT burns on a conflict (ids stay consecutive).
INSERT = (
    "INSERT INTO jobs (target, method, params, status, priority, attempts, retries, timeout,"
    " unique_key, created_at, run_at, ready_at, cwd, python, env, allowlist, held, queue,"
    " queued_on)"
    " SELECT :target, :method, :params, 'waiting', :priority, 0, :retries, :timeout,"
    " :unique_key, :now, :run_at, :run_at, :cwd, :python, :env, :allowlist, :held, :queue,"
    " :queued_on"
    f" WHERE NOT EXISTS (SELECT 1 FROM jobs WHERE unique_key = :unique_key AND {LIVE})"
    f" ON CONFLICT (unique_key) WHERE unique_key IS NOT NULL AND {LIVE} DO NOTHING"
    " RETURNING id"
)
#: The live job holding a unique key.
UNIQUE_HOLDER = f"SELECT id FROM jobs WHERE unique_key = :key AND {LIVE}"

#: Claim this one waiting job (chosen by queueslots.pick, or `bgrun run`'s own), with its
#: slot of a limited queue (NULL otherwise).
CLAIM_ONE = (
    "UPDATE jobs SET status = 'running', attempts = attempts + 1, started_at = :now,"
    " runner_slot = :slot, runner_pid = :pid, runner_host = :host, child_pid = NULL,"
    " child_started = NULL,"
    " progress = NULL,"  # a new attempt starts from nothing
    " queue_slot = :queue_slot WHERE id = :id AND status = 'waiting' RETURNING " + COLUMNS
)
#: The queue of a waiting job.
QUEUE_OF_WAITING = "SELECT queue FROM jobs WHERE id = :id AND status = 'waiting'"
#: Count the attempt a claim started.
START_ATTEMPT = "INSERT INTO attempts (job_id, number, started_at) VALUES (:id, :number, :now)"

#: Let runners take the waiting jobs of a (dead) foreground holder.
RELEASE_HOLD = "UPDATE jobs SET held = 0 WHERE held = :holder AND status = 'waiting'"
HOLDERS = "SELECT DISTINCT held FROM jobs WHERE held != 0 AND status = 'waiting'"
LAUNCH_SPEC = "SELECT python, env FROM jobs WHERE id = :id"
#: Record the running attempt's process (only while it runs).
SET_CHILD = ("UPDATE jobs SET child_pid = :pid, child_started = :started"
             " WHERE id = :id AND status = 'running'")
CHILD_OF = "SELECT child_pid, child_started FROM jobs WHERE id = :id AND status = 'running'"

# A settled attempt: "retrying" when it failed with a retry left and no cancel was asked.
_RETRYING = "(cancel_requested = 0 AND :outcome = 'failed' AND :retry_at IS NOT NULL)"
#: Settle attempt :attempt of a running job, in one conditional statement: no row back
#: means someone settled it first. A cancel asked meanwhile wins over anything but success.
FINISH = (
    "UPDATE jobs SET"
    f" status = CASE WHEN {_RETRYING} THEN 'waiting'"
    " WHEN cancel_requested AND :outcome != 'completed' THEN 'cancelled' ELSE :outcome END,"
    f" finished_at = CASE WHEN {_RETRYING} THEN NULL ELSE :now END,"
    f" ready_at = CASE WHEN {_RETRYING} THEN :retry_at ELSE ready_at END,"
    f" run_at = CASE WHEN {_RETRYING} THEN :retry_at ELSE run_at END,"
    " error = :error, traceback = :traceback, result = :result,"
    " child_pid = NULL, runner_pid = NULL, runner_slot = NULL, queue_slot = NULL,"
    " progress = COALESCE(:progress, progress)"  # the last report lands with the verdict
    " WHERE id = :id AND status = 'running' AND attempts = :attempt RETURNING status"
)
FINISH_ATTEMPT = ("UPDATE attempts SET finished_at = :now, outcome = :outcome, error = :error"
                  " WHERE job_id = :id AND number = :attempt")
#: Return a claimed attempt to waiting, uncounted.
HAND_BACK = (
    "UPDATE jobs SET status = 'waiting', attempts = attempts - 1, started_at = NULL,"
    " child_pid = NULL, runner_pid = NULL, runner_slot = NULL, queue_slot = NULL"
    " WHERE id = :id AND status = 'running' AND attempts = :attempt"
)
DROP_ATTEMPT = "DELETE FROM attempts WHERE job_id = :id AND number = :attempt"
RUNNING = ("SELECT id, attempts, runner_slot, runner_pid, runner_host FROM jobs"
           " WHERE status = 'running'")

GET = f"SELECT {COLUMNS} FROM jobs WHERE id = :id"
#: list_jobs: one WHERE per status word (queued and scheduled are waiting, by ready time).
LIST = f"SELECT {COLUMNS} FROM jobs WHERE"
LIST_BY_STATUS: dict[str | None, str] = {
    None: "1",
    "queued": "status = 'waiting' AND ready_at <= :now",
    "scheduled": "status = 'waiting' AND ready_at > :now",
    **{s: f"status = '{s}'" for s in ("running", "completed", "failed", "cancelled")},
}
LIST_TARGET = " AND (target = :target OR (target = :owner AND method = :method))"
LIST_QUEUE = " AND queue = :queue"
LIST_BEFORE = " AND id < :before"
LIST_ORDER = " ORDER BY id DESC"
COUNTS = (
    "SELECT CASE WHEN status = 'waiting' THEN"
    " (CASE WHEN ready_at > :now THEN 'scheduled' ELSE 'queued' END) ELSE status END AS word,"
    " COUNT(*) AS n FROM jobs GROUP BY 1"
)
ATTEMPTS_OF = ("SELECT number, started_at, finished_at, outcome, error FROM attempts"
               " WHERE job_id = :id ORDER BY rowid")
STATUS_OF = "SELECT status FROM jobs WHERE id = :id"
#: Cancel a waiting job at once, or flag a running one for its runner; else no row.
CANCEL = (
    "UPDATE jobs SET cancel_requested = 1,"
    " finished_at = CASE WHEN status = 'waiting' THEN :now ELSE finished_at END,"
    " error = CASE WHEN status = 'waiting' THEN :error ELSE error END,"
    " status = CASE WHEN status = 'waiting' THEN 'cancelled' ELSE status END"
    f" WHERE id = :id AND {LIVE} RETURNING {COLUMNS}"
)
CANCEL_REQUESTED = "SELECT cancel_requested FROM jobs WHERE id = :id"
#: Queue a failed or cancelled job again, attempts from 0; else no row.
RETRY = (
    "UPDATE jobs SET status = 'waiting', attempts = 0, ready_at = :now, run_at = :now,"
    " started_at = NULL, finished_at = NULL, error = NULL, traceback = NULL, result = NULL,"
    " cancel_requested = 0, held = 0"
    f" WHERE id = :id AND status IN ('failed', 'cancelled') RETURNING {COLUMNS}"
)
#: The live job that holds the unique key of job :id (a retry meets it).
KEY_HOLDER = (f"SELECT id FROM jobs WHERE {LIVE} AND unique_key ="
              " (SELECT unique_key FROM jobs WHERE id = :id)")
_FINISHED = "status IN ('completed', 'failed', 'cancelled')"
DELETE = f"DELETE FROM jobs WHERE id = :id AND {_FINISHED}"
DELETE_ATTEMPTS = "DELETE FROM attempts WHERE job_id = :id"
FINISHED_BEFORE = f"SELECT id FROM jobs WHERE {_FINISHED} AND finished_at < :cutoff"

# -- named queues (queueslots.py): see schema.py's _QUEUES for the slots and indexes ---

#: How many jobs of a queue run. INDEXED BY: by queue, the planner would count every
#: job the queue ever had.
RUNNING_IN_QUEUE = ("SELECT COUNT(*) FROM jobs INDEXED BY jobs_status"
                    " WHERE status = 'running' AND queue = :queue")
#: The slots of a limited queue its running jobs hold.
QUEUE_SLOTS_TAKEN = ("SELECT queue_slot FROM jobs INDEXED BY jobs_queue_slot"
                     " WHERE status = 'running' AND queue = :queue AND queue_slot IS NOT NULL")
#: The best ready job of any queue. INDEXED BY: left to itself the planner picks
#: jobs_status and sorts every waiting job, where the claim index hands over the first.
BEST_READY = ("SELECT id, queue, priority, ready_at FROM jobs INDEXED BY jobs_claim"
              " WHERE status = 'waiting' AND held = 0 AND ready_at <= :now"
              " ORDER BY priority DESC, ready_at, id LIMIT 1")
#: The best ready job of one queue.
BEST_READY_IN = ("SELECT id, queue, priority, ready_at FROM jobs INDEXED BY jobs_queue_claim"
                 " WHERE status = 'waiting' AND queue = :queue AND held = 0 AND ready_at <= :now"
                 " ORDER BY priority DESC, ready_at, id LIMIT 1")
#: When the earliest claimable job is ready (held jobs are a foreground's own).
NEXT_READY = ("SELECT ready_at FROM jobs INDEXED BY jobs_next"
              " WHERE status = 'waiting' AND held = 0 ORDER BY ready_at LIMIT 1")
#: The same, in one queue.
NEXT_READY_IN = ("SELECT ready_at FROM jobs INDEXED BY jobs_queue_next"
                 " WHERE status = 'waiting' AND queue = :queue AND held = 0"
                 " ORDER BY ready_at LIMIT 1")
#: Every queue with a waiting job: a skip-scan, one index seek per queue.
WAITING_QUEUES = (
    "WITH RECURSIVE q(name) AS ("
    " SELECT MIN(queue) FROM jobs INDEXED BY jobs_queue_claim WHERE status = 'waiting'"
    " UNION ALL SELECT (SELECT MIN(queue) FROM jobs INDEXED BY jobs_queue_claim"
    " WHERE status = 'waiting' AND queue > q.name) FROM q WHERE q.name IS NOT NULL)"
    " SELECT name FROM q WHERE name IS NOT NULL"
)
