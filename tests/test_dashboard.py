"""The web dashboard through Flask's test client: every route, every refusal, escaping."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path

import pytest

pytest.importorskip("flask")

from bgrun import run_background_job
from bgrun.config import Config
from bgrun.dashboard import security
from bgrun.dashboard.app import create_app
from bgrun.dashboard.present import duration, read_chunk
from bgrun.errors import ConfigError
from tests.conftest import wait_until

TOKEN = "test-token-0123456789abcdef"
BEARER = {"Authorization": f"Bearer {TOKEN}"}
XSS = "<script>alert('x')</script>"
IMG = '<img src=x onerror="alert(1)">'

PAGES = ["/", "/jobs/1"]
API_GETS = ["/api/jobs", "/api/jobs/1", "/api/counts", "/api/jobs/1/output",
            "/api/jobs/1/attempts"]
POSTS = ["/jobs/1/cancel", "/jobs/1/retry", "/jobs/1/delete", "/logout",
         "/api/jobs/1/cancel", "/api/jobs/1/retry", "/api/jobs/1/delete"]


@pytest.fixture(autouse=True)
def store(project):
    """A store to show: the dashboard only reads one, it never makes one."""
    return project.ctx.store


@pytest.fixture
def app(project):
    return create_app(Config.load(), TOKEN)


@pytest.fixture
def client(app):
    return app.test_client()


def sign_in(client) -> str:
    """Sign in through the form; return the page's CSRF token."""
    response = client.post("/login", data={"token": TOKEN})
    assert response.status_code == 303
    page = client.get("/").get_data(as_text=True)
    return re.search(r'name="csrf" value="([^"]+)"', page).group(1)


def scheduled_job(**kw) -> str:
    """A job that will not run during the test (an hour's delay)."""
    return run_background_job("jobs", "record", ["never"], delay=3600, **kw).id


def status_of(client, job_id: str) -> str:
    return client.get(f"/api/jobs/{job_id}", headers=BEARER).get_json()["status"]


# -- refusals -------------------------------------------------------------------------


@pytest.mark.parametrize("path", PAGES)
def test_pages_without_token_send_to_sign_in(client, path):
    response = client.get(path)
    assert response.status_code == 302
    assert response.headers["Location"].endswith("/login")


@pytest.mark.parametrize("path", API_GETS)
def test_api_without_token_is_401(client, path):
    response = client.get(path)
    assert response.status_code == 401
    assert response.headers["WWW-Authenticate"].startswith("Bearer")
    assert "error" in response.get_json()


def test_posts_without_token_are_401(client):
    job_id = scheduled_job()
    for path in POSTS:
        response = client.post(path.replace("/1/", f"/{job_id}/"))
        assert response.status_code == 401, path
    assert status_of(client, job_id) == "scheduled"


@pytest.mark.parametrize("path", PAGES + API_GETS + POSTS)
def test_wrong_bearer_token_is_401_everywhere(client, path):
    headers = {"Authorization": "Bearer " + TOKEN[:-1] + "X"}
    call = client.post if path in POSTS else client.get
    assert call(path, headers=headers).status_code == 401
    assert call(path, headers={"Authorization": "Bearer "}).status_code == 401


def test_wrong_token_at_sign_in_gives_no_session(client):
    response = client.post("/login", data={"token": "not-the-token-at-all"})
    assert response.status_code == 401
    assert "Set-Cookie" not in response.headers
    assert "not right" in response.get_data(as_text=True)
    assert client.get("/").status_code == 302


@pytest.mark.parametrize("host", ["evil.example", "evil.example:8787", "localhost.evil.example",
                                  "127.0.0.1.nip.io", "", "127.0.0.1:80:80", "local host"])
def test_foreign_host_is_refused_even_with_the_token(client, host):
    for path in ["/", "/login", "/api/jobs", "/static/app.js"]:
        response = client.get(path, headers={**BEARER, "Host": host})
        assert response.status_code == 400, (path, host)
    assert client.post("/login", data={"token": TOKEN}, headers={"Host": host}).status_code == 400


@pytest.mark.parametrize("host", ["localhost", "localhost:8787", "127.0.0.1:1234", "[::1]:8787",
                                  "LOCALHOST:8787"])
def test_loopback_hosts_are_served(client, host):
    assert client.get("/api/jobs", headers={**BEARER, "Host": host}).status_code == 200


def test_extra_hosts_from_environment(project):
    env = {"BGRUN_DASHBOARD_HOSTS": "jobs.example.com, other.example:8443"}
    hosts = security.allowed_hosts(env, "127.0.0.1")
    client = create_app(Config.load(), TOKEN, hosts=hosts).test_client()
    def code(host):
        return client.get("/api/counts", headers={**BEARER, "Host": host}).status_code
    assert code("jobs.example.com") == 200
    assert code("jobs.example.com:443") == 200
    assert code("other.example:8443") == 200
    assert code("other.example") == 400
    assert code("jobs.example.com.evil.example") == 400
    assert code("evil.example") == 400


def test_served_address_is_allowed_but_not_a_wildcard():
    assert "192.168.1.5" in security.allowed_hosts({}, "192.168.1.5")
    assert "[fe80::1]" in security.allowed_hosts({}, "fe80::1")
    assert security.allowed_hosts({}, "0.0.0.0") == security.LOCAL_NAMES
    assert security.allowed_hosts({}, "::") == security.LOCAL_NAMES


def test_get_on_an_action_changes_nothing(client):
    job_id = scheduled_job()
    for path in POSTS:
        response = client.get(path.replace("/1/", f"/{job_id}/"), headers=BEARER)
        assert response.status_code == 405, path
    assert status_of(client, job_id) == "scheduled"


def test_cookie_post_without_csrf_is_refused(client, project):
    job_id = scheduled_job()
    csrf = sign_in(client)
    for action in ["cancel", "retry", "delete"]:
        for path in [f"/jobs/{job_id}/{action}", f"/api/jobs/{job_id}/{action}"]:
            assert client.post(path).status_code == 403
            assert client.post(path, data={"csrf": csrf[:-1]}).status_code == 403
            assert client.post(path, headers={"X-CSRF-Token": "x" + csrf}).status_code == 403
    assert status_of(client, job_id) == "scheduled"
    assert not [e for e in project.events() if e.get("by") == "dashboard"]


def test_logout_needs_csrf_and_ends_the_session(client):
    csrf = sign_in(client)
    assert client.post("/logout").status_code == 403
    assert client.get("/").status_code == 200
    assert client.post("/logout", data={"csrf": csrf}).status_code == 303
    assert client.get("/").status_code == 302


def test_cross_origin_post_is_refused(client):
    job_id = scheduled_job()
    csrf = sign_in(client)
    response = client.post(f"/jobs/{job_id}/cancel", data={"csrf": csrf},
                           headers={"Origin": "https://evil.example"})
    assert response.status_code == 403
    response = client.post(f"/api/jobs/{job_id}/cancel",
                           headers={**BEARER, "Origin": "http://localhost.evil.example"})
    assert response.status_code == 403
    response = client.post(f"/jobs/{job_id}/cancel", headers={"Origin": "null"})
    assert response.status_code == 403  # no CSRF token: an opaque origin proves nothing
    assert status_of(client, job_id) == "scheduled"
    response = client.post(f"/jobs/{job_id}/cancel", data={"csrf": csrf},
                           headers={"Origin": "http://localhost"})
    assert response.status_code == 303


def test_session_of_another_start_is_not_accepted(project, client):
    sign_in(client)
    cookie = client.get_cookie("bgrun_session").value
    other = create_app(Config.load(), TOKEN).test_client()
    other.set_cookie("bgrun_session", cookie)
    assert other.get("/").status_code == 302


# -- signing in, headers --------------------------------------------------------------


def test_sign_in_sets_an_httponly_strict_session_cookie(client):
    assert client.get("/login").status_code == 200
    response = client.post("/login", data={"token": TOKEN})
    assert response.status_code == 303
    cookie = response.headers["Set-Cookie"]
    assert cookie.startswith("bgrun_session=")
    assert "HttpOnly" in cookie
    assert "SameSite=Strict" in cookie
    assert "Expires" not in cookie  # a browser-session cookie
    assert client.get("/").status_code == 200
    assert client.get("/api/jobs").status_code == 200


def test_bearer_token_works_on_pages_and_sets_no_cookie(client):
    job_id = scheduled_job()
    for path in ["/", f"/jobs/{job_id}", "/api/jobs", f"/api/jobs/{job_id}"]:
        response = client.get(path, headers=BEARER)
        assert response.status_code == 200, path
        assert "Set-Cookie" not in response.headers
    response = client.post(f"/jobs/{job_id}/cancel", headers=BEARER)
    assert response.status_code == 303
    assert status_of(client, job_id) == "cancelled"


@pytest.mark.parametrize("path", ["/login", "/", "/api/jobs", "/nope", "/static/style.css"])
def test_security_headers_on_every_answer(client, path):
    for headers in (BEARER, {}):
        response = client.get(path, headers=headers)
        response.close()  # a static file is streamed
        csp = response.headers["Content-Security-Policy"]
        assert "script-src 'self'" in csp
        assert "unsafe-inline" not in csp and "unsafe-eval" not in csp
        assert "frame-ancestors 'none'" in csp
        assert response.headers["X-Frame-Options"] == "DENY"
        assert response.headers["X-Content-Type-Options"] == "nosniff"
        assert response.headers["Referrer-Policy"] == "no-referrer"


def test_pages_have_no_inline_script_or_style(client, project):
    job = run_background_job("jobs", "fail", ["x"])
    project.wait(job.id)
    for path in ["/login", "/", f"/jobs/{job.id}", "/jobs/999999"]:
        html = client.get(path, headers=BEARER).get_data(as_text=True)
        assert re.findall(r"<script\b[^>]*>", html) in ([], ['<script src="/static/app.js" defer>'])
        assert not re.search(r"\son[a-z]+\s*=", html), path
        assert " style=" not in html and "<style" not in html, path
    assert client.get(f"/jobs/{job.id}", headers=BEARER).headers["Cache-Control"] == "no-store"


def test_static_files_are_served_without_token(client):
    for path in ["/static/app.js", "/static/style.css"]:
        with client.get(path) as response:
            assert response.status_code == 200


# -- the API --------------------------------------------------------------------------


def test_api_lists_newest_first_with_pages_and_filters(client):
    ids = [scheduled_job() for _ in range(3)]
    greet = run_background_job("jobs.Greeter", "greet", ["ada"], delay=3600).id
    cancelled = scheduled_job()
    client.post(f"/api/jobs/{cancelled}/cancel", headers=BEARER)
    everything = [greet, *reversed(ids)]
    def listed(query):
        response = client.get(f"/api/jobs?{query}", headers=BEARER)
        assert response.status_code == 200, response.get_data(as_text=True)
        return [job["id"] for job in response.get_json()]
    assert listed("") == [cancelled, *everything]
    assert listed("limit=2") == [cancelled, greet]
    assert listed(f"limit=2&before={greet}") == [ids[2], ids[1]]
    assert listed(f"before={ids[1]}") == [ids[0]]
    assert listed("status=scheduled") == everything
    assert listed("status=cancelled") == [cancelled]
    assert listed("target=jobs.Greeter") == [greet]
    assert listed("target=jobs&status=scheduled&limit=1") == [ids[2]]
    assert listed("status=running") == []
    job = client.get(f"/api/jobs/{greet}", headers=BEARER).get_json()
    for key in ["id", "target", "method", "params", "status", "priority", "attempts", "retries",
                "created_at", "run_at", "started_at", "finished_at", "error", "result"]:
        assert key in job
    assert job["params"] == ["ada"] and job["target"] == "jobs.Greeter"
    counts = client.get("/api/counts", headers=BEARER).get_json()
    assert counts == {"scheduled": 4, "queued": 0, "running": 0, "completed": 0, "failed": 0,
                      "cancelled": 1, "total": 5}


@pytest.mark.parametrize("query", ["status=bogus", "limit=0", "limit=1001", "limit=x",
                                   "before=abc", "before=-1", "status=%3Cb%3E"])
def test_api_refuses_malformed_queries(client, query):
    response = client.get(f"/api/jobs?{query}", headers=BEARER)
    assert response.status_code == 400
    assert "error" in response.get_json()
    assert client.get(f"/?{query}", headers=BEARER).status_code == 400


def test_api_unknown_job_is_404(client):
    for path in ["/api/jobs/999", "/api/jobs/abc", "/api/jobs/999/output"]:
        assert client.get(path, headers=BEARER).status_code == 404
    for action in ["cancel", "retry", "delete"]:
        assert client.post(f"/api/jobs/999/{action}", headers=BEARER).status_code == 404


def test_api_cancel_retry_delete_and_their_event_log(client, project):
    job_id = run_background_job("jobs", "sleep", [30], delay=3600).id
    assert client.post(f"/api/jobs/{job_id}/retry", headers=BEARER).status_code == 409
    assert client.post(f"/api/jobs/{job_id}/delete", headers=BEARER).status_code == 409
    response = client.post(f"/api/jobs/{job_id}/cancel", headers=BEARER)
    assert response.status_code == 200 and response.get_json()["status"] == "cancelled"
    assert client.post(f"/api/jobs/{job_id}/cancel", headers=BEARER).status_code == 409
    response = client.post(f"/api/jobs/{job_id}/retry", headers=BEARER)
    assert response.status_code == 200 and response.get_json()["attempts"] == 0
    wait_until(lambda: status_of(client, job_id) == "running")
    assert client.post(f"/api/jobs/{job_id}/delete", headers=BEARER).status_code == 409
    assert client.post(f"/api/jobs/{job_id}/cancel", headers=BEARER).status_code == 200
    assert project.wait(job_id)["status"] == "cancelled"
    response = client.post(f"/api/jobs/{job_id}/delete", headers=BEARER)
    assert response.get_json() == {"deleted": [job_id]}
    assert client.get(f"/api/jobs/{job_id}", headers=BEARER).status_code == 404
    by_dashboard = [e["status"] for e in project.events()
                    if e["job"] == job_id and e.get("by") == "dashboard"]
    assert by_dashboard == ["cancelled", "queued", "cancel-requested", "deleted"]


def test_api_output_follows_with_offsets(client, project):
    job = run_background_job("jobs", "echo", ["hello"])
    project.wait(job.id)
    first = client.get(f"/api/jobs/{job.id}/output", headers=BEARER).get_json()
    assert "echo ('hello',)" in first["text"] and first["offset"] == 0
    assert first["status"] == "completed"
    again = client.get(f"/api/jobs/{job.id}/output?offset={first['next']}",
                       headers=BEARER).get_json()
    assert again["text"] == "" and again["next"] == first["next"] and not again["reset"]
    part = client.get(f"/api/jobs/{job.id}/output?offset=5", headers=BEARER).get_json()
    assert part["text"] == first["text"][5:]
    gone = client.get(f"/api/jobs/{job.id}/output?offset=999999", headers=BEARER).get_json()
    assert gone["reset"] and gone["text"] == first["text"]
    bad = client.get(f"/api/jobs/{job.id}/output?offset=-3", headers=BEARER)
    assert bad.status_code == 400


def test_api_attempts_of_a_retried_job(client, project):
    job = run_background_job("jobs", "fail", ["again"], retries=1)
    assert project.wait(job.id)["status"] == "failed"
    found = client.get(f"/api/jobs/{job.id}/attempts", headers=BEARER).get_json()
    assert [a["number"] for a in found] == [1, 2]
    assert [a["outcome"] for a in found] == ["retrying", "failed"]


# -- the pages ------------------------------------------------------------------------


def test_job_list_page_counts_filters_and_pages(client):
    ids = [scheduled_job() for _ in range(3)]
    greet = run_background_job("jobs.Greeter", "greet", ["ada"], delay=3600).id
    sign_in(client)
    html = client.get("/?limit=2").get_data(as_text=True)
    assert re.findall(r'data-id="(\d+)"', html) == [greet, ids[2]]
    assert f'before={ids[2]}' in html and "limit=2" in html
    assert 'data-count="scheduled">4<' in html and 'data-count="total">4<' in html
    html = client.get(f"/?limit=2&before={ids[2]}").get_data(as_text=True)
    assert re.findall(r'data-id="(\d+)"', html) == [ids[1], ids[0]]
    assert "Newest" in html
    html = client.get("/?target=jobs.Greeter").get_data(as_text=True)
    assert re.findall(r'data-id="(\d+)"', html) == [greet]
    html = client.get("/?status=failed").get_data(as_text=True)
    assert re.findall(r'data-id="(\d+)"', html) == []
    assert "No jobs match these filters" in html


def test_job_page_shows_every_field_error_traceback_and_output(client, project):
    job = run_background_job("jobs", "fail", ["it broke"], retries=1, priority=7, timeout=30)
    assert project.wait(job.id)["status"] == "failed"
    html = client.get(f"/jobs/{job.id}", headers=BEARER).get_data(as_text=True)
    info = client.get(f"/api/jobs/{job.id}", headers=BEARER).get_json()
    for text in ["jobs", "fail", "it broke", "ValueError: it broke", "Traceback",
                 "<dt>Priority</dt><dd>7</dd>", "<dt>Attempts</dt><dd>2 of 2</dd>",
                 "<dt>Retries left</dt><dd>0</dd>", "<dt>Timeout</dt><dd>30 s</dd>",
                 info["created_at"], info["started_at"], info["finished_at"], info["run_at"],
                 "retrying", 'id="retry-button"', 'id="delete-button"']:
        assert text in html, text
    assert 'id="cancel-button"' not in html
    assert re.search(r'datetime="[^"]+\+00:00"', html)
    assert "<dt>Ran</dt><dd>" in html and "<dt>Ran</dt><dd>-</dd>" not in html


def test_job_page_of_completed_job_shows_result_and_output(client, project):
    job = run_background_job("jobs", "echo", ["hi"], retries=2)
    assert project.wait(job.id)["status"] == "completed"
    html = client.get(f"/jobs/{job.id}", headers=BEARER).get_data(as_text=True)
    assert "<h2>Result</h2>" in html and "&#34;args&#34;" in html
    assert "echo (&#39;hi&#39;,)" in html
    assert "<dt>Retries left</dt><dd>2</dd>" in html
    assert 'id="retry-button"' not in html and 'id="delete-button"' in html


def test_job_page_and_api_show_positional_and_keyword_arguments(client, project):
    mixed = run_background_job("jobs", "echo", ["2026-11"], kwargs={"pages": 4}, delay=3600)
    plain = run_background_job("jobs", "echo", ["2026-12"], delay=3600)
    info = client.get(f"/api/jobs/{mixed.id}", headers=BEARER).get_json()
    assert (info["params"], info["kwargs"]) == (["2026-11"], {"pages": 4})
    assert client.get(f"/api/jobs/{plain.id}", headers=BEARER).get_json()["kwargs"] is None
    listed = client.get("/api/jobs", headers=BEARER).get_json()
    assert [j["kwargs"] for j in listed] == [None, {"pages": 4}]
    html = client.get(f"/jobs/{mixed.id}", headers=BEARER).get_data(as_text=True)
    assert re.search(r'<pre class="box" id="params">\[\s*&#34;2026-11&#34;\s*\]</pre>', html)
    assert re.search(r'<pre class="box" id="kwargs">\{\s*&#34;pages&#34;: 4\s*\}</pre>', html)
    plain_html = client.get(f"/jobs/{plain.id}", headers=BEARER).get_data(as_text=True)
    assert 'id="params"' in plain_html and 'id="kwargs"' not in plain_html


def test_page_actions_cancel_retry_delete_with_csrf(client, project):
    job_id = scheduled_job()
    csrf = sign_in(client)
    html = client.get(f"/jobs/{job_id}").get_data(as_text=True)
    assert 'id="cancel-button"' in html and 'id="retry-button"' not in html
    response = client.post(f"/jobs/{job_id}/cancel", data={"csrf": csrf})
    assert response.status_code == 303 and response.headers["Location"] == f"/jobs/{job_id}"
    assert status_of(client, job_id) == "cancelled"
    assert client.post(f"/jobs/{job_id}/cancel", data={"csrf": csrf}).status_code == 409
    assert client.post(f"/jobs/{job_id}/retry", data={"csrf": csrf}).status_code == 303
    assert status_of(client, job_id) in ("queued", "running", "completed")
    project.wait(job_id)
    response = client.post(f"/jobs/{job_id}/delete", headers={"X-CSRF-Token": csrf})
    assert response.status_code == 303 and response.headers["Location"] == "/"
    assert client.get(f"/jobs/{job_id}").status_code == 404
    events = [(e["status"], e.get("by")) for e in project.events() if e["job"] == job_id]
    assert ("cancelled", "dashboard") in events and ("deleted", "dashboard") in events
    assert ("queued", "dashboard") in events


# -- escaping -------------------------------------------------------------------------


def assert_escaped(html: str, payload: str) -> None:
    assert payload not in html
    assert "<script>alert" not in html and "<img src=x" not in html


def test_xss_payloads_in_params_errors_and_output_are_escaped(client, project):
    echo = run_background_job("jobs", "echo", {"x": XSS, "y": IMG})
    failing = run_background_job("jobs", "fail", [XSS + IMG])
    project.wait(echo.id)
    project.wait(failing.id)
    sign_in(client)
    for path in ["/", f"/jobs/{echo.id}", f"/jobs/{failing.id}", "/?status=failed"]:
        html = client.get(path).get_data(as_text=True)
        assert_escaped(html, XSS)
        assert_escaped(html, IMG)
    html = client.get(f"/jobs/{failing.id}").get_data(as_text=True)
    assert "ValueError: &lt;script&gt;alert(&#39;x&#39;)&lt;/script&gt;&lt;img" in html
    html = client.get(f"/jobs/{echo.id}").get_data(as_text=True)
    assert "&lt;script&gt;alert" in html  # in params, result and output


def test_xss_in_query_and_error_messages_is_escaped(client):
    sign_in(client)
    html = client.get("/?target=" + urllib.request.quote(XSS)).get_data(as_text=True)
    assert_escaped(html, XSS)
    assert "value=\"&lt;script&gt;" in html
    response = client.get("/jobs/" + urllib.request.quote(XSS, safe=""))
    assert response.status_code == 404
    assert_escaped(response.get_data(as_text=True), XSS)
    response = client.get("/?status=" + urllib.request.quote(XSS))
    assert response.status_code == 400
    assert_escaped(response.get_data(as_text=True), XSS)
    response = client.get("/api/jobs/" + urllib.request.quote(XSS, safe=""), headers=BEARER)
    assert response.mimetype == "application/json"


def test_hostile_output_control_characters_are_neutralised(client, project):
    job = run_background_job("jobs", "hostile_output")
    project.wait(job.id)
    text = client.get(f"/api/jobs/{job.id}/output", headers=BEARER).get_json()["text"]
    assert "\x1b" not in text and "\r" not in text and "FAKE" in text


# -- helpers and the real server --------------------------------------------------------


def test_token_from_environment_generated_or_too_short():
    token, generated = security.load_token({})
    assert generated and len(token) >= 40
    assert security.load_token({})[0] != token
    assert security.load_token({"BGRUN_DASHBOARD_TOKEN": TOKEN}) == (TOKEN, False)
    with pytest.raises(ConfigError, match="too short"):
        security.load_token({"BGRUN_DASHBOARD_TOKEN": "secret"})


def test_tokens_compare_in_constant_time_helper():
    assert security.tokens_equal(TOKEN, TOKEN)
    assert not security.tokens_equal(TOKEN, TOKEN + "x")
    assert not security.tokens_equal("", TOKEN)
    assert security.bearer_token("bearer abc") == "abc"
    assert security.bearer_token("Basic abc") is None


def test_durations_and_output_chunks(tmp_path):
    assert duration(0.4234) == "0.42 s"
    assert duration(42) == "42 s"
    assert duration(184) == "3 min 4 s"
    assert duration(7500) == "2 h 5 min"
    assert duration(3 * 86400 + 4 * 3600 + 5) == "3 d 4 h"
    assert duration(None) == "-"
    path = tmp_path / "out.log"
    path.write_bytes(b"x" * 100 + b"tail\r\n")
    chunk = read_chunk(path, None, limit=6)
    assert chunk.text == "tail\n" and (chunk.start, chunk.end) == (100, 106)
    assert read_chunk(tmp_path / "none.log", None).text == ""


def start_server(project, env: dict[str, str]) -> tuple[subprocess.Popen[str], str, list[str]]:
    """`bgrun dashboard --port 0` in the project; return it, its URL and its first lines."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "bgrun", "dashboard", "--port", "0"], cwd=project.path,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        env={**os.environ, **env},
    )
    first = proc.stdout.readline()
    match = re.search(r"serving on (http://\S+/)", first)
    assert match, first + proc.stderr.read() if proc.poll() is not None else first
    return proc, match.group(1), [first]


def fetch(url: str, headers: dict[str, str]) -> tuple[int, bytes]:
    request = urllib.request.Request(url, headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


def test_bgrun_dashboard_serves_with_token_from_dotenv(project):
    (project.path / ".env").write_text(f"BGRUN_DASHBOARD_TOKEN={TOKEN}\n")
    job = scheduled_job()
    proc, url, _ = start_server(project, {})
    try:
        status, body = fetch(url + "api/jobs", BEARER)
        assert status == 200 and json.loads(body)[0]["id"] == job
        assert fetch(url + "api/jobs", {"Authorization": "Bearer wrong"})[0] == 401
        assert fetch(url + "api/jobs", {**BEARER, "Host": "evil.example"})[0] == 400
    finally:
        proc.terminate()
        out, _ = proc.communicate(timeout=10)
    assert TOKEN not in out  # a token from the environment is never printed


def test_bgrun_dashboard_prints_a_generated_token_once(project):
    proc, url, _ = start_server(project, {"BGRUN_DASHBOARD_TOKEN": ""})
    try:
        line = proc.stdout.readline()
        token = re.search(r"shown only now\): (\S+)", line).group(1)
        assert fetch(url + "api/counts", {"Authorization": f"Bearer {token}"})[0] == 200
        assert fetch(url + "api/counts", BEARER)[0] == 401
    finally:
        proc.terminate()
        out, _ = proc.communicate(timeout=10)
    assert token not in out


def test_bgrun_dashboard_without_flask_is_one_line(project):
    code = ("import sys; sys.modules['flask'] = None; sys.argv = ['bgrun', 'dashboard'];"
            " from bgrun.cli import main; main()")
    result = subprocess.run([sys.executable, "-c", code], cwd=project.path, capture_output=True,
                            text=True, timeout=30)
    assert result.returncode == 4
    assert result.stderr.strip().count("\n") == 0
    assert "pip install 'bgrun[dashboard]'" in result.stderr and "flask" in result.stderr


def test_busy_port_is_a_clear_error(project):
    proc, url, _ = start_server(project, {"BGRUN_DASHBOARD_TOKEN": TOKEN})
    try:
        port = url.rsplit(":", 1)[1].strip("/")
        result = project.cli("dashboard", "--port", port, timeout=30,
                             BGRUN_DASHBOARD_TOKEN=TOKEN)
        assert result.returncode == 4
        assert result.stderr.startswith("bgrun: error: cannot listen on 127.0.0.1:" + port)
        assert result.stderr.count("\n") == 1
    finally:
        proc.terminate()
        proc.communicate(timeout=10)


def test_dashboard_reads_the_store_only_through_bgrun():
    source = "".join(p.read_text() for p in
                     (Path(__file__).parent.parent / "bgrun" / "dashboard").glob("*.py"))
    assert "sqlite3" not in source and "SELECT " not in source.upper()


@pytest.mark.slow
def test_pages_stay_fast_with_100000_jobs(project):
    import time

    from bgrun.context import Context
    from bgrun.store import NewJob, Role

    config = Config.load()
    store = Context.open(config, Role.RUNNER).store  # a quick fill: no fsync per job
    now = time.time()
    for i in range(100_000):
        store.insert(NewJob("jobs.Greeter" if i % 3 == 0 else "jobs", "noop", "[]", 0, 0, None,
                            now + 3600, str(project.path), sys.executable, "{}",
                            str(config.allowlist)), now)
    client = create_app(config, TOKEN).test_client()
    for path in ["/", "/?status=scheduled", "/?target=jobs.Greeter", "/?before=50000",
                 "/?status=failed", "/api/jobs?limit=1000", "/api/counts", "/jobs/777"]:
        start = time.perf_counter()
        assert client.get(path, headers=BEARER).status_code == 200
        assert time.perf_counter() - start < 1.0, path
