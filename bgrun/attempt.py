"""One attempt of one job: start its child, supervise it, and tell the verdict.

The parent supervises, the child executes: the child's exit status is the verdict when
the child says nothing (a crash, os._exit, a signal), and a timeout or a cancel ends the
child's whole process tree.
"""

from __future__ import annotations

import json
import marshal
import os
import select
import signal
import time
from collections.abc import Callable
from pathlib import Path
from typing import NamedTuple

from bgrun import _child, allowlist, forkrun, jobfiles
from bgrun.config import Config
from bgrun.context import runner_python
from bgrun.errors import AllowlistError, Failure, RefusedError, StoreGoneError
from bgrun.files import open_append
from bgrun.launcher import start_child, without_secrets
from bgrun.lease import Fenced, LeaseLost, tolerant
from bgrun.outcopy import OutputCopy
from bgrun.params import decode_call
from bgrun.preload import PRELOADED
from bgrun.procstart import process_start
from bgrun.records import JobRecord, Outcome, iso
from bgrun.relay import ProgressRelay
from bgrun.store import Store
from bgrun.warm import WarmPool

CHILD_SCRIPT = str(Path(_child.__file__).resolve().with_name("_spawned.py"))
PACKAGE_DIR = str(Path(__file__).resolve().parent)


class Verdict(NamedTuple):
    """How an attempt ended, as its runner tells it."""

    outcome: Outcome
    error: str | None = None
    traceback: str | None = None
    result_json: str | None = None
    retryable: bool = True
    progress_json: str | None = None  # the job's last progress report not stored yet


def marker(job: JobRecord, runner_pid: int) -> str:
    """The environment entry that tags every process of this attempt's tree."""
    return f"BGRUN_JOB_TAG={job.id}.{job.attempts}.{runner_pid}"


def run_attempt(config: Config, store: Store, job: JobRecord,
                on_start: Callable[[int, float], None] | None = None,
                on_tick: Callable[[], None] | None = None,
                warm: WarmPool | None = None) -> Verdict:
    """Run the claimed attempt `job.attempts` of `job` to its end.

    `on_start(pid, start_time)` is told the child's process as soon as it exists;
    `on_tick()` is called every tick while the child runs. With `warm` (a runner's), a
    target with `reuse` in the allowlist runs in a warm child (bgrun/warm.py).
    """
    job, python, env = _where_it_runs(config, store, job)
    try:
        rule_file = allowlist.check_at_run_time(Path(job.allowlist), job.target, job.method)
    except AllowlistError as exc:
        return Verdict(Outcome.HANDBACK, f"AllowlistError: {exc}", retryable=False)
    except RefusedError as exc:
        return Verdict(Outcome.FAILED, Failure.NOT_ALLOWED.says(exc), retryable=False)
    result = jobfiles.result_path(config.log_dir, job.id)
    result.unlink(missing_ok=True)
    spec = _spec(config, job, rule_file.signature, result)
    tag_key, _, tag_value = marker(job, os.getpid()).partition("=")
    env.update({"BGRUN_JOB_ID": job.id, tag_key: tag_value})
    relay = ProgressRelay()
    spec["progress_fd"] = relay.write_fd
    rule = rule_file.rules.get(job.target)
    reuse = None if warm is None or rule is None else rule.reuse
    try:
        proc = _start(config, job, spec, python, env, relay.write_fd, warm, reuse)
    except OSError as exc:
        relay.close()
        return Verdict(Outcome.FAILED,
                       Failure.CRASHED.says(f"cannot start {python}: {exc.strerror or exc}"))
    relay.started()
    stdin = getattr(proc, "stdin", None)
    if stdin is not None:  # spawned: send the spec (a forked child has it already)
        try:
            stdin.write(marshal.dumps(spec))
            stdin.close()
        except OSError:
            pass  # the child died at once: its exit status tells
    started = getattr(proc, "started", None) or process_start(proc.pid)  # (warm: known)
    completed = False
    copy = OutputCopy(config, store, job)
    try:
        if on_start is not None:
            on_start(proc.pid, started)
        tolerant(store, store.set_child, job.id, proc.pid, started)
        ended = _supervise(config, store, job, proc, started, (relay, copy), on_tick)
        verdict = ended or read_verdict(proc.wait(), result, config.max_result_bytes,
                                          getattr(proc, "verdict", None))
        verdict = verdict._replace(progress_json=relay.final())  # stored with the verdict
        tolerant(store, copy.poll, last=True)  # the last copy lands before the verdict
        completed = verdict.outcome == Outcome.COMPLETED
    except StoreGoneError:
        _end_orphaned(config, job, proc, started)
        raise
    except (LeaseLost, Fenced):  # another runner takes (or took) it over: end it now
        _end_taken(job, proc, started)
        raise
    finally:
        relay.close()
        if warm is not None:  # a warm child is kept only after a completed job
            warm.ended(proc, completed)
    return verdict


def _where_it_runs(config: Config, store: Store, job: JobRecord
                   ) -> tuple[JobRecord, str, dict[str, str]]:
    """The job as it runs here, its interpreter and its environment.

    On a store of one host: as it was queued (folder, allowlist, interpreter, the
    queuer's environment). On a store shared by several hosts: in this runner's folder,
    under this host's allowlist, with this runner's interpreter and environment (the
    queuer's is not stored there: it belongs to another machine).
    """
    if not store.leased:
        launch = store.launch_spec(job.id)
        # (secrets are dropped again: a job stored before they were dropped has them)
        return job, launch.python, without_secrets(json.loads(launch.env_json))
    here = job._replace(cwd=os.getcwd(), allowlist=str(config.allowlist))
    return here, runner_python(config), without_secrets(os.environ)


def _end_taken(job: JobRecord, proc: forkrun.ChildProcess, started: float) -> None:
    """End at once an attempt its runner lost (lease lost, or fenced)."""
    from bgrun import proctree

    proctree.kill_tree(proc.pid, started, marker(job, os.getpid()))
    proc.wait()


def _end_orphaned(config: Config, job: JobRecord, proc: forkrun.ChildProcess,
                  started: float) -> None:
    """End an attempt whose store is gone: no one can see, cancel or record it any more."""
    from bgrun import proctree

    proctree.terminate_tree(proc.pid, started, config.cancel_grace, marker(job, os.getpid()))
    proc.wait()


def _start(config: Config, job: JobRecord, spec: dict[str, object], python: str,
           env: dict[str, str], progress_fd: int, warm: WarmPool | None = None,
           reuse: int | None = None) -> forkrun.ChildProcess:
    """Fork or spawn the attempt's child (or hand it to a warm child), its output going
    to the job's output file."""
    out_fd = open_append(Path(job.output))
    try:
        os.write(out_fd, f"--- bgrun: attempt {job.attempts} started {iso(time.time())}\n".encode())
        if warm is not None:
            warm_job = warm.start(config, job, spec, python=python, env=env, out_fd=out_fd,
                                  progress_fd=progress_fd, reuse=reuse)
            if warm_job is not None:
                return warm_job
        if _may_fork(config, job, python, env):  # warm fork mode (POSIX)
            return forkrun.start_forked(spec, cwd=job.cwd, env=env, output_fd=out_fd)
        return start_child([python, CHILD_SCRIPT], cwd=job.cwd, env=env, output_fd=out_fd,
                           keep_fd=progress_fd)
    finally:
        os.close(out_fd)


def _may_fork(config: Config, job: JobRecord, python: str, env: dict[str, str]) -> bool:
    """True to fork this attempt from the runner (preloading its module first if asked)."""
    if not forkrun.usable(config, python, env):
        return False
    if not config.preload:
        return True
    PRELOADED.load(job.target, job.cwd)
    # Spawn when the preloaded files changed (stale code), or if an import started a thread.
    return not PRELOADED.is_stale() and forkrun.usable(config, python, env)


def _spec(config: Config, job: JobRecord, signature: tuple[int, int, int],
          result_path: Path) -> dict[str, object]:
    args, kwargs = decode_call(job.params_json)
    return {
        "target": job.target,
        "method": job.method,
        "args": args,
        "kwargs": kwargs,
        "allowlist": job.allowlist,
        "signature": list(signature),
        "package": PACKAGE_DIR,
        "result_path": str(result_path),
        "max_result": config.max_result_bytes,
    }


def _supervise(config: Config, store: Store, job: JobRecord,
               proc: forkrun.ChildProcess, started: float,
               relays: tuple[ProgressRelay, OutputCopy],
               on_tick: Callable[[], None] | None = None) -> Verdict | None:
    """Wait for the child; end its tree on timeout or cancel (then return that verdict).

    psutil (slow to import) is only imported to end a tree: most runners never do.
    """
    deadline = None if job.timeout is None else time.monotonic() + job.timeout
    waiter = _ExitWaiter(proc)
    try:
        while True:
            wait = config.tick if deadline is None else min(config.tick,
                                                            deadline - time.monotonic())
            if waiter.wait(max(wait, 0.0)):
                return None
            # Fenced when the attempt was taken over meanwhile; an unreachable store is
            # the lease's business (on_tick), not a reason to leave the child running.
            tolerant(store, relays[1].poll)
            cancel = tolerant(store, _tick_reads, store, job, relays[0])
            if on_tick is not None:
                on_tick()
            if deadline is not None and time.monotonic() >= deadline:
                from bgrun import proctree

                proctree.kill_tree(proc.pid, started, marker(job, os.getpid()))
                proc.wait()
                return Verdict(Outcome.FAILED,
                               Failure.TIMEOUT.says(f"ran longer than {job.timeout:g} s"))
            if cancel:
                from bgrun import proctree

                proctree.terminate_tree(proc.pid, started, config.cancel_grace,
                                        marker(job, os.getpid()))
                proc.wait()
                return Verdict(Outcome.CANCELLED, Failure.CANCELLED.says("cancelled while it ran"),
                               retryable=False)
    finally:
        waiter.close()


def _tick_reads(store: Store, job: JobRecord, relay: ProgressRelay) -> bool:
    """The store's part of a supervision tick: relay progress; True if a cancel was asked."""
    relay.poll(store, job.id, job.attempts)
    return store.is_cancel_requested(job.id)


class _ExitWaiter:
    """Waits for a child's exit with a timeout, without polling where Linux allows."""

    def __init__(self, proc: forkrun.ChildProcess) -> None:
        self.proc = proc
        self.fd: int | None = None
        self.ready = getattr(proc, "wait_ready", None)  # a warm job waits in its own way
        if hasattr(os, "pidfd_open") and self.ready is None:
            try:
                self.fd = os.pidfd_open(proc.pid)
            except OSError:
                self.fd = None

    def wait(self, seconds: float) -> bool:
        if self.ready is not None:
            return bool(self.ready(seconds))
        if self.fd is not None:
            ready, _, _ = select.select([self.fd], [], [], seconds)
            if not ready:
                return False
            self.proc.wait()
            return True
        import subprocess  # (here: where pidfd works, a forking runner never needs it)

        try:
            self.proc.wait(timeout=seconds)
        except subprocess.TimeoutExpired:
            return False
        return True

    def close(self) -> None:
        if self.fd is not None:
            os.close(self.fd)


def read_verdict(returncode: int, result_path: Path, limit: int,
                 sent: bytes | None = None) -> Verdict:
    """The attempt's verdict: what the child wrote in its result file (or `sent`: what a
    warm child sent, the same bytes), else its exit status.

    The file is removed once read, so a verdict is read once.
    """
    try:
        raw = result_path.read_bytes() if sent is None else sent
        data = marshal.loads(raw)  # noqa: S302 - plain data, our child
    except (OSError, EOFError, ValueError, TypeError):
        data = None
    finally:
        if sent is None:
            result_path.unlink(missing_ok=True)
    if not isinstance(data, tuple) or not data:
        return _exit_verdict(returncode)
    if data[0] == "ok":
        return Verdict(Outcome.COMPLETED, result_json=result_json(data[1], data[2], limit))
    if data[0] == "refused":
        if returncode == _child.EXIT_ALLOWLIST_BROKEN:
            return Verdict(Outcome.HANDBACK, str(data[1]), retryable=False)
        return Verdict(Outcome.FAILED, str(data[1]), retryable=False)
    return Verdict(Outcome.FAILED, str(data[1]), traceback=str(data[2]))


def _exit_verdict(returncode: int) -> Verdict:
    if returncode == 0:
        return Verdict(Outcome.COMPLETED, result_json="null")
    if returncode < 0:
        try:
            name = signal.Signals(-returncode).name
        except ValueError:
            name = f"signal {-returncode}"
        return Verdict(Outcome.FAILED, Failure.CRASHED.says(f"killed by {name}"))
    return Verdict(Outcome.FAILED, Failure.CRASHED.says(f"exit code {returncode}"))


def result_json(value: object, is_repr: bool, limit: int) -> str:
    """The job's return value as stored: JSON, or its repr as a JSON string, bounded."""
    if not is_repr:
        try:
            text = json.dumps(value, allow_nan=False, ensure_ascii=False)
            if len(text) <= limit:
                return text
        except ValueError:
            pass
        value = repr(value)
    text = str(value)
    return json.dumps(text[:limit] + "..." if len(text) > limit else text, ensure_ascii=False)
