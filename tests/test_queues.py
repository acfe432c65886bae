"""Named queues: names, allowlist tables and defaults, and where queues show."""

from __future__ import annotations

import itertools
import json
import re
import shutil
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from bgrun import allowlist, run_background_job
from bgrun.errors import AllowlistError, BadQueueError
from bgrun.queues import check_queue_name, parse_queue_list
from bgrun.slots import slot_if_dead
from tests.conftest import runner_processes, wait_until

GOOD_NAMES = ["default", "a", "0", "reports", "mail-out", "mail_out", "a" * 64, "9x-_"]
BAD_NAMES = ["", "A", "Reports", "-a", "_a", "a b", "a.b", "a/b", "a" * 65, "é", "a\n",
             " a", "a,b"]


@pytest.mark.parametrize("name", GOOD_NAMES)
def test_good_queue_names(name):
    assert check_queue_name(name) == name


@pytest.mark.parametrize("name", [*BAD_NAMES, None, 3, b"a"])
def test_bad_queue_names_are_refused_in_one_line(name):
    with pytest.raises(BadQueueError) as info:
        check_queue_name(name)
    assert "\n" not in str(info.value)
    assert info.value.exit_code == 2


def test_queue_lists():
    assert parse_queue_list("a") == {"a"}
    assert parse_queue_list("a, b,a") == {"a", "b"}
    for bad in ("", "a,", "a,,b", "A"):
        with pytest.raises(BadQueueError):
            parse_queue_list(bad)


def load_text(tmp_path, text: str) -> allowlist.Allowlist:
    path = tmp_path / "allowlist.toml"
    path.write_text(text)
    return allowlist.load(path)


def test_allowlist_queue_defaults_and_limits(tmp_path):
    rules = load_text(tmp_path, '[jobs."a.B"]\nmethods = ["run"]\nqueue = "reports"\n\n'
                                '[jobs."c"]\nmethods = ["go"]\n\n'
                                '[queues.reports]\nconcurrency = 1\n\n'
                                '[queues."mail"]\nconcurrency = 0\n')
    assert rules.rules["a.B"].queue == "reports"
    assert rules.rules["c"].queue is None
    assert rules.limits == {"reports": 1, "mail": 0}


@pytest.mark.parametrize(("text", "line", "words"), [
    ('[jobs."a"]\nmethods = ["x"]\nqueue = "Big"\n', 3, "not a queue name"),
    ('[jobs."a"]\nmethods = ["x"]\nqueue = 3\n', 3, "wrong type"),
    ('[jobs."a"]\nmethods = ["x"]\n\n[queues.Bad]\nconcurrency = 1\n', 4, "bad queue name"),
    ('[jobs."a"]\nmethods = ["x"]\n\n[queues.ok]\nconcurrency = -1\n', 5, "whole number"),
    ('[jobs."a"]\nmethods = ["x"]\n\n[queues.ok]\nconcurrency = 1.5\n', 5, "whole number"),
    ('[jobs."a"]\nmethods = ["x"]\n\n[queues.ok]\nconcurrency = true\n', 5, "whole number"),
    ('[jobs."a"]\nmethods = ["x"]\n\n[queues.ok]\nconcurrency = "2"\n', 5, "whole number"),
    ('[jobs."a"]\nmethods = ["x"]\n\n[queues.ok]\n', 4, "needs 'concurrency'"),
    ('[jobs."a"]\nmethods = ["x"]\n\n[queues.ok]\nconcurrency = 1\nlimit = 2\n', 6,
     "unknown key"),
    ('[jobs."a"]\nmethods = ["x"]\n\n[queues]\nok = 2\n', 5, "must be a table"),
    ('queues = 3\n[jobs."a"]\nmethods = ["x"]\n', 1, "table of queues"),
])
def test_bad_queue_settings_name_the_file_and_line(tmp_path, text, line, words):
    with pytest.raises(AllowlistError) as info:
        load_text(tmp_path, text)
    message = str(info.value)
    assert f"allowlist.toml:{line}:" in message
    assert words in message
    assert "\n" not in message


# -- queueing, showing, listing ---------------------------------------------------------


def set_limits(project, **limits: int) -> None:
    """Rewrite the project's allowlist with `[queues.NAME] concurrency = N` tables."""
    path = project.path / "allowlist.toml"
    text = path.read_text().split("\n[queues.")[0].rstrip("\n") + "\n"
    for name, limit in limits.items():
        text += f"\n[queues.{name}]\nconcurrency = {limit}\n"
    path.write_text(text)


def one_error_line(result: subprocess.CompletedProcess[str], code: int) -> str:
    assert result.returncode == code, (result.returncode, result.stdout, result.stderr)
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("bgrun: error: "), result.stderr
    assert "Traceback" not in result.stderr
    return lines[0]


def test_queue_comes_from_the_call_then_the_allowlist_then_default(project):
    path = project.path / "allowlist.toml"
    path.write_text(path.read_text().replace("priority = 0", 'priority = 0\nqueue = "people"'))
    greeted = run_background_job("jobs.Greeter", "greet", ["ada"], delay=3600)
    moved = run_background_job("jobs.Greeter", "greet", ["bob"], delay=3600, queue="vip")
    plain = run_background_job("jobs", "noop", delay=3600)
    by_cli = project.cli("exec", "jobs", "noop", "--delay", "3600", "--queue", "mail-2")
    assert by_cli.returncode == 0, by_cli.stderr
    cli_id = by_cli.stdout.strip()
    assert [greeted.info()["queue"], moved.info()["queue"], plain.info()["queue"]] == [
        "people", "vip", "default"]
    assert project.show(cli_id)["queue"] == "mail-2"
    listed = project.cli("list", "--queue", "people", "--json")
    assert [job["id"] for job in json.loads(listed.stdout)] == [greeted.id]
    assert [j["queue"] for j in json.loads(project.cli("list", "--json").stdout)] == [
        "mail-2", "default", "vip", "people"]
    assert "people" in project.cli("list").stdout and "queue:" in project.cli("show", cli_id).stdout
    cancelled = project.cli("cancel", plain.id)
    assert cancelled.returncode == 0, cancelled.stderr
    lines = [e for e in project.events() if e["job"] != "-"]
    assert len(lines) == 5 and all("queue" in e for e in lines), lines
    assert {e["job"]: e["queue"] for e in lines} == {
        greeted.id: "people", moved.id: "vip", plain.id: "default", cli_id: "mail-2"}


def test_event_lines_of_a_run_carry_the_queue(project):
    job = run_background_job("jobs", "fail", retries=1, queue="flaky")
    assert job.wait(30) == "failed"
    statuses = [(e["status"], e.get("queue")) for e in project.events() if e["job"] == job.id]
    assert statuses == [("queued", "flaky"), ("running", "flaky"), ("retrying", "flaky"),
                        ("running", "flaky"), ("failed", "flaky")]
    ran = project.cli("run", "jobs", "noop", "--queue", "fg")
    assert ran.returncode == 0, ran.stderr
    assert {e.get("queue") for e in project.events() if e.get("note") == "foreground"} == {"fg"}


def test_bad_queue_names_are_refused_everywhere(project):
    with pytest.raises(BadQueueError):
        run_background_job("jobs", "noop", queue="Reports")
    for command in (["exec", "jobs", "noop", "--queue", "a b"],
                    ["run", "jobs", "noop", "--queue", "-x"],
                    ["exec", "jobs", "noop", "--queue", ""]):
        assert "not a queue name" in one_error_line(project.cli(*command), 2)
    assert not (project.log_dir / "bgrun.sqlite3").exists()  # nothing stored (no store made)
    rejected = [e for e in project.events(errors=True) if e["status"] == "rejected"]
    assert len(rejected) == 4 and all(e["error"].startswith("BadQueue: ") for e in rejected)
    assert rejected[1]["queue"] == "a b"
    one_error_line(project.cli("list", "--queue", "A"), 2)
    one_error_line(project.cli("worker", "--queue", "mail,Bad"), 2)


def test_a_bad_queue_table_makes_the_allowlist_unusable(project):
    path = project.path / "allowlist.toml"
    lines = path.read_text().count("\n")
    path.write_text(path.read_text() + "\n[queues.reports]\nconcurrency = -1\n")
    line = one_error_line(project.cli("exec", "jobs", "noop"), 4)
    assert f"allowlist.toml:{lines + 3}:" in line and "concurrency" in line
    with pytest.raises(AllowlistError):
        run_background_job("jobs", "noop")
    path.write_text(path.read_text().replace("-1", "1").replace('"jobs.Greeter"]',
                                                                '"jobs.Greeter"]\nqueue = "Q"'))
    assert "allowlist.toml:" in one_error_line(project.cli("exec", "jobs", "noop"), 4)


def test_dashboard_filters_by_queue(project):
    pytest.importorskip("flask")
    from bgrun.config import Config
    from bgrun.dashboard.app import create_app

    token = "test-token-0123456789abcdef"
    bearer = {"Authorization": f"Bearer {token}"}
    mail = run_background_job("jobs", "noop", delay=3600, queue="mail")
    run_background_job("jobs", "noop", delay=3600)
    client = create_app(Config.load(), token).test_client()
    api = client.get("/api/jobs?queue=mail", headers=bearer)
    assert [(j["id"], j["queue"]) for j in api.get_json()] == [(mail.id, "mail")]
    assert client.get("/api/jobs?queue=Mail", headers=bearer).status_code == 400
    page = client.get("/?queue=mail", headers=bearer).get_data(as_text=True)
    assert [mail.id] == re.findall(r'data-id="(\d+)"', page)
    assert 'name="queue" value="mail"' in page


def test_a_schema_1_store_is_migrated_to_queues(tmp_path):
    from bgrun.store.sqlite import SqliteStore as Store

    old = tmp_path / "old.sqlite3"
    shutil.copy(Path(__file__).parent / "data" / "store-v1.sqlite3", old)
    store = Store(old, tmp_path)
    jobs = store.list_jobs(limit=0)
    assert jobs and {job.queue for job in jobs} == {"default"}
    assert store.list_jobs(queue="default", limit=0) == jobs
    store.close()
    with sqlite3.connect(old) as db:  # (tests/test_store_migration.py: equal to a new one)
        names = {r[0] for r in db.execute("SELECT name FROM sqlite_master")}
    assert {"jobs_queue_slot", "jobs_queue_claim", "jobs_queue_next"} <= names


# -- limits under racing runners, a dying runner, a lowered limit --------------------------


class RunningSampler:
    """Counts the running jobs of a queue every 50 ms, in a thread, from the store."""

    def __init__(self, project, queue: str) -> None:
        self.store = project.ctx.store
        self.queue = queue
        self.samples: list[tuple[float, int]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            running = self.store.list_jobs(status="running", queue=self.queue, limit=0)
            self.samples.append((time.time(), len(running)))
            self._stop.wait(0.05)

    def stop(self) -> list[int]:
        self._stop.set()
        self._thread.join(5)
        return [n for _, n in self.samples]


def start_workers(project, count: int, *args: str) -> list[subprocess.Popen[bytes]]:
    workers = [subprocess.Popen([sys.executable, "-m", "bgrun", "worker", *args],
                                cwd=project.path) for _ in range(count)]
    def held(slot: int) -> bool:
        with slot_if_dead(project.ctx.state, slot) as dead:
            return not dead
    wait_until(lambda: all(held(slot) for slot in range(count)))  # each has its slot
    assert all(w.poll() is None for w in workers)
    return workers


def stop_workers(workers: list[subprocess.Popen[bytes]]) -> None:
    for worker in workers:
        if worker.poll() is None:
            worker.send_signal(signal.SIGTERM)
    for worker in workers:
        try:
            worker.wait(15)
        except subprocess.TimeoutExpired:
            worker.kill()


def most_at_once(intervals: list[tuple[float, float]]) -> int:
    """The most intervals that overlap at one moment."""
    edges = sorted([(start, 1) for start, _ in intervals] + [(end, -1) for _, end in intervals])
    now = best = 0
    for _, step in edges:  # an end sorts before a start at the same instant
        now += step
        best = max(best, now)
    return best


def child_intervals(project, name: str) -> list[tuple[float, float]]:
    starts = {m["tag"]: m["t"] for m in project.marks(name) if m.get("start")}
    ends = {m["tag"]: m["t"] for m in project.marks(name) if m.get("end")}
    return [(starts[tag], ends[tag]) for tag in ends]


@pytest.mark.slow
def test_four_racing_runners_never_exceed_a_queue_limit(project, monkeypatch):
    monkeypatch.setenv("BGRUN_CONCURRENCY", "4")
    set_limits(project, reports=2)
    workers = start_workers(project, 4)
    sampler = RunningSampler(project, "reports")
    try:
        jobs = [run_background_job("jobs", "record", ["race", i, 0.02], queue="reports")
                for i in range(200)]
        others = [run_background_job("jobs", "record", ["free", i, 0.02]) for i in range(20)]
        for job in jobs + others:
            assert job.wait(120) == "completed"
    finally:
        samples = sampler.stop()
        stop_workers(workers)
    assert max(samples) == 2, samples  # the limit was reached, and never passed
    assert most_at_once(child_intervals(project, "race")) == 2
    assert len(child_intervals(project, "race")) == 200
    # The other queue is not starved behind the full one: it is done long before it.
    assert max(end for _, end in child_intervals(project, "free")) < max(
        end for _, end in child_intervals(project, "race"))


@pytest.mark.slow
def test_a_runner_killed_mid_job_keeps_the_limit_and_the_queue_goes_on(project, monkeypatch):
    monkeypatch.setenv("BGRUN_CONCURRENCY", "3")
    set_limits(project, solo=1)
    workers = start_workers(project, 3)
    sampler = RunningSampler(project, "solo")
    try:
        jobs = [run_background_job("jobs", "record", ["solo", i, 2.5], queue="solo")
                for i in range(4)]
        first = wait_until(lambda: project.marks("solo"))[0]
        victim = next(j for j in jobs if j.info()["status"] == "running")
        runner_pid = project.ctx.store.get(victim.id).runner_pid
        assert runner_pid in [w.pid for w in workers]
        killed = time.time()
        next(w for w in workers if w.pid == runner_pid).send_signal(signal.SIGKILL)
        # Settled by another runner: its orphaned child is ended first, unless it is done.
        assert victim.wait(30) in ("failed", "completed")
        if victim.status == "failed":
            assert victim.info()["error"].startswith("RunnerLost")
        for job in jobs:
            if job is not victim:
                assert job.wait(60) == "completed"
    finally:
        samples = sampler.stop()
        stop_workers(workers)
    assert max(samples) == 1, samples
    settled = project.ctx.store.get(victim.id).finished_at
    later = [m for m in project.marks("solo") if m.get("start") and m["tag"] != first["tag"]]
    # The dead runner's job kept the queue's slot until it was settled.
    assert len(later) == 3 and all(m["t"] > max(killed, settled) for m in later)
    assert most_at_once(child_intervals(project, "solo")) == 1


@pytest.mark.slow
def test_a_lowered_limit_admits_no_claim_until_the_count_falls_under_it(project, monkeypatch):
    monkeypatch.setenv("BGRUN_CONCURRENCY", "3")
    set_limits(project, batch=3)
    workers = start_workers(project, 3)
    sampler = RunningSampler(project, "batch")
    try:
        jobs = [run_background_job("jobs", "record", ["batch", i, 1.0 + 0.3 * (i % 3)],
                                   queue="batch") for i in range(9)]
        wait_until(lambda: sampler.samples and sampler.samples[-1][1] == 3)
        set_limits(project, batch=1)
        lowered = time.time()
        for job in jobs:
            assert job.wait(60) == "completed"
    finally:
        sampler.stop()
        stop_workers(workers)
    after = [n for t, n in sampler.samples if t > lowered + 0.1]
    first_low = next(i for i, n in enumerate(after) if n <= 1)
    assert all(a >= b for a, b in itertools.pairwise(after[:first_low + 1]))  # only falls
    assert max(after[first_low:]) == 1, after
    runs = [(record.started_at, record.finished_at)
            for record in (project.ctx.store.get(j.id) for j in jobs)]
    late = [start for start, _ in runs if start > lowered + 0.1]
    assert len(late) >= 5
    for start in late:  # claimed under the new limit: alone
        assert sum(s < start < f for s, f in runs) == 0


def test_concurrency_0_pauses_a_queue_and_runners_do_not_stay_for_it(project):
    set_limits(project, held=0)
    paused = run_background_job("jobs", "record", ["held"], queue="held")
    other = run_background_job("jobs", "noop")
    assert other.wait(30) == "completed"
    wait_until(lambda: not runner_processes(project), timeout=20)  # none spins or stays
    assert paused.status == "queued" and project.marks("held") == []
    assert "queue held is paused" in paused.info()["waiting_reason"]
    set_limits(project, held=1)
    assert project.cli("recover").returncode == 0
    assert paused.wait(30) == "completed"


def test_worker_with_queue_serves_only_its_queues(project, monkeypatch):
    monkeypatch.setenv("BGRUN_CONCURRENCY", "2")
    # No runner starts on demand (a caller's, or one the worker spreads to) until `other`
    # is queued: one that did could take mail or sms first, since it serves every queue.
    monkeypatch.setenv("BGRUN_START_RUNNERS", "0")
    workers = start_workers(project, 1, "--queue", "mail,sms")
    try:
        mail = run_background_job("jobs", "record", ["w", "mail"], queue="mail")
        sms = run_background_job("jobs", "record", ["w", "sms"], queue="sms")
        for job in (mail, sms):
            assert job.wait(30) == "completed"
        monkeypatch.delenv("BGRUN_START_RUNNERS")
        other = run_background_job("jobs", "record", ["w", "other"], queue="reports")
        assert other.wait(30) == "completed"
    finally:
        stop_workers(workers)
    ran_by = {e["job"]: int(e["pid"]) for e in project.events() if e["status"] == "running"}
    assert ran_by[mail.id] == ran_by[sms.id] == workers[0].pid
    assert ran_by[other.id] != workers[0].pid  # a runner started on demand took it


def test_a_job_waiting_for_its_queue_says_so_and_bgrun_run_waits_too(project):
    set_limits(project, one=1)
    first = run_background_job("jobs", "record", ["one", 0, 2.0], queue="one")
    second = run_background_job("jobs", "record", ["one", 1], queue="one")
    wait_until(lambda: first.status == "running")
    assert "queue one is at its limit (1 running" in second.info()["waiting_reason"]
    ran = project.cli("run", "jobs", "record", "one", "2", "--queue", "one")
    assert ran.returncode == 0, ran.stderr
    assert second.wait(30) == "completed"
    starts = [m for m in project.marks("one") if m.get("start")]
    ends = {m["tag"]: m["t"] for m in project.marks("one") if m.get("end")}
    assert starts[0]["tag"] == 0 and all(m["t"] > ends[0] for m in starts[1:])
    assert most_at_once(child_intervals(project, "one")) == 1
