"""The PostgreSQL store's schema: numbered migrations, safe when many processes start at
once; a migrated store equals a fresh one; a newer or foreign store is refused."""

from __future__ import annotations

import subprocess
import sys
import time

import psycopg
import pytest

from bgrun.errors import StoreError
from bgrun.store import pgschema
from tests.pgserver import PgServer

#: Every object bgrun's schema is made of, as the catalog describes it.
CATALOG = """
SELECT 'column', table_name || '.' || column_name,
       concat_ws(' ', data_type, is_nullable, column_default, is_identity, identity_generation)
  FROM information_schema.columns WHERE table_schema = 'bgrun'
UNION ALL
SELECT 'index', indexname, indexdef FROM pg_indexes WHERE schemaname = 'bgrun'
UNION ALL
SELECT 'constraint', conrelid::regclass::text || '.' || conname, pg_get_constraintdef(oid)
  FROM pg_constraint WHERE connamespace = 'bgrun'::regnamespace
UNION ALL
SELECT 'table', relname, relkind::text FROM pg_class
  WHERE relnamespace = 'bgrun'::regnamespace
ORDER BY 1, 2
"""


def catalog(server: PgServer, db: str) -> list[tuple[object, ...]]:
    return server.admin(CATALOG, dbname=db)


def test_a_store_migrated_step_by_step_equals_a_fresh_one(pg_server: PgServer):
    fresh = pg_server.new_database(template=None)
    assert pgschema.migrate_url(pg_server.url(fresh)) == pgschema.VERSION
    expected = catalog(pg_server, fresh)
    assert len([r for r in expected if r[0] == "index"]) >= 12
    for start in range(pgschema.VERSION):  # a store left at each older version
        old = pg_server.new_database(template=None)
        with psycopg.connect(pg_server.url(old), autocommit=True) as conn:
            conn.execute("CREATE SCHEMA bgrun")
            conn.execute("CREATE TABLE bgrun.schema_version (version integer NOT NULL)")
            conn.execute("INSERT INTO bgrun.schema_version VALUES (%s)", (start,))
            for step in range(1, start + 1):
                pgschema.run_script(conn, pgschema.MIGRATIONS[step])
        assert pgschema.migrate_url(pg_server.url(old)) == pgschema.VERSION
        assert catalog(pg_server, old) == expected, f"migrated from version {start}"


OPEN = """
import sys, time
from bgrun.store import pgschema
start = float(sys.argv[2])
while time.time() < start:
    pass
print(pgschema.migrate_url(sys.argv[1]))
"""


def test_many_processes_opening_a_new_database_at_once_all_succeed(pg_server: PgServer):
    db = pg_server.new_database(template=None)
    start = time.time() + 2.0  # every interpreter up and spinning before it
    procs = [subprocess.Popen([sys.executable, "-c", OPEN, pg_server.url(db), str(start)],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for _ in range(8)]
    answers = [p.communicate(timeout=60) for p in procs]
    assert [err for _, err in answers if err] == []
    assert [out.strip() for out, _ in answers] == [str(pgschema.VERSION)] * 8
    assert pg_server.admin("SELECT version FROM bgrun.schema_version", dbname=db) == [
        (pgschema.VERSION,)]
    assert catalog(pg_server, db) == catalog(pg_server, pg_server.new_database())


def test_a_store_of_a_newer_bgrun_is_refused_and_left_alone(pg_url: str, pg_server: PgServer):
    with psycopg.connect(pg_url, autocommit=True) as conn:
        conn.execute("UPDATE bgrun.schema_version SET version = %s", (pgschema.VERSION + 1,))
    with pytest.raises(StoreError, match=f"newer bgrun \\(schema {pgschema.VERSION + 1}"):
        pgschema.migrate_url(pg_url)
    with psycopg.connect(pg_url, autocommit=True) as conn:
        row = conn.execute("SELECT version FROM bgrun.schema_version").fetchone()
    assert row == (pgschema.VERSION + 1,)


def test_a_foreign_bgrun_schema_is_refused_and_left_alone(pg_server: PgServer):
    db = pg_server.new_database(template=None)
    pg_server.admin("CREATE SCHEMA bgrun", dbname=db)
    pg_server.admin("CREATE TABLE bgrun.jobs (x int)", dbname=db)
    with pytest.raises(StoreError, match="not a bgrun database"):
        pgschema.migrate_url(pg_server.url(db))
    assert pg_server.admin("SELECT to_regclass('bgrun.schema_version') IS NULL",
                           dbname=db) == [(True,)]
