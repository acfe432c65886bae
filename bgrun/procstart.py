"""A process's start time: what bgrun stores beside a pid, so pid reuse is noticed.

On Linux it is read from /proc exactly as psutil computes `create_time()` (the boot time
plus the start tick over the clock rate), without importing psutil: the runner asks once
per attempt, and psutil is slow to import and slower per call than one read of /proc
(benchmarks/RESULTS.md). Elsewhere psutil.
"""

from __future__ import annotations

import os
import sys

_BOOT_TIME: list[float] = []  # read once: /proc/stat's btime does not change


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
