"""bgrun on several test hosts sharing one PostgreSQL database (tests and bench_hosts.py).

    with Several(server, tmp_path, lease=3) as s:
        h1, h2 = s.add("h1"), s.add("h2")
        s.worker(h1)
        job = s.exec(h1, "tag", slow_on="h1")
        ...

Every host is a network namespace (tests/netns.py) with its own folder (the working
directory of its `bgrun worker`s: allowlist.toml and the `hostjobs` module), its own
BGRUN_LOG_DIR and BGRUN_HOST, reaching the server over TCP through its veth.
BGRUN_START_RUNNERS=0 everywhere: only the `bgrun worker`s a test starts run jobs, so it
knows which host runs what. An observer in the root namespace reads the store over the
loopback address, which no fault touches.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import psutil

from tests.netns import Host, Network
from tests.pgserver import PgServer

PY = sys.executable
VERDICTS = ("completed", "failed", "cancelled")

# Each job says where and when it ran, in marks/ of the host folder it ran in (its
# runner's working directory), and may hold a grandchild so that "its tree ended" means
# something.
JOBS = '''\
"""Jobs of the several-hosts tests: each records where and when it ran."""
import json
import os
import subprocess
import sys
import time
from pathlib import Path


def _mark(kind, **data):
    line = {"kind": kind, "t": time.time(), "host": Path.cwd().name, "pid": os.getpid(),
            **data}
    with open("marks", "a") as f:
        f.write(json.dumps(line) + "\\n")


def work(tag, seconds=0.0, slow_on="", slow=120.0, tree=False):
    """Sleep `seconds` (`slow` on host `slow_on`), holding a grandchild when `tree`."""
    child = None
    if tree:
        child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])
    _mark("start", tag=tag, child=child.pid if child else None)
    time.sleep(slow if Path.cwd().name == slow_on else seconds)
    if child:
        child.kill()
        child.wait()
    _mark("end", tag=tag)
    return Path.cwd().name
'''

ALLOWLIST = """\
[jobs."hostjobs"]
methods = ["work"]

[queues.limited]
concurrency = 2
"""

# Run in a host: queue `count` jobs through the API; print their ids, one a line.
ENQUEUE = """
import sys
from bgrun import run_background_job
prefix, count, seconds, queue = sys.argv[1], int(sys.argv[2]), float(sys.argv[3]), sys.argv[4]
for i in range(count):
    job = run_background_job("hostjobs", "work", {"tag": f"{prefix}{i}", "seconds": seconds},
                             queue=queue or None)
    print(job.id, flush=True)
"""

FAST = {"BGRUN_TICK": "0.05", "BGRUN_BACKOFF_BASE": "0.05", "BGRUN_BACKOFF_MAX": "0.2",
        "BGRUN_CANCEL_GRACE": "1"}


class Several:
    """A database of `server` and the hosts that share it, all gone at the end."""

    def __init__(self, server: PgServer, folder: Path, lease: float,
                 **settings: str) -> None:
        self.server = server
        self.folder = folder
        self.lease = lease
        self.settings = {"BGRUN_LEASE": str(lease), "BGRUN_START_RUNNERS": "0",
                         "BGRUN_CONCURRENCY": "2", **FAST, **settings}
        self.net = Network(folder)
        self.db = ""
        self.observer = folder / "observer"

    def __enter__(self) -> Several:
        self.net.__enter__()
        self.db = self.server.new_database()
        self._populate(self.observer)
        return self

    def __exit__(self, *exc: object) -> None:
        try:
            self.net.close()
        finally:
            self.server.drop_database(self.db)

    def _populate(self, home: Path) -> None:
        home.mkdir(parents=True, exist_ok=True)
        (home / "hostjobs.py").write_text(JOBS)
        (home / "allowlist.toml").write_text(ALLOWLIST)

    # -- hosts -----------------------------------------------------------------------------

    def add(self, name: str) -> Host:
        host = self.net.add(name)
        self._populate(host.home)
        return host

    def url(self, host: Host | None = None) -> str:
        """The store URL as `host` reaches it (over its veth), or the observer (loopback)."""
        return self.server.url(self.db, host=host.server_addr if host else None)

    def env(self, host: Host, **extra: str) -> dict[str, str]:
        """`host`'s environment: no BGRUN_* of the test's own, this store and settings."""
        env = {k: v for k, v in os.environ.items() if not k.startswith("BGRUN_")}
        env.update(BGRUN_HOST=host.name, BGRUN_LOG_DIR=str(host.log_dir),
                   BGRUN_STORE=self.url(host), **self.settings, **extra)
        return env

    def worker(self, host: Host, queues: str | None = None, **extra: str
               ) -> subprocess.Popen[bytes]:
        """A `bgrun worker` in `host` (one slot), its output in host folder/worker.out."""
        argv = [PY, "-m", "bgrun", "worker", *(["--queue", queues] if queues else [])]
        return host.popen(argv, env=self.env(host, **extra), output="worker.out")

    def exec(self, host: Host, tag: str, retries: int = 0, queue: str | None = None,
             **kwargs: object) -> str:
        """`bgrun exec hostjobs work TAG` in `host`; the job's id."""
        argv = [PY, "-m", "bgrun", "exec", "hostjobs", "work", tag, "--retries", str(retries),
                *(["--queue", queue] if queue else [])]
        for key, value in kwargs.items():
            argv += ["--kw-json", f"{key}={json.dumps(value)}"]
        result = host.run(argv, env=self.env(host))
        assert result.returncode == 0, result.stderr
        return result.stdout.strip()

    def enqueue(self, host: Host, prefix: str, count: int, seconds: float,
                queue: str = "") -> subprocess.Popen[str]:
        """Queue `count` jobs from `host` through the API, in the background; stdout: ids."""
        return subprocess.Popen(
            host.command([PY, "-c", ENQUEUE, prefix, str(count), str(seconds), queue]),
            env=self.env(host), cwd=host.home, stdout=subprocess.PIPE, text=True)

    # -- what happened ---------------------------------------------------------------------

    def cli(self, *args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
        """`bgrun ARGS` as the observer (root namespace, loopback TCP). Only once all is
        settled: a reading command settles lapsed jobs, as any bgrun process may."""
        env = {k: v for k, v in os.environ.items() if not k.startswith("BGRUN_")}
        env.update(BGRUN_STORE=self.url(), BGRUN_HOST="observer", BGRUN_START_RUNNERS="0",
                   BGRUN_LOG_DIR=str(self.observer / "logs"))
        return subprocess.run([PY, "-m", "bgrun", *args], cwd=self.observer, env=env,
                              capture_output=True, text=True, timeout=timeout)

    def show(self, job: str) -> dict[str, Any]:
        """The job's row, read by SQL: a `bgrun show` would itself settle lapsed jobs and
        so take part in what the test watches."""
        [found] = self._rows(f"WHERE id = {int(job)}")
        return found

    def jobs(self) -> list[dict[str, Any]]:
        """Every job's row, read by SQL (see show)."""
        return self._rows("ORDER BY id")

    def _rows(self, where: str) -> list[dict[str, Any]]:
        keys = ("id", "status", "host", "attempts", "error", "result", "finished_at",
                "queued_on", "queue")
        rows = self.server.admin(
            "SELECT id::text, status, runner_host, attempts, error, result, finished_at,"
            f" queued_on, queue FROM bgrun.jobs {where}", dbname=self.db)
        found = [dict(zip(keys, row, strict=True)) for row in rows]
        for row in found:
            row["result"] = json.loads(str(row["result"])) if row["result"] else None
        return found

    def renewed(self) -> dict[str, float]:
        """Each host's latest lease renewal (epoch seconds, by the server's clock)."""
        rows = self.server.admin("SELECT host, extract(epoch FROM max(renewed_at))::float8"
                                 " FROM bgrun.runners GROUP BY host", dbname=self.db)
        return {str(host): float(str(when)) for host, when in rows}

    def events(self, host: Host, errors: bool = False) -> list[dict[str, str]]:
        return self._events(host.log_dir, errors)

    def _events(self, log_dir: Path, errors: bool = False) -> list[dict[str, str]]:
        from bgrun.joblog import ERRORS_LOG, EVENTS_LOG, parse_line

        path = log_dir / (ERRORS_LOG if errors else EVENTS_LOG)
        if not path.exists():
            return []
        return [parse_line(line) for line in path.read_text().splitlines()]

    def verdicts(self, job: str) -> list[dict[str, str]]:
        """Every verdict line about `job` in every host's event log."""
        logs = [host.log_dir for host in self.net.hosts] + [self.observer / "logs"]
        return [e for log_dir in logs for e in self._events(log_dir)
                if e.get("job") == job and e.get("status") in VERDICTS]

    def marks(self, host: Host, kind: str | None = None) -> list[dict[str, Any]]:
        path = host.home / "marks"
        if not path.exists():
            return []
        found = [json.loads(line) for line in path.read_text().splitlines()]
        return [m for m in found if kind is None or m["kind"] == kind]

    def started(self, host: Host, tag: str) -> dict[str, Any] | None:
        """The start mark of `tag` on `host`, once it is there."""
        return next((m for m in self.marks(host, "start") if m["tag"] == tag), None)


def gone(*pids: int | None) -> bool:
    """Whether none of `pids` is a live process (a zombie counts as gone)."""
    for pid in pids:
        if pid is None:
            continue
        try:
            if psutil.Process(pid).status() != psutil.STATUS_ZOMBIE:
                return False
        except psutil.NoSuchProcess:
            continue
    return True
