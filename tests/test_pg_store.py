"""What the PostgreSQL store keeps beyond the shared contract suite: racing processes,
queue limits under racing claims, fencing by attempt and host, leases on the server's
clock, LISTEN/NOTIFY, a server restart, and its errors as one line without a password.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import psycopg
import pytest

from bgrun.config import Config
from bgrun.errors import StoreError
from bgrun.records import JobRecord, Outcome, State
from bgrun.store import NewJob, Store, open_store
from bgrun.store.pgschema import VERSION
from tests.pgserver import PgServer, free_port

T = 1_800_000_000.0
Opener = Callable[..., Store]


@pytest.fixture
def open_pg(pg_url: str, tmp_path: Path) -> Iterator[Opener]:
    """Opens one more store on the test's database, as host `host` (closed at the end)."""
    opened: list[Store] = []

    def opener(host: str = "host-a", **settings: str) -> Store:
        environ = {"BGRUN_STORE": pg_url, "BGRUN_LOG_DIR": str(tmp_path / host),
                   "BGRUN_HOST": host, **settings}
        opened.append(open_store(Config.load(cwd=tmp_path, environ=environ)))
        return opened[-1]

    yield opener
    for store in opened:
        store.close()


def job(queue: str = "default", unique: str | None = None) -> NewJob:
    return NewJob(target="jobs", method="noop", params_json="[]", priority=0, retries=0,
                  timeout=None, run_at=T, cwd="/srv", python=sys.executable, env_json="{}",
                  allowlist="allowlist.toml", unique_key=unique, queue=queue)


def spawn(code: str, *args: str) -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, "-c", code, *args], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def outputs(procs: list[subprocess.Popen[str]]) -> list[str]:
    answers = [p.communicate(timeout=120) for p in procs]
    assert [err for _, err in answers if err] == []
    return [out for out, _ in answers]


# -- racing processes ----------------------------------------------------------------------

CLAIMER = """
import json, sys, time
from pathlib import Path
from bgrun.config import Config
from bgrun.queues import QueuePlan
from bgrun.records import Outcome
from bgrun.store import open_store
url, folder, pid, start, limit, hold = sys.argv[1:7]
store = open_store(Config.load(cwd=Path(folder), environ={
    "BGRUN_STORE": url, "BGRUN_LOG_DIR": folder, "BGRUN_HOST": "h" + pid}))
plan = QueuePlan(None, {"q": int(limit)} if int(limit) else {})
store.register_runner(0, int(pid), 1.0, 1.9e9)  # (a claim needs a live lease)
while time.time() < float(start):
    pass
taken, misses = [], 0
while misses < 20:
    got = store.claim(1.9e9, 0, int(pid), plan)
    if got is None:
        misses += 1
        time.sleep(0.02)
        continue
    misses = 0
    taken.append(got.id)
    time.sleep(float(hold))
    assert store.finish(got.id, got.attempts, 1.9e9, outcome=Outcome.COMPLETED) is not None
print(json.dumps(taken))
"""


def race_claims(url: str, folder: Path, processes: int, limit: int = 0, hold: float = 0.0
                ) -> list[list[str]]:
    start = str(time.time() + 3.0)  # every interpreter up and spinning before it
    procs = [spawn(CLAIMER, url, str(folder), str(1000 + n), start, str(limit), str(hold))
             for n in range(processes)]
    return [json.loads(out) for out in outputs(procs)]


def test_processes_claiming_at_once_never_take_a_job_twice(open_pg: Opener, pg_url: str,
                                                           tmp_path: Path):
    store = open_pg()
    made = {store.insert(job(), T)[0] for _ in range(300)}
    taken = race_claims(pg_url, tmp_path, processes=6)
    every = [job_id for one in taken for job_id in one]
    assert sorted(every, key=int) == sorted(made, key=int)  # each once, none left
    assert sum(1 for one in taken if one) >= 2  # they did race
    assert store.counts() == {"completed": 300}
    assert {len(store.attempts_of(j)) for j in made} == {1}


def test_racing_claims_from_processes_never_exceed_a_queue_limit(open_pg: Opener,
                                                                pg_url: str, tmp_path: Path):
    store = open_pg()
    for _ in range(40):
        store.insert(job(queue="q"), T)
    for _ in range(20):
        store.insert(job(queue="other"), T)
    seen: list[int] = []
    done = threading.Event()

    def sample() -> None:  # the database's own count, every few milliseconds
        with psycopg.connect(pg_url, autocommit=True) as conn:
            while not done.is_set():
                row = conn.execute("SELECT count(*) FROM bgrun.jobs WHERE queue = 'q'"
                                   " AND status = 'running'").fetchone()
                seen.append(int(row[0]) if row else -1)
                time.sleep(0.003)

    sampler = threading.Thread(target=sample)
    sampler.start()
    try:
        race_claims(pg_url, tmp_path, processes=6, limit=2, hold=0.03)
    finally:
        done.set()
        sampler.join()
    assert store.counts() == {"completed": 60}
    assert max(seen) == 2 and min(seen) >= 0  # full at times, never over
    assert len(seen) > 50


def test_a_unique_key_racing_its_holders_end_keeps_one_live_job(open_pg: Opener):
    """Insert meets a holder that finishes before it is read: it tries again, and every
    answer names a job that held the key."""
    inserter, runner = open_pg(), open_pg()
    runner.register_runner(0, 1, 1.0, T)
    stop = threading.Event()

    def churn() -> None:
        while not stop.is_set():
            got = runner.claim(T, 0, 1)
            if got is not None:
                runner.finish(got.id, got.attempts, T, outcome=Outcome.COMPLETED)

    thread = threading.Thread(target=churn)
    thread.start()
    try:
        answers = [inserter.insert(job(unique="k"), T) for _ in range(200)]
    finally:
        stop.set()
        thread.join()
    live = inserter.list_jobs(status="queued", now=T) + inserter.list_jobs(status="running")
    assert len(live) <= 1
    assert {new for _, new in answers} == {True, False}


# -- fencing ------------------------------------------------------------------------------

def test_every_write_about_an_attempt_is_fenced_by_attempt_and_host(open_pg: Opener):
    a, b = open_pg("host-a"), open_pg("host-b")
    job_id, _ = a.insert(job(), T)
    a.register_runner(0, 10, 1.0, T)
    b.register_runner(0, 20, 1.0, T)
    first = a.claim(T, 0, 10)
    assert first is not None and first.host == "host-a"
    assert a.put_output(job_id, 1, b"hello", False) and a.output_of(job_id) == (b"hello", False)
    assert not b.put_output(job_id, 1, b"other host", False)
    assert not b.set_progress(job_id, 1, '{"done": 1}')
    b.set_child(job_id, 4242, 1.0)
    assert a.child_of(job_id) is None  # not host-b's attempt
    # host-b takes the attempt over (its runner was lost) and runs it again
    assert b.finish(job_id, 1, T, outcome=Outcome.FAILED, error="RunnerLost: x",
                    retry_at=T) == State.WAITING
    again = b.claim(T, 0, 20)
    assert again is not None and again.attempts == 2 and again.host == "host-b"
    # host-a's writes about attempt 1 change nothing now
    assert not a.put_output(job_id, 1, b"late", True)
    assert not a.set_progress(job_id, 1, '{"done": 9}')
    a.set_child(job_id, 999, 2.0)
    assert a.finish(job_id, 1, T, outcome=Outcome.COMPLETED) is None
    assert not a.hand_back(job_id, 1)
    assert a.output_of(job_id) == (b"hello", False) and b.child_of(job_id) is None
    assert b.put_output(job_id, 2, b"second", True)
    assert a.output_of(job_id) == (b"second", True)
    assert [x.outcome for x in a.attempts_of(job_id)] == [Outcome.RETRYING, None]


def test_a_claim_whose_answer_was_lost_is_handed_back_by_the_next_claim(open_pg: Opener,
                                                                        pg_server: PgServer):
    """The session breaks as a claim commits: the job is running under this runner, which
    does not know it. Its next claim hands that job back (uncounted) and takes it anew;
    jobs it does know, and other runners' jobs, stay as they are."""
    store, other = open_pg(), open_pg()
    mine, _ = store.insert(job(), T)
    lost, _ = store.insert(job(), T)
    theirs, _ = store.insert(job(), T)
    waiting, _ = store.insert(job(), T)
    store.register_runner(0, 77, 1.0, T)
    store.register_runner(1, 88, 1.0, T)
    assert store.claim(T, 0, 77).id == mine  # type: ignore[union-attr]
    assert other.claim(T, 0, 77).id == lost  # type: ignore[union-attr] # as if store's
    assert other.claim(T, 1, 88).id == theirs  # type: ignore[union-attr]
    pg_server.admin("SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
                    " WHERE application_name = 'bgrun'")  # every session of both stores
    with pytest.raises(StoreError, match="connection lost"):
        store.claim(T, 0, 77)
    again = store.claim(T, 0, 77)
    assert again is not None and again.id == lost and again.attempts == 1
    assert [a.number for a in store.attempts_of(lost)] == [1]
    assert {r.job_id for r in store.running()} == {mine, lost, theirs}
    assert store.get(waiting).stored_status == State.WAITING


# -- leases -------------------------------------------------------------------------------

def test_a_lease_lapses_by_the_server_clock_and_is_never_revived(open_pg: Opener):
    store = open_pg(BGRUN_LEASE="3")
    other = open_pg("host-b", BGRUN_LEASE="3")
    assert (store.kind, store.leased, store.keeps_output, store.notifies) == (
        "postgresql", True, True, True)
    store.register_runner(0, 10, 1.0, T)
    other.register_runner(0, 10, 1.0, T, queues="mail")  # same slot and pid, other host
    job_id, _ = store.insert(job(), T)
    store.claim(T, 0, 10)
    assert [(r.host, r.lapsed) for r in other.running()] == [("host-a", False)]
    rows = store.runner_rows()
    assert [(r.host, r.slot, r.job_id, r.queues) for r in rows] == [
        ("host-a", 0, job_id, None), ("host-b", 0, None, "mail")]
    assert all(r.lease_age is not None and 0 <= r.lease_age < 1.5 for r in rows)
    time.sleep(1.5)
    assert store.renew_runner(0, 10)  # renewed in time: 3 s from now again
    time.sleep(2.0)  # past the first lease, within the renewed one
    assert [r.lapsed for r in other.running()] == [False]
    time.sleep(2.0)
    assert [r.lapsed for r in other.running()] == [True]
    assert not store.renew_runner(0, 10)  # lapsed: never revived, and its row is gone
    assert [r.host for r in store.runner_rows()] == ["host-b"]
    assert not store.renew_runner(0, 11)  # a runner never registered


def test_a_lease_row_lasts_bgrun_lease_less_one_takeover_look(open_pg: Opener, pg_url: str):
    """So a runner killed right after it renewed has its job taken over within
    BGRUN_LEASE: the row lapses one look early, and idle runners look once a look."""
    config = Config.load(environ={"BGRUN_STORE": pg_url, "BGRUN_LEASE": "15"})
    assert (config.takeover_look, config.lease_term) == (1.0, 14.0)
    store = open_pg(BGRUN_LEASE="15")
    store.register_runner(0, 10, 1.0, T)
    with psycopg.connect(pg_url) as db:
        (term,) = db.execute("SELECT extract(epoch FROM lease_until - renewed_at)::float"
                             " FROM bgrun.runners").fetchone()  # type: ignore[misc]
    assert term == pytest.approx(14.0, abs=0.01)


def test_registering_again_replaces_only_this_hosts_slot(open_pg: Opener):
    a, b = open_pg("host-a"), open_pg("host-b")
    a.register_runner(1, 10, 1.0, T)
    b.register_runner(1, 10, 1.0, T)
    a.register_runner(1, 11, 2.0, T)  # an heir on host-a
    assert sorted((r.host, r.pid) for r in a.runner_rows()) == [("host-a", 11),
                                                                ("host-b", 10)]
    a.unregister_runner(1, 10)  # not its row any more
    b.unregister_runner(1, 11)  # not host-b's
    assert len(a.runner_rows()) == 2
    b.unregister_runner(1, 10)
    assert [(r.host, r.pid) for r in a.runner_rows()] == [("host-a", 11)]


# -- wake-ups and a server restart ----------------------------------------------------------

def test_a_listening_runner_wakes_when_a_job_is_queued(open_pg: Opener):
    listener, caller = open_pg(), open_pg("web")
    assert listener.wait_for_work(0.1)  # first: it begins listening (nothing known before)
    started = time.monotonic()
    assert not listener.wait_for_work(0.3)
    assert time.monotonic() - started >= 0.25
    woke: list[float] = []
    thread = threading.Thread(target=lambda: woke.append(
        time.monotonic() if listener.wait_for_work(20) else 0.0))
    thread.start()
    time.sleep(0.3)
    sent = time.monotonic()
    caller.insert(job(), T)
    thread.join()
    assert woke and 0 < woke[0] - sent < 5
    for _ in range(3):
        caller.insert(job(), T)
    time.sleep(0.3)  # all three delivered: one wake-up consumes them
    assert listener.wait_for_work(1) and not listener.wait_for_work(0.2)  # all consumed
    # what else makes a job ready wakes it too; what does not, does not
    caller.register_runner(0, 1, 1.0, T)
    got = caller.claim(T, 0, 1)
    assert got is not None and not listener.wait_for_work(0.3)
    caller.finish(got.id, 1, T, outcome=Outcome.FAILED, error="E: x", retry_at=T)
    assert listener.wait_for_work(5)
    got = caller.claim(T, 0, 1)
    assert got is not None and caller.hand_back(got.id, got.attempts)
    assert listener.wait_for_work(5)
    got = caller.claim(T, 0, 1)
    assert got is not None
    caller.finish(got.id, got.attempts, T, outcome=Outcome.COMPLETED)
    assert not listener.wait_for_work(0.3)
    cancelled = caller.cancel(caller.insert(job(), T)[0], T).id
    assert listener.wait_for_work(5) and not listener.wait_for_work(0.3)  # the insert's
    caller.retry(cancelled, T)
    assert listener.wait_for_work(5)


def test_a_store_outlives_a_server_restart(open_pg: Opener, pg_server: PgServer):
    store = open_pg()
    job_id, _ = store.insert(job(), T)
    store.register_runner(0, 1, 1.0, T)
    pg_server.restart()
    try:
        store.get(job_id)  # the old session is gone: this call may fail, once
    except StoreError as exc:
        assert "connection lost" in str(exc) and pg_server.password not in str(exc)
    assert store.get(job_id).id == job_id  # the next one connects again
    assert store.claim(T, 0, 1) is not None
    assert store.wait_for_work(0.1)  # listening now
    pg_server.restart()
    with pytest.raises(StoreError, match="connection lost"):
        store.wait_for_work(5)
    assert store.wait_for_work(5)  # listening again (what it missed meanwhile: unknown)


# -- errors: one line, exit 4, no password anywhere -----------------------------------------

def no_password_anywhere(project_path: Path, result: subprocess.CompletedProcess[str],
                         password: str) -> None:
    assert password not in result.stdout + result.stderr
    for path in project_path.rglob("*"):
        if path.is_file():
            assert password.encode() not in path.read_bytes(), path


def cli_error(project, url: str, password: str) -> str:
    result = project.cli("exec", "jobs", "noop", BGRUN_STORE=url)
    assert result.returncode == 4, result.stderr
    assert result.stdout == "" and len(result.stderr.strip().splitlines()) == 1
    no_password_anywhere(project.path, result, password)
    assert "Traceback" not in result.stderr
    said = result.stderr.strip()
    logged = [e["error"] for e in project.events(errors=True)]
    assert logged and logged[-1] == "StoreError: " + said.removeprefix("bgrun: error: ")
    return said


def test_a_wrong_password_is_one_line_exit_4_and_never_shown(project, pg_server: PgServer,
                                                             pg_url: str):
    secret = "Wr0ng-s3cret-pw"
    url = pg_url.replace(pg_server.password, secret)
    said = cli_error(project, url, secret)
    assert "authentication failed" in said and "postgresql://postgres@127.0.0.1:" in said
    assert pg_server.password not in said


def test_an_unreachable_server_is_one_line_exit_4(project, pg_server: PgServer):
    url = pg_server.url("jobs").replace(f":{pg_server.port}/", f":{free_port()}/")
    said = cli_error(project, url, pg_server.password)
    assert "is unreachable: Connection refused" in said
    started = time.monotonic()
    url = pg_server.url("jobs", host="192.0.2.1", connect_timeout="2")  # TEST-NET: no one
    said = cli_error(project, url, pg_server.password)
    assert "is unreachable" in said and time.monotonic() - started < 15


def test_a_database_that_is_not_bgruns_is_refused_and_left_alone(project,
                                                                pg_server: PgServer):
    db = pg_server.new_database(template=None)
    pg_server.admin("CREATE SCHEMA bgrun", dbname=db)
    pg_server.admin("CREATE TABLE bgrun.jobs (mine text)", dbname=db)
    said = cli_error(project, pg_server.url(db), pg_server.password)
    assert "is not a bgrun database" in said
    assert pg_server.admin("SELECT count(*) FROM pg_tables WHERE schemaname = 'bgrun'",
                           dbname=db) == [(1,)]


def test_a_store_of_a_newer_bgrun_is_refused_by_the_cli(project, pg_server: PgServer,
                                                        pg_url: str):
    db = pg_url.rsplit("/", 1)[1]
    pg_server.admin(f"UPDATE bgrun.schema_version SET version = {VERSION + 1}", dbname=db)
    said = cli_error(project, pg_url, pg_server.password)
    assert f"newer bgrun (schema {VERSION + 1}" in said
    assert pg_server.admin("SELECT count(*) FROM bgrun.jobs", dbname=db) == [(0,)]


def test_without_psycopg_a_postgresql_url_names_the_extra(project, pg_url: str):
    code = ("import sys; sys.modules['psycopg'] = None; from bgrun.cli import main;"
            " sys.argv = ['bgrun', 'exec', 'jobs', 'noop']; main()")
    result = subprocess.run([sys.executable, "-c", code], cwd=project.path, text=True,
                            capture_output=True, env={**os.environ, "BGRUN_STORE": pg_url},
                            timeout=60)
    assert result.returncode == 4
    assert result.stderr.strip().splitlines() == [
        "bgrun: error: BGRUN_STORE names a PostgreSQL database, but psycopg is not"
        " installed: pip install 'bgrun[postgres]'"]



# -- plans and sessions --------------------------------------------------------------------

def test_claims_walk_the_claim_indexes_not_the_table(open_pg: Opener, pg_url: str):
    open_pg()
    from bgrun.store import pgsql

    with psycopg.connect(pg_url, autocommit=True) as conn:
        conn.execute(  # a history of finished jobs, a backlog of waiting ones
            "INSERT INTO bgrun.jobs (target, method, params, status, priority, attempts,"
            " retries, created_at, run_at, ready_at, cwd, python, env, allowlist, queue)"
            " SELECT 'jobs', 'noop', '[]', CASE WHEN n % 10 = 0 THEN 'waiting'"
            " ELSE 'completed' END, n % 3, 1, 0, n, n, n, '/', 'py', '{}', 'a',"
            " 'q' || (n % 4) FROM generate_series(1, 20000) AS n")
        conn.execute("ANALYZE bgrun.jobs")
        args = {"now": T, "queues": ["q1", "q2"]}
        for statement, index in [(pgsql.PICK, "jobs_claim"),
                                 (pgsql.PICK_IN, "jobs_queue_claim")]:
            plan = "\n".join(str(r[0]) for r in conn.execute(
                ("EXPLAIN " + statement).encode(), args).fetchall())
            assert f"Index Scan using {index}" in plan, plan
            assert "Seq Scan" not in plan and "Sort" not in plan.split("LockRows")[-1], plan


def test_sessions_notice_a_dead_peer_well_within_the_lease():
    from bgrun.store.pgconnect import describe_url, session_params

    url = "postgresql://u:s3cret@db.example:6432/jobs?sslmode=require&keepalives_idle=7"
    params = session_params(url, lease=15.0)
    assert params["connect_timeout"] == 10 and params["keepalives"] == 1
    assert params["keepalives_idle"] == "7"  # the URL's own setting wins
    assert params["tcp_user_timeout"] == 5000 and params["sslmode"] == "require"
    assert (params["keepalives_interval"] * params["keepalives_count"]) < 15
    assert session_params(url + "&connect_timeout=3", 15.0)["connect_timeout"] == "3"
    assert describe_url(url) == "postgresql://u@db.example:6432/jobs"


@pytest.mark.parametrize(("url", "shown"), [
    ("postgres://bgrun:s3cret@db:5433/jobs?sslmode=verify-full&password=s3cret",
     "postgresql://bgrun@db:5433/jobs"),
    ("postgresql://bgrun:p@s3cret@db/jobs", "postgresql://bgrun@db:5432/jobs"),
    ("postgresql://bgrun:s3cret%40x@h1:5432,h2:5433/jobs", "postgresql://bgrun@h1:5432,h2:5433/jobs"),
    ("postgresql://bgrun:s3cret@[::1]:6000/jobs", "postgresql://bgrun@[::1]:6000/jobs"),
    ("postgresql://bgrun:s3cret@db", "postgresql://bgrun@db:5432/bgrun"),
])
def test_a_store_is_described_without_its_password(url: str, shown: str, tmp_path: Path):
    from bgrun.store.factory import describe_store

    config = Config.load(cwd=tmp_path, environ={"BGRUN_STORE": url})
    assert describe_store(config) == shown and "s3cret" not in shown


def test_check_names_the_store_its_kind_and_schema_never_the_password(
        project, pg_server: PgServer, pg_url: str):
    fresh = pg_server.url(pg_server.new_database(template=None))
    result = project.cli("check", BGRUN_STORE=fresh)
    where = fresh.replace(f":{pg_server.password}@", "@")
    assert f"store {where} (none yet: the first job queued makes it)," in result.stdout
    no_password_anywhere(project.path, result, pg_server.password)
    assert project.cli("exec", "jobs", "noop", BGRUN_STORE=pg_url).returncode == 0
    result = project.cli("check", BGRUN_STORE=pg_url)
    where = pg_url.replace(f":{pg_server.password}@", "@")
    assert f"store {where} (1 job(s); postgresql, schema {VERSION})," in result.stdout
    no_password_anywhere(project.path, result, pg_server.password)
    listed = project.cli("list", "--verbose", BGRUN_STORE=pg_url)
    assert listed.stderr.strip() == f"bgrun: store {where}"


def test_the_server_ends_a_cut_hosts_transactions_within_the_lease(
        open_pg: Opener, pg_server: PgServer, pg_url: str):
    """A host cut off mid-transaction holds row and advisory locks (a queue's claims)
    until the server gives up on it: its session tells the server to probe and to end a
    transaction left idle for a third of the lease."""
    db = pg_url.rsplit("/", 1)[1]
    pg_server.admin(f"ALTER DATABASE {db} SET synchronous_commit = off")  # a DBA's choice
    store = open_pg(BGRUN_LEASE="6")
    shown = {r["name"]: r["setting"] for r in store._db.read(  # type: ignore[attr-defined]
        "SELECT name, setting FROM pg_settings WHERE name IN ('tcp_keepalives_idle',"
        " 'tcp_keepalives_count', 'tcp_user_timeout', 'idle_in_transaction_session_timeout',"
        " 'synchronous_commit')")}
    third = str(int((6 - 6 / 15) * 1000 / 3))  # of the lease row's term: 6 s less a look
    assert shown == {"tcp_keepalives_idle": "1", "tcp_keepalives_count": "3",
                     "tcp_user_timeout": third, "idle_in_transaction_session_timeout": third,
                     "synchronous_commit": "on"}
    session = store._db  # type: ignore[attr-defined]
    with pytest.raises(StoreError, match="connection lost"), session.write() as cur:
        cur.execute("SELECT 1")
        time.sleep(3)  # idle in its transaction, as a frozen or cut-off host would be
        cur.execute("SELECT 1")
    assert store.counts() == {}  # the next call connects again


def test_racing_claims_of_a_limited_queue_take_every_free_slot(open_pg: Opener):
    """Two claims racing for a queue with free slots both succeed: each counts and picks
    its slot under the queue's lock, never both the same slot (one would then fail)."""
    from bgrun.queues import QueuePlan

    plan = QueuePlan(None, {"q": 3})
    first, second, third = open_pg(), open_pg(), open_pg()
    first.register_runner(0, 1, 1.0, T)
    first.register_runner(1, 2, 1.0, T)  # (the two racing claims share a runner's lease)
    misses = 0
    for _ in range(30):
        for _ in range(3):
            first.insert(job(queue="q"), T)
        running = first.claim(T, 0, 1, plan)
        assert running is not None
        barrier = threading.Barrier(2)
        got: list[JobRecord | None] = []

        def claim(store: Store) -> None:
            barrier.wait()
            got.append(store.claim(T, 1, 2, plan))

        threads = [threading.Thread(target=claim, args=(s,)) for s in (second, third)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        misses += got.count(None)
        for claimed in [running, *got]:
            if claimed is not None:
                first.finish(claimed.id, 1, T, outcome=Outcome.COMPLETED)
    assert misses == 0
    assert first.counts() == {"completed": 90}


# -- a real cut: a host in a network namespace, over TCP --------------------------------

CUT_CALLER = """
import sys, time
from pathlib import Path
from bgrun.config import Config
from bgrun.errors import StoreError
from bgrun.store import open_store
folder = Path(sys.argv[1])
store = open_store(Config.load(cwd=folder))
store.counts()
(folder / "ready").touch()
while not (folder / "go").exists():
    time.sleep(0.05)
started = time.monotonic()
try:
    store.counts()
    (folder / "err").write_text("none")
except StoreError as exc:
    (folder / "err").write_text(f"{time.monotonic() - started:.2f} {exc}")
started = time.monotonic()
try:  # a runner waiting for work: its new session gives up by tcp_user_timeout too
    store.wait_for_work(1)
    (folder / "waited").write_text("none")
except StoreError as exc:
    (folder / "waited").write_text(f"{time.monotonic() - started:.2f}")
while not (folder / "healed").exists():
    time.sleep(0.05)
(folder / "after").write_text(repr(store.counts()))
"""


def test_a_black_holed_host_learns_within_its_lease_and_is_back_after_the_heal(
        pg_server: PgServer, pg_url: str, tmp_path: Path):
    """A call sent into a black hole fails by tcp_user_timeout (a third of the lease),
    not after the kernel's minutes of retransmissions; the next call after the heal
    connects again."""
    from tests.conftest import wait_until
    from tests.netns import Network, skip_unless_possible

    skip_unless_possible()
    with Network(tmp_path) as net:
        host = net.add("h1")
        url = pg_url.replace("@127.0.0.1:", f"@{host.server_addr}:")
        proc = host.popen([sys.executable, "-c", CUT_CALLER, str(tmp_path)],
                          env=host.env(url, BGRUN_LEASE="6"), cwd=tmp_path, output="out")
        wait_until(lambda: (tmp_path / "ready").exists() or proc.poll() is not None, 60)
        host.blackhole()
        (tmp_path / "go").touch()
        wait_until(lambda: (tmp_path / "waited").exists() or proc.poll() is not None, 30)
        host.heal()
        (tmp_path / "healed").touch()
        proc.wait(timeout=60)
        said = (host.home / "out").read_text()
    took, _, error = (tmp_path / "err").read_text().partition(" ")
    assert "connection lost" in error and pg_server.password not in error, said
    assert 1.5 < float(took) < 6.0, error  # tcp_user_timeout 2 s, well within the lease
    assert float((tmp_path / "waited").read_text()) < 5.0, said  # not connect_timeout (10 s)
    assert (tmp_path / "after").read_text() == "{}", said
