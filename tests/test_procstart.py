"""A forked child's start time from the boot clock (procstart.started_between): always
exactly what /proc says, which cancels and takeovers compare against."""

from __future__ import annotations

import os
import sys
import time

import pytest

from bgrun import procstart

pytestmark = pytest.mark.skipif(sys.platform != "linux", reason="the boot clock is Linux's")


def _forked(pause: float = 0.0) -> tuple[int, int, int]:
    before = procstart.boot_clock()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child
        time.sleep(pause)
        os._exit(0)
    return pid, before, procstart.boot_clock()


def test_the_start_of_many_forked_children_is_what_proc_says(monkeypatch):
    monkeypatch.setattr(procstart, "_CLOCK_AGREES", [])
    guessed = read = 0
    for _ in range(300):
        pid, before, after = _forked(pause=1)
        try:
            started = procstart.started_between(pid, before, after)
            assert started == procstart.process_start(pid)
            tick = 10**9 // os.sysconf("SC_CLK_TCK")
            same_tick = before // tick == after // tick
            guessed += same_tick
            read += not same_tick
        finally:
            os.kill(pid, 9)
            os.waitpid(pid, 0)
    assert procstart._CLOCK_AGREES == [True]
    assert guessed > 200  # the clock answered nearly always (a fork takes under a tick)


def test_a_clock_that_disagrees_once_is_never_used_again(monkeypatch):
    monkeypatch.setattr(procstart, "_CLOCK_AGREES", [])
    pid, before, _ = _forked(pause=1)
    tick = 10**9 // os.sysconf("SC_CLK_TCK")
    try:
        # readings one tick early: a clock that counts otherwise than /proc
        first = procstart.started_between(pid, before - tick, before - tick)
        assert procstart._CLOCK_AGREES == [False]
        assert first == procstart.process_start(pid)  # read: the guess was not used
        again = procstart.started_between(pid, before - tick, before - tick)
        assert again == procstart.process_start(pid)
    finally:
        os.kill(pid, 9)
        os.waitpid(pid, 0)


def test_readings_in_different_ticks_read_proc(monkeypatch):
    monkeypatch.setattr(procstart, "_CLOCK_AGREES", [True])
    reads = []
    real = procstart.process_start
    monkeypatch.setattr(procstart, "process_start", lambda pid: reads.append(pid) or real(pid))
    tick = 10**9 // os.sysconf("SC_CLK_TCK")
    procstart.started_between(os.getpid(), 5 * tick - 1, 5 * tick)
    assert reads == [os.getpid()]
