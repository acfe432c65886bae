"""The runner's side of `bgrun.progress()`: read the job's reports, keep the newest, store it.

The job writes one line per report into a pipe (see `_progress.py`); the runner reads
whatever is there each time its supervision loop wakes, keeps only the last complete
line, and writes it to the store at most every WRITE_EVERY seconds; the newest report
not yet stored goes into the store with the attempt's verdict, in its transaction. A
line is the repr of a tuple `(done, total, message)`, read back with `ast.literal_eval`
(data only, never code) and checked again here: the job's code could write anything
into its end of the pipe.
"""

from __future__ import annotations

import json
import os
import sys
import time
from typing import TYPE_CHECKING

from bgrun._progress import check

if TYPE_CHECKING:
    from bgrun.store import Store

WRITE_EVERY = 0.5  # seconds between two stored reports of one attempt
MAX_LINE = 8192  # a longer line is not a report: dropped


class ProgressRelay:
    """One attempt's progress pipe, as the runner holds it."""

    def __init__(self) -> None:
        self.read_fd = self.write_fd = -1
        if sys.platform != "win32":  # no descriptor passing to a spawned child there
            self.read_fd, self.write_fd = os.pipe()
            os.set_blocking(self.read_fd, False)
            os.set_blocking(self.write_fd, False)  # the job never waits for us
        self._partial = b""
        self._latest: bytes | None = None
        self._written_at = float("-inf")

    def started(self) -> None:
        """The child has its copy of the write end: close ours (EOF is the child's)."""
        if self.write_fd >= 0:
            os.close(self.write_fd)
            self.write_fd = -1

    def poll(self, store: Store, job_id: str, attempt: int) -> None:
        """Read the reports that arrived; store the newest if WRITE_EVERY has passed."""
        if self.read_fd < 0:
            return
        self._drain()
        now = time.time()
        if self._latest is not None and now - self._written_at >= WRITE_EVERY:
            report = self.final()
            if report is not None:
                self._written_at = now
                store.set_progress(job_id, attempt, report)

    def final(self) -> str | None:
        """The newest report not stored yet, as stored JSON (read to the end first); the
        verdict's own transaction stores it, so the last report always lands with it."""
        if self.read_fd < 0:
            return None
        self._drain()
        line, self._latest = self._latest, None
        report = None if line is None else parse(line)
        return None if report is None else json.dumps({**report, "at": time.time()})

    def _drain(self) -> None:
        while True:
            try:
                data = os.read(self.read_fd, 65536)
            except (BlockingIOError, InterruptedError):
                return
            if not data:
                return
            lines = (self._partial + data).split(b"\n")
            self._partial = lines.pop()
            if len(self._partial) > MAX_LINE:
                self._partial = b""
            complete = [line for line in lines if line]
            if complete:
                self._latest = complete[-1]

    def close(self) -> None:
        """Close both ends that are still ours."""
        for fd in (self.read_fd, self.write_fd):
            if fd >= 0:
                os.close(fd)
        self.read_fd = self.write_fd = -1


def parse(line: bytes) -> dict[str, object] | None:
    """A report line as {"done", "total", "message"}, or None if it is not a valid one."""
    if len(line) > MAX_LINE:
        return None
    import ast

    try:
        value = ast.literal_eval(line.decode("utf-8"))
        done, total, message = value
        check(done, total, message)
    except (ValueError, TypeError, SyntaxError, MemoryError, RecursionError):
        return None
    return {"done": done, "total": total, "message": message}
