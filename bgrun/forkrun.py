"""Warm fork mode (POSIX): start an attempt by forking the runner, not a new interpreter.

With `BGRUN_MODE=fork`, a runner whose interpreter is the job's forks each attempt from
its warm, single-threaded self: no interpreter start-up, no site import. The forked child
keeps every guarantee of a spawned one before any user code runs:

- its own session (`os.setsid`), so a timeout or a cancel ends its whole group;
- the job's working directory, with it first on `sys.path`, and `os.environ` made the
  job's environment (and `TZ` re-read where it differs);
- stdin from /dev/null, stdout and stderr to the job's output file;
- every inherited descriptor above 2 closed but the progress pipe's write end: the
  runner's slot lock (a flock belongs to the open file, so a child holding a copy would
  keep a dead runner's slot), its SQLite connection, the wake FIFO. The child never
  touches the store: it only runs `bgrun._child.run(spec)`, which ends with `os._exit`;
- the runner's signal handlers and exit hooks dropped (the job's own exit hooks run).

The runner supervises a forked child exactly like a spawned one: `ForkedChild` looks
like `subprocess.Popen` to the supervision loop (pid, returncode, wait, poll).

Fork is used only where it cannot change what the job sees: on POSIX, when the job's
interpreter is the runner's own `sys.executable`, when the variables that shape an
interpreter at start-up (`PYTHON*`, `LANG`, `LC_*`) are the same in the job's
environment as in the runner's, and when the runner has a single thread. Otherwise the
attempt is spawned as usual.
"""

from __future__ import annotations

import os
import signal
import sys
import threading
import time
from collections.abc import Mapping
from typing import Protocol

from bgrun import _child
from bgrun.config import Config

EXIT_FORK_SETUP = 126  # the forked child could not set itself up (before user code)
#: What `ps -e`, `top` and `pgrep` call a forked attempt (its command line stays the
#: runner's: only a new interpreter could change that).
JOB_PROCESS_NAME = b"bgrun-job"


class ChildProcess(Protocol):
    """What the supervision loop needs of an attempt's process (Popen has it)."""

    @property
    def pid(self) -> int: ...

    @property
    def returncode(self) -> int | None: ...

    def wait(self, timeout: float | None = None) -> int: ...

    def poll(self) -> int | None: ...


def _startup_vars(env: Mapping[str, str]) -> dict[str, str]:
    return {k: v for k, v in env.items()
            if k.startswith(("PYTHON", "LC_")) or k == "LANG"}


def usable(config: Config, python: str, env: Mapping[str, str]) -> bool:
    """True if this attempt may be forked from the runner rather than spawned."""
    if sys.platform == "win32" or config.mode != "fork":
        return False
    if threading.active_count() != 1:
        return False  # forking a threaded process (e.g. `bgrun run`'s helper) is unsafe
    if not _same_interpreter(python):
        return False
    return _startup_vars(env) == _runner_vars()


_RUNNER_VARS: dict[int, dict[str, str]] = {}


def _runner_vars() -> dict[str, str]:
    """The runner's own start-up variables (a runner never changes its environment)."""
    pid = os.getpid()
    if pid not in _RUNNER_VARS:
        _RUNNER_VARS.clear()
        _RUNNER_VARS[pid] = _startup_vars(os.environ)
    return _RUNNER_VARS[pid]


def _same_interpreter(python: str) -> bool:
    if python == sys.executable:
        return True
    try:
        return os.path.samefile(python, sys.executable)
    except OSError:
        return False


class ForkedChild:
    """A forked attempt, with the part of `subprocess.Popen`'s interface supervision uses."""

    stdin = None

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.returncode: int | None = None

    def poll(self) -> int | None:
        if self.returncode is None and sys.platform != "win32":
            self._reap(os.WNOHANG)
        return self.returncode

    def wait(self, timeout: float | None = None) -> int:
        if timeout is None:
            while self.returncode is None:
                self._reap(0)
            return self.returncode
        deadline = time.monotonic() + timeout
        pause = 0.0005
        while self.poll() is None:
            left = deadline - time.monotonic()
            if left <= 0:
                import subprocess

                raise subprocess.TimeoutExpired(str(self.pid), timeout)
            time.sleep(min(pause, left))
            pause = min(pause * 2, 0.05)
        assert self.returncode is not None
        return self.returncode

    def _reap(self, flags: int) -> None:
        if sys.platform == "win32":
            return
        try:
            pid, status = os.waitpid(self.pid, flags)
        except ChildProcessError:
            self.returncode = self.returncode if self.returncode is not None else 255
            return
        except InterruptedError:
            return
        if pid == self.pid:
            self.returncode = os.waitstatus_to_exitcode(status)


def start_forked(spec: dict[str, object], *, cwd: str, env: Mapping[str, str],
                 output_fd: int) -> ForkedChild:
    """Fork the attempt described by `spec`; the parent returns its handle at once.

    Raises OSError (like a failed spawn) if `cwd` is unusable or fork fails.
    """
    if sys.platform == "win32":
        raise OSError("fork mode is POSIX only")
    else:
        os.stat(cwd)  # fail here, as a spawn would, rather than in the child
        changes = environ_changes(os.environ, env)
        devnull = os.open(os.devnull, os.O_RDONLY)
        try:
            for stream in (sys.stdout, sys.stderr):
                if stream is not None:
                    stream.flush()
            pid = os.fork()
            if pid == 0:  # pragma: no cover - runs in the forked child
                _in_child(spec, cwd, changes, devnull, output_fd)
        finally:
            os.close(devnull)
        return ForkedChild(pid)


def environ_changes(current: Mapping[str, str], wanted: Mapping[str, str]
                    ) -> tuple[list[str], dict[str, str]]:
    """What turns `current` into `wanted`: (names to remove, names to set).

    Worked out in the runner, before the fork: every object a forked child touches costs
    it a copied page, and a job's environment is usually the runner's but for a few names.
    """
    remove = [key for key in current if key not in wanted]
    assign = {key: value for key, value in wanted.items() if current.get(key) != value}
    return remove, assign


def _in_child(spec: dict[str, object], cwd: str, changes: tuple[list[str], dict[str, str]],
              devnull: int, output_fd: int) -> None:  # pragma: no cover - forked child
    """Become the job's process, then run it; never returns."""
    if sys.platform == "win32":
        return
    else:
        try:
            os.setsid()
            _name_process(JOB_PROCESS_NAME)
            signal.signal(signal.SIGTERM, signal.SIG_DFL)
            signal.signal(signal.SIGINT, signal.default_int_handler)
            signal.signal(signal.SIGALRM, signal.SIG_DFL)  # (the runner's lease guard)
            os.dup2(devnull, 0)
            os.dup2(output_fd, 1)
            os.dup2(output_fd, 2)
            _close_inherited(spec)
            os.chdir(cwd)
            remove, assign = changes
            for key in remove:
                del os.environ[key]
            os.environ.update(assign)  # and the C environment: putenv, unsetenv
            if "TZ" in assign or "TZ" in remove:
                time.tzset()
            sys.argv = [_child.__file__]
            sys.path[0] = cwd
            import atexit

            atexit._clear()  # the runner's exit hooks are not the job's
        except BaseException as exc:
            try:
                os.write(2, f"bgrun: cannot set up the forked job: {exc!r}\n".encode())
            finally:
                os._exit(EXIT_FORK_SETUP)
        try:
            _child.run({**spec, "forked": True})
        finally:
            os._exit(_child.EXIT_ERROR)  # run() exits itself; this is a last resort


def _close_inherited(spec: dict[str, object]) -> None:  # pragma: no cover - forked child
    """Close every descriptor above 2 but the progress pipe and a warm child's socket."""
    keep = sorted(fd for fd in (spec.get("progress_fd"), spec.get("warm_fd"))
                  if isinstance(fd, int) and fd >= 3)
    low = 3
    for fd in keep:
        os.closerange(low, fd)
        low = fd + 1
    os.closerange(low, _max_fd())


def _name_process(name: bytes) -> None:  # pragma: no cover - forked child
    """Set this process's name (Linux `comm`, as prctl(PR_SET_NAME) does), where it can."""
    try:
        fd = os.open("/proc/self/comm", os.O_WRONLY)
    except OSError:
        return  # not Linux, or no /proc: the name stays the runner's
    try:
        os.write(fd, name[:15])
    except OSError:
        pass
    finally:
        os.close(fd)


def _max_fd() -> int:
    if sys.platform == "win32":
        return 0
    try:
        return int(os.sysconf("SC_OPEN_MAX"))
    except (OSError, ValueError):
        return 65536
