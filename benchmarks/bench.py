"""bgrun's benchmark suite: every figure a median over repeats, against a baseline
measured in the same run, printed as a Markdown table.

    python benchmarks/bench.py            # the full suite (a few minutes on 2 cores)
    python benchmarks/bench.py --quick    # small sizes, seconds

Each benchmark works in its own temporary project folder (allowlist.toml, a `benchjobs`
module, BGRUN_LOG_DIR inside it) and kills every process it started before the next one.
Ratios are written so that the goal is a bound: throughput ratios are bgrun/baseline
(higher is better), latency and cost ratios are bgrun/baseline (lower is better).
"""

from __future__ import annotations

import argparse
import compileall
import contextlib
import os
import shutil
import signal
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import psutil

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bgrun import run_background_job  # noqa: E402
from bgrun.config import Config  # noqa: E402
from bgrun.context import Context  # noqa: E402
from bgrun.enqueue import Request, validate  # noqa: E402
from bgrun.records import Outcome  # noqa: E402
from bgrun.settle import ensure_runner  # noqa: E402
from bgrun.store import NewJob, Role, open_store  # noqa: E402

PY = sys.executable
CHILD = str(ROOT / "bgrun" / "_spawned.py")  # a spawned job child's entry script
TAG = "BGRUN_BENCH_TAG"

JOBS_MODULE = '''\
"""No-op jobs for bgrun's benchmarks (kept as cheap to import as a module can be)."""
import time


def noop():
    return None


def stamp(path):
    now = time.time()  # the job's first line of code
    with open(path, "w") as f:
        f.write(repr(now))


def memory():
    """This process's peak RSS and its private (unshared) memory, in KiB."""
    out = {}
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(("VmHWM:", "VmRSS:")):
                out[line.split(":")[0]] = int(line.split()[1])
    try:
        with open("/proc/self/smaps_rollup") as f:
            out["private"] = sum(int(line.split()[1]) for line in f
                                 if line.startswith(("Private_Clean:", "Private_Dirty:")))
    except OSError:
        pass
    return out
'''

HUEY_MODULE = '''\
import os
from huey import SqliteHuey

huey = SqliteHuey(filename=os.environ["HUEY_DB"], results=True, store_none=True, fsync=True)


@huey.task()
def noop():
    return None
'''

ALLOWLIST = '[jobs."benchjobs"]\nmethods = ["noop", "stamp", "memory"]\n'
ENQUEUE_BLOCK = 10  # consecutive calls of one contender (see bench_enqueue)
WARM_REUSE = 100  # jobs per warm child in the warm-children drain (`reuse` in the allowlist)


@dataclass
class Sizes:
    repeats: int = 5
    drain_jobs: int = 1000
    drain_repeats: int = 2  # each drain gives 10 windows: the median is over all of them
    wake_repeats: int = 7
    enqueue_calls: int = 200
    scale_small: int = 1000
    scale_large: int = 100_000
    scale_ops: int = 300
    waiting_jobs: int = 10_000


QUICK = Sizes(repeats=3, drain_jobs=100, drain_repeats=1, wake_repeats=3, enqueue_calls=30,
              scale_small=200, scale_large=2000, scale_ops=50, waiting_jobs=300)
TINY = Sizes(repeats=1, drain_jobs=4, drain_repeats=1, wake_repeats=1, enqueue_calls=3,
             scale_small=20, scale_large=60, scale_ops=5, waiting_jobs=20)


@dataclass
class Row:
    name: str
    value: str
    baseline: str
    ratio: float | None
    goal: str = ""
    met: bool | None = None

    def line(self) -> str:
        ratio = "" if self.ratio is None else f"{self.ratio:.2f}"
        met = "" if self.met is None else ("yes" if self.met else "**no**")
        return f"| {self.name} | {self.value} | {self.baseline} | {ratio} | {self.goal} | {met} |"


@dataclass
class Suite:
    sizes: Sizes
    rows: list[Row] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def add(self, row: Row) -> None:
        self.rows.append(row)
        print(row.line(), file=sys.stderr, flush=True)


def median(values: list[float]) -> float:
    return statistics.median(values)


def ms(seconds: float) -> str:
    return f"{seconds * 1000:.1f} ms" if seconds >= 0.001 else f"{seconds * 1e6:.0f} µs"


# -- a throw-away project ------------------------------------------------------------------


@contextlib.contextmanager
def project(reuse: int | None = None, **settings: str) -> Iterator[Path]:
    """A temp project folder as cwd, with BGRUN_* settings; kills its processes at the end.
    `reuse`: benchjobs runs in warm children of that many jobs each."""
    folder = Path(tempfile.mkdtemp(prefix="bgrun-bench-"))
    (folder / "benchjobs.py").write_text(JOBS_MODULE)
    (folder / "hueyjobs.py").write_text(HUEY_MODULE)
    (folder / "allowlist.toml").write_text(ALLOWLIST + (f"reuse = {reuse}\n" if reuse else ""))
    compileall.compile_dir(folder, quiet=1)  # as bgrun's own: see compile_bgrun
    saved_env = dict(os.environ)
    saved_cwd = os.getcwd()
    for key in [k for k in os.environ if k.startswith("BGRUN_")]:
        del os.environ[key]
    os.environ.update({
        "BGRUN_LOG_DIR": str(folder / "logs"), "BGRUN_CONCURRENCY": "2",
        "BGRUN_RUNNER_IDLE": "30", TAG: str(folder), "HUEY_DB": str(folder / "huey.db"),
        **settings,
    })
    os.chdir(folder)
    sys.path.insert(0, str(folder))
    try:
        yield folder
    finally:
        kill_tagged(folder)
        sys.path.remove(str(folder))
        for name in ("benchjobs", "hueyjobs"):
            sys.modules.pop(name, None)
        os.chdir(saved_cwd)
        os.environ.clear()
        os.environ.update(saved_env)
        shutil.rmtree(folder, ignore_errors=True)


def tagged(folder: Path) -> list[psutil.Process]:
    """Live processes started for this benchmark folder (runners, job children, consumers)."""
    found = []
    for proc in psutil.process_iter():
        try:
            if proc.pid == os.getpid() or proc.status() == psutil.STATUS_ZOMBIE:
                continue
            if proc.environ().get(TAG) == str(folder):
                found.append(proc)
        except psutil.Error:
            continue
    return found


def runners(folder: Path) -> list[psutil.Process]:
    out = []
    for proc in tagged(folder):
        with contextlib.suppress(psutil.Error):
            if any("_runner_main.py" in part for part in proc.cmdline()):
                out.append(proc)
    return out


def kill_tagged(folder: Path) -> None:
    procs = tagged(folder)
    for proc in procs:
        with contextlib.suppress(psutil.Error):
            proc.kill()
    psutil.wait_procs(procs, timeout=5)


def context() -> Context:
    return Context.open(Config.load())


def new_job(method: str = "noop", params: list[object] | None = None) -> NewJob:
    return validate(Config.load(), Request("benchjobs", method, params, check_import=False),
                    time.time())


def bulk_insert(store: Path, job: NewJob, count: int, status: str = "waiting",
                ready_at: float | None = None) -> None:
    """Insert `count` copies of `job` in one transaction (setting up, not measured)."""
    now = time.time()
    ready = now if ready_at is None else ready_at
    finished = now if status != "waiting" else None
    db = sqlite3.connect(store, isolation_level=None)
    db.execute("BEGIN IMMEDIATE")
    db.executemany(
        "INSERT INTO jobs (target, method, params, status, priority, attempts, retries,"
        " timeout, created_at, run_at, ready_at, finished_at, cwd, python, env, allowlist)"
        " VALUES (?, ?, ?, ?, 0, 0, 0, NULL, ?, ?, ?, ?, ?, ?, ?, ?)",
        ((job.target, job.method, job.params_json, status, now, ready, ready, finished,
          job.cwd, job.python, job.env_json, job.allowlist) for _ in range(count)),
    )
    db.execute("COMMIT")
    db.close()


def wait_for(predicate: Callable[[], bool], timeout: float, pause: float = 0.01) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise RuntimeError("benchmark: condition not met in time")
        time.sleep(pause)


def completed(ctx: Context) -> int:
    return ctx.store.counts().get("completed", 0)


# -- (a) drain ----------------------------------------------------------------------------


def window_rates(stamps: list[float], start: float, window: int) -> list[float]:
    """Jobs/s over each run of `window` completions (`stamps`: completion times, sorted)."""
    rates, last = [], start
    for k in range(window - 1, len(stamps), window):
        rates.append(window / max(stamps[k] - last, 1e-9))
        last = stamps[k]
    return rates or [len(stamps) / max(stamps[-1] - start, 1e-9)]


def bare_pool(folder: Path, count: int, window: int, workers: int = 2) -> list[float]:
    """Throughputs of a pool running fresh interpreters (import job, call it) 2 at a time."""
    argv = [PY, "-c", "import benchjobs; benchjobs.noop()"]
    stamps: list[float] = []

    def one(_: int) -> None:
        subprocess.run(argv, cwd=folder, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                       check=True)
        stamps.append(time.perf_counter())

    start = time.perf_counter()
    with ThreadPoolExecutor(workers) as pool:
        list(pool.map(one, range(count)))
    return window_rates(sorted(stamps), start, window)


def watch(count: int, done: Callable[[], int], start: float, window: int) -> list[float]:
    """Poll `done()` until `count`; the throughput of each window of completions."""
    stamps: list[float] = []
    deadline = time.monotonic() + 60 + count
    while len(stamps) < count:
        n = done()
        now = time.perf_counter()
        stamps.extend([now] * (n - len(stamps)))
        if time.monotonic() > deadline:
            raise RuntimeError("benchmark: drain did not finish in time")
        time.sleep(0.005)
    return window_rates(stamps[:count], start, window)


FORK_LOOP = """
import os, sys, time
n = int(sys.argv[1])
start = time.perf_counter()
for _ in range(n):
    pid = os.fork()
    if pid == 0:
        os._exit(0)
    os.waitpid(pid, 0)
print(time.perf_counter() - start)
"""


def fork_floor(count: int, workers: int = 2) -> float:
    """Forks/s of `workers` bare interpreters, each forking children that exit at once:
    the least a process per job can cost in this Python on this machine."""
    per = max(1, count // workers)
    procs = [subprocess.Popen([PY, "-c", FORK_LOOP, str(per)], stdout=subprocess.PIPE,
                              text=True) for _ in range(workers)]
    seconds = [float(p.communicate()[0]) for p in procs]
    return per * workers / max(seconds)


def bgrun_drain(mode: str, count: int, window: int, peaks: dict[str, int] | None = None,
                preload: bool = False, reuse: int | None = None) -> list[float]:
    """Throughputs from asking for a runner until `count` stored no-op jobs completed."""
    with project(reuse, BGRUN_MODE=mode, BGRUN_PRELOAD="1" if preload else "0") as folder:
        ctx = context()
        bulk_insert(ctx.config.store, new_job(), count)
        start = time.perf_counter()
        ensure_runner(ctx)
        rates = watch(count, lambda: completed(ctx), start, window)
        if peaks is not None:
            for proc in runners(folder):
                with contextlib.suppress(psutil.Error, OSError):
                    peaks[mode] = max(peaks.get(mode, 0), vm_hwm(proc.pid))
        ctx.store.close()
        return rates


def huey_drain(count: int, window: int) -> list[float] | None:
    """Throughputs of Huey's consumer (2 worker processes) on `count` stored no-op tasks."""
    try:
        import huey  # noqa: F401
    except ImportError:
        return None
    with project() as folder:
        import hueyjobs  # type: ignore[import-not-found]

        for _ in range(count):
            hueyjobs.noop()
        start = time.perf_counter()
        consumer = subprocess.Popen(
            [PY, "-m", "huey.bin.huey_consumer", "hueyjobs.huey", "-w", "2", "-k", "process",
             "-q", "-C"], cwd=folder, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            return watch(count, hueyjobs.huey.result_count, start, window)
        finally:
            consumer.send_signal(signal.SIGTERM)
            try:
                consumer.wait(5)
            except subprocess.TimeoutExpired:
                consumer.kill()
                consumer.wait()


def bench_drain(suite: Suite, peaks: dict[str, int]) -> None:
    """Each drain is cut into windows of completions; a figure is the median window's
    throughput (the first window also pays for starting the runner or consumer)."""
    n, reps = suite.sizes.drain_jobs, suite.sizes.drain_repeats
    window = max(1, n // 10)
    base: list[float] = []
    spawn: list[float] = []
    fork: list[float] = []
    preload: list[float] = []
    floor: list[float] = []
    huey: list[float] = []
    warm: list[float] = []
    for _ in range(reps):  # interleaved, so a busy moment of the machine hits all alike
        with project() as folder:
            base += bare_pool(folder, n, window)
        spawn += bgrun_drain("spawn", n, window, peaks)
        if sys.platform != "win32":
            fork += bgrun_drain("fork", n, window, peaks)
            preload += bgrun_drain("fork", n, window, preload=True)
            floor += [fork_floor(n) for _ in range(3)]
            warm += bgrun_drain("fork", n, window, reuse=WARM_REUSE)
        h = huey_drain(n, window)
        if h is not None:
            huey += h
    b = median(base)
    rate = f"{b:.0f} jobs/s"
    name = f"drain {n} no-op jobs, concurrency 2"
    suite.add(Row(f"{name}, spawn mode", f"{median(spawn):.0f} jobs/s", f"bare pool {rate}",
                  median(spawn) / b, "≥ 0.85", median(spawn) / b >= 0.85))
    if fork:
        suite.add(Row(f"{name}, fork mode", f"{median(fork):.0f} jobs/s", f"bare pool {rate}",
                      median(fork) / b, "≥ 0.85", median(fork) / b >= 0.85))
        suite.add(Row(f"{name}, fork mode + BGRUN_PRELOAD", f"{median(preload):.0f} jobs/s",
                      f"bare pool {rate}", median(preload) / b))
        f = median(floor)
        suite.add(Row("fork floor: 2 bare interpreters forking children that exit at once",
                      f"{f:.0f} forks/s", f"bare pool {rate}", f / b))
        suite.add(Row("drain, fork mode + BGRUN_PRELOAD vs the fork floor",
                      f"{median(preload):.0f} jobs/s", f"fork floor {f:.0f} forks/s",
                      median(preload) / f, "≥ 0.6", median(preload) / f >= 0.6))
    if huey:
        h = median(huey)
        suite.add(Row(f"Huey process consumer (2 workers), {n} no-op tasks", f"{h:.0f} jobs/s",
                      f"bare pool {rate}", h / b))
        if fork:
            best = max(median(fork), median(preload))
            suite.add(Row("drain, fork mode (best of the two rows) vs Huey process consumer",
                          f"{best:.0f} jobs/s", f"Huey {h:.0f} jobs/s",
                          best / h, "≥ 1.0", best / h >= 1.0))
            suite.add(Row("fork floor vs Huey process consumer", f"{median(floor):.0f} forks/s",
                          f"Huey {h:.0f} jobs/s", median(floor) / h))
            w = median(warm)
            suite.add(Row(f"drain, warm children (reuse = {WARM_REUSE}) vs Huey process"
                          " consumer", f"{w:.0f} jobs/s", f"Huey {h:.0f} jobs/s", w / h,
                          "≥ 1.0", w / h >= 1.0))
    else:
        suite.notes.append("Huey is not installed (pip install '.[bench]'): no Huey rows.")


# -- (b) wake-up --------------------------------------------------------------------------


def read_stamp(path: Path, timeout: float = 30) -> float:
    wait_for(lambda: path.exists() and path.stat().st_size > 0, timeout, pause=0.002)
    return float(path.read_text())


def fresh_interpreter_first_line(folder: Path, path: Path) -> float:
    path.unlink(missing_ok=True)
    start = time.time()
    subprocess.run([PY, "-c", f"import benchjobs; benchjobs.stamp({str(path)!r})"],
                   cwd=folder, stdin=subprocess.DEVNULL, check=True)
    return read_stamp(path) - start


def queued_first_line(path: Path) -> float:
    path.unlink(missing_ok=True)
    start = time.time()
    job = run_background_job("benchjobs", "stamp", [str(path)])
    latency = read_stamp(path) - start
    job.wait(timeout=30)
    return latency


def bench_wake(suite: Suite) -> None:
    reps = suite.sizes.wake_repeats
    for mode in ("spawn", "fork") if sys.platform != "win32" else ("spawn",):
        base, warm, cold = [], [], []
        with project(BGRUN_MODE=mode) as folder:
            stamp = folder / "stamp"
            run_background_job("benchjobs", "noop").wait(timeout=30)  # a runner is alive
            for _ in range(reps):
                base.append(fresh_interpreter_first_line(folder, stamp))
                time.sleep(0.3)  # the runner is idle again (FIFO open)
                warm.append(queued_first_line(stamp))
                kill_tagged(folder)  # no runner alive: the cold path
                time.sleep(0.05)
                cold.append(queued_first_line(stamp))
        b = median(base)
        suite.add(Row(f"wake-up, idle runner → job's first line ({mode})", ms(median(warm)),
                      f"interpreter start-up {ms(b)}", median(warm) / b, "≤ 1.3",
                      median(warm) / b <= 1.3))
        suite.add(Row(f"wake-up, no runner alive → job's first line ({mode})",
                      ms(median(cold)), f"interpreter start-up {ms(b)}", median(cold) / b,
                      "≤ 2.5", median(cold) / b <= 2.5))


# -- (c) enqueue --------------------------------------------------------------------------


class RawInsert:
    """The baseline: one single-row insert transaction in WAL mode, synchronous=FULL."""

    def __init__(self, folder: Path) -> None:
        self.db = sqlite3.connect(folder / "raw.sqlite3", isolation_level=None)
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute("PRAGMA synchronous=FULL")
        self.db.execute("CREATE TABLE t (id INTEGER PRIMARY KEY AUTOINCREMENT, target TEXT,"
                        " method TEXT, params TEXT, created_at REAL)")

    def __call__(self) -> None:
        self.db.execute("BEGIN IMMEDIATE")
        self.db.execute("INSERT INTO t (target, method, params, created_at) VALUES (?, ?, ?, ?)",
                        ("benchjobs", "noop", "[]", time.time()))
        self.db.execute("COMMIT")


def timed(func: Callable[[], object]) -> float:
    start = time.perf_counter()
    func()
    return time.perf_counter() - start


def bench_enqueue(suite: Suite) -> None:
    """Enqueue, in short blocks of consecutive calls, the contenders' blocks alternating.

    Blocks, not call by call: a call's side effects on the disk (an inode it dirtied, which
    the next fsync must journal) are paid by the next commit, whoever makes it, so strict
    alternation charged each contender with the other's. Short alternating blocks still
    spread the disk's moment-to-moment swings over every contender; the first call of
    each block (the one that pays the previous block's) is not counted.
    """
    calls = suite.sizes.enqueue_calls
    with project() as folder:
        run_background_job("benchjobs", "noop").wait(timeout=30)  # a runner is alive
        time.sleep(0.3)
        raw = RawInsert(folder)
        try:
            import hueyjobs

            huey_enqueue: Callable[[], object] | None = hueyjobs.noop
        except ImportError:
            huey_enqueue = None

        def ours() -> None:
            # Scheduled for later: the caller's path is the same (insert, settle, wake), and
            # no job runs meanwhile to compete for the CPU with the caller being measured.
            run_background_job("benchjobs", "noop", delay=3600)

        contenders: dict[str, Callable[[], object]] = {"raw": raw, "ours": ours}
        if huey_enqueue is not None:
            contenders["huey"] = huey_enqueue
        times: dict[str, list[float]] = {name: [] for name in contenders}
        for turn in range(max(1, calls // ENQUEUE_BLOCK)):
            order = list(contenders.items())
            for name, func in order if turn % 2 else order[::-1]:
                times[name] += [timed(func) for _ in range(ENQUEUE_BLOCK + 1)][1:]
        base, ours_times, hueys = times["raw"], times["ours"], times.get("huey", [])
        raw.db.close()
        o = median(ours_times)
        suite.add(Row("enqueue latency (API, runner alive)", ms(o),
                      f"raw SQLite insert (WAL, FULL) {ms(median(base))}", o / median(base)))
        if hueys:
            ratio = o / median(hueys)
            suite.add(Row("enqueue latency (API) vs Huey SqliteHuey enqueue (fsync=True)",
                          ms(o), f"Huey {ms(median(hueys))}", ratio, "≤ 1.0", ratio <= 1.0))
        cli, startup = [], []
        for _ in range(max(1, 3 * suite.sizes.repeats)):  # a whole process varies most
            cli.append(timed(lambda: subprocess.run(
                [PY, "-m", "bgrun", "exec", "benchjobs", "noop", "--delay", "3600"],
                cwd=folder, capture_output=True, check=True)))
            startup.append(timed(lambda: subprocess.run([PY, "-c", "pass"], cwd=folder,
                                                        check=True)))
        ratio = median(cli) / median(startup)
        suite.add(Row("`bgrun exec` (CLI, whole process)", ms(median(cli)),
                      f"`python -c pass` {ms(median(startup))}", ratio, "≤ 1.5", ratio <= 1.5))


# -- (d) scale ----------------------------------------------------------------------------


def claim_finish_cost(total: int, ops: int, repeats: int) -> float:
    """Seconds per claim+finish (as a runner does them) with `total` jobs in the store."""
    with project():
        ctx = context()
        ctx.store.close()
        job = new_job()
        waiting = max(ops * repeats, total // 10)
        bulk_insert(ctx.config.store, job, total - waiting, status="completed")
        bulk_insert(ctx.config.store, job, waiting)
        store = open_store(ctx.config, Role.RUNNER)
        per = []
        for _ in range(repeats):
            start = time.perf_counter()
            for _ in range(ops):
                now = time.time()
                claimed = store.claim(now, 0, os.getpid())
                assert claimed is not None
                store.finish(claimed.id, claimed.attempts, now, outcome=Outcome.COMPLETED,
                             result_json="null")
            per.append((time.perf_counter() - start) / ops)
        store.close()
        return median(per)


def list_first_page(total: int, repeats: int, status: str | None = None) -> float:
    with project() as folder:
        ctx = context()
        ctx.store.close()
        job = new_job()
        bulk_insert(ctx.config.store, job, total - total // 10, status="completed")
        bulk_insert(ctx.config.store, job, total // 10)
        argv = [PY, "-m", "bgrun", "list"] + (["--status", status] if status else [])
        times = []
        for _ in range(repeats):
            start = time.perf_counter()
            subprocess.run(argv, cwd=folder, capture_output=True, check=True)
            times.append(time.perf_counter() - start)
        return median(times)


def bench_scale(suite: Suite) -> None:
    s = suite.sizes
    small = claim_finish_cost(s.scale_small, s.scale_ops, s.repeats)
    large = claim_finish_cost(s.scale_large, s.scale_ops, s.repeats)
    suite.add(Row(f"claim+finish per job, {s.scale_large:,} jobs in store", ms(large),
                  f"{s.scale_small:,} jobs {ms(small)}", large / small, "≤ 1.2",
                  large / small <= 1.2))
    reps = max(1, min(s.repeats, 3))
    for status in (None, "queued"):
        small = list_first_page(s.scale_small, reps, status)
        large = list_first_page(s.scale_large, reps, status)
        flag = f" --status {status}" if status else ""
        suite.add(Row(f"`bgrun list{flag}` first page, {s.scale_large:,} jobs", ms(large),
                      f"{s.scale_small:,} jobs {ms(small)}", large / small))
    bench_processes(suite)


def bench_processes(suite: Suite) -> None:
    """Processes of this store while `waiting_jobs` jobs wait: sampled for 3 s of draining.
    The figure is the usual count (the mode of the samples); the max also catches a runner
    that is starting (its launcher's first half) in the instant it forks."""
    n = suite.sizes.waiting_jobs
    with project() as folder:
        ctx = context()
        bulk_insert(ctx.config.store, new_job(), n)
        ensure_runner(ctx)
        all_counts, runner_counts = [], []
        deadline = time.monotonic() + 3.0
        while time.monotonic() < deadline:
            all_counts.append(len(tagged(folder)))
            runner_counts.append(len(runners(folder)))
            time.sleep(0.05)
        conc = ctx.config.concurrency
        ctx.store.close()
    usual_runners = statistics.mode(runner_counts)
    usual_all = statistics.mode(all_counts)
    suite.add(Row(f"runner processes alive, {n:,} waiting jobs",
                  f"{usual_runners} (max {max(runner_counts)})", f"concurrency {conc}", None,
                  f"≤ {conc + 1}", usual_runners <= conc + 1))
    suite.add(Row(f"all processes alive (runners + job children), {n:,} waiting jobs",
                  f"{usual_all} (max {max(all_counts)})", f"concurrency {conc}", None,
                  f"≤ {2 * conc}", usual_all <= 2 * conc))


# -- (e) memory ---------------------------------------------------------------------------


def vm_hwm(pid: int) -> int:
    """Peak RSS of `pid` in KiB (Linux)."""
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    return 0


def bench_memory(suite: Suite, peaks: dict[str, int]) -> None:
    if not Path("/proc/self/status").exists():
        suite.notes.append("memory: /proc is not available here; skipped.")
        return
    with project() as folder:
        out = subprocess.run([PY, "-c", "import benchjobs; print(benchjobs.memory())"],
                             cwd=folder, capture_output=True, text=True, check=True)
        bare = eval(out.stdout)  # our own dict literal
        results = {}
        for mode in ("spawn", "fork"):
            os.environ["BGRUN_MODE"] = mode
            kill_tagged(folder)
            results[mode] = run_background_job("benchjobs", "memory")
            results[mode].wait(timeout=30)
            for proc in runners(folder):
                peaks[mode] = max(peaks.get(mode, 0), vm_hwm(proc.pid))
        bare_kib = bare["VmHWM"]
        for mode in ("spawn", "fork"):
            if mode in peaks:
                suite.add(Row(f"runner peak RSS ({mode} mode)", f"{peaks[mode] / 1024:.1f} MiB",
                              f"bare interpreter {bare_kib / 1024:.1f} MiB",
                              peaks[mode] / bare_kib))
        for mode, job in results.items():
            info = job.result or {}
            peak = info.get("VmHWM", 0)
            private = info.get("private")
            extra = f", {private / 1024:.1f} MiB private" if private is not None else ""
            suite.add(Row(f"job child peak RSS ({mode} mode)", f"{peak / 1024:.1f} MiB{extra}",
                          f"bare interpreter {bare_kib / 1024:.1f} MiB", peak / bare_kib))


# -- imports of the child -----------------------------------------------------------------


def _importtime(argv: list[str], stdin: bytes | None, cwd: Path) -> list[tuple[int, str, int, int]]:
    """(depth, module, self µs, cumulative µs) of each import `python -X importtime` reports."""
    out = subprocess.run([PY, "-X", "importtime", *argv], input=stdin, capture_output=True,
                         cwd=cwd)
    rows = []
    for line in out.stderr.decode().splitlines():
        if not line.startswith("import time:") or "self [us]" in line:
            continue
        parts = line[len("import time:"):].split("|")
        name = parts[2].rstrip()
        depth = (len(name) - len(name.lstrip()) - 1) // 2
        rows.append((depth, name.strip(), int(parts[0]), int(parts[1])))
    return rows


def import_costs(top: int = 8) -> tuple[list[tuple[str, int, int]], list[str]]:
    """The job child's largest imports (depth 0 and 1: start-up's own and what `site` pulls
    in), median of 5 runs; and the modules it imports beyond `python -c pass`."""
    import marshal

    with project() as folder:
        allow = folder / "allowlist.toml"
        st = allow.stat()
        spec = marshal.dumps({
            "target": "benchjobs", "method": "noop", "args": [], "kwargs": {},
            "allowlist": str(allow), "signature": [st.st_mtime_ns, st.st_size, st.st_ino],
            "package": str(ROOT / "bgrun"), "result_path": str(folder / "r.result"),
            "max_result": 65536,
        })
        merged: dict[tuple[int, str], list[tuple[int, int]]] = {}
        for _ in range(5):
            for depth, name, self_us, cum in _importtime([CHILD], spec, folder):
                merged.setdefault((depth, name), []).append((self_us, cum))
        bare = {name for _, name, _, _ in _importtime(["-c", "pass"], None, folder)}
    rows = [(("  " * depth) + name, int(median([v[0] for v in values])),
             int(median([v[1] for v in values])))
            for (depth, name), values in merged.items() if depth <= 1]
    rows.sort(key=lambda r: -r[2])
    extra = sorted({name for (_, name) in merged} - bare - {"_child"})  # (bgrun's own)
    return rows[:top], extra


# -- main ---------------------------------------------------------------------------------


def machine() -> list[str]:
    lines = [f"python {sys.version.split()[0]} ({PY})", f"nproc: {os.cpu_count()}"]
    with contextlib.suppress(OSError, subprocess.SubprocessError):
        out = subprocess.run(["lscpu"], capture_output=True, text=True, timeout=5).stdout
        lines += [line for line in out.splitlines()
                  if line.split(":")[0] in ("Architecture", "Model name", "CPU(s)")]
    return lines


def compile_bgrun() -> None:
    """Write bgrun's bytecode, as `pip install` does. Without it (an editable install under
    PYTHONDONTWRITEBYTECODE, as on this machine) every runner compiles bgrun from source
    at start, ~30 ms; the baselines' standard library always has its bytecode."""
    compileall.compile_dir(ROOT / "bgrun", quiet=1)


BENCHES = ("drain", "wake", "enqueue", "scale", "memory", "imports")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small sizes: seconds, not minutes")
    parser.add_argument("--tiny", action="store_true", help="smallest sizes (the smoke test)")
    parser.add_argument("--only", action="append", choices=BENCHES,
                        help="run only this benchmark (repeatable)")
    parser.add_argument("--drain-jobs", type=int, help="jobs per drain (default 1000)")
    args = parser.parse_args(argv)
    sizes = TINY if args.tiny else QUICK if args.quick else Sizes()
    if args.drain_jobs:
        sizes.drain_jobs = args.drain_jobs
    only = set(args.only or BENCHES)
    suite = Suite(sizes)
    compile_bgrun()
    peaks: dict[str, int] = {}
    started = time.perf_counter()
    steps: dict[str, Callable[[], None]] = {
        "drain": lambda: bench_drain(suite, peaks),
        "wake": lambda: bench_wake(suite),
        "enqueue": lambda: bench_enqueue(suite),
        "scale": lambda: bench_scale(suite),
        "memory": lambda: bench_memory(suite, peaks),
    }
    for name, step in steps.items():
        if name in only:
            step()
    report(suite, "imports" in only, started)
    return 0


def report(suite: Suite, imports: bool, started: float) -> None:
    """The Markdown table (stdout) and the notes under it."""
    sizes = suite.sizes
    print("| benchmark | bgrun | baseline (same run) | ratio | goal | met |")
    print("| --- | --- | --- | --- | --- | --- |")
    for row in suite.rows:
        print(row.line())
    if imports:
        print()
        print("Job child (`python -X importtime bgrun/_spawned.py`), top imports by cumulative"
              " time, median of 5 runs:")
        print()
        print("| module | self | cumulative |")
        print("| --- | --- | --- |")
        rows, extra = import_costs()
        for name, self_us, cum in rows:
            print(f"| {name} | {self_us / 1000:.1f} ms | {cum / 1000:.1f} ms |")
        print()
        print("Modules the child imports beyond `python -c pass` and its own `_child`:"
              f" {', '.join(extra) or 'none'}.")
    print()
    for note in suite.notes:
        print(f"- {note}")
    print(f"- machine: {'; '.join(machine())}")
    print(f"- sizes: {sizes}; suite took {time.perf_counter() - started:.0f} s")


if __name__ == "__main__":
    sys.exit(main())
