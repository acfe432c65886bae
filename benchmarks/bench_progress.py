"""Figures for watching work move: the cost of bgrun.progress(), the stats route with
100,000 jobs, and the drain rate of jobs that report progress against jobs that don't.

    python benchmarks/bench_progress.py            # full sizes (a few minutes on 2 cores)
    python benchmarks/bench_progress.py --quick    # small sizes, seconds

Uses bench.py's throw-away projects; prints a Markdown table like it.
"""

from __future__ import annotations

import argparse
import os
import random
import sqlite3
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench import (
    Row,
    Sizes,
    Suite,
    bulk_insert,
    completed,
    context,
    median,
    new_job,
    project,
    watch,
)

from bgrun import run_background_job
from bgrun.settle import ensure_runner

PROGJOBS = '''\
"""Jobs for bench_progress.py: report progress, or not."""
import time

import bgrun


def report(times=100):
    for i in range(times):
        bgrun.progress(i, times, "working")
    return None


def tight(calls=10000, message="loading rows"):
    """Seconds per progress() call over `calls` calls in a tight loop, in this job."""
    start = time.perf_counter()
    for i in range(calls):
        bgrun.progress(i, calls, message)
    return (time.perf_counter() - start) / calls


def empty_loop(calls=10000):
    """The same loop with no call: its own cost, subtracted from tight()'s."""
    start = time.perf_counter()
    for i in range(calls):
        pass
    return (time.perf_counter() - start) / calls
'''
ALLOW = '\n[jobs."progjobs"]\nmethods = ["report", "tight", "empty_loop"]\n'


def setup(folder: Path) -> None:
    (folder / "progjobs.py").write_text(PROGJOBS)
    with open(folder / "allowlist.toml", "a") as f:
        f.write(ALLOW)


def bench_call(suite: Suite, repeats: int) -> None:
    """One progress() call: in a real job (the runner reads the pipe), and outside a job."""
    import bgrun

    for mode in ("spawn", "fork") if sys.platform != "win32" else ("spawn",):
        with project(BGRUN_MODE=mode) as folder:
            setup(folder)
            costs = []
            for _ in range(repeats):
                job = run_background_job("progjobs", "tight", [10_000])
                assert job.wait(120) == "completed", job.info()["error"]
                loop = run_background_job("progjobs", "empty_loop", [10_000])
                loop.wait(120)
                costs.append(job.result - loop.result)
        suite.add(Row(f"progress() in a job, 10,000 calls in a tight loop ({mode})",
                      f"{median(costs) * 1e6:.2f} µs a call", "", None, "microseconds",
                      median(costs) < 20e-6))
    start = time.perf_counter()
    for i in range(10_000):
        bgrun.progress(i, 10_000, "loading rows")
    outside = (time.perf_counter() - start) / 10_000
    suite.add(Row("progress() outside a job (checks its arguments only)",
                  f"{outside * 1e6:.2f} µs a call", "", None))


def bench_stats(suite: Suite, jobs: int, repeats: int) -> None:
    """GET /api/stats?minutes=60 with `jobs` finished jobs, half of them in the last hour."""
    from bgrun.config import Config
    from bgrun.dashboard.app import create_app

    with project():
        ctx = context()
        store_path = ctx.config.store
        ctx.store.close()
        job = new_job()
        now = time.time()
        db = sqlite3.connect(store_path, isolation_level=None)
        db.execute("BEGIN IMMEDIATE")
        db.executemany(
            "INSERT INTO jobs (target, method, params, status, priority, attempts, retries,"
            " created_at, run_at, ready_at, finished_at, cwd, python, env, allowlist)"
            " VALUES (?, ?, ?, ?, 0, 1, 0, ?, ?, ?, ?, ?, ?, ?, ?)",
            ((job.target, job.method, job.params_json, "failed" if i % 7 == 0 else "completed",
              t - 1, t - 1, t - 1, t, job.cwd, job.python, job.env_json, job.allowlist)
             for i in range(jobs)
             for t in [now - random.random() * (3600 if i % 2 else 7 * 86400)]),
        )
        db.execute("COMMIT")
        db.close()
        token = "bench-token-0123456789abcdef"
        client = create_app(Config.load(), token).test_client()
        headers = {"Authorization": f"Bearer {token}", "Host": "127.0.0.1"}
        for minutes in (60, 1440):
            times = []
            for _ in range(repeats):
                start = time.perf_counter()
                answer = client.get(f"/api/stats?minutes={minutes}", headers=headers)
                times.append(time.perf_counter() - start)
                assert answer.status_code == 200, answer.data
            suite.add(Row(f"GET /api/stats?minutes={minutes}, {jobs:,} finished jobs"
                          f" ({jobs // 2:,} in the last hour)",
                          f"{median(times) * 1000:.1f} ms", "", None, "< 100 ms" if minutes == 60
                          else "", median(times) < 0.1 if minutes == 60 else None))


def drain(times: int, count: int, window: int) -> list[float]:
    """Throughputs while a runner drains `count` stored jobs that report `times` times each
    (0: the same job body, importing bgrun, never reporting)."""
    with project() as folder:
        setup(folder)
        ctx = context()
        bulk_insert(ctx.config.store, new_job()._replace(
            target="progjobs", method="report", params_json=f"[{times}]",
            allowlist=str(folder / "allowlist.toml")), count)
        start = time.perf_counter()
        ensure_runner(ctx)
        rates = watch(count, lambda: completed(ctx), start, window)
        ctx.store.close()
        return rates


def bench_drain(suite: Suite, count: int, repeats: int) -> None:
    """Jobs that call progress() 100 times each against the same jobs that don't.

    Paired rounds, quiet then reporting: the figure is the median of the rounds' ratios,
    so a machine whose load drifts (other work on it) hits both sides of a round alike.
    """
    window = max(1, count // 10)
    quiet: list[float] = []
    loud: list[float] = []
    ratios: list[float] = []
    for _ in range(repeats):
        q, r = median(drain(0, count, window)), median(drain(100, count, window))
        quiet.append(q)
        loud.append(r)
        ratios.append(r / q)
    mode = os.environ.get("BGRUN_MODE") or ("fork" if sys.platform == "linux" else "spawn")
    suite.add(Row(f"drain {count} jobs calling progress() 100 times, concurrency 2 ({mode}),"
                  f" median of {repeats} paired rounds", f"{median(loud):.0f} jobs/s",
                  f"same jobs without it {median(quiet):.0f} jobs/s", median(ratios), "≥ 0.95",
                  median(ratios) >= 0.95))
    suite.notes.append("drain rounds (reporting/quiet): "
                       + ", ".join(f"{r:.2f}" for r in ratios))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small sizes: seconds")
    parser.add_argument("--only-drain", action="store_true", help="the drain rounds alone")
    args = parser.parse_args(argv)
    suite = Suite(Sizes())
    repeats = 3 if args.quick else 7
    if not args.only_drain:
        bench_call(suite, repeats)
        bench_stats(suite, 2_000 if args.quick else 100_000, repeats)
    bench_drain(suite, 100 if args.quick else 300, 1 if args.quick else 7)
    print("| benchmark | bgrun | baseline (same run) | ratio | goal | met |")
    print("| --- | --- | --- | --- | --- | --- |")
    for row in suite.rows:
        print(row.line())
    for note in suite.notes:
        print(f"- {note}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
