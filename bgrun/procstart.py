"""A process's start time: what bgrun stores beside a pid, so pid reuse is noticed.

On Linux it is read from /proc exactly as psutil computes `create_time()` (the boot time
plus the start tick over the clock rate), without importing psutil: the runner asks once
per attempt, and psutil is slow to import and slower per call than one read of /proc
(benchmarks/RESULTS.md). Elsewhere psutil.
"""

from __future__ import annotations

import os
import sys
import time

_BOOT_TIME: list[float] = []  # read once: /proc/stat's btime does not change
#: Whether the boot clock has been seen to agree with /proc in this process (None: not
#: yet looked; see started_between).
_CLOCK_AGREES: list[bool] = []


def process_start(pid: int) -> float:
    """The start time of `pid` in seconds since the epoch (0.0 if it has gone already)."""
    if sys.platform == "linux":
        try:
            return _linux_start(pid)
        except (OSError, ValueError, IndexError):
            return 0.0
    import psutil

    try:
        return float(psutil.Process(pid).create_time())
    except psutil.Error:
        return 0.0


def _linux_start(pid: int) -> float:
    if sys.platform != "linux":
        raise OSError("no /proc here")
    with open(f"/proc/{pid}/stat", "rb") as f:
        stat = f.read()
    # The name (field 2) may hold spaces and parentheses: count fields after the last ")".
    ticks = int(stat[stat.rindex(b")") + 2:].split()[19])
    return ticks / os.sysconf("SC_CLK_TCK") + _boot_time()


def _boot_time() -> float:
    if not _BOOT_TIME:
        with open("/proc/stat", "rb") as f:
            for line in f:
                if line.startswith(b"btime"):
                    _BOOT_TIME.append(float(line.split()[1]))
                    break
            else:
                raise ValueError("no btime in /proc/stat")
    return _BOOT_TIME[0]


def boot_clock() -> int:
    """The boot clock now (ns), to bracket a fork with: see started_between (0 where
    there is none)."""
    if sys.platform != "linux":
        return 0
    return time.clock_gettime_ns(time.CLOCK_BOOTTIME)


def started_between(pid: int, before: int, after: int) -> float:
    """process_start(pid) for a child forked between the boot-clock readings `before` and
    `after` (boot_clock()), mostly without reading /proc.

    The kernel stamps a new process with the boot clock, and /proc shows that stamp in
    clock ticks (1/100 s): when both readings fall in one tick, that tick is the child's.
    The first look at a new process's /proc entry cost about 0.5 ms on a 2-core VM, every
    attempt's. Else, and until the two ways have been seen to agree once in this process
    (a kernel that counts otherwise is then read from /proc for good), /proc is read.
    """
    if sys.platform != "linux":
        return process_start(pid)
    hertz = os.sysconf("SC_CLK_TCK")
    if not before or hertz <= 0 or 10**9 % hertz or _CLOCK_AGREES == [False]:
        return process_start(pid)
    tick = 10**9 // hertz
    if before // tick != after // tick:
        return process_start(pid)
    try:
        guessed = (before // tick) / hertz + _boot_time()
    except (OSError, ValueError):
        return process_start(pid)
    if not _CLOCK_AGREES:
        read = process_start(pid)
        _CLOCK_AGREES.append(read == guessed)
        return read
    return guessed
