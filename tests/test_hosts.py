"""Several hosts on one store: leases, takeovers, fencing, output from any host, views.

A "host" here is a folder of its own (allowlist, jobs module, logs/) whose processes run
with their own BGRUN_HOST, all on this machine and one real PostgreSQL server (conftest
pg_url): what differs between two hosts for bgrun is exactly that. Network cuts between
real network namespaces are tests/test_netns*.py's.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psutil
import psycopg
import pytest

from tests.conftest import Project, processes_of, runner_processes, wait_until

LEASE = 2.0  # seconds: short, so a lapse is quick to see
CHATTY = '''
import sys, time

def talk(lines, pause=0.05):
    for n in range(int(lines)):
        print("line", n, flush=True)
        time.sleep(pause)
    return int(lines)
'''


@pytest.fixture
def pg_project(project: Project, pg_url: str, monkeypatch: pytest.MonkeyPatch) -> Project:
    """The project as host `a` of a PostgreSQL store with a short lease."""
    monkeypatch.setenv("BGRUN_STORE", pg_url)
    monkeypatch.setenv("BGRUN_HOST", "a")
    monkeypatch.setenv("BGRUN_LEASE", str(LEASE))
    # One slot: no second runner is being started (a double fork) while a test kills
    # the host, which could then survive the kill and settle the job as host `a`.
    monkeypatch.setenv("BGRUN_CONCURRENCY", "1")
    (project.path / "chatty.py").write_text(CHATTY)
    with open(project.path / "allowlist.toml", "a") as f:
        f.write('\n[jobs."chatty"]\nmethods = ["talk"]\n')
    return project


def other_host(project: Project, name: str) -> Path:
    """A second host's folder: the same code and allowlist, logs of its own."""
    folder = project.path / f"host-{name}"
    folder.mkdir()
    for file in ("jobs.py", "chatty.py", "allowlist.toml"):
        shutil.copy(project.path / file, folder / file)
    return folder


def bgrun(folder: Path, host: str, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    """`bgrun ARGS` on host `host` (its folder, its BGRUN_HOST)."""
    return subprocess.run([sys.executable, "-m", "bgrun", *args], cwd=folder,
                          capture_output=True, text=True, timeout=60,
                          env={**os.environ, "BGRUN_HOST": host, **env})


_WORKERS: list[subprocess.Popen[bytes]] = []


@pytest.fixture(autouse=True)
def _end_workers() -> Iterator[None]:
    """The workers a test started by hand are killed (and reaped) after it."""
    yield
    while _WORKERS:
        worker = _WORKERS.pop()
        worker.kill()
        worker.wait(timeout=30)


def start_worker(folder: Path, host: str, **env: str) -> subprocess.Popen[bytes]:
    """`bgrun worker` started by hand on host `host`."""
    worker = subprocess.Popen([sys.executable, "-m", "bgrun", "worker"], cwd=folder,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                              env={**os.environ, "BGRUN_HOST": host, **env})
    _WORKERS.append(worker)
    return worker


def queue(project: Project, *args: str) -> str:
    result = project.cli("exec", *args)
    assert result.returncode == 0, result.stderr
    return result.stdout.strip()


def job_row(url: str, job_id: str) -> dict[str, Any]:
    """The job's row as the server has it (read with SQL: no bgrun look settles it)."""
    with psycopg.connect(url, autocommit=True) as conn:
        cur = conn.execute("SELECT status, attempts, runner_host, runner_pid, child_pid,"
                           " error FROM bgrun.jobs WHERE id = %s", (int(job_id),))
        row = cur.fetchone()
    assert row is not None
    keys = ("status", "attempts", "host", "runner_pid", "child_pid", "error")
    return dict(zip(keys, row, strict=True))


def sql(url: str, statement: str, *args: object) -> None:
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(statement, args)  # type: ignore[arg-type]


def events(folder: Path) -> list[dict[str, str]]:
    from bgrun.joblog import EVENTS_LOG, parse_line

    path = folder / "logs" / EVENTS_LOG
    return [parse_line(line) for line in path.read_text().splitlines()] if path.exists() else []


def of_host(project: Project, host: str) -> list[psutil.Process]:
    """Every live process of host `host` (runners, watcher, job trees)."""
    found = []
    for proc in processes_of(project.path):
        with contextlib.suppress(psutil.Error):
            if proc.environ().get("BGRUN_HOST") == host:
                found.append(proc)
    return found


def kill_host(project: Project, host: str) -> None:
    """SIGKILL every process of host `host` at once, as a power cut would.

    Frozen first, all of them, and only then killed: a process that one look missed (one
    mid-exec hides its environment) must not live on to see the others die and act on it
    (a watcher would settle the job as host `host`, which a dead host never does).
    """
    frozen: dict[int, psutil.Process] = {}
    quiet = 0
    while quiet < 5:
        fresh = [p for p in of_host(project, host) if p.pid not in frozen]
        for proc in fresh:
            with contextlib.suppress(psutil.Error):
                proc.send_signal(signal.SIGSTOP)
            frozen[proc.pid] = proc
        quiet = 0 if fresh else quiet + 1
        time.sleep(0.02)
    assert frozen
    while frozen:
        for proc in frozen.values():
            with contextlib.suppress(psutil.Error):
                proc.send_signal(signal.SIGKILL)
        psutil.wait_procs(list(frozen.values()), timeout=5)
        frozen = {p.pid: p for p in of_host(project, host)}


def gone(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.Error:
        return True


# -- takeover -------------------------------------------------------------------------------


def test_a_killed_hosts_job_is_taken_over_by_another_host_after_its_lease(pg_project, pg_url):
    b = other_host(pg_project, "b")
    job_id = queue(pg_project, "--retries", "1", "jobs", "sleep", "60")
    wait_until(lambda: job_row(pg_url, job_id)["child_pid"], timeout=30)
    assert job_row(pg_url, job_id)["host"] == "a"
    worker = start_worker(b, "b")
    kill_host(pg_project, "a")
    killed = time.monotonic()
    wait_until(lambda: job_row(pg_url, job_id)["attempts"] == 2, timeout=30, pause=0.05)
    took = time.monotonic() - killed
    wait_until(lambda: job_row(pg_url, job_id)["host"] == "b", timeout=10)
    # Taken over within the lease and one look (settle_every: 1 s) plus a start-up.
    assert took < LEASE + 3, f"taken over after {took:.1f} s"
    retried = [e for e in events(b) if e["job"] == job_id and e["status"] == "retrying"]
    assert len(retried) == 1 and retried[0]["host"] == "b", events(b)
    assert retried[0]["error"].startswith("RunnerLost:") and "on a" in retried[0]["error"]
    assert not [e for e in events(pg_project.path) if e.get("status") == "retrying"]
    shown = json.loads(bgrun(b, "b", "show", job_id, "--json").stdout)
    assert shown["host"] == "b" and shown["queued_on"] == "a" and shown["status"] == "running"
    assert worker.poll() is None
    # Host a still has the file of attempt 1; its `logs` shows attempt 2's, from host b.
    wait_until(lambda: "attempt 2 started" in pg_project.cli("logs", job_id).stdout)
    assert "attempt 1 started" not in pg_project.cli("logs", job_id).stdout


def test_a_lapsed_job_with_no_attempt_left_fails_runner_lost(pg_project, pg_url):
    b = other_host(pg_project, "b")
    job_id = queue(pg_project, "jobs", "sleep", "60")
    wait_until(lambda: job_row(pg_url, job_id)["child_pid"], timeout=30)
    kill_host(pg_project, "a")
    time.sleep(LEASE)
    waited = bgrun(b, "b", "wait", job_id, "--timeout", "20")  # a waiter takes it over too
    assert waited.stdout.strip() == "failed", waited.stderr
    row = job_row(pg_url, job_id)
    assert row["status"] == "failed" and row["error"].startswith("RunnerLost:")
    failed = [e for e in events(b) if e["job"] == job_id and e["status"] == "failed"]
    assert len(failed) == 1 and failed[0]["host"] == "b"


# -- the runner's own lease -------------------------------------------------------------


def test_a_runner_whose_lease_row_is_removed_ends_its_attempt_and_records_nothing(
        pg_project, pg_url):
    job_id = queue(pg_project, "--retries", "1", "jobs", "sleep", "60")
    child = wait_until(lambda: job_row(pg_url, job_id)["child_pid"], timeout=30)
    sql(pg_url, "DELETE FROM bgrun.runners WHERE host = 'a'")
    removed = time.monotonic()
    wait_until(lambda: gone(child), timeout=10, pause=0.02)
    assert time.monotonic() - removed < LEASE
    # Either the runner's renew finds its row gone first (it ends the tree: abandoned), or
    # a takeover look on this host (the watcher's) sees the lease lapsed first, ends the
    # tree and settles the attempt, and the runner's own verdict is refused (fenced).
    gave_up = ("abandoned", "fenced")
    wait_until(lambda: any(e["status"] in gave_up for e in events(pg_project.path)))
    note = next(e for e in events(pg_project.path) if e["status"] in gave_up)
    assert note["job"] == job_id and note["attempt"] == "1"
    assert note["status"] == "fenced" or note["error"].startswith("LeaseLost:")
    # Its lost attempt is settled once (retried), and run again once it registered again.
    wait_until(lambda: job_row(pg_url, job_id)["attempts"] == 2, timeout=20)
    wait_until(lambda: job_row(pg_url, job_id)["child_pid"], timeout=20)
    verdicts = [e for e in events(pg_project.path)
                if e["job"] == job_id and e["status"] in ("retrying", "failed", "completed")]
    assert [e["status"] for e in verdicts] == ["retrying"], verdicts
    assert verdicts[0]["error"].startswith("RunnerLost: "), verdicts


def test_a_runner_frozen_past_its_lease_ends_its_attempt_when_it_wakes(pg_project, pg_url):
    b = other_host(pg_project, "b")
    job_id = queue(pg_project, "--retries", "1", "jobs", "sleep", "60")
    child = wait_until(lambda: job_row(pg_url, job_id)["child_pid"], timeout=30)
    runner = psutil.Process(job_row(pg_url, job_id)["runner_pid"])
    runner.suspend()
    try:
        time.sleep(LEASE + 0.5)
        worker = start_worker(b, "b")  # takes it over, and runs it on b
        wait_until(lambda: job_row(pg_url, job_id)["host"] == "b"
                   and job_row(pg_url, job_id)["child_pid"], timeout=20)
        assert not gone(child)  # (b never ends a tree of another host)
    finally:
        runner.resume()
    wait_until(lambda: gone(child), timeout=5, pause=0.02)
    row = job_row(pg_url, job_id)
    assert row["status"] == "running" and row["host"] == "b" and row["attempts"] == 2
    assert worker.poll() is None


def test_a_verdict_after_a_takeover_changes_nothing_and_is_logged_fenced(pg_project, pg_url):
    job_id = queue(pg_project, "chatty", "talk", "40")
    wait_until(lambda: job_row(pg_url, job_id)["child_pid"], timeout=30)
    # What a takeover's retry does to the row: waiting again (here, far in the future).
    sql(pg_url, "UPDATE bgrun.jobs SET status = 'waiting', ready_at = %s, run_at = %s"
        " WHERE id = %s", time.time() + 3600, time.time() + 3600, int(job_id))
    wait_until(lambda: any(e["status"] == "fenced" for e in events(pg_project.path)))
    fenced = next(e for e in events(pg_project.path) if e["status"] == "fenced")
    assert fenced["job"] == job_id and fenced["host"] == "a" and fenced["attempt"] == "1"
    assert job_row(pg_url, job_id)["status"] == "waiting"  # the runner's verdict: not stored
    assert not [e for e in events(pg_project.path)
                if e["job"] == job_id and e["status"] in ("completed", "failed")]


# -- output, from any host ----------------------------------------------------------------


def test_logs_of_a_job_of_another_host_come_from_the_store(pg_project, pg_url):
    b = other_host(pg_project, "b")
    job_id = queue(pg_project, "chatty", "talk", "40")
    wait_until(lambda: b"line 5" in bgrun(b, "b", "logs", job_id).stdout.encode(), timeout=30)
    followed = bgrun(b, "b", "logs", job_id, "-f")
    assert followed.returncode == 0, followed.stderr
    lines = [n for n in followed.stdout.splitlines() if n.startswith("line ")]
    assert lines == [f"line {n}" for n in range(40)]
    assert bgrun(b, "b", "logs", job_id).stdout == followed.stdout
    local = (pg_project.log_dir / "jobs" / f"{job_id}.log").read_text()
    assert followed.stdout == local


def test_output_past_the_limit_is_cut_with_a_marker_naming_host_and_file(pg_project,
                                                                         monkeypatch):
    monkeypatch.setenv("BGRUN_MAX_OUTPUT_BYTES", "1024")
    b = other_host(pg_project, "b")
    job_id = queue(pg_project, "chatty", "talk", "300", "--kw-json", "pause=0")
    assert pg_project.cli("wait", job_id).stdout.strip() == "completed"
    shown = bgrun(b, "b", "logs", job_id).stdout
    assert len(shown.encode()) <= 1024
    assert shown.endswith(f"the rest is in {pg_project.log_dir / 'jobs' / (job_id + '.log')}"
                          " on host a\n"), shown[-200:]


# -- where a job runs --------------------------------------------------------------------


def test_a_job_runs_in_its_runners_folder_and_environment(pg_project, pg_url, monkeypatch):
    monkeypatch.setenv("BGRUN_START_RUNNERS", "0")
    monkeypatch.setenv("WHO", "queuer")
    b = other_host(pg_project, "b")
    job_id = queue(pg_project, "jobs", "where")
    env_id = queue(pg_project, "jobs", "env_value", "WHO")
    time.sleep(1.0)
    assert job_row(pg_url, job_id)["status"] == "waiting"  # START_RUNNERS=0: none started
    assert not runner_processes(pg_project)
    start_worker(b, "b", WHO="runner", BGRUN_START_RUNNERS="0")
    assert bgrun(b, "b", "wait", job_id).stdout.strip() == "completed"
    assert bgrun(b, "b", "wait", env_id).stdout.strip() == "completed"
    assert pg_project.show(job_id)["result"]["cwd"] == str(b)
    assert pg_project.show(env_id)["result"] == "runner"


# -- views -----------------------------------------------------------------------------


def test_runners_show_every_live_host_with_its_lease_age(pg_project, pg_url):
    b = other_host(pg_project, "b")
    job_id = queue(pg_project, "jobs", "sleep", "60")
    wait_until(lambda: job_row(pg_url, job_id)["child_pid"], timeout=30)
    worker = start_worker(b, "b")

    def hosts() -> dict[str, Any]:
        found = json.loads(bgrun(b, "b", "runners", "--json").stdout)
        return {r["host"]: r for r in found}

    seen = wait_until(lambda: (h := hosts()) and set(h) == {"a", "b"} and h, timeout=20)
    assert seen["a"]["job"]["id"] == job_id and seen["b"]["idle"]
    assert 0 <= seen["a"]["lease_age"] < LEASE
    table = bgrun(b, "b", "runners").stdout
    assert table.splitlines()[0].split()[:5] == ["HOST", "SLOT", "PID", "QUEUES", "LEASE"]
    worker.kill()
    worker.wait(timeout=30)
    # A runner whose lease lapsed is not shown (its row stays until it is taken over).
    kill_host(pg_project, "a")
    wait_until(lambda: not hosts(), timeout=LEASE + 5)


def test_check_says_kind_and_schema_and_never_the_password(pg_project, pg_server,
                                                           monkeypatch):
    pg_server.admin("CREATE ROLE hosts_user LOGIN PASSWORD 's3cret-pw' SUPERUSER")
    try:
        name = pg_server.new_database()
        url = pg_server.url(name, user="hosts_user", password="s3cret-pw")
        monkeypatch.setenv("BGRUN_STORE", url)
        queue(pg_project, "jobs", "noop")
        checked = pg_project.cli("check")  # (exit 4: the fixtures' poison module)
        line = next(n for n in checked.stdout.splitlines() if n.startswith("store "))
        assert "job(s); postgresql, schema " in line and "hosts_user@" in line
        assert "s3cret-pw" not in checked.stdout + checked.stderr
        pg_server.drop_database(name)
    finally:
        pg_server.admin("DROP ROLE IF EXISTS hosts_user")


def test_a_foreground_run_holds_a_lease_and_is_not_taken_over(pg_project, pg_url):
    b = other_host(pg_project, "b")
    start_worker(b, "b")  # looks for lapsed leases every second meanwhile
    ran = pg_project.cli("run", "jobs", "sleep", str(3 * LEASE))
    assert ran.returncode == 0, ran.stderr
    assert "sleeping" in ran.stdout
    job_id = next(e["job"] for e in pg_project.events() if e["status"] == "completed")
    row = job_row(pg_url, job_id)
    assert row["status"] == "completed" and row["attempts"] == 1 and row["host"] == "a"
    assert not [e for e in events(b) if e["job"] == job_id]


def test_the_dashboard_of_another_host_shows_the_output_host_and_runners(pg_project, pg_url):
    from bgrun.config import Config
    from bgrun.dashboard.app import create_app

    b = other_host(pg_project, "b")
    job_id = queue(pg_project, "chatty", "talk", "20")
    assert pg_project.cli("wait", job_id).stdout.strip() == "completed"
    token = "test-token-0123456789abcdef"
    config = Config.load(cwd=b, environ={**os.environ, "BGRUN_HOST": "b"})
    client = create_app(config, token).test_client()
    bearer = {"Authorization": f"Bearer {token}"}
    output = client.get(f"/api/jobs/{job_id}/output?offset=0", headers=bearer).get_json()
    assert "line 0\n" in output["text"] and "line 19\n" in output["text"]
    page = client.get(f"/jobs/{job_id}", headers=bearer).get_data(as_text=True)
    assert "line 19" in page and "queued on a" in page
    assert client.get(f"/api/jobs/{job_id}", headers=bearer).get_json()["host"] == "a"
    assert "Lease age" in client.get("/runners", headers=bearer).get_data(as_text=True)


# -- the same on SQLite, where it applies -------------------------------------------------


def test_every_event_line_names_the_host_that_wrote_it_on_sqlite(project, monkeypatch):
    monkeypatch.setenv("BGRUN_HOST", "web1")
    job_id = queue(project, "jobs", "echo", "hi")
    assert project.cli("wait", job_id).stdout.strip() == "completed"
    project.cli("exec", "jobs", "nope")  # a refusal is an event line too
    lines = project.events()
    assert {e["status"] for e in lines} >= {"queued", "running", "completed", "rejected"}
    assert all(e["host"] == "web1" for e in lines), lines
    assert project.show(job_id)["host"] == project.show(job_id)["queued_on"] == "web1"


def test_start_runners_0_starts_none_and_a_worker_still_serves_on_sqlite(project,
                                                                        monkeypatch):
    monkeypatch.setenv("BGRUN_START_RUNNERS", "0")
    job_id = queue(project, "jobs", "echo", "hi")
    assert project.cli("recover").returncode == 0  # (which would start one otherwise)
    time.sleep(1.0)
    assert not runner_processes(project)
    assert project.show(job_id)["status"] == "queued"
    start_worker(project.path, "web1")
    assert project.cli("wait", job_id).stdout.strip() == "completed"
    runners = json.loads(project.cli("runners", "--json").stdout)
    assert [(r["host"], r["lease_age"]) for r in runners] == [("web1", None)]
    assert project.cli("runners").stdout.splitlines()[1].split()[:5] == [
        "web1", "0", str(runners[0]["pid"]), "all", "-"]


# -- the runners page, in real Chromium ----------------------------------------------------


@pytest.fixture
def b_dashboard(pg_project: Project) -> Iterator[tuple[Path, str]]:
    """Host b's folder, and its `bgrun dashboard` on a free port."""
    browser_tests = pytest.importorskip("tests.test_dashboard_browser")
    b = other_host(pg_project, "b")
    proc = subprocess.Popen(
        [sys.executable, "-m", "bgrun", "dashboard", "--port", "0"], cwd=b,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        env={**os.environ, "BGRUN_HOST": "b", "BGRUN_DASHBOARD_TOKEN": browser_tests.TOKEN},
    )
    line = proc.stdout.readline() if proc.stdout else ""
    match = re.search(r"serving on (http://\S+/)", line)
    try:
        assert match, line
        yield b, match.group(1)
    finally:
        proc.terminate()
        proc.communicate(timeout=10)


def test_the_runners_page_shows_the_runners_of_every_host(pg_project, pg_url, b_dashboard,
                                                          tmp_path):
    browser_tests = pytest.importorskip("tests.test_dashboard_browser")
    sync_api = browser_tests.sync_api
    if not Path(browser_tests.CHROMIUM).exists():
        pytest.skip("no /usr/bin/chromium")
    b, url = b_dashboard
    job_id = queue(pg_project, "chatty", "talk", "2000")
    wait_until(lambda: job_row(pg_url, job_id)["child_pid"], timeout=30)
    start_worker(b, "b")
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=browser_tests.CHROMIUM,
                                    args=browser_tests.ARGS)
        page = browser.new_page(viewport={"width": 1280, "height": 520})
        page.set_default_timeout(15_000)
        browser_tests.sign_in(page, url)
        page.goto(f"{url}runners")
        busy = page.locator("#runner-rows tr", has_text=f"{job_id} chatty.talk")
        sync_api.expect(busy.locator("td").first).to_have_text("a")
        idle = page.locator("#runner-rows tr", has_text="idle")
        sync_api.expect(idle.locator("td").first).to_have_text("b")
        lease = busy.locator("td").nth(4).inner_text()
        assert re.fullmatch(r"\d+\.\d s", lease), lease
        browser_tests.save_screenshot(page, tmp_path / "dashboard-hosts.png")
        browser.close()


def test_a_foreground_run_that_loses_its_lease_ends_its_job_and_records_nothing(
        pg_project, pg_url):
    run = subprocess.Popen([sys.executable, "-m", "bgrun", "run", "jobs", "sleep", "60"],
                           cwd=pg_project.path, stdout=subprocess.DEVNULL,
                           stderr=subprocess.DEVNULL)
    try:
        def child_pid() -> int | None:
            with contextlib.suppress(AssertionError):  # (not stored yet)
                return job_row(pg_url, "1")["child_pid"]  # type: ignore[no-any-return]
            return None

        child = wait_until(child_pid, timeout=30)
        sql(pg_url, "DELETE FROM bgrun.runners WHERE slot < 0")
        wait_until(lambda: gone(child), timeout=LEASE + 2, pause=0.02)
        run.wait(timeout=30)
    finally:
        run.kill()
        run.wait()
    abandoned = [e for e in pg_project.events() if e["status"] == "abandoned"]
    assert len(abandoned) == 1 and abandoned[0]["error"].startswith("LeaseLost:")
    assert job_row(pg_url, "1")["status"] == "running"  # nothing recorded: taken over later
