"""End to end in headless Chromium: sign in, watch a job run, cancel it, retry a failed one.

Drives Debian's /usr/bin/chromium through Playwright (which never downloads a browser
here). Set UPDATE_DASHBOARD_SCREENSHOT=1 to refresh docs/dashboard*.png. The last tests
watch work move: a progress bar, the chart of finished jobs, the runners view.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from bgrun import run_background_job
from bgrun.config import Config
from bgrun.records import Outcome, iso
from bgrun.slots import slot_lock
from bgrun.store import NewJob
from tests.conftest import runner_processes, wait_until

pytest.importorskip("flask")
sync_api = pytest.importorskip("playwright.sync_api")

pytestmark = pytest.mark.browser

CHROMIUM = "/usr/bin/chromium"
ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking",
        "--disable-component-update", "--disable-sync", "--no-first-run"]
TOKEN = "browser-token-0123456789abcdef"
ZONE = "Asia/Kolkata"  # +05:30: a local time can never be mistaken for UTC
DOCS = Path(__file__).resolve().parent.parent / "docs"

APP_FILES = {
    "myapp/__init__.py": "",
    "myapp/mail.py": '''
        import time

        class Mailer:
            def send(self, to, subject="Welcome aboard"):
                print(f"sending {subject!r} to {to}", flush=True)
                time.sleep(0.2)
                return {"to": to, "status": "sent"}

            def send_digest(self, day):
                print(f"digest for {day}", flush=True)
                return 0
    ''',
    "myapp/reports.py": '''
        import time

        import bgrun

        def build_monthly(month, seconds=60):
            steps = int(seconds * 2)
            for step in range(steps):
                bgrun.progress(step, steps, f"{month}: aggregating rows, step {step} of {steps}")
                print(f"{month}: step {step}: aggregated rows", flush=True)
                time.sleep(0.5)
    ''',
    "myapp/billing.py": '''
        from pathlib import Path

        def charge(customer, cents):
            print(f"charging {customer}: {cents} cents", flush=True)
            if not Path("gateway-up").exists():
                raise ConnectionError("payment gateway timed out after 30 s")
            return {"customer": customer, "charged": cents}
    ''',
}
ALLOWLIST = '''
[jobs."myapp.mail.Mailer"]
methods = ["send", "send_digest"]

[jobs."myapp.reports"]
methods = ["build_monthly"]

[jobs."myapp.billing"]
methods = ["charge"]
'''


@pytest.fixture
def app_project(project, monkeypatch):
    """The test project plus a small realistic application (mail, reports, billing)."""
    for name in [m for m in sys.modules if m == "myapp" or m.startswith("myapp.")]:
        monkeypatch.delitem(sys.modules, name)  # an earlier test's myapp, in its own folder
    for name, text in APP_FILES.items():
        path = project.path / name
        path.parent.mkdir(exist_ok=True)
        path.write_text(textwrap.dedent(text))
    with open(project.path / "allowlist.toml", "a") as f:
        f.write(ALLOWLIST)
    project.ctx  # a store to show: the dashboard only reads one, it never makes one
    return project


@pytest.fixture
def dashboard_url(app_project) -> Iterator[str]:
    """The real `bgrun dashboard` on a free port of 127.0.0.1."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "bgrun", "dashboard", "--port", "0"], cwd=app_project.path,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        env={**os.environ, "BGRUN_DASHBOARD_TOKEN": TOKEN},
    )
    line = proc.stdout.readline()
    match = re.search(r"serving on (http://\S+/)", line)
    try:
        assert match, line + proc.stderr.read()
        yield match.group(1)
    finally:
        proc.terminate()
        proc.communicate(timeout=10)


@pytest.fixture
def page(dashboard_url):
    """A signed-out browser tab in a far-away time zone."""
    if not Path(CHROMIUM).exists():
        pytest.skip("no /usr/bin/chromium")
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        context = browser.new_context(timezone_id=ZONE, locale="en-GB",
                                      viewport={"width": 1280, "height": 720})
        context.set_default_timeout(15_000)
        tab = context.new_page()
        errors: list[str] = []
        tab.on("pageerror", lambda exc: errors.append(str(exc)))
        tab.on("console", lambda msg: errors.append(msg.text) if msg.type == "error" else None)
        yield tab
        browser.close()
    expected = "status of 401"  # the wrong token sign_in() tries first
    assert [e for e in errors if expected not in e] == [], errors  # no script error, no CSP
    assert sum(expected in e for e in errors) <= 1


def sign_in(page, url: str) -> None:
    page.goto(url)
    sync_api.expect(page).to_have_url(re.compile(r"/login$"))
    page.fill("#token", "wrong-token-0123456789")
    page.click("button[type=submit]")
    sync_api.expect(page.locator(".flash.error")).to_contain_text("not right")
    page.fill("#token", TOKEN)
    page.click("button[type=submit]")
    sync_api.expect(page).to_have_url(url)
    sync_api.expect(page.locator("h1, nav.counts").first).to_be_visible()


def local(iso: str) -> str:
    """HH:MM of an ISO UTC time in the browser's zone, as the page should show it."""
    return datetime.fromisoformat(iso).astimezone(ZoneInfo(ZONE)).strftime("%H:%M")


def test_sign_in_watch_cancel_and_retry(app_project, dashboard_url, page, tmp_path):
    expect = sync_api.expect
    sign_in(page, dashboard_url)
    expect(page.locator("#empty")).to_be_visible()

    running = run_background_job("myapp.reports", "build_monthly", ["2026-05"])
    row = page.locator(f'tr[data-id="{running.id}"]')
    expect(row.locator(".badge")).to_have_text("running")  # appeared without a reload
    expect(page.locator('[data-count="running"]')).to_have_text("1")
    created = row.locator("time")
    iso = created.get_attribute("datetime")
    expect(created).to_contain_text(local(iso))
    assert "+00:00" not in created.inner_text()

    row.locator("td.id a").click()
    expect(page).to_have_url(f"{dashboard_url}jobs/{running.id}")
    expect(page.locator("#status")).to_have_text("running")
    expect(page.locator("#output")).to_contain_text("2026-05: step 2")  # output follows
    save_screenshot(page, tmp_path / "dashboard-job.png")
    page.click("#cancel-button")
    expect(page.locator("#status")).to_have_text("cancelled")
    expect(page.locator("#retry-button")).to_be_visible()
    expect(page.locator("#cancel-button")).to_have_count(0)
    assert app_project.show(running.id)["status"] == "cancelled"

    failed = run_background_job("myapp.billing", "charge", ["cus_42", 1999])
    assert app_project.wait(failed.id)["status"] == "failed"
    page.goto(f"{dashboard_url}jobs/{failed.id}")
    expect(page.locator("#error")).to_have_text("ConnectionError: payment gateway timed out"
                                                " after 30 s")
    expect(page.locator("#traceback")).to_contain_text("Traceback")
    (app_project.path / "gateway-up").touch()
    page.click("#retry-button")
    expect(page.locator("#status")).to_have_text("completed")
    expect(page.locator("#result")).to_contain_text('"charged": 1999')
    by = [(e["job"], e["status"]) for e in app_project.events() if e.get("by") == "dashboard"]
    assert (running.id, "cancel-requested") in by and (failed.id, "queued") in by


def test_delete_asks_first_and_goes_back_to_the_list(app_project, dashboard_url, page):
    job = run_background_job("myapp.mail.Mailer", "send", ["ada@example.com"])
    app_project.wait(job.id)
    sign_in(page, dashboard_url)
    page.goto(f"{dashboard_url}jobs/{job.id}")
    page.once("dialog", lambda dialog: dialog.dismiss())
    page.click("#delete-button")
    sync_api.expect(page.locator("#status")).to_have_text("completed")
    page.once("dialog", lambda dialog: dialog.accept())
    page.click("#delete-button")
    sync_api.expect(page).to_have_url(dashboard_url)
    sync_api.expect(page.locator("#empty")).to_be_visible()


def test_screenshot_of_a_busy_job_list(app_project, dashboard_url, page, tmp_path):
    history(app_project)  # first: the jobs below are the newest, on the first page
    for to in ["ada@example.com", "grace@example.com", "linus@example.com"]:
        run_background_job("myapp.mail.Mailer", "send", [to])
    failed = run_background_job("myapp.billing", "charge", ["cus_1138", 4900], retries=1)
    app_project.wait(failed.id)
    cancelled = run_background_job("myapp.mail.Mailer", "send_digest", ["2026-05-30"], delay=600)
    cancelled.cancel()
    run_background_job("myapp.mail.Mailer", "send_digest", ["2026-06-01"], delay=3600)
    reports = [run_background_job("myapp.reports", "build_monthly", [m], priority=5)
               for m in ("2026-04", "2026-05")]
    queued = run_background_job("myapp.mail.Mailer", "send",
                                {"to": "margaret@example.com", "subject": "Your invoice"})
    wait_until(lambda: all(r.status == "running" for r in reports))
    wait_until(lambda: (reports[0].progress or {}).get("done", 0) >= 20)  # a visible bar
    sign_in(page, dashboard_url)
    for word in ("completed", "failed", "running", "queued", "scheduled", "cancelled"):
        sync_api.expect(page.locator(f".badge.{word}").first).to_be_visible()
    assert queued.status == "queued"
    page.goto(f"{dashboard_url}?limit=12")  # the newest jobs; the chart shows the hour
    sync_api.expect(page.locator("#chart g.minute")).to_have_count(60)
    save_screenshot(page, tmp_path / "dashboard.png")


def history(project) -> None:
    """An hour of finished jobs, as a busy queue would leave behind (for the chart)."""
    config, store = Config.load(), project.ctx.store
    this_minute = int(time.time() // 60) * 60.0
    with slot_lock(project.ctx.state, -99):  # held: nobody settles these as orphans
        for ago in range(1, 60):
            busy = 3 + (ago * 7) % 5 + (4 if 20 <= ago <= 32 else 0)
            for i in range(busy):
                failed = (ago + i) % 9 == 0
                finished_at(store, this_minute - ago * 60 + i, Outcome.FAILED if failed
                            else Outcome.COMPLETED, config)


def save_screenshot(page, shot: Path) -> None:
    """Take a screenshot; copy it to docs/ when UPDATE_DASHBOARD_SCREENSHOT=1."""
    page.screenshot(path=str(shot), full_page=True)
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and shot.stat().st_size > 20_000
    if os.environ.get("UPDATE_DASHBOARD_SCREENSHOT") == "1":
        shutil.copy(shot, DOCS / shot.name)


IMPORTS = '''
    import time

    import bgrun


    def load(rows, seconds=8.0):
        for done in range(0, rows + 1, rows // 40):
            bgrun.progress(done, rows, f"loaded {done} of {rows} rows")
            time.sleep(seconds / 40)
        return rows
'''


@pytest.fixture
def importer(app_project):
    (app_project.path / "myapp" / "imports.py").write_text(textwrap.dedent(IMPORTS))
    with open(app_project.path / "allowlist.toml", "a") as f:
        f.write('\n[jobs."myapp.imports"]\nmethods = ["load"]\n')
    return app_project


def bar_value(locator) -> float:
    return float(locator.evaluate("bar => bar.value"))


def test_a_job_reporting_progress_shows_a_bar_that_moves(importer, dashboard_url, page):
    expect = sync_api.expect
    sign_in(page, dashboard_url)
    job = run_background_job("myapp.imports", "load", [4000, 10.0])
    bar = page.locator(f'tr[data-id="{job.id}"] td.progress progress')
    expect(bar).to_be_visible()  # appeared without a reload
    first = bar_value(bar)
    wait_until(lambda: bar_value(bar) > first, timeout=30)
    assert bar.evaluate("bar => bar.max") == 4000
    page.goto(f"{dashboard_url}jobs/{job.id}")
    big = page.locator("#progress-bar")
    expect(page.locator("#progress-message")).to_contain_text("loaded ")
    seen = bar_value(big)
    wait_until(lambda: bar_value(big) > seen, timeout=30)
    expect(page.locator("#status")).to_have_text("completed", timeout=60_000)
    assert bar_value(big) == 4000  # the last report stays after the end
    expect(page.locator("#progress-text")).to_have_text("4000 / 4000 (100%)")
    expect(page.locator("#progress-message")).to_have_text("loaded 4000 of 4000 rows")


def finished_at(store, when: float, outcome: Outcome, config: Config) -> None:
    """Store a job that finished at `when` (through the store's own transitions)."""
    job_id, _ = store.insert(NewJob(
        target="myapp.mail.Mailer", method="send", params_json="[]", priority=0, retries=0,
        timeout=None, run_at=when - 1, cwd=str(config.allowlist.parent), python=sys.executable,
        env_json="{}", allowlist=str(config.allowlist), held=-99), when - 1)
    assert store.claim_one(job_id, when - 0.5, -99, os.getpid()) is not None
    store.finish(job_id, 1, when, outcome=outcome,
                 error=None if outcome == Outcome.COMPLETED else "ValueError: x")


def test_the_chart_counts_jobs_finished_in_known_minutes(app_project, dashboard_url, page):
    config = Config.load()
    store = app_project.ctx.store
    this_minute = int(time.time() // 60) * 60.0
    known = {this_minute - 300: (3, 1), this_minute - 120: (0, 2), this_minute - 3000: (5, 0),
             this_minute - 7200: (4, 4)}  # the last one is older than the hour shown
    with slot_lock(app_project.ctx.state, -99):  # held: nobody settles these as orphans
        for minute, (completed, failed) in known.items():
            for i in range(completed):
                finished_at(store, minute + 1 + i, Outcome.COMPLETED, config)
            for i in range(failed):
                finished_at(store, minute + 50 + i, Outcome.FAILED, config)
    sign_in(page, dashboard_url)
    for minute, (completed, failed) in list(known.items())[:3]:
        bar = page.locator(f'#chart g.minute[data-minute="{iso(minute)}"]')
        sync_api.expect(bar).to_have_attribute("data-completed", str(completed))
        sync_api.expect(bar).to_have_attribute("data-failed", str(failed))
        assert bar.locator("rect.completed").count() == (1 if completed else 0)
        assert bar.locator("rect.failed").count() == (1 if failed else 0)
    bars = page.locator("#chart g.minute")
    assert bars.count() == 60
    total = sum(int(bars.nth(i).get_attribute("data-completed"))
                + int(bars.nth(i).get_attribute("data-failed")) for i in range(60))
    assert total == 3 + 1 + 2 + 5  # the jobs of two hours ago are not in the last hour
    tall = page.locator(f'#chart g.minute[data-minute="{iso(this_minute - 3000)}"] rect')
    short = page.locator(f'#chart g.minute[data-minute="{iso(this_minute - 120)}"] rect')
    assert float(tall.get_attribute("height")) == pytest.approx(
        2.5 * float(short.get_attribute("height")))


def test_the_runners_view_shows_a_running_job_then_shows_it_gone(importer, dashboard_url, page,
                                                                 tmp_path):
    expect = sync_api.expect
    sign_in(page, dashboard_url)
    page.goto(f"{dashboard_url}runners")
    job = run_background_job("myapp.imports", "load", [1000, 60.0])
    row = page.locator("#runner-rows tr", has_text=f"{job.id} myapp.imports.load")
    expect(row).to_be_visible()  # appeared without a reload
    expect(row.locator(".badge")).to_have_text("busy")
    expect(row.locator("progress")).to_be_visible()
    pid = int(row.get_attribute("data-pid"))
    assert pid in [p.pid for p in runner_processes(importer)]
    wait_until(lambda: bar_value(row.locator("progress")) > 0)
    save_screenshot(page, tmp_path / "dashboard-runners.png")
    os.kill(pid, signal.SIGKILL)  # a runner killed outright leaves its row in the store
    expect(page.locator(f'#runner-rows tr[data-pid="{pid}"]')).to_have_count(0)
    expect(page.locator("#runner-rows tr", has_text=f"{job.id} ")).to_have_count(0)
    # (Its row may still be stored, or replaced by the next runner of its slot: either way
    # it is not shown. tests/test_watch_cli.py checks a stored dead row is filtered out.)
