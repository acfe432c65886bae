"""What one request may cost the dashboard: body size, idle connections, answer size,
and waitress's own error answers with the app's security headers."""

from __future__ import annotations

import json
import os
import re
import select
import socket
import subprocess
import sys
import time
import tracemalloc

import psutil
import pytest

pytest.importorskip("flask")

from bgrun.config import Config
from bgrun.dashboard.app import create_app

TOKEN = "limits-token-0123456789abcdef"
BEARER = {"Authorization": f"Bearer {TOKEN}"}
FIFTY_MB = 50 * 1024 * 1024


def start_dashboard(project, code: str = "") -> tuple[subprocess.Popen[str], int]:
    """`bgrun dashboard --port 0` (after `code`, run in the same interpreter first)."""
    from bgrun.context import Context

    Context.open(Config.load())  # the dashboard reads a store; it never makes one
    script = (f"{code}\nimport sys\nfrom bgrun.cli import main\n"
              "sys.argv = ['bgrun', 'dashboard', '--port', '0']\nmain()\n")
    proc = subprocess.Popen([sys.executable, "-c", script], cwd=project.path,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "BGRUN_DASHBOARD_TOKEN": TOKEN})
    line = proc.stdout.readline()
    match = re.search(r"serving on http://127\.0\.0\.1:(\d+)/", line)
    assert match, line + (proc.stderr.read() if proc.poll() is not None else "")
    return proc, int(match.group(1))


def stop(proc: subprocess.Popen[str]) -> None:
    proc.terminate()
    proc.communicate(timeout=10)


def head(port: int, path: str, extra: str) -> bytes:
    return (f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n{extra}\r\n").encode()


def answer(sock: socket.socket, timeout: float = 5) -> bytes:
    sock.settimeout(timeout)
    data = b""
    try:
        while b"\r\n\r\n" not in data:
            chunk = sock.recv(65536)
            if not chunk:
                break
            data += chunk
    except (TimeoutError, ConnectionResetError):
        pass
    return data


def test_a_50_mb_body_is_refused_before_it_is_read(project):
    proc, port = start_dashboard(project)
    try:
        # Content-Length says 50 MB: answered at once, not after waiting for the body.
        with socket.create_connection(("127.0.0.1", port)) as sock:
            sock.sendall(head(port, "/login", f"Content-Length: {FIFTY_MB}\r\n"))
            start = time.monotonic()
            reply = answer(sock)
            assert reply.startswith(b"HTTP/1.1 413"), reply[:200]
            assert time.monotonic() - start < 2
            for name in (b"Content-Security-Policy", b"X-Content-Type-Options: nosniff",
                         b"X-Frame-Options: DENY", b"Cache-Control: no-store"):
                assert name in reply, name  # waitress's own page, with the app's headers
        # Chunked, no length: cut off soon after the limit, long before 50 MB went in.
        rss_before = psutil.Process(proc.pid).memory_info().rss
        sent, reply = 0, b""
        with socket.create_connection(("127.0.0.1", port)) as sock:
            sock.sendall(head(port, "/api/jobs/1/cancel", "Transfer-Encoding: chunked\r\n"))
            chunk = b"100000\r\n" + b"x" * 0x100000 + b"\r\n"  # 1 MiB chunks
            try:
                while sent < FIFTY_MB:
                    if select.select([sock], [], [], 0)[0]:
                        break  # the server answered: stop sending
                    sock.sendall(chunk)
                    sent += len(chunk)
            except (BrokenPipeError, ConnectionResetError):
                pass
            reply = answer(sock)
        grown = psutil.Process(proc.pid).memory_info().rss - rss_before
    finally:
        stop(proc)
    print(f"chunked: sent {sent / 2**20:.1f} MiB before the refusal; dashboard grew"
          f" {grown / 2**20:.1f} MiB")
    assert sent < FIFTY_MB / 2
    assert grown < 16 * 2**20
    assert reply == b"" or reply.startswith(b"HTTP/1.1 413"), reply[:200]


def test_idle_connections_are_closed_so_they_cannot_lock_everyone_out(project):
    patch = ("from bgrun.dashboard import server\n"
             "server.LIMITS.update(channel_timeout=1, cleanup_interval=1, connection_limit=4)")
    proc, port = start_dashboard(project, patch)
    idle = [socket.create_connection(("127.0.0.1", port)) for _ in range(8)]
    try:
        start = time.monotonic()
        with socket.create_connection(("127.0.0.1", port)) as sock:
            sock.sendall(f"GET /api/counts HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
                         f"Authorization: Bearer {TOKEN}\r\n\r\n".encode())
            reply = answer(sock, timeout=15)
        waited = time.monotonic() - start
    finally:
        for sock in idle:
            sock.close()
        stop(proc)
    assert reply.startswith(b"HTTP/1.1 200"), reply[:200]
    assert waited < 10


def test_the_limits_fit_a_dashboard(project):
    from bgrun.context import Context
    from bgrun.dashboard.server import build_server

    Context.open(Config.load())  # the dashboard reads a store; it never makes one
    served = build_server(Config.load(), "127.0.0.1", 0, {"BGRUN_DASHBOARD_TOKEN": TOKEN})
    try:
        adj = served.server.adj
        assert adj.max_request_body_size == 64 * 1024
        assert adj.max_request_header_size <= 64 * 1024
        assert adj.channel_timeout <= 30
        assert adj.connection_limit >= 50
        assert not adj.expose_tracebacks
    finally:
        served.server.close()
        # waitress starts its worker threads when the server is made: stop them, or this
        # test process stays threaded and later tests see a runner that may not fork.
        served.server.task_dispatcher.shutdown()


def fill_store(count: int, params_bytes: int) -> None:
    from bgrun.context import Context
    from bgrun.store import NewJob, Role

    config = Config.load()
    store = Context.open(config, Role.RUNNER).store  # a quick fill: no fsync per job
    params = json.dumps(["p" * params_bytes])
    now = time.time()
    for _ in range(count):
        store.insert(NewJob("jobs", "echo", params, 0, 0, None, now + 3600,
                            os.getcwd(), sys.executable, "{}", str(config.allowlist)), now)


def test_one_list_answer_stays_under_its_cap_and_pages_on(project):
    from bgrun.dashboard.present import MAX_LIST_BYTES

    fill_store(300, 40_000)  # 12 MB of params
    client = create_app(Config.load(), TOKEN).test_client()
    tracemalloc.start()
    response = client.get("/api/jobs?limit=1000", headers=BEARER)
    body = response.get_data()
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert response.status_code == 200
    assert len(body) <= MAX_LIST_BYTES + 41_000
    assert peak < 6 * MAX_LIST_BYTES, peak  # the rows, their dicts, the JSON: not 12 MB x 4
    seen = [job["id"] for job in json.loads(body)]
    assert 10 < len(seen) < 300
    while "Link" in response.headers:  # the rest, page by page, each job once
        link = re.fullmatch(r'<(/api/jobs\?[^>]+)>; rel="next"', response.headers["Link"])
        assert "limit=1000" in link.group(1)
        response = client.get(link.group(1), headers=BEARER)
        page = [job["id"] for job in response.get_json()]
        assert len(response.get_data()) <= MAX_LIST_BYTES + 41_000
        seen += page
    assert seen == [str(n) for n in range(300, 0, -1)]
    html = client.get("/?limit=1000", headers=BEARER).get_data(as_text=True)
    rows = re.findall(r'data-id="(\d+)"', html)
    assert 10 < len(rows) < 300 and f"before={rows[-1]}" in html  # the Older link


def test_a_short_list_has_no_next_link(project):
    fill_store(3, 10)
    client = create_app(Config.load(), TOKEN).test_client()
    response = client.get("/api/jobs", headers=BEARER)
    assert len(response.get_json()) == 3 and "Link" not in response.headers
    response = client.get("/api/jobs?limit=2", headers=BEARER)
    assert response.headers["Link"] == '</api/jobs?limit=2&before=2>; rel="next"'
