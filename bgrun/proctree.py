"""Ending a job's whole process tree, safely against pid reuse."""

from __future__ import annotations

import contextlib
import os
import signal
import sys

import psutil

WINDOWS = sys.platform == "win32"


def same_process(pid: int, started: float) -> psutil.Process | None:
    """The process `pid` if it is still the one that started at `started` (no pid reuse)."""
    try:
        proc = psutil.Process(pid)
        if abs(proc.create_time() - started) > 0.01:
            return None
        return proc
    except psutil.Error:
        return None


def process_start(pid: int) -> float:
    """The start time psutil reports for `pid` (0.0 if it has gone already)."""
    try:
        return psutil.Process(pid).create_time()
    except psutil.Error:
        return 0.0


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
    _, alive = psutil.wait_procs(procs, timeout=grace)
    if alive:
        _signal_group(pid, signal.SIGKILL)
        _kill_all(alive + tree_of(root, marker) if root.is_running() else alive)
        psutil.wait_procs(alive, timeout=1.0)


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
    psutil.wait_procs(procs, timeout=1.0)


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
