"""The PostgreSQL store alone: insert latency and claim rates on a throwaway local cluster.

    sudo python benchmarks/pg_store.py [--jobs 2000] [--processes 4] [--no-fsync]

Runs as root (the cluster belongs to the postgres user, tests/pgserver.py), over TCP
on the loopback, fsync on unless --no-fsync (then the figures are the CPU's and the
round trips', not the disk's). Prints one line per figure.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bgrun.config import Config
from bgrun.records import Outcome
from bgrun.store import NewJob, Store, open_store
from tests.pgserver import PgServer, running_server

JOB = NewJob(target="jobs", method="noop", params_json="[]", priority=0, retries=0,
             timeout=None, run_at=0.0, cwd="/", python=sys.executable, env_json="{}",
             allowlist="a", queued_on="bench")

DRAIN = """
import sys, time
from pathlib import Path
from bgrun.config import Config
from bgrun.records import Outcome
from bgrun.store import open_store
store = open_store(Config.load(cwd=Path("/tmp"), environ={
    "BGRUN_STORE": sys.argv[1], "BGRUN_LOG_DIR": "/tmp/pg-bench-logs", "BGRUN_HOST": "b"}))
start = float(sys.argv[2])
store.register_runner(0, 1, 1.0, time.time())  # (a claim needs a live lease)
while time.time() < start:
    pass
n = 0
while (got := store.claim(time.time(), 0, 1)) is not None:
    store.finish(got.id, got.attempts, time.time(), outcome=Outcome.COMPLETED)
    n += 1
print(n, time.time())
"""


def opened(url: str) -> Store:
    return open_store(Config.load(cwd=Path("/tmp"), environ={
        "BGRUN_STORE": url, "BGRUN_LOG_DIR": "/tmp/pg-bench-logs", "BGRUN_HOST": "bench"}))


def insert_latency(store: Store, jobs: int) -> list[float]:
    took = []
    for _ in range(jobs):
        started = time.perf_counter()
        store.insert(JOB, time.time())
        took.append(time.perf_counter() - started)
    return took


def claim_finish(store: Store, jobs: int) -> float:
    store.register_runner(0, 1, 1.0, time.time())  # (a claim needs a live lease)
    started = time.perf_counter()
    for _ in range(jobs):
        got = store.claim(time.time(), 0, 1)
        assert got is not None
        store.finish(got.id, got.attempts, time.time(), outcome=Outcome.COMPLETED)
    return (time.perf_counter() - started) / jobs


def drain(url: str, processes: int) -> tuple[int, float]:
    start = time.time() + 3.0
    procs = [subprocess.Popen([sys.executable, "-c", DRAIN, url, str(start)],
                              stdout=subprocess.PIPE, text=True) for _ in range(processes)]
    outs = [p.communicate()[0].split() for p in procs]
    return sum(int(o[0]) for o in outs), max(float(o[1]) for o in outs) - start


def backlog(server: PgServer, db: str, jobs: int) -> None:
    """`jobs` waiting jobs at once (one statement: the store's insert is measured above)."""
    server.admin(
        "INSERT INTO bgrun.jobs (target, method, params, status, priority, attempts, retries,"
        " created_at, run_at, ready_at, cwd, python, env, allowlist)"
        " SELECT 'jobs', 'noop', '[]', 'waiting', 0, 0, 0, n, n, n, '/', 'py', '{}', 'a'"
        f" FROM generate_series(1, {int(jobs)}) AS n", dbname=db)
    server.admin("ANALYZE bgrun.jobs", dbname=db)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--jobs", type=int, default=2000)
    parser.add_argument("--processes", type=int, default=4)
    parser.add_argument("--no-fsync", action="store_true")
    args = parser.parse_args()
    with running_server("pg-bench-") as server:
        if args.no_fsync:
            server.admin("ALTER SYSTEM SET fsync = off")
            server.admin("SELECT pg_reload_conf()")
        print(f"fsync {server.admin('SHOW fsync')[0][0]}")
        url = server.url(server.new_database())
        store = opened(url)
        took = sorted(insert_latency(store, args.jobs))
        print(f"insert latency: median {statistics.median(took) * 1e6:.0f} µs,"
              f" p95 {took[int(len(took) * 0.95)] * 1e6:.0f} µs ({args.jobs} inserts)")
        per = claim_finish(store, args.jobs // 2)
        print(f"claim+finish, one process: {per * 1e6:.0f} µs per job ({1 / per:.0f} jobs/s)")
        insert_latency(store, args.jobs // 2)
        done, seconds = drain(url, args.processes)
        print(f"claim+finish, {args.processes} processes at once: {done / seconds:.0f} jobs/s"
              f" ({done} jobs in {seconds:.2f} s)")
        backlog(server, url.rsplit("/", 1)[1], 20_000)
        per_big = claim_finish(store, 500)
        print(f"claim+finish with 20,000 jobs waiting: {per_big * 1e6:.0f} µs per job")
        store.close()


if __name__ == "__main__":
    main()
