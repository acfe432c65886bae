"""The store's schema and its migrations (versioned by PRAGMA user_version)."""

from __future__ import annotations

import sqlite3
from pathlib import Path

from bgrun.errors import StoreError

VERSION = 2

_V1 = """
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
    child_started REAL
);
CREATE INDEX jobs_claim ON jobs (priority DESC, ready_at, id) WHERE status = 'waiting';
CREATE INDEX jobs_next ON jobs (ready_at) WHERE status = 'waiting';
CREATE INDEX jobs_status ON jobs (status, id);
CREATE INDEX jobs_target ON jobs (target, id);
CREATE INDEX jobs_unique ON jobs (unique_key) WHERE unique_key IS NOT NULL;
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

# 2: progress reports, finished-per-minute stats, and the runners view.
_V2 = """
ALTER TABLE jobs ADD COLUMN progress TEXT;  -- JSON {done, total, message, at} or NULL
CREATE INDEX jobs_finished ON jobs (status, finished_at);  -- counts per minute
CREATE TABLE runners (
    slot INTEGER PRIMARY KEY,               -- a dead runner's row is replaced by its heir's
    pid INTEGER NOT NULL,
    process_start REAL NOT NULL,            -- against pid reuse
    started_at REAL NOT NULL,
    queues TEXT                             -- NULL: every queue
);
"""

_STEPS = {1: _V1, 2: _V2}  # the script that brings version N-1 to N


def migrate(db: sqlite3.Connection, path: Path) -> None:
    """Bring the store's schema up to VERSION; refuse a store from a newer bgrun."""
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
        for step in range(version + 1, VERSION + 1):
            _run_script(db, _STEPS[step])
        db.execute(f"PRAGMA user_version = {VERSION}")
        db.execute("COMMIT")
    except BaseException:
        db.execute("ROLLBACK")
        raise


def _run_script(db: sqlite3.Connection, script: str) -> None:
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
