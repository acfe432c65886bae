"""The store contract (bgrun/store/base.py), one suite run against every backend.

A new backend passes when it is one more entry in BACKENDS. Several tests open the
store from more than one connection or process, since racing writers are what the
contract promises about.
"""

from __future__ import annotations

import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from bgrun.config import Config
from bgrun.errors import InvalidStateError, NoSuchJobError
from bgrun.queues import QueuePlan
from bgrun.records import JobStatus, Outcome, State
from bgrun.store import NewJob, Role, Store, open_store

#: One entry per backend: how to make the BGRUN_* settings of a new, empty store (in a
#: test's folder, with the test's fixtures at hand).
BACKENDS: dict[str, Callable[[Path, pytest.FixtureRequest], dict[str, str]]] = {
    "sqlite": lambda folder, _: {"BGRUN_STORE": str(folder / "store.sqlite3"),
                                 "BGRUN_LOG_DIR": str(folder / "logs"), "BGRUN_HOST": "host-a"},
    # a database of its own on the session's throwaway server (conftest.pg_url)
    "postgresql": lambda folder, request: {"BGRUN_STORE": request.getfixturevalue("pg_url"),
                                           "BGRUN_LOG_DIR": str(folder / "logs"),
                                           "BGRUN_HOST": "host-a"},
}
T = 1_800_000_000.0  # a fixed "now": the store takes time as an argument

Opener = Callable[..., Store]


@pytest.fixture(params=list(BACKENDS))
def environ(request: pytest.FixtureRequest, tmp_path: Path) -> dict[str, str]:
    return BACKENDS[request.param](tmp_path, request)


@pytest.fixture
def open_(environ: dict[str, str], tmp_path: Path) -> Iterator[Opener]:
    """Opens one more connection to the test's store; all are closed at the end."""
    opened: list[Store] = []

    def opener(role: Role = Role.CALLER) -> Store:
        opened.append(open_store(Config.load(cwd=tmp_path, environ=environ), role))
        return opened[-1]

    yield opener
    for store in opened:
        store.close()


@pytest.fixture
def store(open_: Opener) -> Store:
    """The test's store, with its usual runner (slot 0, pid 1) registered: a runner
    registers before it claims (where the store is leased, a claim needs a live lease)."""
    store = open_()
    store.register_runner(0, 1, 1.0, T)
    return store


def job(priority: int = 0, run_at: float = T, unique: str | None = None, held: int = 0,
        target: str = "jobs") -> NewJob:
    return NewJob(target=target, method="noop", params_json="[]", priority=priority,
                  retries=0, timeout=None, run_at=run_at, cwd="/srv", python=sys.executable,
                  env_json='{"K": "v"}', allowlist="allowlist.toml", unique_key=unique,
                  held=held)


def ids(jobs: list) -> list[str | None]:
    return [j.id if j is not None else None for j in jobs]


# -- queueing and claiming ---------------------------------------------------------------

def test_insert_stores_a_waiting_job_and_get_reads_it_back(store: Store):
    job_id, new = store.insert(job(priority=3, target="jobs.Greeter"), T)
    got = store.get(job_id)
    assert new and got.id == job_id and got.stored_status == State.WAITING
    assert (got.target, got.priority, got.attempts, got.created_at) == ("jobs.Greeter", 3, 0, T)
    assert got.status_at(T) == JobStatus.QUEUED and not got.cancel_requested
    assert store.launch_spec(job_id) == (sys.executable, '{"K": "v"}')
    with pytest.raises(NoSuchJobError):
        store.get(str(int(job_id) + 1))
    with pytest.raises(NoSuchJobError):
        store.get("x")


def test_claim_order_is_priority_then_readiness_then_age(store: Store):
    low, _ = store.insert(job(1, T - 50), T)
    high_late, _ = store.insert(job(5, T - 10), T)
    high_early, _ = store.insert(job(5, T - 20), T)
    high_early_too, _ = store.insert(job(5, T - 20), T)
    negative, _ = store.insert(job(-2, T - 90), T)
    claimed = [store.claim(T, 0, 1) for _ in range(6)]
    assert ids(claimed) == [high_early, high_early_too, high_late, low, negative, None]
    first = claimed[0]
    assert first is not None and first.stored_status == State.RUNNING and first.attempts == 1
    assert store.get(high_early).runner_pid == 1
    assert [a.number for a in store.attempts_of(high_early)] == [1]


def test_a_delayed_job_waits_for_its_time(store: Store):
    later, _ = store.insert(job(9, T + 60), T)
    assert store.claim(T, 0, 1) is None
    assert store.next_run_at() == T + 60
    assert store.get(later).status_at(T) == JobStatus.SCHEDULED
    assert store.counts(T) == {"scheduled": 1}
    assert ids(store.list_jobs(status="scheduled", now=T)) == [later]
    assert store.list_jobs(status="queued", now=T) == []
    claimed = store.claim(T + 60, 0, 1)
    assert claimed is not None and claimed.id == later
    assert store.next_run_at() is None


def test_held_jobs_are_claimed_only_by_their_holder_until_released(store: Store):
    held, _ = store.insert(job(held=-4242), T)
    assert store.claim(T, 0, 1) is None and store.next_run_at() is None
    assert store.holders() == [-4242]
    assert store.release_holds([-4242]) == 1 and store.holders() == []
    claimed = store.claim(T, 0, 1)
    assert claimed is not None and claimed.id == held
    other, _ = store.insert(job(held=-7), T)
    store.register_runner(-7, 7, 1.0, T)  # (a foreground run registers as a runner does)
    one = store.claim_one(other, T, -7, 7)
    assert one is not None and one.id == other and store.claim_one(other, T, -7, 7) is None


def test_racing_claims_never_take_a_job_twice(store: Store, open_: Opener):
    for _ in range(40):
        store.insert(job(), T)
    taken: list[str] = []

    def claim_all(s: Store) -> None:
        while (got := s.claim(T, 0, 1)) is not None:
            taken.append(got.id)

    threads = [threading.Thread(target=claim_all, args=(open_(Role.RUNNER),)) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(taken, key=int) == [str(i) for i in range(1, 41)]


def test_the_child_is_recorded_only_while_the_job_runs(store: Store):
    job_id, _ = store.insert(job(), T)
    store.set_child(job_id, 99, 1.5)
    assert store.child_of(job_id) is None  # waiting: nothing to record
    claimed = store.claim(T, 0, 1)
    assert claimed is not None and store.child_of(job_id) is None
    store.set_child(job_id, 99, 1.5)
    assert store.child_of(job_id) == (99, 1.5)
    assert [r[:4] for r in store.running()] == [(job_id, 1, 0, 1)]
    store.finish(job_id, 1, T, outcome=Outcome.COMPLETED, result_json="null")
    assert store.child_of(job_id) is None and store.running() == []


# -- unique keys -------------------------------------------------------------------------

def test_a_unique_key_keeps_one_live_job(store: Store):
    first, new = store.insert(job(unique="nightly"), T)
    assert new
    assert store.insert(job(unique="nightly"), T + 1) == (first, False)
    other, new = store.insert(job(unique="hourly"), T)
    assert new and other != first
    assert store.claim(T, 0, 1) is not None  # running still holds the key
    assert store.insert(job(unique="nightly"), T + 2) == (first, False)
    store.finish(first, 1, T + 3, outcome=Outcome.COMPLETED, result_json="null")
    again, new = store.insert(job(unique="nightly"), T + 4)
    assert new and int(again) == int(other) + 1  # ids stay consecutive after a refusal
    assert len(store.list_jobs(limit=0)) == 3


RACE = """
import sys, time
from pathlib import Path
from bgrun.config import Config
from bgrun.store import NewJob, open_store
start = float(sys.argv[1])
store = open_store(Config.load(cwd=Path(sys.argv[2])))
job = NewJob("jobs", "noop", "[]", 0, 0, None, 0.0, "/", sys.executable, "{}", "a", "race")
while time.time() < start:
    pass
print(*store.insert(job, time.time()))
"""


def test_processes_racing_one_unique_key_store_exactly_one_job(
        store: Store, environ: dict[str, str], tmp_path: Path):
    env = {"PATH": "/usr/bin:/bin", **environ}
    start = time.time() + 2.0  # every process connected and spinning before it
    procs = [subprocess.Popen([sys.executable, "-c", RACE, str(start), str(tmp_path)],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
             for _ in range(6)]
    answers = [p.communicate(timeout=60) for p in procs]
    assert [err for _, err in answers if err] == []
    told = [out.split() for out, _ in answers]
    assert len({job_id for job_id, _ in told}) == 1
    assert sorted(new for _, new in told) == ["False"] * 5 + ["True"]
    assert len(store.list_jobs(limit=0)) == 1


# -- settling an attempt -----------------------------------------------------------------

def test_finish_happens_exactly_once(store: Store):
    job_id, _ = store.insert(job(), T)
    store.claim(T, 0, 1)
    assert store.finish(job_id, 1, T + 1, outcome=Outcome.COMPLETED, result_json="7"
                        ) == State.COMPLETED
    before, attempts = store.get(job_id), store.attempts_of(job_id)
    for outcome in (Outcome.FAILED, Outcome.COMPLETED, Outcome.CANCELLED):
        assert store.finish(job_id, 1, T + 2, outcome=outcome, error="late") is None
    assert store.finish(job_id, 2, T + 2, outcome=Outcome.FAILED, error="wrong") is None
    assert store.get(job_id) == before and store.attempts_of(job_id) == attempts
    assert (before.result_json, before.finished_at, before.runner_pid) == ("7", T + 1, None)
    assert attempts[0].outcome == Outcome.COMPLETED and attempts[0].finished_at == T + 1


def test_a_failure_with_a_retry_left_waits_again(store: Store):
    job_id, _ = store.insert(job(), T)
    store.claim(T, 0, 1)
    assert store.finish(job_id, 1, T + 1, outcome=Outcome.FAILED, error="E: x",
                        traceback="tb", retry_at=T + 30) == State.WAITING
    got = store.get(job_id)
    assert got.status_at(T + 1) == JobStatus.SCHEDULED and got.run_at == T + 30
    assert got.finished_at is None and got.error == "E: x" and got.attempts == 1
    assert store.claim(T + 29, 0, 1) is None
    again = store.claim(T + 30, 0, 1)
    assert again is not None and again.attempts == 2
    assert store.finish(job_id, 2, T + 31, outcome=Outcome.FAILED, error="E: y") == State.FAILED
    assert [(a.number, a.outcome) for a in store.attempts_of(job_id)] == [
        (1, Outcome.RETRYING), (2, Outcome.FAILED)]


def test_a_handed_back_attempt_does_not_count(store: Store):
    job_id, _ = store.insert(job(), T)
    store.claim(T, 0, 1)
    assert store.hand_back(job_id, 1)
    got = store.get(job_id)
    assert got.stored_status == State.WAITING and got.attempts == 0
    assert store.attempts_of(job_id) == [] and not store.hand_back(job_id, 1)
    assert store.finish(job_id, 1, T, outcome=Outcome.COMPLETED) is None


def test_without_a_live_lease_a_runner_claims_nothing_and_its_verdict_is_refused(
        store: Store):
    """Where the store is leased (several hosts): a runner whose lease row is gone was, or
    is about to be, taken over. Elsewhere its slot lock says it is alive."""
    first, _ = store.insert(job(), T)
    second, _ = store.insert(job(), T)
    assert store.claim(T, 0, 1).id == first  # type: ignore[union-attr]
    store.unregister_runner(0, 1)  # as when its lease lapsed and its row was removed
    own = store.finish(first, 1, T, outcome=Outcome.COMPLETED, result_json="1", own=True)
    claimed = store.claim(T, 0, 1)
    if not store.leased:
        assert own == State.COMPLETED and claimed is not None and claimed.id == second
        return
    assert own is None and claimed is None and store.claim_one(second, T, 0, 1) is None
    assert store.get(first).stored_status == State.RUNNING
    # the one that takes it over records the verdict; registered again, the runner claims
    assert store.finish(first, 1, T, outcome=Outcome.FAILED, error="RunnerLost: x"
                        ) == State.FAILED
    store.register_runner(0, 1, 1.0, T)
    assert store.claim(T, 0, 1).id == second  # type: ignore[union-attr]


# -- cancel and retry --------------------------------------------------------------------

def test_cancel_ends_a_waiting_job_and_flags_a_running_one(store: Store):
    waiting, _ = store.insert(job(), T)
    running, _ = store.insert(job(priority=1), T)
    store.claim(T, 0, 1)
    cancelled = store.cancel(waiting, T + 1)
    assert cancelled.stored_status == State.CANCELLED and cancelled.finished_at == T + 1
    assert cancelled.error == "Cancelled: cancelled before it ran"
    assert store.claim(T + 2, 0, 1) is None
    flagged = store.cancel(running, T + 1)
    assert flagged.stored_status == State.RUNNING and store.is_cancel_requested(running)
    # a cancel asked while it ran wins over a failure, even one with a retry left
    assert store.finish(running, 1, T + 2, outcome=Outcome.FAILED, error="Timeout: t",
                        retry_at=T + 3) == State.CANCELLED
    with pytest.raises(InvalidStateError, match="is cancelled: nothing to cancel"):
        store.cancel(running, T + 4)
    with pytest.raises(NoSuchJobError):
        store.cancel("999", T)


def test_a_cancelled_running_job_that_completes_stays_completed(store: Store):
    job_id, _ = store.insert(job(), T)
    store.claim(T, 0, 1)
    store.cancel(job_id, T + 1)
    assert store.finish(job_id, 1, T + 2, outcome=Outcome.COMPLETED, result_json="1"
                        ) == State.COMPLETED


def test_cancel_racing_claim_ends_one_way_or_the_other(store: Store, open_: Opener):
    canceller, claimer = store, open_(Role.RUNNER)
    for _ in range(30):
        job_id, _ = canceller.insert(job(), T)
        got: list = []
        threads = [
            threading.Thread(target=lambda: got.append(claimer.claim_one(job_id, T, 0, 1))),
            threading.Thread(target=lambda: canceller.cancel(job_id, T)),
        ]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        final = canceller.get(job_id)
        assert final.cancel_requested
        if got[0] is None:  # the cancel came first: nothing ever ran
            assert final.stored_status == State.CANCELLED and final.attempts == 0
        else:  # the claim came first: it runs, flagged for its runner to end
            assert final.stored_status == State.RUNNING and final.attempts == 1
            assert final.error is None and final.finished_at is None  # never cancelled as waiting


def test_retry_queues_a_finished_failure_again_and_refuses_the_rest(store: Store):
    failed, _ = store.insert(job(), T)
    store.claim(T, 0, 1)
    store.finish(failed, 1, T + 1, outcome=Outcome.FAILED, error="E: x", traceback="tb")
    again = store.retry(failed, T + 5)
    assert again.id == failed and again.stored_status == State.WAITING and again.attempts == 0
    assert (again.run_at, again.error, again.traceback, again.finished_at) == (
        T + 5, None, None, None)
    with pytest.raises(InvalidStateError, match="is waiting: only failed or cancelled"):
        store.retry(failed, T + 6)
    store.claim(T + 6, 0, 1)
    with pytest.raises(InvalidStateError, match="is running"):
        store.retry(failed, T + 6)
    store.finish(failed, 1, T + 7, outcome=Outcome.COMPLETED, result_json="1")
    with pytest.raises(InvalidStateError, match="is completed"):
        store.retry(failed, T + 8)
    with pytest.raises(NoSuchJobError):
        store.retry("999", T)


def test_retry_refuses_a_job_whose_unique_key_is_live_again(store: Store):
    old, _ = store.insert(job(unique="nightly"), T)
    store.cancel(old, T + 1)
    new, _ = store.insert(job(unique="nightly"), T + 2)
    with pytest.raises(InvalidStateError, match=f"job {new} holds its unique key"):
        store.retry(old, T + 3)
    assert store.get(old).stored_status == State.CANCELLED  # nothing changed
    assert store.insert(job(unique="nightly"), T + 4) == (new, False)


# -- reading: paging, counts; deleting ---------------------------------------------------

def test_list_pages_newest_first_by_before(store: Store):
    made = [store.insert(job(target="a" if i % 2 else "b"), T)[0] for i in range(7)]
    pages, before = [], None
    while page := store.list_jobs(limit=3, before=before):
        pages.append(ids(page))
        before = page[-1].id
    assert pages == [made[6:3:-1], made[3:0:-1], made[0:1]]
    assert ids(store.list_jobs(target="a", limit=0)) == made[5::-2]
    assert ids(store.list_jobs(target="a", limit=2, before=made[5])) == [made[3], made[1]]
    assert ids(store.list_jobs(limit=0)) == made[::-1]
    with pytest.raises(NoSuchJobError):
        store.list_jobs(before="x")


def test_counts_and_status_filters_agree(store: Store):
    done, _ = store.insert(job(priority=2), T)
    store.claim(T, 0, 1)
    store.finish(done, 1, T, outcome=Outcome.COMPLETED, result_json="1")
    running, _ = store.insert(job(priority=1), T)
    store.claim(T, 0, 1)
    queued, _ = store.insert(job(), T)
    scheduled, _ = store.insert(job(run_at=T + 9), T)
    cancelled, _ = store.insert(job(run_at=T + 9), T)
    store.cancel(cancelled, T)
    counts = store.counts(T)
    assert counts == {"completed": 1, "running": 1, "queued": 1, "scheduled": 1, "cancelled": 1}
    for word, expected in [("completed", done), ("running", running), ("queued", queued),
                           ("scheduled", scheduled), ("cancelled", cancelled)]:
        assert ids(store.list_jobs(status=word, now=T)) == [expected]
    assert store.list_jobs(status="failed", now=T) == []
    later = {"completed": 1, "running": 1, "queued": 2, "cancelled": 1}  # none scheduled
    assert store.counts(T + 10) == later


def test_delete_takes_only_finished_jobs(store: Store):
    done, _ = store.insert(job(), T)
    store.claim(T, 0, 1)
    store.finish(done, 1, T + 1, outcome=Outcome.COMPLETED, result_json="1")
    waiting, _ = store.insert(job(), T)
    assert store.finished_before(T + 2) == [done] and store.finished_before(T + 1) == []
    assert store.delete([done, waiting, "999"]) == [done]
    assert store.attempts_of(done) == []
    with pytest.raises(NoSuchJobError):
        store.get(done)
    assert store.get(waiting).stored_status == State.WAITING


# -- watching work move: progress, stats, runners ----------------------------------------

def test_progress_is_kept_for_the_running_attempt_only(store: Store):
    job_id, _ = store.insert(job(), T)
    assert not store.set_progress(job_id, 1, '{"done": 1}')  # waiting: no attempt yet
    store.claim(T, 0, 1)
    assert store.set_progress(job_id, 1, '{"done": 1}')
    assert not store.set_progress(job_id, 2, '{"done": 2}')  # not its running attempt
    assert store.get(job_id).progress_json == '{"done": 1}'
    store.finish(job_id, 1, T, outcome=Outcome.FAILED, error="E: x", retry_at=T)
    assert not store.set_progress(job_id, 1, '{"done": 3}')  # attempt 1 is over: fenced
    again = store.claim(T, 0, 1)
    assert again is not None and again.progress_json is None  # a new attempt starts empty


def test_finished_per_minute_and_active_counts(store: Store):
    minute = int(T // 60)
    for outcome, at in [(Outcome.COMPLETED, T), (Outcome.COMPLETED, T + 61),
                        (Outcome.FAILED, T + 62)]:
        job_id, _ = store.insert(job(), T)
        store.claim(T, 0, 1)
        store.finish(job_id, 1, at, outcome=outcome, error="E: x")
    assert store.finished_per_minute(minute, minute + 2) == [
        (minute, 1, 0), (minute + 1, 1, 1), (minute + 2, 0, 0)]
    assert store.active_by_queue(T) == {}
    store.insert(job(), T)
    store.insert(job(run_at=T + 60), T)
    store.insert(job(priority=5), T)
    store.claim(T, 0, 1)
    assert store.active_by_queue(T) == {"default": {"queued": 1, "scheduled": 1, "running": 1}}
    store.insert(job()._replace(queue="reports"), T)
    store.insert(job(run_at=T + 60)._replace(queue="reports"), T)
    assert store.active_by_queue(T) == {"default": {"queued": 1, "scheduled": 1, "running": 1},
                                        "reports": {"queued": 1, "scheduled": 1, "running": 0}}


def test_runner_rows_follow_registration_and_the_running_job(store: Store):
    store.register_runner(1, 111, 5.0, T)
    store.register_runner(0, 100, 4.0, T, queues="a,b")
    job_id, _ = store.insert(job(target="jobs.Greeter"), T)
    store.claim(T, 1, 111)
    rows = store.runner_rows()
    assert [(r.slot, r.pid, r.queues, r.job_id, r.target) for r in rows] == [
        (0, 100, "a,b", None, None), (1, 111, None, job_id, "jobs.Greeter")]
    store.register_runner(1, 222, 6.0, T + 1)  # an heir takes the dead runner's slot
    assert [(r.slot, r.pid, r.job_id) for r in store.runner_rows()] == [
        (0, 100, None), (1, 222, None)]
    store.unregister_runner(1, 111)  # not its row any more: nothing happens
    store.unregister_runner(0, 100)
    assert [r.pid for r in store.runner_rows()] == [222]


def test_a_job_tells_which_host_queued_it_and_which_ran_it(store):
    job_id, _ = store.insert(job()._replace(queued_on="web-1"), T)
    waiting = store.get(job_id)
    assert (waiting.queued_on, waiting.host) == ("web-1", None)
    store.claim(T, 0, 1)
    shown = store.get(job_id).to_dict(T)
    assert (shown["queued_on"], shown["host"]) == ("web-1", "host-a")
    assert [r.host for r in store.running()] == ["host-a"]
    store.register_runner(0, 1, 1.0, T)
    assert [r.host for r in store.runner_rows()] == ["host-a"]


def test_a_database_url_names_a_server_store_never_a_file(tmp_path):
    """Read as a path, it would make an SQLite file under ./postgresql:/ (and keep jobs
    where no other host looks); runners started from these settings get the URL back."""
    for url in ("postgresql://bgrun:s3cret@db.example:5432/jobs", "postgres://u:s3cret@h/d"):
        config = Config.load(cwd=tmp_path, environ={"BGRUN_STORE": url})
        assert config.store_url == url
        assert config.store == tmp_path / "logs" / "postgresql.store"
        assert config.as_environ()["BGRUN_STORE"] == url
        assert Config.load(cwd=tmp_path, environ=config.as_environ()) == config
    assert list(tmp_path.iterdir()) == []


# -- named queues ------------------------------------------------------------------------


def queued(store: Store, queue: str, priority: int = 0, run_at: float = T) -> str:
    return store.insert(job(priority=priority, run_at=run_at)._replace(queue=queue), T)[0]


def test_claims_honour_queue_limits_and_priority_across_queues(store):
    plan = QueuePlan(None, {"reports": 2, "held": 0})
    reports = [queued(store, "reports", priority=9) for _ in range(3)]
    queued(store, "held", priority=10)
    other = queued(store, "default", priority=1)
    claimed = [store.claim(T, 0, 1, plan) for _ in range(4)]
    assert [c.id if c else None for c in claimed] == [reports[0], reports[1], other, None]
    assert store.next_run_at(plan) is None  # only full or paused queues wait
    assert store.next_run_at() == T  # without limits, they would be claimable
    assert store.finish(reports[0], 1, T, outcome=Outcome.COMPLETED) == State.COMPLETED
    assert store.claim(T, 0, 1, plan).id == reports[2]  # its slot was freed
    assert [j.queue for j in store.list_jobs(queue="reports", limit=0)] == ["reports"] * 3


def test_a_lowered_limit_lets_no_claim_through_until_the_count_falls_under_it(store):
    jobs = [queued(store, "q") for _ in range(4)]
    for _ in range(3):
        assert store.claim(T, 0, 1, QueuePlan(None, {"q": 3})) is not None
    lowered = QueuePlan(None, {"q": 1})
    store.register_runner(-5, 5, 1.0, T)
    store.finish(jobs[0], 1, T, outcome=Outcome.COMPLETED)
    assert store.claim(T, 0, 1, lowered) is None  # 2 still run: over the new limit
    assert store.claim_one(jobs[3], T, -5, 5, lowered) is None  # `bgrun run` waits too
    store.finish(jobs[1], 1, T, outcome=Outcome.FAILED)
    assert store.claim(T, 0, 1, lowered) is None  # 1 runs: at the limit
    store.hand_back(jobs[2], 1)
    assert store.claim(T, 0, 1, lowered).id == jobs[2]


def test_a_runner_serving_some_queues_claims_only_from_them(store):
    mail = queued(store, "mail", priority=0)
    queued(store, "reports", priority=5)
    plan = QueuePlan(frozenset({"mail", "sms"}), {})
    assert store.next_run_at(plan) == T
    assert store.claim(T, 0, 1, plan).id == mail
    assert store.claim(T, 0, 1, plan) is None and store.next_run_at(plan) is None


def test_two_running_jobs_never_hold_one_queue_slot(store, open_):
    a, b = queued(store, "q"), queued(store, "q")
    store.claim(T, 0, 1, QueuePlan(None, {"q": 1}))
    # A runner that believes the limit is 2 takes slot 1, never slot 0 twice.
    store.register_runner(1, 2, 1.0, T)
    assert store.claim(T, 1, 2, QueuePlan(None, {"q": 2})) is not None
    assert {j.id for j in store.list_jobs(status="running", queue="q", limit=0)} == {a, b}
