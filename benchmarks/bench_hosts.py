"""bgrun on several hosts: the figures M1 to M6 of the several-hosts issue, from one command.

    python benchmarks/bench_hosts.py            # full sizes (a few minutes, root only)
    python benchmarks/bench_hosts.py --quick    # small sizes, short lease

It starts its own PostgreSQL cluster (tests/pgserver.py, under /tmp/netns-bench-*) and
its own hosts: network namespaces joined to the server by veth pairs (tests/netns.py),
each with its own folder, BGRUN_LOG_DIR and BGRUN_HOST, running `bgrun worker`s. The peer
of M6, Procrastinate (`pip install '.[bench]'`), runs on the same server in the same run.
Every figure is printed as a Markdown table row as it comes (stderr), then the table.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from hosts_versus import Bgrun, Procrastinate, procrastinate_version  # noqa: E402

from tests.netns import Host, unavailable  # noqa: E402
from tests.pgserver import PgServer, running_server, why_not_here  # noqa: E402
from tests.several import Several, gone  # noqa: E402


@dataclass
class Sizes:
    jobs: int = 1000  # M1: queued from 2 hosts, drained by 3
    lease: float = 15.0  # M2, M3: the default lease
    restart_jobs: int = 90  # M4
    limit_jobs: int = 40  # M5
    drain_jobs: int = 300  # M6
    enqueue_calls: int = 300  # M6
    repeats: int = 3  # M6 drains and enqueue rounds, the two sides alternating
    kills: int = 3  # M2


QUICK = Sizes(jobs=200, lease=3.0, restart_jobs=45, limit_jobs=20, drain_jobs=200,
              enqueue_calls=100, repeats=1, kills=1)


@dataclass
class Table:
    rows: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def add(self, ident: str, measure: str, figure: str, goal: str, met: bool | None) -> None:
        verdict = "" if met is None else "yes" if met else "**no**"
        row = f"| {ident} | {measure} | {figure} | {goal} | {verdict} |"
        self.rows.append(row)
        print(row, file=sys.stderr, flush=True)


def wait(predicate: Callable[[], Any], timeout: float, pause: float = 0.05) -> Any:
    deadline = time.monotonic() + timeout
    while not (value := predicate()):
        if time.monotonic() > deadline:
            raise RuntimeError(f"benchmark: condition not met within {timeout} s")
        time.sleep(pause)
    return value


def seconds_of(stamp: str) -> float:
    return datetime.fromisoformat(stamp).timestamp()


def all_done(s: Several, count: int) -> bool:
    jobs = s.jobs()
    return len(jobs) == count and all(j["status"] in ("completed", "failed") for j in jobs)


# -- M1: 1,000 jobs queued from 2 hosts, drained by 3 -----------------------------------


def m1_drain(server: PgServer, base: Path, sizes: Sizes, table: Table) -> None:
    with Several(server, base / "m1", lease=sizes.lease) as s:
        hosts = [s.add(f"h{i}") for i in (1, 2, 3)]
        for host in hosts:
            s.worker(host)
            s.worker(host)
        half = sizes.jobs // 2
        start = time.perf_counter()
        feeds = [s.enqueue(hosts[0], "a", half, 0.0), s.enqueue(hosts[1], "b", half, 0.0)]
        ids = [job for feed in feeds for job in feed.communicate(timeout=600)[0].split()]
        wait(lambda: all_done(s, len(ids)), timeout=60 + sizes.jobs, pause=0.5)
        took = time.perf_counter() - start
        jobs = s.jobs()
        lost = len(ids) - sum(j["status"] == "completed" for j in jobs)
        starts = Counter(m["tag"] for h in hosts for m in s.marks(h, "start"))
        twice = sum(n > 1 for n in starts.values())
        per_host = Counter(j["host"] for j in jobs)
        figure = (f"{lost} lost, {twice} run twice; per host "
                  + ", ".join(f"{h.name} {per_host[h.name]}" for h in hosts)
                  + f"; {len(ids) / took:.0f} jobs/s")
        table.add("M1", f"{len(ids)} jobs queued from 2 hosts, drained by 3 (2 workers each)",
                  figure, "0 lost, 0 run twice, every host took work",
                  lost == 0 and twice == 0 and all(per_host[h.name] for h in hosts))


# -- M2: a host killed ------------------------------------------------------------------


def started_on(s: Several, host: Host, tag: str) -> dict[str, Any]:
    return wait(lambda: s.started(host, tag), timeout=60)  # type: ignore[no-any-return]


def takeover(s: Several, job: str) -> dict[str, str] | None:
    return next((e for h in s.net.hosts for e in s.events(h) if e.get("job") == job
                 and "RunnerLost" in e.get("error", "")), None)


def m2_once(server: PgServer, folder: Path, lease: float) -> float:
    """Seconds from killing every process of a host mid-job to the takeover's line."""
    with Several(server, folder, lease=lease) as s:
        h1, h2 = s.add("h1"), s.add("h2")
        s.worker(h1)
        job = s.exec(h1, "k", retries=1, slow_on="h1", seconds=0.1, tree=True)
        started_on(s, h1, "k")
        s.worker(h2)
        killed = time.time()
        h1.kill_all()
        line = wait(lambda: takeover(s, job), timeout=lease * 3 + 30, pause=0.05)
        started_on(s, h2, "k")
        return seconds_of(line["time"]) - killed


def m2_kill(server: PgServer, base: Path, sizes: Sizes, table: Table) -> None:
    delays = [m2_once(server, base / f"m2-{i}", sizes.lease) for i in range(sizes.kills)]
    table.add("M2", f"a host killed (SIGKILL, every process): time until its job is taken"
              f" over (BGRUN_LEASE={sizes.lease:g}), {len(delays)} kills",
              f"median {statistics.median(delays):.1f} s, at most {max(delays):.1f} s",
              f"≤ {sizes.lease:g} s (the lease)", max(delays) <= sizes.lease)


# -- M3: a host cut off with a job running ----------------------------------------------


def m3_cut(server: PgServer, base: Path, sizes: Sizes, table: Table) -> None:
    with Several(server, base / "m3", lease=sizes.lease) as s:
        h1, h2 = s.add("h1"), s.add("h2")
        s.worker(h1)
        job = s.exec(h1, "c", retries=1, slow_on="h1", seconds=0.1, tree=True)
        running = started_on(s, h1, "c")
        s.worker(h2)
        cut = time.monotonic()
        h1.cut()
        ended = time_until(lambda: gone(running["pid"], running["child"]), sizes.lease * 2 + 10)
        final = wait(lambda: (d := s.show(job))["status"] in ("completed", "failed") and d,
                     timeout=sizes.lease * 3 + 30, pause=0.2)
        h1.heal()
        # h1's runner is back once it runs a new job (h2 gone): then compare the old job.
        h2.kill_all()
        again = s.exec(h1, "again", seconds=0.1)
        wait(lambda: s.show(again)["status"] == "completed", timeout=sizes.lease + 60)
        changed = [k for k, v in s.show(job).items() if final[k] != v]
        said = [e["status"] for e in s.events(h1) if e.get("job") == job
                and e.get("status") in ("abandoned", "fenced")]
        verdicts = len(s.verdicts(job))
        elsewhere = final["host"] == "h2" and s.started(h2, "c") is not None
        table.add("M3", "a host cut off (ip link down) with a job running"
                  f" (BGRUN_LEASE={sizes.lease:g})",
                  (f"tree ended {ended - cut:.1f} s after the cut" if ended is not None else
                   f"tree NOT ended {sizes.lease * 2 + 10:g} s after the cut")
                  + f"; re-run on {final['host']}; cut host logged {', '.join(said) or 'nothing'};"
                  f" after the heal the job changed in {len(changed)} field(s);"
                  f" {verdicts} verdict(s)",
                  "tree ended within the lease; re-run elsewhere; writes after heal change"
                  " 0 rows; one verdict",
                  ended is not None and ended - cut <= sizes.lease and elsewhere
                  and not changed and verdicts == 1)


def time_until(predicate: Callable[[], Any], timeout: float) -> float | None:
    """The monotonic time at which `predicate()` first held, or None after `timeout`."""
    try:
        wait(predicate, timeout, pause=0.02)
    except RuntimeError:
        return None
    return time.monotonic()


# -- M4: the server restarted mid-drain -------------------------------------------------


def m4_restart(server: PgServer, base: Path, sizes: Sizes, table: Table) -> None:
    with Several(server, base / "m4", lease=15.0) as s:
        hosts = [s.add(f"h{i}") for i in (1, 2, 3)]
        count = sizes.restart_jobs
        ids = s.enqueue(hosts[0], "r", count, 0.3).communicate(timeout=300)[0].split()
        for host in hosts:
            s.worker(host)
        wait(lambda: sum(len(s.marks(h, "end")) for h in hosts) >= count // 10, timeout=60)
        server.restart()
        back, since = time.time(), time.monotonic()
        renewed = time_until(lambda: len(r := s.renewed()) == 3 and min(r.values()) > back,
                             timeout=30)
        wait(lambda: all_done(s, len(ids)), timeout=120 + count, pause=0.5)
        lost = len(ids) - sum(j["status"] == "completed" for j in s.jobs())
        ends = Counter(m["tag"] for h in hosts for m in s.marks(h, "end"))
        twice = sum(n > 1 for n in ends.values())
        table.add("M4", f"the server restarted (pg_ctl restart -m fast) mid-drain of {count}"
                  " jobs on 3 hosts (1 worker each)",
                  f"{lost} lost, {twice} run twice; every host's runner renewed its lease "
                  + (f"{renewed - since:.1f} s after the server was back" if renewed
                     else "NOT within 30 s"),
                  "0 lost, runners back within 10 s",
                  lost == 0 and twice == 0 and renewed is not None and renewed - since <= 10)


# -- M5: a queue limit across 3 hosts ---------------------------------------------------


def sample_running(server: PgServer, db: str, count: int) -> list[int]:
    """Running jobs of queue 'limited', sampled every 50 ms until `count` jobs are done."""
    import psycopg

    samples = []
    query = ("SELECT count(*) FILTER (WHERE status = 'running' AND queue = 'limited'),"
             " count(*) FILTER (WHERE status IN ('completed', 'failed')) FROM bgrun.jobs")
    deadline = time.monotonic() + 60 + count
    with psycopg.connect(server.url(db), autocommit=True) as conn:
        while time.monotonic() < deadline:
            tick = time.monotonic()
            row = conn.execute(query).fetchone()
            assert row is not None
            samples.append(int(row[0]))
            if row[1] >= count:
                return samples
            time.sleep(max(0.05 - (time.monotonic() - tick), 0))
    raise RuntimeError("benchmark: the limited queue did not drain in time")


def m5_limit(server: PgServer, base: Path, sizes: Sizes, table: Table) -> None:
    with Several(server, base / "m5", lease=sizes.lease) as s:
        hosts = [s.add(f"h{i}") for i in (1, 2, 3)]
        for host in hosts:
            s.worker(host)
            s.worker(host)
        feed = s.enqueue(hosts[0], "q", sizes.limit_jobs, 0.3, queue="limited")
        samples = sample_running(server, s.db, sizes.limit_jobs)
        ids = feed.communicate(timeout=300)[0].split()
        assert len(ids) == sizes.limit_jobs
        spread = Counter(m["host"] for h in hosts for m in s.marks(h, "start"))
        table.add("M5", f"queue limit 2 across 3 hosts (2 workers each), {len(ids)} jobs,"
                  " running jobs sampled every 50 ms",
                  f"at most {max(samples)} running in {len(samples)} samples; ran on"
                  f" {len(spread)} hosts", "never above 2", max(samples) <= 2)


# -- M6: drain and enqueue latency against Procrastinate --------------------------------


def m6_versus(server: PgServer, base: Path, sizes: Sizes, table: Table) -> None:
    version = procrastinate_version()
    if version is None:
        table.notes.append("M6 not measured: Procrastinate is not installed"
                           " (pip install -c constraints.txt -e '.[bench]')")
        return
    peer = Procrastinate(server, server.new_database(template=None), base / "m6-procr")
    sides = [Bgrun(server, server.new_database(), base / f"m6-{mode}", mode)
             for mode in ("spawn", "fork", "warm")]
    # The sides alternate round by round, so that a change of load or disk speed during
    # the run falls on both.
    enqueues: dict[str, list[float]] = {"peer": [], "bgrun": []}
    drains: dict[str, list[float]] = {side.name: [] for side in [peer, *sides]}
    for _ in range(sizes.repeats):
        enqueues["peer"] += peer.enqueue(sizes.enqueue_calls // sizes.repeats, timed=True)
        enqueues["bgrun"] += sides[0].enqueue(sizes.enqueue_calls // sizes.repeats, timed=True)
        for side in [peer, *sides]:
            drains[side.name].append(side.drain(sizes.drain_jobs))
    ours, theirs = (statistics.median(enqueues[k]) for k in ("bgrun", "peer"))
    table.add("M6", "enqueue latency, median of one call (bgrun `run_background_job()`,"
              f" Procrastinate `defer()`), {sizes.enqueue_calls} calls each, alternating",
              f"bgrun {ms(ours)}, Procrastinate {version} {ms(theirs)}:"
              f" {ours / theirs:.2f}x", "≤ 1.0x", ours <= theirs)
    peer_drain = statistics.median(drains[peer.name])
    for side in sides:
        rate = statistics.median(drains[side.name])
        table.add("M6", f"drain {sizes.drain_jobs} no-op jobs, 2 at a time ({side.name};"
                  " Procrastinate: one worker, concurrency 2), median of"
                  f" {sizes.repeats}, alternating",
                  f"bgrun {rate:.0f} jobs/s, Procrastinate {peer_drain:.0f} jobs/s:"
                  f" {rate / peer_drain:.2f}x", "≥ 1.0x", rate >= peer_drain)


def ms(seconds: float) -> str:
    return f"{seconds * 1000:.2f} ms"


# -- the command ------------------------------------------------------------------------

STEPS: dict[str, Callable[[PgServer, Path, Sizes, Table], None]] = {
    "M1": m1_drain, "M2": m2_kill, "M3": m3_cut, "M4": m4_restart, "M5": m5_limit,
    "M6": m6_versus,
}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small sizes, a 3 s lease")
    parser.add_argument("--only", action="append", choices=list(STEPS),
                        help="run only this figure (repeatable)")
    args = parser.parse_args(argv)
    reason = unavailable() or why_not_here()
    if reason:
        print(f"bench_hosts: cannot run here: {reason}", file=sys.stderr)
        return 2
    sizes = QUICK if args.quick else Sizes()
    table = Table()
    started = time.perf_counter()
    base = Path(tempfile.mkdtemp(prefix="netns-bench-hosts-"))
    try:
        with running_server(prefix="netns-bench-pg-") as server:
            version = server_version(server)
            for name in args.only or list(STEPS):
                try:
                    STEPS[name](server, base, sizes, table)
                except (RuntimeError, AssertionError, subprocess.SubprocessError) as exc:
                    table.add(name, "(did not finish)", f"{type(exc).__name__}: {exc}", "",
                              False)
    finally:
        shutil.rmtree(base, ignore_errors=True)
    print("| id | measure | figure | goal | met |")
    print("| --- | --- | --- | --- | --- |")
    print("\n".join(table.rows))
    print()
    for note in table.notes:
        print(f"- {note}")
    print(f"- PostgreSQL {version}; python {sys.version.split()[0]};"
          f" nproc {os.cpu_count()}; sizes: {sizes}; took {time.perf_counter() - started:.0f} s")
    return 0


def server_version(server: PgServer) -> str:
    return subprocess.run([str(server.bin / "postgres"), "--version"], capture_output=True,
                          text=True).stdout.split()[2]


if __name__ == "__main__":
    sys.exit(main())
