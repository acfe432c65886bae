"""A store written by an older bgrun opens in this one: migrated in place, jobs kept.

tests/data/store-v1.sqlite3 was made by schema-1 bgrun (tests/data/make_store_v1.py).
"""

from __future__ import annotations

import shutil
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from bgrun.errors import StoreError
from bgrun.records import State
from bgrun.store import NewJob
from bgrun.store.schema import VERSION
from bgrun.store.sqlite import SqliteStore

V1 = Path(__file__).parent / "data" / "store-v1.sqlite3"
T = 1_790_000_000.0


def schema_of(path: Path) -> tuple[int, dict[str, object]]:
    """The user_version, and every table's columns and every index, as SQLite reports them.

    Columns come from table_info, not the CREATE TABLE text: ALTER TABLE ... ADD COLUMN
    rewrites that text, so a migrated table reads differently from a fresh one.
    """
    db = sqlite3.connect(path)
    try:
        version = db.execute("PRAGMA user_version").fetchone()[0]
        shape: dict[str, object] = {}
        for kind, name, table, sql in db.execute(
                "SELECT type, name, tbl_name, sql FROM sqlite_master"):
            if kind == "table":
                shape[name] = db.execute(f"PRAGMA table_info({name})").fetchall()
            else:  # an index: its columns, uniqueness and partial WHERE are all in its SQL
                shape[name] = (table, " ".join((sql or "").split()))
    finally:
        db.close()
    return version, shape


def old_store(tmp_path: Path) -> Path:
    path = tmp_path / "old.sqlite3"
    shutil.copy(V1, path)
    return path


def test_a_schema_1_store_migrates_to_exactly_the_fresh_schema(tmp_path):
    assert schema_of(V1)[0] == 1
    path = old_store(tmp_path)
    SqliteStore(path, tmp_path).close()
    SqliteStore(tmp_path / "fresh.sqlite3", tmp_path).close()
    assert schema_of(path) == schema_of(tmp_path / "fresh.sqlite3")
    assert schema_of(path)[0] == VERSION


def test_the_jobs_of_a_schema_1_store_survive_and_keep_working(tmp_path):
    store = SqliteStore(old_store(tmp_path), tmp_path)
    states = {j.id: j.stored_status for j in store.list_jobs(limit=0)}
    assert states == {"1": State.COMPLETED, "2": State.FAILED, "3": State.CANCELLED,
                      "4": State.RUNNING, "5": State.WAITING, "6": State.WAITING,
                      "7": State.WAITING}
    assert store.get("1").result_json == "3"
    assert [(a.number, a.outcome) for a in store.attempts_of("2")] == [
        (1, "retrying"), (2, "failed")]
    assert store.child_of("4") == (333, T + 18.5)
    assert store.launch_spec("5") == ("/usr/bin/python3", '{"A": "1"}')
    assert store.holders() == [-4242]
    # the unique key of job 5 is enforced by the new index
    job = NewJob("myapp.tasks", "add", "[]", 0, 0, None, T, "/", "py", "{}", "a", "nightly")
    assert store.insert(job, T + 100) == ("5", False)
    assert store.insert(job._replace(unique_key=None), T + 100) == ("8", True)
    store.close()


OPEN = ("import sys; from pathlib import Path; from bgrun.store.sqlite import SqliteStore;"
        " SqliteStore(Path(sys.argv[1]), Path(sys.argv[2])).close()")


def test_many_processes_opening_an_old_store_at_once_migrate_it_once(tmp_path):
    path = old_store(tmp_path)
    procs = [subprocess.Popen([sys.executable, "-c", OPEN, str(path), str(tmp_path)],
                              stderr=subprocess.PIPE, text=True) for _ in range(6)]
    errors = [err for p in procs for _, err in [p.communicate(timeout=120)] if p.returncode]
    assert errors == []
    SqliteStore(tmp_path / "fresh.sqlite3", tmp_path).close()
    assert schema_of(path) == schema_of(tmp_path / "fresh.sqlite3")
    store = SqliteStore(path, tmp_path)
    assert len(store.list_jobs(limit=0)) == 7
    store.close()


def test_two_live_jobs_with_one_key_lose_the_newer_key_when_migrated(tmp_path):
    """Schema 1 let a retry make a second live job with a key; the index needs one."""
    path = old_store(tmp_path)
    db = sqlite3.connect(path)
    db.execute("UPDATE jobs SET unique_key = 'nightly' WHERE id IN (6, 7)")
    db.commit()
    db.close()
    store = SqliteStore(path, tmp_path)
    assert [store.get(i).unique_key for i in ("5", "6", "7")] == ["nightly", None, None]
    store.close()


def test_a_store_from_a_newer_bgrun_is_refused_untouched(tmp_path):
    path = old_store(tmp_path)
    db = sqlite3.connect(path)
    db.execute(f"PRAGMA user_version = {VERSION + 1}")
    db.commit()
    db.close()
    before = schema_of(path)
    with pytest.raises(StoreError, match="newer bgrun"):
        SqliteStore(path, tmp_path)
    assert schema_of(path) == before
