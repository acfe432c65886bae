"""Why a job waits on a store several hosts share: no live runner serves its queue."""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from bgrun.config import Config
from bgrun.context import Context
from bgrun.store import NewJob
from bgrun.waiting import Look, waiting_reason


@pytest.fixture
def web(tmp_path: Path, pg_url: str) -> Iterator[Context]:
    """A host that queues but starts no runners, on a fresh PostgreSQL store."""
    ctx = web_host(tmp_path, pg_url)
    yield ctx
    ctx.store.close()


def web_host(tmp_path: Path, url: str) -> Context:
    (tmp_path / "allowlist.toml").write_text('[jobs."examples.tasks"]\nmethods = ["slow"]\n')
    environ = {"BGRUN_STORE": url, "BGRUN_LOG_DIR": str(tmp_path / "logs"),
               "BGRUN_HOST": "web-1", "BGRUN_START_RUNNERS": "0", "BGRUN_LEASE": "5"}
    return Context.open(Config.load(cwd=tmp_path, environ=environ))


def queued(ctx: Context, queue: str) -> str:
    job = NewJob(target="examples.tasks", method="slow", params_json="[]", priority=0,
                 retries=0, timeout=None, run_at=time.time(), cwd=str(ctx.config.log_dir),
                 python="python3", env_json="{}", allowlist=str(ctx.config.allowlist),
                 queue=queue, queued_on="web-1")
    return ctx.store.insert(job, time.time())[0]


def reason(ctx: Context, job_id: str) -> str | None:
    return waiting_reason(ctx.store.get(job_id), Look(ctx, time.time()))


def test_a_job_no_live_runner_serves_says_so_until_one_does(web):
    ctx = web
    report = queued(ctx, "reports")
    assert reason(ctx, report) == ("no runner on any host serves queue reports now (start"
                                   " `bgrun worker` on a worker host)")
    ctx.store.register_runner(0, os.getpid(), 1.0, time.time(), queues="mail")
    assert reason(ctx, report) is not None  # a runner of another queue does not serve it
    ctx.store.register_runner(1, os.getpid(), 1.0, time.time(), queues="mail,reports")
    assert reason(ctx, report) is None
    ctx.store.unregister_runner(1, os.getpid())
    ctx.store.register_runner(1, os.getpid(), 1.0, time.time())  # every queue
    assert reason(ctx, queued(ctx, "default")) is None


def test_every_slot_busy_is_not_told_across_hosts(web):
    """BGRUN_CONCURRENCY counts this host's slots; jobs running on other hosts fill none."""
    ctx = web._replace(config=web.config._replace(concurrency=1))
    ctx.store.register_runner(0, os.getpid(), 1.0, time.time())
    first, second = queued(ctx, "default"), queued(ctx, "default")
    assert ctx.store.claim(time.time(), 0, os.getpid()) is not None
    waiting = second if ctx.store.get(first).stored_status.value == "running" else first
    assert reason(ctx, waiting) is None
