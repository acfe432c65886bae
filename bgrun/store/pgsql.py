"""The PostgreSQL backend's statements, one named constant each (like sql.py for SQLite).

Values are always bound (`%(name)s`); the only text put together at run time is the
choice among these constants and a LIMIT made of an int. Tables live in the schema
`bgrun` and are always named with it (no search_path: a pooler may share sessions).
"""

from __future__ import annotations

from bgrun.store.rows import JOB_COLUMNS

COLUMNS = ", ".join(JOB_COLUMNS)


def _lease_live(host: str, slot: str, pid: str) -> str:
    """The condition that runner (`host`, `slot`, `pid`: SQL expressions) holds a live
    lease by the server's clock (claims, a runner's own verdict, takeovers all ask it)."""
    return (f"EXISTS (SELECT 1 FROM bgrun.runners r WHERE r.host = {host}"
            f" AND r.slot = {slot} AND r.pid = {pid} AND r.lease_until > now())")


#: The lease of the runner a job row names.
_JOB_RUNNER_LIVE = _lease_live("j.runner_host", "j.runner_slot", "j.runner_pid")
LIVE = "status IN ('waiting', 'running')"  # the states that hold a unique key
CHANNEL = "bgrun_jobs"  # LISTEN/NOTIFY: jobs became ready
#: Tell listening runners that jobs became ready (sent when the transaction commits).
NOTIFY = f"NOTIFY {CHANNEL}"

#: Store a job unless a live job holds its unique key (then no row back). The unique
#: index is the guarantee under racing writers; NOT EXISTS spares the identity value a
#: refused insert would burn, so ids stay consecutive when no race happens.
INSERT = (
    "INSERT INTO bgrun.jobs (target, method, params, status, priority, attempts, retries,"
    " timeout, unique_key, created_at, run_at, ready_at, cwd, python, env, allowlist, held,"
    " queue, queued_on)"
    " SELECT %(target)s, %(method)s, %(params)s, 'waiting', %(priority)s, 0, %(retries)s,"
    " %(timeout)s::double precision, %(unique_key)s, %(now)s, %(run_at)s, %(run_at)s,"
    " %(cwd)s, %(python)s, %(env)s, %(allowlist)s, %(held)s, %(queue)s, %(queued_on)s"
    " WHERE %(unique_key)s::text IS NULL OR NOT EXISTS (SELECT 1 FROM bgrun.jobs"
    f"  WHERE unique_key = %(unique_key)s AND {LIVE})"
    f" ON CONFLICT (unique_key) WHERE unique_key IS NOT NULL AND {LIVE} DO NOTHING"
    " RETURNING id"
)
#: INSERT, waking listeners in the same (one-statement) transaction when a job was stored.
INSERT_NOTIFY = (f"WITH stored AS ({INSERT}) SELECT id, pg_notify('{CHANNEL}', '') AS woke"
                 " FROM stored")
UNIQUE_HOLDER = f"SELECT id FROM bgrun.jobs WHERE unique_key = %(key)s AND {LIVE}"

# -- claims --------------------------------------------------------------------------------

_READY = "status = 'waiting' AND held = 0 AND ready_at <= %(now)s"
_ORDER = "ORDER BY priority DESC, ready_at, id"
#: The best ready job of any queue, locked; jobs other claims hold are skipped.
PICK = (f"SELECT id, queue FROM bgrun.jobs WHERE {_READY} {_ORDER}"
        " LIMIT 1 FOR UPDATE SKIP LOCKED")
#: The best ready job of the queues named, locked: the head of each queue (one index
#: seek each on jobs_queue_claim), then the best head, never a walk past a full queue.
PICK_IN = (
    "SELECT h.id, h.queue FROM unnest(%(queues)s::text[]) AS q(name) CROSS JOIN LATERAL"
    f" (SELECT id, queue, priority, ready_at FROM bgrun.jobs WHERE {_READY}"
    f"  AND queue = q.name {_ORDER} LIMIT 1 FOR UPDATE SKIP LOCKED) AS h"
    " ORDER BY h.priority DESC, h.ready_at, h.id LIMIT 1"
)
#: Every queue with a waiting job: a skip-scan of jobs_queue_next, one seek per queue.
WAITING_QUEUES = (
    "WITH RECURSIVE q(name) AS ("
    " (SELECT queue FROM bgrun.jobs WHERE status = 'waiting' ORDER BY queue LIMIT 1)"
    " UNION ALL SELECT (SELECT queue FROM bgrun.jobs WHERE status = 'waiting'"
    "  AND queue > q.name ORDER BY queue LIMIT 1) FROM q WHERE q.name IS NOT NULL)"
    " SELECT name FROM q WHERE name IS NOT NULL"
)
#: How many jobs of each of the named queues run now.
RUNNING_PER_QUEUE = ("SELECT queue, count(*) AS n FROM bgrun.jobs WHERE status = 'running'"
                     " AND queue = ANY(%(queues)s::text[]) GROUP BY queue")
#: Serialises the claims of one limited queue: its count and free slot are read under it,
#: so a claim never counts before another's commit (a lowered limit is respected too).
QUEUE_LOCK = "SELECT pg_advisory_xact_lock(hashtextextended('bgrun.queue:' || %(queue)s, 0))"
#: How many jobs of a limited queue run, and the slots they hold (read after its lock).
QUEUE_SLOTS = (
    "SELECT count(*) AS n, coalesce(array_agg(queue_slot) FILTER"
    " (WHERE queue_slot IS NOT NULL), '{}') AS taken"
    " FROM bgrun.jobs WHERE status = 'running' AND queue = %(queue)s"
)
#: The claiming runner's lease is live by the server's clock: a runner whose lease lapsed,
#: or whose row was removed, claims nothing (its attempt would read as lapsed at once,
#: and be taken over), until it has registered again.
LEASE_LIVE = _lease_live("%(host)s", "%(slot)s", "%(pid)s")
#: The queue of a waiting job, locked (claim_one: whatever its priority or hold).
LOCK_WAITING = ("SELECT id, queue FROM bgrun.jobs WHERE id = %(id)s AND status = 'waiting'"
                " FOR UPDATE")
#: Claim this locked waiting job, with its slot of a limited queue (NULL otherwise), and
#: count its attempt; nothing while the runner's lease is not live.
CLAIM_ONE = (
    "WITH claimed AS (UPDATE bgrun.jobs SET status = 'running', attempts = attempts + 1,"
    " started_at = %(now)s, runner_slot = %(slot)s, runner_pid = %(pid)s,"
    " runner_host = %(host)s, child_pid = NULL, child_started = NULL, progress = NULL,"
    " queue_slot = %(queue_slot)s WHERE id = %(id)s AND status = 'waiting'"
    f" AND {LEASE_LIVE} RETURNING *),"
    " counted AS (INSERT INTO bgrun.attempts (job_id, number, started_at)"
    "  SELECT id, attempts, %(now)s FROM claimed)"
    f" SELECT {COLUMNS} FROM claimed"
)
#: A claim in one statement (a runner whose plan has no queue limit): lock the best ready
#: job (`pick`: PICK or PICK_IN), take it, count its attempt (nothing without a live lease).
CLAIM_PICKED = (
    "WITH next AS ({pick}), claimed AS ("
    " UPDATE bgrun.jobs j SET status = 'running', attempts = j.attempts + 1,"
    " started_at = %(now)s, runner_slot = %(slot)s, runner_pid = %(pid)s,"
    " runner_host = %(host)s, child_pid = NULL, child_started = NULL, progress = NULL,"
    f" queue_slot = NULL FROM next WHERE j.id = next.id AND {LEASE_LIVE} RETURNING j.*),"
    " counted AS (INSERT INTO bgrun.attempts (job_id, number, started_at)"
    "  SELECT id, attempts, %(now)s FROM claimed)"
    f" SELECT {COLUMNS} FROM claimed"
)
CLAIM_ANY = CLAIM_PICKED.format(pick=PICK)
CLAIM_ANY_IN = CLAIM_PICKED.format(pick=PICK_IN)
#: When the earliest job of the queues named (NULL: any) is ready.
NEXT_READY = ("SELECT min(ready_at) AS at FROM bgrun.jobs WHERE status = 'waiting'"
              " AND held = 0")
NEXT_READY_IN = (
    "SELECT min(h.ready_at) AS at FROM unnest(%(queues)s::text[]) AS q(name) CROSS JOIN"
    " LATERAL (SELECT ready_at FROM bgrun.jobs WHERE status = 'waiting' AND held = 0"
    "  AND queue = q.name ORDER BY ready_at LIMIT 1) AS h"
)

# -- holds, children ------------------------------------------------------------------------

RELEASE_HOLD = (
    "WITH released AS (UPDATE bgrun.jobs SET held = 0"
    " WHERE held = ANY(%(holders)s::integer[]) AND status = 'waiting' RETURNING id)"
    f" SELECT count(*) AS n, (SELECT count(*) FROM (SELECT pg_notify('{CHANNEL}', '')"
    "  FROM released LIMIT 1) AS w) AS woke FROM released"
)
HOLDERS = ("SELECT DISTINCT held FROM bgrun.jobs WHERE held <> 0 AND status = 'waiting'"
           " ORDER BY held")
LAUNCH_SPEC = "SELECT python, env FROM bgrun.jobs WHERE id = %(id)s"
#: Record the running attempt's process: only while this host's runner runs it (fenced).
SET_CHILD = (
    "UPDATE bgrun.jobs SET child_pid = %(pid)s, child_started = %(started)s"
    " WHERE id = %(id)s AND status = 'running' AND runner_host IS NOT DISTINCT FROM %(host)s"
    " AND (%(attempt)s::integer IS NULL OR attempts = %(attempt)s)"
    " AND (%(runner)s::integer IS NULL OR runner_pid = %(runner)s)"
)
CHILD_OF = ("SELECT child_pid, child_started FROM bgrun.jobs"
            " WHERE id = %(id)s AND status = 'running'")

# -- settling -------------------------------------------------------------------------------

_RETRYING = ("(NOT j.cancel_requested AND %(outcome)s = 'failed'"
             " AND %(retry_at)s::double precision IS NOT NULL)")
#: Settle attempt %(attempt)s of a running job, in one conditional statement: no row back
#: means someone settled it first, or (%(own)s: its runner records it) that runner's
#: lease is no longer live (it was, or is about to be, taken over). A cancel asked
#: meanwhile wins over anything but success. Gives whether the job held a queue slot
#: (its settling frees it for waiting jobs).
FINISH = (
    "UPDATE bgrun.jobs j SET"
    f" status = CASE WHEN {_RETRYING} THEN 'waiting'"
    "  WHEN j.cancel_requested AND %(outcome)s <> 'completed' THEN 'cancelled'"
    "  ELSE %(outcome)s END,"
    f" finished_at = CASE WHEN {_RETRYING} THEN NULL ELSE %(now)s END,"
    f" ready_at = CASE WHEN {_RETRYING} THEN %(retry_at)s ELSE j.ready_at END,"
    f" run_at = CASE WHEN {_RETRYING} THEN %(retry_at)s ELSE j.run_at END,"
    " error = %(error)s, traceback = %(traceback)s, result = %(result)s,"
    " child_pid = NULL, runner_pid = NULL, runner_slot = NULL, queue_slot = NULL,"
    " progress = COALESCE(%(progress)s, j.progress)"
    " FROM (SELECT id, queue_slot FROM bgrun.jobs WHERE id = %(id)s FOR UPDATE) AS old"
    " WHERE j.id = old.id AND j.status = 'running' AND j.attempts = %(attempt)s"
    f" AND (NOT %(own)s OR {_JOB_RUNNER_LIVE})"
    " RETURNING j.status, old.queue_slot IS NOT NULL AS freed"
)
#: FINISH and its attempt's verdict in one statement, waking listeners when the job is ready
#: again or its queue slot freed (pg_notify runs only for such a row).
FINISH_ALL = (
    f"WITH done AS ({FINISH}), told AS ("
    " UPDATE bgrun.attempts SET finished_at = %(now)s, error = %(error)s,"
    " outcome = (SELECT CASE WHEN status = 'waiting' THEN 'retrying' ELSE status END"
    "  FROM done)"
    " WHERE seq = (SELECT max(seq) FROM bgrun.attempts WHERE job_id = %(id)s"
    "  AND number = %(attempt)s) AND EXISTS (SELECT 1 FROM done)),"
    f" woke AS (SELECT pg_notify('{CHANNEL}', '') FROM done WHERE status = 'waiting' OR freed)"
    " SELECT status, (SELECT count(*) FROM woke) AS woke FROM done"
)
HAND_BACK = (
    "UPDATE bgrun.jobs SET status = 'waiting', attempts = attempts - 1, started_at = NULL,"
    " child_pid = NULL, runner_pid = NULL, runner_slot = NULL, queue_slot = NULL"
    " WHERE id = %(id)s AND status = 'running' AND attempts = %(attempt)s"
)
DROP_ATTEMPT = (
    "DELETE FROM bgrun.attempts WHERE seq = (SELECT max(seq) FROM bgrun.attempts"
    " WHERE job_id = %(id)s AND number = %(attempt)s)"
)
#: Hand back, uncounted, the jobs running under this runner that it does not know it has
#: (a claim that committed while its answer was lost), their attempt records removed.
HAND_BACK_UNKNOWN = (
    "WITH back AS (UPDATE bgrun.jobs SET status = 'waiting', attempts = attempts - 1,"
    " started_at = NULL, child_pid = NULL, runner_pid = NULL, runner_slot = NULL,"
    " queue_slot = NULL WHERE status = 'running'"
    " AND runner_host IS NOT DISTINCT FROM %(host)s AND runner_slot = %(slot)s"
    " AND runner_pid = %(pid)s AND NOT (id = ANY(%(known)s::bigint[]))"
    " RETURNING id, attempts + 1 AS number),"
    " dropped AS (DELETE FROM bgrun.attempts a USING back WHERE a.seq = (SELECT max(seq)"
    "  FROM bgrun.attempts x WHERE x.job_id = back.id AND x.number = back.number))"
    f" SELECT count(*) AS n, (SELECT count(*) FROM (SELECT pg_notify('{CHANNEL}', '')"
    "  FROM back LIMIT 1) AS w) AS woke FROM back"
)
#: Every running attempt, and whether its runner's lease lapsed by the server's clock.
RUNNING = (
    "SELECT j.id, j.attempts, j.runner_slot, j.runner_pid, j.runner_host,"
    f" NOT {_JOB_RUNNER_LIVE} AS lapsed"
    " FROM bgrun.jobs j WHERE j.status = 'running' ORDER BY j.id"
)

# -- users' side ----------------------------------------------------------------------------

GET = f"SELECT {COLUMNS} FROM bgrun.jobs WHERE id = %(id)s"
LIST = f"SELECT {COLUMNS} FROM bgrun.jobs WHERE"
LIST_BY_STATUS: dict[str | None, str] = {
    None: "true",
    "queued": "status = 'waiting' AND ready_at <= %(now)s",
    "scheduled": "status = 'waiting' AND ready_at > %(now)s",
    **{s: f"status = '{s}'" for s in ("running", "completed", "failed", "cancelled")},
}
LIST_TARGET = " AND (target = %(target)s OR (target = %(owner)s AND method = %(method)s))"
LIST_QUEUE = " AND queue = %(queue)s"
LIST_BEFORE = " AND id < %(before)s"
LIST_ORDER = " ORDER BY id DESC"
COUNTS = (
    "SELECT CASE WHEN status = 'waiting' THEN"
    " (CASE WHEN ready_at > %(now)s THEN 'scheduled' ELSE 'queued' END) ELSE status END"
    " AS word, count(*) AS n FROM bgrun.jobs GROUP BY 1"
)
ATTEMPTS_OF = ("SELECT number, started_at, finished_at, outcome, error FROM bgrun.attempts"
               " WHERE job_id = %(id)s ORDER BY seq")
STATUS_OF = "SELECT status FROM bgrun.jobs WHERE id = %(id)s"
CANCEL = (
    "UPDATE bgrun.jobs SET cancel_requested = true,"
    " finished_at = CASE WHEN status = 'waiting' THEN %(now)s ELSE finished_at END,"
    " error = CASE WHEN status = 'waiting' THEN %(error)s ELSE error END,"
    " status = CASE WHEN status = 'waiting' THEN 'cancelled' ELSE status END"
    f" WHERE id = %(id)s AND {LIVE} RETURNING {COLUMNS}"
)
CANCEL_REQUESTED = "SELECT cancel_requested FROM bgrun.jobs WHERE id = %(id)s"
RETRY = (
    "UPDATE bgrun.jobs SET status = 'waiting', attempts = 0, ready_at = %(now)s,"
    " run_at = %(now)s, started_at = NULL, finished_at = NULL, error = NULL,"
    " traceback = NULL, result = NULL, cancel_requested = false, held = 0"
    f" WHERE id = %(id)s AND status IN ('failed', 'cancelled') RETURNING {COLUMNS}"
)
KEY_HOLDER = (f"SELECT id FROM bgrun.jobs WHERE {LIVE} AND unique_key ="
              " (SELECT unique_key FROM bgrun.jobs WHERE id = %(id)s)")
_FINISHED = "status IN ('completed', 'failed', 'cancelled')"
#: Delete finished jobs (their attempts and output go with them: ON DELETE CASCADE).
DELETE = (f"DELETE FROM bgrun.jobs WHERE id = ANY(%(ids)s::bigint[]) AND {_FINISHED}"
          " RETURNING id")
FINISHED_BEFORE = (f"SELECT id FROM bgrun.jobs WHERE {_FINISHED} AND finished_at < %(cutoff)s"
                   " ORDER BY id")
