"""Ending a job's whole process tree, safely against pid reuse."""

from __future__ import annotations

import contextlib
import os
import signal
import sys
import time

import psutil

from bgrun.launcher import WINDOWS


def same_process(pid: int, started: float) -> psutil.Process | None:
    """The process `pid` if it is still the one that started at `started` (no pid reuse)."""
    try:
        proc = psutil.Process(pid)
        if abs(proc.create_time() - started) > 0.01:
            return None
        return proc
    except psutil.Error:
        return None


def tree_of(root: psutil.Process, marker: str | None = None) -> list[psutil.Process]:
    """`root`, its descendants, and (POSIX) any process whose environment carries `marker`.

    The marker finds grandchildren that escaped the tree by daemonizing.
    """
    procs = [root]
    with contextlib.suppress(psutil.Error):
        procs.extend(root.children(recursive=True))
    if marker and not WINDOWS:
        procs.extend(p for p in _marked(marker) if p.pid not in {q.pid for q in procs})
    return procs


def _marked(marker: str) -> list[psutil.Process]:
    key, _, value = marker.partition("=")
    found = []
    for proc in psutil.process_iter():
        try:
            if proc.environ().get(key) == value:
                found.append(proc)
        except psutil.Error:
            continue
    return found


def terminate_tree(pid: int, started: float, grace: float, marker: str | None = None) -> None:
    """Ask the tree rooted at `pid` to stop, then kill what is left after `grace` seconds.

    POSIX: the job child leads its own process group, so the group gets the signal; a
    psutil sweep catches what left the group. Windows: psutil's tree (Ctrl-Break is not
    deliverable to a windowless group, so the tree is killed at once).
    """
    root = same_process(pid, started)
    if root is None:
        return
    procs = tree_of(root, marker)
    if sys.platform == "win32":
        _kill_all(procs)
        return
    _signal_group(pid, signal.SIGTERM)
    for proc in procs:
        _send(proc, signal.SIGTERM)
    alive = wait_gone(procs, grace)
    if alive:
        _signal_group(pid, signal.SIGKILL)
        _kill_all(alive + tree_of(root, marker) if not _gone(root) else alive)
        wait_gone(alive, 1.0)


def kill_tree(pid: int, started: float, marker: str | None = None) -> None:
    """Kill the tree rooted at `pid` at once (a timeout, or a runner lost)."""
    root = same_process(pid, started)
    if root is None:
        if marker and not WINDOWS:
            _kill_all(_marked(marker))
        return
    procs = tree_of(root, marker)
    if sys.platform != "win32":
        _signal_group(pid, signal.SIGKILL)
    _kill_all(procs)
    wait_gone(procs, 1.0)


def wait_gone(procs: list[psutil.Process], timeout: float) -> list[psutil.Process]:
    """Wait up to `timeout` for `procs` to end; return those still alive.

    It never reaps: psutil.wait_procs would reap our own child, and its Popen would then
    read exit status 0 (ECHILD), turning a killed job into a completed one.
    """
    deadline = time.monotonic() + timeout
    while True:
        alive = [p for p in procs if not _gone(p)]
        if not alive or time.monotonic() >= deadline:
            return alive
        time.sleep(0.02)


def _gone(proc: psutil.Process) -> bool:
    try:
        return proc.status() == psutil.STATUS_ZOMBIE
    except psutil.Error:
        return True


def _signal_group(pgid: int, sig: int) -> None:
    if sys.platform == "win32":
        return
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, sig)


def _send(proc: psutil.Process, sig: int) -> None:
    with contextlib.suppress(psutil.Error):
        proc.send_signal(sig)


def _kill_all(procs: list[psutil.Process]) -> None:
    for proc in procs:
        with contextlib.suppress(psutil.Error):
            proc.kill()
