"""The store's schema and its migrations (versioned by PRAGMA user_version).

To change the schema: edit SCHEMA (what a new store gets), add the script that takes
the previous version to the new one to MIGRATIONS, bump VERSION.
tests/test_store_migration.py checks that a store made by older bgrun migrates to
exactly SCHEMA and keeps its jobs.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path

from bgrun.errors import StoreError

VERSION = 5

_JOBS = """
CREATE TABLE jobs (
    id INTEGER PRIMARY KEY AUTOINCREMENT,   -- never reused, even after prune
    target TEXT NOT NULL,
    method TEXT NOT NULL,
    params TEXT NOT NULL,                   -- strict JSON, checked when queued
    status TEXT NOT NULL,                   -- waiting/running/completed/failed/cancelled
    priority INTEGER NOT NULL,
    attempts INTEGER NOT NULL,              -- counted when claimed
    retries INTEGER NOT NULL,
    timeout REAL,
    unique_key TEXT,
    created_at REAL NOT NULL,               -- UTC epoch seconds
    run_at REAL NOT NULL,                   -- when it may start (shown)
    ready_at REAL NOT NULL,                 -- claim order within a priority
    started_at REAL,
    finished_at REAL,
    error TEXT,
    traceback TEXT,
    result TEXT,
    cwd TEXT NOT NULL,
    python TEXT NOT NULL,
    env TEXT NOT NULL,                      -- private: never shown
    allowlist TEXT NOT NULL,
    cancel_requested INTEGER NOT NULL DEFAULT 0,
    held INTEGER NOT NULL DEFAULT 0,        -- -pid of a foreground `bgrun run` holding it
    runner_slot INTEGER,
    runner_pid INTEGER,
    child_pid INTEGER,
    child_started REAL,
    progress TEXT,                          -- JSON {done, total, message, at} or NULL
    queue TEXT NOT NULL DEFAULT 'default',  -- its named queue
    queue_slot INTEGER,                     -- while running: its slot of a limited queue
    runner_host TEXT,                       -- BGRUN_HOST of the current or last attempt
    queued_on TEXT                          -- BGRUN_HOST of the caller that queued it
);
CREATE INDEX jobs_claim ON jobs (priority DESC, ready_at, id) WHERE status = 'waiting';
CREATE INDEX jobs_next ON jobs (ready_at) WHERE status = 'waiting';
CREATE INDEX jobs_status ON jobs (status, id);
CREATE INDEX jobs_target ON jobs (target, id);
CREATE INDEX jobs_finished ON jobs (status, finished_at);  -- counts per minute
CREATE TABLE attempts (
    job_id INTEGER NOT NULL,
    number INTEGER NOT NULL,
    started_at REAL NOT NULL,
    finished_at REAL,
    outcome TEXT,
    error TEXT
);
CREATE INDEX attempts_job ON attempts (job_id, number);
"""

_RUNNERS = """
CREATE TABLE runners (
    slot INTEGER PRIMARY KEY,               -- a dead runner's row is replaced by its heir's
    pid INTEGER NOT NULL,
    process_start REAL NOT NULL,            -- against pid reuse
    started_at REAL NOT NULL,
    queues TEXT,                            -- NULL: every queue
    host TEXT                               -- BGRUN_HOST of the runner
);
"""

# One live job per unique key, kept by the database itself (INSERT ... ON CONFLICT).
_UNIQUE_LIVE = """
CREATE UNIQUE INDEX jobs_unique_live ON jobs (unique_key)
    WHERE unique_key IS NOT NULL AND status IN ('waiting', 'running');
"""

# Named queues. A running job of a queue with a limit holds one of the queue's numbered
# slots (0 to limit - 1) until its attempt is settled: the unique index makes two running
# jobs holding one slot impossible, whoever writes (the limit is never exceeded, even by
# racing claims). While a queue is full, claims take the head of each other queue
# (jobs_queue_claim, jobs_queue_next) instead of walking past the full queue's jobs.
_QUEUES = """
CREATE UNIQUE INDEX jobs_queue_slot ON jobs (queue, queue_slot)
    WHERE status = 'running' AND queue_slot IS NOT NULL;
CREATE INDEX jobs_queue ON jobs (queue, id);
CREATE INDEX jobs_queue_claim ON jobs (queue, priority DESC, ready_at, id)
    WHERE status = 'waiting';
CREATE INDEX jobs_queue_next ON jobs (queue, ready_at) WHERE status = 'waiting';
"""

#: What a new store gets.
SCHEMA = _JOBS + _RUNNERS + _UNIQUE_LIVE + _QUEUES

#: MIGRATIONS[n] takes a store from version n to n + 1.
MIGRATIONS = {
    # progress reports, finished-per-minute stats, and the runners view (as it was then)
    1: """
ALTER TABLE jobs ADD COLUMN progress TEXT;
CREATE INDEX jobs_finished ON jobs (status, finished_at);  -- counts per minute
CREATE TABLE runners (
    slot INTEGER PRIMARY KEY,               -- a dead runner's row is replaced by its heir's
    pid INTEGER NOT NULL,
    process_start REAL NOT NULL,            -- against pid reuse
    started_at REAL NOT NULL,
    queues TEXT                             -- NULL: every queue
);
""",
    # Schema 2 kept unique keys by a SELECT before the INSERT. A retry could still make a
    # second live job with a key; the newer ones lose their key, so the index can exist.
    2: """
DROP INDEX jobs_unique;
UPDATE jobs SET unique_key = NULL
    WHERE unique_key IS NOT NULL AND status IN ('waiting', 'running')
    AND id NOT IN (SELECT MIN(id) FROM jobs
                   WHERE unique_key IS NOT NULL AND status IN ('waiting', 'running')
                   GROUP BY unique_key);
""" + _UNIQUE_LIVE,
    # named queues: every job so far is in `default`
    3: """
ALTER TABLE jobs ADD COLUMN queue TEXT NOT NULL DEFAULT 'default';
ALTER TABLE jobs ADD COLUMN queue_slot INTEGER;
""" + _QUEUES,
    # several hosts: which host queued a job, ran its attempt, runs a runner
    4: """
ALTER TABLE jobs ADD COLUMN runner_host TEXT;
ALTER TABLE jobs ADD COLUMN queued_on TEXT;
ALTER TABLE runners ADD COLUMN host TEXT;
""",
}


def migrate(db: sqlite3.Connection, path: Path) -> None:
    """Bring the store's schema up to VERSION; refuse a store from a newer bgrun.

    One write transaction that reads the version again once it holds the lock: of
    several processes opening an old store at once, one migrates and the others find
    the work done.
    """
    version = db.execute("PRAGMA user_version").fetchone()[0]
    if version == VERSION:
        return
    if version > VERSION:
        raise StoreError(f"store {path} was written by a newer bgrun (schema {version})")
    db.execute("BEGIN IMMEDIATE")
    try:
        version = db.execute("PRAGMA user_version").fetchone()[0]  # another process may have won
        if version == 0:
            tables = db.execute("SELECT count(*) FROM sqlite_master").fetchone()[0]
            if tables:
                raise StoreError(f"{path} is an SQLite file but not a bgrun store; left as it is")
            _run_script(db, SCHEMA)
        else:
            for step in range(version, VERSION):
                _run_script(db, MIGRATIONS[step])
        db.execute(f"PRAGMA user_version = {VERSION}")
        db.execute("COMMIT")
    except BaseException:
        db.execute("ROLLBACK")
        raise


def _run_script(db: sqlite3.Connection, script: str) -> None:
    # Not executescript(): it commits first, and the version check must share our lock.
    for statement in script.split(";"):
        lines = [line.split("--")[0] for line in statement.splitlines()]
        if "".join(lines).strip():
            db.execute(statement)


def refuse_foreign(db: sqlite3.Connection, path: Path) -> None:
    """Refuse, without writing to it, an SQLite file that is not a bgrun store."""
    # One statement, so one snapshot: read apart, another process creating the store
    # could commit between the two reads and make a new bgrun store look foreign.
    version, tables = db.execute(
        "SELECT (SELECT user_version FROM pragma_user_version),"
        " (SELECT count(*) FROM sqlite_master)"
    ).fetchone()
    if version == 0 and tables:
        raise StoreError(f"{path} is an SQLite file but not a bgrun store; left as it is")
