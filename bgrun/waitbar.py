"""`bgrun wait`'s progress bar on a terminal: one line redrawn in place on stderr.

Only where stderr is a terminal: anywhere else (a file, a pipe, cron) `wait` writes no
escape sequence at all. The ETA comes from the reports' own times: the rate between the
first report this wait saw and the newest one.
"""

from __future__ import annotations

import json
import shutil
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TextIO

from bgrun.records import JobRecord

CLEAR_LINE = "\r\x1b[K"


class WaitBar:
    """Draws one job's progress on a terminal stream, at most every `every` seconds."""

    def __init__(self, stream: TextIO, every: float = 0.1) -> None:
        self.stream = stream
        self.every = every
        self.first: tuple[float, float] | None = None  # (at, done) of the first report seen
        self.drawn = ""
        self.last_draw = float("-inf")

    def __call__(self, job: JobRecord) -> None:
        now = time.monotonic()
        if now - self.last_draw < self.every and not job.stored_status.finished:
            return
        self.last_draw = now
        line = self.line(job, shutil.get_terminal_size((80, 24)).columns - 1)
        if line != self.drawn:
            self.stream.write(CLEAR_LINE + line)
            self.stream.flush()
            self.drawn = line

    def line(self, job: JobRecord, width: int) -> str:
        """The bar's text for `job`, at most `width` characters."""
        status = job.status_at(time.time()).value
        if job.progress_json is None:
            return f"job {job.id} {status}"[:width]
        report = json.loads(job.progress_json)
        done, total, message = report["done"], report["total"], report["message"] or ""
        if self.first is None or done < self.first[1]:
            self.first = (report["at"], done)
        eta = self.eta(report["at"], done, total)
        head = f"job {job.id} "
        tail = f" {_count(done, total)}{'  ETA ' + eta if eta else ''}  {message}"
        if total:
            cells = max(10, min(40, width - len(head) - len(tail) - 2))
            filled = int(cells * done / total)
            head += "[" + "#" * filled + "-" * (cells - filled) + "]"
        else:
            head += status
        return (head + tail).rstrip()[:width]

    def eta(self, at: float, done: float, total: float | None) -> str:
        """Time left at the rate seen so far ('' while it cannot be told)."""
        if not total or done >= total or self.first is None or at <= self.first[0] \
                or done <= self.first[1]:
            return ""
        rate = (done - self.first[1]) / (at - self.first[0])
        left = max(0.0, (total - done) / rate - (time.time() - at))
        minutes, seconds = divmod(int(left + 0.5), 60)
        return f"{minutes // 60}:{minutes % 60:02d}:{seconds:02d}" if minutes >= 60 else \
            f"{minutes}:{seconds:02d}"

    def close(self) -> None:
        """End the drawn line, so what follows starts on its own."""
        if self.drawn:
            self.stream.write("\n")
            self.stream.flush()


def _count(done: float, total: float | None) -> str:
    def num(v: float) -> str:
        return f"{v:g}" if isinstance(v, float) else str(v)

    if total is None:
        return num(done)
    percent = f" {int(100 * done / total):3d}%" if total else ""
    return f"{num(done)}/{num(total)}{percent}"


@contextmanager
def bar_for(stream: TextIO) -> Iterator[Callable[[JobRecord], None] | None]:
    """A WaitBar on `stream` if it is a terminal, else None (wait plainly)."""
    try:
        tty = stream.isatty()
    except (AttributeError, ValueError):
        tty = False
    if not tty:
        yield None
        return
    bar = WaitBar(stream)
    try:
        yield bar
    finally:
        bar.close()
