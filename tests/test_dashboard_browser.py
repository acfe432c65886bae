"""End to end in headless Chromium: sign in, watch a job run, cancel it, retry a failed one.

Drives Debian's /usr/bin/chromium through Playwright (which never downloads a browser
here). Set UPDATE_DASHBOARD_SCREENSHOT=1 to refresh docs/dashboard*.png.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from bgrun import run_background_job
from tests.conftest import wait_until

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

        def build_monthly(month, seconds=60):
            for step in range(int(seconds * 2)):
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
def app_project(project):
    """The test project plus a small realistic application (mail, reports, billing)."""
    for name, text in APP_FILES.items():
        path = project.path / name
        path.parent.mkdir(exist_ok=True)
        path.write_text(textwrap.dedent(text))
    with open(project.path / "allowlist.toml", "a") as f:
        f.write(ALLOWLIST)
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
    sign_in(page, dashboard_url)
    for word in ("completed", "failed", "running", "queued", "scheduled", "cancelled"):
        sync_api.expect(page.locator(f".badge.{word}").first).to_be_visible()
    assert queued.status == "queued"
    save_screenshot(page, tmp_path / "dashboard.png")


def save_screenshot(page, shot: Path) -> None:
    """Take a screenshot; copy it to docs/ when UPDATE_DASHBOARD_SCREENSHOT=1."""
    page.screenshot(path=str(shot), full_page=True)
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and shot.stat().st_size > 20_000
    if os.environ.get("UPDATE_DASHBOARD_SCREENSHOT") == "1":
        shutil.copy(shot, DOCS / shot.name)
