"""Warm children (POSIX, opt-in per target: `reuse = N` in the allowlist).

A warm child runs up to N consecutive jobs of one target, then exits: its module is
imported once, and each job after the first costs no fork or interpreter start. The
runner keeps at most one, and uses it only for a job of the same target, working
directory, interpreter, environment and allowlist file (same signature) as the jobs it
ran; any other job discards it first. It is discarded at once after any attempt that
does not complete (a failure, a refusal, a crash, a timeout, a cancel): the child exits
by itself on a failure (as a one-job child does), and a timeout or a cancel ends its
whole tree. So a broken job never runs anything after it in the same process.

What does not change per job: the runner claims, logs, fences and records each attempt
as before, supervises it with the same loop (timeout, cancel, progress), and tells the
verdict with the same `read_verdict`. The job's output goes to its own file: the runner
opens it (and the attempt's progress pipe) as for any attempt and passes both
descriptors over a Unix socket with the job's spec; the child puts the file on its
stdout and stderr before the job runs.

The verdict of a job that returned comes back on the socket: the bytes a result file
would hold (creating and removing a file per job was most of a warm child's cost). Any
other end writes the result file and exits, as a one-job child does. So that a runner
that dies still finds a completed job completed when its job is settled: a child whose
runner is gone when it would send writes the result file instead, and a child that gets
EOF (not the runner's goodbye) after sending writes the last job's result file too, in
case the runner died before reading it (settling reads that file, as for any child).

The child is a forked runner where fork mode may fork (forkrun.usable), else a spawned
interpreter; either way it is its own session, like a one-job child. It reads its next
job from the socket and exits on EOF: when the runner closes it (N reached, a different
job, the runner leaving) or when the runner dies.
"""

from __future__ import annotations

import contextlib
import marshal
import os
import select
import signal
import sys
import time
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING

from bgrun import _child, forkrun
from bgrun.config import Config
from bgrun.launcher import start_child
from bgrun.procstart import process_start

if TYPE_CHECKING:
    import socket

    from bgrun.records import JobRecord

CHILD_SCRIPT = str(Path(_child.__file__).resolve().with_name("_spawned.py"))
JOB_VARS = frozenset({"BGRUN_JOB_ID", "BGRUN_JOB_TAG"})  # the only variables set per job
POLL = 0.05  # seconds between looks at a child's exit where no pidfd can tell it

#: What a warm child may be reused for: target, cwd, interpreter, allowlist path and
#: signature, and the environment but for JOB_VARS (compared as a dict: no sorting).
Key = tuple[str, str, str, str, object, dict[str, str]]


def key_of(job: JobRecord, python: str, env: Mapping[str, str], signature: object) -> Key:
    """The key a warm child must have to run `job` (see Key)."""
    shared = dict(env)
    for name in JOB_VARS:
        shared.pop(name, None)
    return (job.target, job.cwd, python, job.allowlist, repr(signature), shared)


class WarmChild:
    """One warm child process, as the runner holds it."""

    def __init__(self, key: Key, proc: forkrun.ChildProcess, sock: socket.socket,
                 reuse: int) -> None:
        self.key = key
        self.proc = proc
        self.sock = sock
        self.reuse = reuse
        self.jobs = 0  # attempts sent so far
        self.started = process_start(proc.pid)  # (read once: the same process every job)
        self.eof = False  # the socket said EOF: the child is ending
        self.pidfd: int | None = None
        if hasattr(os, "pidfd_open"):
            try:
                self.pidfd = os.pidfd_open(proc.pid)
            except OSError:
                self.pidfd = None

    def send(self, spec: dict[str, object], out_fd: int, progress_fd: int) -> None:
        """Hand the child its next job: the spec, the output file and the progress pipe
        (one message: an 8-byte length, then the spec; the descriptors ride on it)."""
        if sys.platform == "win32":
            raise OSError("warm children are POSIX only")
        import array
        import socket

        body = marshal.dumps(spec)
        fds = array.array("i", [out_fd, progress_fd])
        data = len(body).to_bytes(8, "big") + body
        sent = self.sock.sendmsg([data], [(socket.SOL_SOCKET, socket.SCM_RIGHTS, fds)])
        if sent < len(data):
            self.sock.sendall(data[sent:])
        self.jobs += 1

    def close(self, kill: bool) -> None:
        """Say goodbye and close our end (an idle child exits); `kill`: end it at once."""
        if not kill:
            with contextlib.suppress(OSError):  # (8 bytes into an idle socket: no wait)
                self.sock.send(bytes(8))  # goodbye: every verdict it sent was read
        self.sock.close()
        if kill and self.proc.poll() is None and sys.platform != "win32":
            with contextlib.suppress(OSError):  # (not reaped yet: its pid is not reused)
                os.killpg(self.proc.pid, signal.SIGKILL)

    def reaped(self) -> bool:
        """True (and its pidfd closed) once the child's exit status was collected."""
        if self.proc.poll() is None:
            return False
        if self.pidfd is not None:
            os.close(self.pidfd)
            self.pidfd = None
        return True


class WarmJob:
    """One attempt run by a warm child, with the interface supervision uses (Popen's).

    "Exited" here means the job is over: the child said done (returncode 0, the child
    lives on), or the child exited (its exit status, as for a one-job child).
    """

    stdin = None

    def __init__(self, child: WarmChild) -> None:
        self.child = child
        self.pid = child.proc.pid
        self.started = child.started
        self.returncode: int | None = None
        self.done = False  # the child said done (it may serve the next job)
        self.verdict: bytes | None = None  # what it said: the verdict, as a result file holds

    def wait_ready(self, seconds: float) -> bool:
        """Wait up to `seconds` for the job's end; True once it ended."""
        if self.returncode is not None:
            return True
        child = self.child
        fds = [] if child.pidfd is None else [child.pidfd]
        if not child.eof:
            fds.append(child.sock.fileno())
        pause = seconds if child.pidfd is not None else min(seconds, POLL)
        ready, _, _ = select.select(fds, [], [], max(pause, 0.0))
        if not child.eof and child.sock.fileno() in ready:
            self.verdict = _receive(child.sock)
            if self.verdict is not None:
                self.done = True
                self.returncode = 0
                return True
            child.eof = True
        code = child.proc.poll()
        if code is None:
            return False
        self.returncode = code
        return True

    def poll(self) -> int | None:
        self.wait_ready(0.0)
        return self.returncode

    def wait(self, timeout: float | None = None) -> int:
        deadline = None if timeout is None else time.monotonic() + timeout
        while not self.wait_ready(1.0 if deadline is None else deadline - time.monotonic()):
            if deadline is not None and time.monotonic() >= deadline:
                import subprocess

                raise subprocess.TimeoutExpired(str(self.pid), timeout or 0.0)
        assert self.returncode is not None
        return self.returncode


class WarmPool:
    """A runner's warm child (at most one), and those it closed that have not exited yet."""

    def __init__(self) -> None:
        self.child: WarmChild | None = None
        self.closed: list[WarmChild] = []

    def start(self, config: Config, job: JobRecord, spec: dict[str, object], *,
              python: str, env: Mapping[str, str], out_fd: int, progress_fd: int,
              reuse: int | None) -> WarmJob | None:
        """Send the attempt to a warm child (started if need be); None if `job`'s target
        has no `reuse` (any warm child is discarded then: it serves consecutive jobs)."""
        self._reap()
        if reuse is None or sys.platform == "win32":
            self.discard(kill=False)
            return None
        key = key_of(job, python, env, spec["signature"])
        child = self.child
        if child is not None and (child.key != key or child.proc.poll() is not None):
            self.discard(kill=False)
            child = None
        spec = {**spec, "job_env": {k: v for k, v in env.items() if k in JOB_VARS}}
        if child is not None:
            try:
                child.send(spec, out_fd, progress_fd)
                return WarmJob(child)
            except OSError:  # it died while idle: a fresh one takes the job
                self.discard(kill=True)
        child = self.child = _start_child(config, key, reuse, python, env, job.cwd, out_fd)
        with contextlib.suppress(OSError):  # it died at once: its exit status tells
            child.send(spec, out_fd, progress_fd)
        return WarmJob(child)

    def ended(self, proc: object, completed: bool) -> None:
        """After an attempt: keep the child only if the job completed and it may run more."""
        child = self.child
        if not isinstance(proc, WarmJob) or proc.child is not child or child is None:
            return
        if completed and proc.done and child.jobs < child.reuse:
            return
        self.discard(kill=not (completed and proc.done))

    def discard(self, kill: bool) -> None:
        """Let the current child go (it exits on EOF); `kill`: end it at once."""
        child, self.child = self.child, None
        if child is not None:
            child.close(kill)
            self.closed.append(child)
        self._reap()

    def close(self) -> None:
        """The runner leaves: close every child's socket (each exits on EOF)."""
        self.discard(kill=False)

    def _reap(self) -> None:
        self.closed = [c for c in self.closed if not c.reaped()]


def _receive(sock: socket.socket) -> bytes | None:
    """A message from the child (an 8-byte length, then that many bytes); None at EOF."""
    head = _exactly(sock, 8)
    return None if head is None else _exactly(sock, int.from_bytes(head, "big"))


def _exactly(sock: socket.socket, size: int) -> bytes | None:
    data = b""
    while len(data) < size:
        more = sock.recv(size - len(data))
        if not more:
            return None
        data += more
    return data


def _start_child(config: Config, key: Key, reuse: int, python: str,
                 env: Mapping[str, str], cwd: str, out_fd: int) -> WarmChild:
    """Fork (where fork mode may) or spawn a warm child, its socket under the same number."""
    import socket

    ours, theirs = socket.socketpair()
    try:
        setup: dict[str, object] = {"warm_fd": theirs.fileno()}
        proc: forkrun.ChildProcess
        if forkrun.usable(config, python, env):
            proc = forkrun.start_forked(setup, cwd=cwd, env=env, output_fd=out_fd)
        else:
            popen = start_child([python, CHILD_SCRIPT], cwd=cwd, env=env, output_fd=out_fd,
                                keep_fd=theirs.fileno())
            try:
                assert popen.stdin is not None
                popen.stdin.write(marshal.dumps(setup))
                popen.stdin.close()
            except OSError:
                pass  # it died at once: its exit status tells
            proc = popen
    except BaseException:
        ours.close()
        raise
    finally:
        theirs.close()
    return WarmChild(key, proc, ours, reuse)
