"""M6: bgrun on PostgreSQL against Procrastinate (PyPI, pinned in constraints.txt), on
the same server in the same run.

Enqueue latency: one call that queues a no-op job, `run_background_job()` for bgrun
(BGRUN_START_RUNNERS=0: queueing only), `defer()` for Procrastinate, each timed in a
process that keeps its connection. Drain: `count` no-op jobs stored first, then 2
`bgrun worker`s (one slot each) or one `procrastinate worker --concurrency=2` started,
timed from that start until the last job is recorded done in the database. Both run in
the root namespace and reach the server over loopback TCP.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

PY = sys.executable

TASKS = '''\
"""No-op task for the Procrastinate side of bgrun's several-hosts benchmark."""
import os

from procrastinate import App, PsycopgConnector

app = App(connector=PsycopgConnector(conninfo=os.environ["PROCRASTINATE_URL"]))


@app.task(name="noop")
def noop():
    return None
'''

# Run with the app's folder as cwd: apply Procrastinate's schema, or time N defers.
PROCRASTINATE_ENQUEUE = """
import sys, time
import proctasks
with proctasks.app.open():
    if sys.argv[1] == "schema":
        proctasks.app.schema_manager.apply_schema()
        sys.exit()
    out = []
    for _ in range(int(sys.argv[2])):
        t = time.perf_counter()
        proctasks.noop.defer()
        out.append(time.perf_counter() - t)
    if sys.argv[1] == "time":
        print(*out)
"""

# bgrun's side: the same no-op job, as cheap to import as Procrastinate's task module.
BGRUN_FILES = {
    "m6jobs.py": '"""No-op job for the bgrun side of M6."""\n\n\ndef noop():\n    return None\n',
    "allowlist.toml": '[jobs."m6jobs"]\nmethods = ["noop"]\n',
}
# The same, with warm children: one forked child runs up to 100 of its jobs in a row, as
# Procrastinate's worker calls its tasks in its own process.
WARM_ALLOWLIST = '[jobs."m6jobs"]\nmethods = ["noop"]\nreuse = 100\n'

# Run in a bgrun project folder: time N run_background_job() calls, or just make N jobs.
BGRUN_ENQUEUE = """
import sys, time
from bgrun import run_background_job
out = []
for i in range(int(sys.argv[2])):
    t = time.perf_counter()
    run_background_job("m6jobs", "noop")
    out.append(time.perf_counter() - t)
if sys.argv[1] == "time":
    print(*out)
"""


def procrastinate_version() -> str | None:
    """Procrastinate's version, or None when it is not installed (pip install '.[bench]')."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("procrastinate")
    except PackageNotFoundError:
        return None


def wait(predicate: Callable[[], bool], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise RuntimeError(f"benchmark: a drain did not finish within {timeout} s")
        time.sleep(0.02)


class Side:
    """One system under test: where it runs, how it queues and how it drains."""

    name = ""

    def __init__(self, server: Any, db: str, folder: Path) -> None:
        self.server = server
        self.db = db
        self.folder = folder
        folder.mkdir(parents=True, exist_ok=True)

    def count_done(self) -> int:
        raise NotImplementedError

    def clear(self) -> None:
        raise NotImplementedError

    def run(self, argv: list[str], timeout: float = 600) -> str:
        result = subprocess.run(argv, cwd=self.folder, env=self.env(), capture_output=True,
                                text=True, timeout=timeout)
        if result.returncode != 0:
            raise RuntimeError(f"benchmark: {self.name} failed: {result.stderr[-2000:]}")
        return result.stdout

    def env(self) -> dict[str, str]:
        raise NotImplementedError

    def enqueue(self, calls: int, timed: bool) -> list[float]:
        raise NotImplementedError

    def workers(self) -> list[subprocess.Popen[bytes]]:
        raise NotImplementedError

    def drain(self, count: int) -> float:
        """Jobs/s from the workers' start until `count` stored jobs are done."""
        self.clear()
        self.enqueue(count, timed=False)
        start = time.perf_counter()
        workers = self.workers()
        try:
            wait(lambda: self.count_done() >= count, timeout=60 + count)
            return count / (time.perf_counter() - start)
        finally:
            for worker in workers:
                worker.terminate()
            for worker in workers:
                try:
                    worker.wait(30)
                except subprocess.TimeoutExpired:
                    worker.kill()
                    worker.wait()

    def scalar(self, query: str) -> int:
        return int(self.server.admin(query, dbname=self.db)[0][0])


class Procrastinate(Side):
    name = "Procrastinate"

    def __init__(self, server: Any, db: str, folder: Path) -> None:
        super().__init__(server, db, folder)
        (folder / "proctasks.py").write_text(TASKS)
        self.run([PY, "-c", PROCRASTINATE_ENQUEUE, "schema"])

    def env(self) -> dict[str, str]:
        return {**os.environ, "PROCRASTINATE_URL": self.server.url(self.db)}

    def enqueue(self, calls: int, timed: bool) -> list[float]:
        out = self.run([PY, "-c", PROCRASTINATE_ENQUEUE, "time" if timed else "make",
                        str(calls)])
        return [float(x) for x in out.split()]

    def count_done(self) -> int:
        return self.scalar("SELECT count(*) FROM procrastinate_jobs"
                           " WHERE status = 'succeeded'")

    def clear(self) -> None:
        self.server.admin("DELETE FROM procrastinate_jobs", dbname=self.db)

    def workers(self) -> list[subprocess.Popen[bytes]]:
        return [subprocess.Popen(
            [PY, "-m", "procrastinate", "--app=proctasks.app", "worker", "--concurrency=2"],
            cwd=self.folder, env=self.env(), stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)]


class Bgrun(Side):
    """bgrun in a project folder of its own (allowlist.toml, the m6jobs module)."""

    def __init__(self, server: Any, db: str, folder: Path, mode: str = "spawn") -> None:
        super().__init__(server, db, folder)
        self.mode = mode
        self.name = ("bgrun (fork mode, warm children: reuse = 100)" if mode == "warm"
                     else f"bgrun ({mode} mode)")
        for name, text in BGRUN_FILES.items():
            (folder / name).write_text(text)
        if mode == "warm":
            (folder / "allowlist.toml").write_text(WARM_ALLOWLIST)

    def env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("BGRUN_")}
        env.update(BGRUN_STORE=self.server.url(self.db), BGRUN_HOST="bench",
                   BGRUN_START_RUNNERS="0", BGRUN_CONCURRENCY="2",
                   BGRUN_MODE="fork" if self.mode == "warm" else self.mode,
                   BGRUN_LOG_DIR=str(self.folder / "logs"))
        return env

    def enqueue(self, calls: int, timed: bool) -> list[float]:
        out = self.run([PY, "-c", BGRUN_ENQUEUE, "time" if timed else "make", str(calls)])
        return [float(x) for x in out.split()]

    def count_done(self) -> int:
        return self.scalar("SELECT count(*) FROM bgrun.jobs WHERE status = 'completed'")

    def clear(self) -> None:
        self.server.admin("DELETE FROM bgrun.outputs", dbname=self.db)
        self.server.admin("DELETE FROM bgrun.attempts", dbname=self.db)
        self.server.admin("DELETE FROM bgrun.jobs", dbname=self.db)

    def workers(self) -> list[subprocess.Popen[bytes]]:
        return [subprocess.Popen([PY, "-m", "bgrun", "worker"], cwd=self.folder,
                                 env=self.env(), stdin=subprocess.DEVNULL,
                                 stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
                for _ in range(2)]
