"""The lock primitive: exclusion across processes and threads, release on death."""

from __future__ import annotations

import os
import signal
import stat
import subprocess
import sys
import threading
import time

from bgrun.locks import FileLock


def test_excludes_other_holders_and_is_private(tmp_path):
    first, second = FileLock(tmp_path / "a.lock"), FileLock(tmp_path / "a.lock")
    assert first.acquire(timeout=0)
    assert stat.S_IMODE((tmp_path / "a.lock").stat().st_mode) == 0o600
    assert not second.acquire(timeout=0.05)  # a second open in one process is excluded
    first.release()
    assert second.acquire(timeout=0)
    second.release()


def test_released_when_the_holder_dies(tmp_path):
    code = (f"from bgrun.locks import FileLock; from pathlib import Path; import time\n"
            f"l = FileLock(Path({str(tmp_path / 'b.lock')!r})); l.acquire(); print('held',"
            f" flush=True); time.sleep(60)")
    holder = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
    lock = FileLock(tmp_path / "b.lock")
    assert not lock.acquire(timeout=0)
    os.kill(holder.pid, signal.SIGKILL)
    holder.wait()
    holder.stdout.close()
    assert lock.acquire(timeout=1)
    lock.release()


def test_threads_sharing_one_lock_take_turns(tmp_path):
    lock = FileLock(tmp_path / "c.lock")
    inside = []
    overlaps = []

    def work() -> None:
        for _ in range(50):
            with lock:
                inside.append(1)
                overlaps.append(len(inside))
                time.sleep(0.0005)
                inside.pop()

    threads = [threading.Thread(target=work) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert max(overlaps) == 1 and len(overlaps) == 200
    assert not lock.is_locked
