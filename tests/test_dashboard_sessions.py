"""Dashboard sessions kept on the server: what a cookie is worth once it leaks, and when
it stops working; the sign-in throttle; tokens with too little variety."""

from __future__ import annotations

import base64
import os
import re
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request

import pytest

pytest.importorskip("flask")

from bgrun.config import Config
from bgrun.dashboard import security
from bgrun.dashboard.app import create_app
from bgrun.errors import ConfigError

TOKEN = "session-token-0123456789abcdef"
BEARER = {"Authorization": f"Bearer {TOKEN}"}
HOST_A = "127.0.0.1:8001"


@pytest.fixture(autouse=True)
def store(project):
    """A store to show: the dashboard only reads one, it never makes one."""
    return project.ctx.store


def make_client(**sessions_kw):
    from bgrun.dashboard.sessions import Sessions

    sessions = Sessions(**sessions_kw) if sessions_kw else None
    return create_app(Config.load(), TOKEN, sessions=sessions).test_client()


def sign_in(client, host: str = HOST_A) -> tuple[str, str]:
    """Sign in through the form on `host`; return (the cookie's value, the page's CSRF)."""
    response = client.post("/login", data={"token": TOKEN}, headers={"Host": host})
    assert response.status_code == 303
    page = client.get("/", headers={"Host": host}).get_data(as_text=True)
    csrf = re.search(r'name="csrf" value="([^"]+)"', page).group(1)
    return cookie_of(response), csrf


def cookie_of(response) -> str:
    return re.match(r"bgrun_session=([^;]*);", response.headers["Set-Cookie"]).group(1)


def replay(client, cookie: str, host: str = HOST_A) -> tuple[int, int]:
    """(GET /, GET /api/jobs) status codes for another client of the same app that has
    only `cookie` (what a server that was sent the cookie could do with it)."""
    other = client.application.test_client(use_cookies=False)
    headers = {"Host": host, "Cookie": f"bgrun_session={cookie}"}
    return other.get("/", headers=headers).status_code, other.get("/api/jobs",
                                                                  headers=headers).status_code


@pytest.fixture
def client(project):
    return create_app(Config.load(), TOKEN).test_client()


def test_a_cookie_replayed_after_sign_out_is_refused(client):
    cookie, csrf = sign_in(client)
    assert replay(client, cookie) == (200, 200)  # a copy works while the session lives
    response = client.post("/logout", data={"csrf": csrf}, headers={"Host": HOST_A})
    assert response.status_code == 303
    assert "bgrun_session=;" in response.headers["Set-Cookie"]  # the browser forgets it
    assert replay(client, cookie) == (302, 401)  # and the server forgot it for good
    post = client.application.test_client(use_cookies=False)
    response = post.post("/logout", data={"csrf": csrf},
                         headers={"Host": HOST_A, "Cookie": f"bgrun_session={cookie}"})
    assert response.status_code == 401


def test_the_cookie_reveals_nothing(client):
    cookie, csrf = sign_in(client)
    response = client.post("/login", data={"token": TOKEN}, headers={"Host": HOST_A})
    header = response.headers["Set-Cookie"]
    assert "HttpOnly" in header and "SameSite=Strict" in header and "Path=/" in header
    assert "Expires" not in header and "Max-Age" not in header and "Domain" not in header
    again = cookie_of(response)
    assert again != cookie  # a new sign-in, a new id
    for value in (cookie, again):
        assert re.fullmatch(r"[A-Za-z0-9_-]{43}", value), value  # 32 random bytes, no more
        assert csrf not in value and TOKEN not in value
        decoded = base64.urlsafe_b64decode(value + "=")
        assert len(decoded) == 32 and b"csrf" not in decoded and b"auth" not in decoded


def test_a_session_is_refused_on_another_port_or_name(client):
    cookie, _ = sign_in(client, HOST_A)
    assert replay(client, cookie, HOST_A) == (200, 200)
    for host in ("127.0.0.1:8002", "localhost:8001", "127.0.0.1", "[::1]:8001"):
        assert replay(client, cookie, host) == (302, 401), host
    assert replay(client, cookie, "127.0.0.1:8001") == (200, 200)  # still alive at home


def start_dashboard(project, env: dict[str, str]) -> tuple[subprocess.Popen[str], str]:
    proc = subprocess.Popen(
        [sys.executable, "-m", "bgrun", "dashboard", "--port", "0"], cwd=project.path,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        env={**os.environ, "BGRUN_DASHBOARD_TOKEN": TOKEN, **env})
    line = proc.stdout.readline()
    match = re.search(r"serving on (http://\S+/)", line)
    assert match, line + (proc.stderr.read() if proc.poll() is not None else "")
    return proc, match.group(1)


class NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args, **kwargs):
        return None


def http(url: str, data: dict[str, str] | None = None,
         headers: dict[str, str] | None = None) -> tuple[int, dict[str, str]]:
    body = None if data is None else urllib.parse.urlencode(data).encode()
    opener = urllib.request.build_opener(NoRedirect)
    try:
        with opener.open(urllib.request.Request(url, body, headers or {}), timeout=10) as r:
            return r.status, dict(r.headers)
    except urllib.error.HTTPError as exc:
        return exc.code, dict(exc.headers)


def test_a_cookie_from_one_dashboard_is_refused_by_another_on_the_same_host(project):
    # Two dashboards with the same token (one .env), as a browser sees them: the
    # cookie of port A is sent to port B too. B must not take it.
    first, url_a = start_dashboard(project, {})
    second, url_b = start_dashboard(project, {})
    try:
        status, headers = http(url_a + "login", {"token": TOKEN})
        assert status == 303
        cookie = headers["Set-Cookie"].split(";")[0]
        assert http(url_a + "api/counts", headers={"Cookie": cookie})[0] == 200
        assert http(url_b + "api/counts", headers={"Cookie": cookie})[0] == 401
        assert http(url_b, headers={"Cookie": cookie})[0] == 302
    finally:
        for proc in (first, second):
            proc.terminate()
            proc.communicate(timeout=10)


def test_a_session_ends_when_idle_and_after_its_lifetime(project):
    client = make_client(idle=0.6, lifetime=60)
    sign_in(client)
    for _ in range(4):  # in use: kept alive past the idle time
        time.sleep(0.3)
        assert client.get("/api/counts", headers={"Host": HOST_A}).status_code == 200
    time.sleep(0.9)
    assert client.get("/api/counts", headers={"Host": HOST_A}).status_code == 401
    assert client.get("/", headers={"Host": HOST_A}).status_code == 302
    busy = make_client(idle=60, lifetime=1.0)
    sign_in(busy)
    deadline = time.monotonic() + 1.3
    while time.monotonic() < deadline:
        time.sleep(0.2)
    assert busy.get("/api/counts", headers={"Host": HOST_A}).status_code == 401


def test_session_times_come_from_the_environment(project):
    from bgrun.dashboard.sessions import IDLE, LIFETIME, from_environ

    table = from_environ({})
    assert (table.idle, table.lifetime) == (IDLE, LIFETIME) == (1800, 43200)
    table = from_environ({"BGRUN_DASHBOARD_IDLE": "90", "BGRUN_DASHBOARD_LIFETIME": "3600"})
    assert (table.idle, table.lifetime) == (90, 3600)
    for bad in ("0", "-5", "abc", "nan", "inf", "1e12"):
        with pytest.raises(ConfigError, match="BGRUN_DASHBOARD_IDLE"):
            from_environ({"BGRUN_DASHBOARD_IDLE": bad})
    result = project.cli("dashboard", "--port", "0", timeout=30,
                         BGRUN_DASHBOARD_TOKEN=TOKEN, BGRUN_DASHBOARD_IDLE="soon")
    assert result.returncode == 4 and "BGRUN_DASHBOARD_IDLE" in result.stderr


def test_the_session_table_is_bounded(project):
    from bgrun.dashboard.sessions import Sessions

    table = Sessions(limit=3)
    ids = [table.start("h:1")[0] for _ in range(5)]
    assert len(table) == 3
    assert table.find(ids[0], "h:1") is None and table.find(ids[1], "h:1") is None
    assert all(table.find(sid, "h:1") for sid in ids[2:])
    assert table.find("x" * 1000, "h:1") is None and table.find(None, "h:1") is None


def test_wrong_tokens_make_a_client_wait(project):
    from bgrun.dashboard.sessions import Throttle

    client = make_client()
    codes = [client.post("/login", data={"token": f"wrong-{i}-0123456789abcdef"}).status_code
             for i in range(Throttle.FREE + 1)]
    assert codes == [401] * (Throttle.FREE + 1)
    refused = client.post("/login", data={"token": TOKEN})  # right, but while it must wait
    assert refused.status_code == 429
    assert int(refused.headers["Retry-After"]) >= 1
    assert "Set-Cookie" not in refused.headers
    assert client.get("/api/counts", headers=BEARER).status_code == 429  # bearer too
    time.sleep(Throttle.BASE + 0.1)
    assert client.get("/api/counts", headers=BEARER).status_code == 200  # forgets failures
    start = time.monotonic()
    codes = []
    while time.monotonic() - start < 1.0:
        codes.append(client.get("/api/counts",
                                headers={"Authorization": "Bearer wrong-0123456789"}).status_code)
    assert codes.count(401) <= Throttle.FREE + 2  # 200 guesses a second became a handful
    assert codes.count(429) > 10


@pytest.mark.parametrize("token", ["a" * 40, "ab" * 20, "0123456" * 5, "aaaaaaaaaaaaaaaaaaaaabc"])
def test_a_token_with_too_little_variety_is_refused(token):
    with pytest.raises(ConfigError, match="variety"):
        security.load_token({"BGRUN_DASHBOARD_TOKEN": token})


def test_a_varied_token_is_accepted():
    assert security.load_token({"BGRUN_DASHBOARD_TOKEN": TOKEN}) == (TOKEN, False)
    assert security.load_token({"BGRUN_DASHBOARD_TOKEN": "01234567" * 2})[1] is False
