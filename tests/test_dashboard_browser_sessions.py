"""In headless Chromium: what the session cookie holds, that signing out kills every copy
of it, and that bidi controls in rows the page builds itself are spelled out."""

from __future__ import annotations

import re

import pytest

from bgrun import run_background_job
from tests.conftest import wait_until

pytest.importorskip("flask")
sync_api = pytest.importorskip("playwright.sync_api")

from tests.test_dashboard_browser import (  # noqa: E402 - after the skips
    app_project,  # noqa: F401 - fixtures used by name
    dashboard_url,  # noqa: F401
    page,  # noqa: F401
    sign_in,
)

pytestmark = pytest.mark.browser


def test_the_cookie_is_an_id_and_dies_at_sign_out(app_project, dashboard_url, page):  # noqa: F811
    sign_in(page, dashboard_url)
    cookie = next(c for c in page.context.cookies() if c["name"] == "bgrun_session")
    assert cookie["httpOnly"] and cookie["sameSite"] == "Strict" and cookie["path"] == "/"
    assert cookie["expires"] == -1  # a browser-session cookie
    assert re.fullmatch(r"[A-Za-z0-9_-]{43}", cookie["value"])
    csrf = page.locator("form.signout input[name=csrf]").get_attribute("value")
    assert csrf not in cookie["value"]

    other = page.context.browser.new_context()  # a copy of the cookie, elsewhere
    other.add_cookies([cookie])
    tab = other.new_page()
    tab.goto(dashboard_url)
    sync_api.expect(tab).to_have_url(dashboard_url)  # the copy works while it lives

    page.click("form.signout button")
    sync_api.expect(page).to_have_url(re.compile(r"/login$"))
    tab.goto(dashboard_url)
    sync_api.expect(tab).to_have_url(re.compile(r"/login$"))  # and dies with the session
    other.close()


def test_bidi_controls_in_live_rows_are_spelled_out(app_project, dashboard_url, page):  # noqa: F811
    sign_in(page, dashboard_url)
    job = run_background_job("jobs", "fail", ["invoice\u202efdp.exe"])
    assert app_project.wait(job.id)["status"] == "failed"
    cell = page.locator(f'tr[data-id="{job.id}"] td.error')  # built by app.js, no reload
    sync_api.expect(cell).to_have_text("ValueError: invoice[U+202E]fdp.exe")
    assert "\u202e" not in page.content()
    wait_until(lambda: "[U+202E]" in cell.inner_text())
