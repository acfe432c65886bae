"""`bgrun.progress()`: a job reports how far it is; outside a job the call does nothing.

The job child never opens the store. Its runner hands it the write end of a pipe (the
`progress_fd` of its spec, kept by `_child` as `PROGRESS_FD`); each report is one short
line written without blocking, and the runner reads the pipe while it supervises,
keeping only the newest report and writing it to the store now and then, and once more
before the verdict. This module imports nothing but what every interpreter has loaded:
a job that never reports never imports it.
"""

import os
import sys
from time import monotonic, sleep  # (a built-in module: no file is read)

MAX_MESSAGE = 1024  # bytes of UTF-8
# A write of up to PIPE_BUF bytes to a pipe arrives whole or not at all (4096 on Linux,
# 512 as POSIX's floor elsewhere): a report is never split by another.
PIPE_ATOMIC = 4096 if sys.platform == "linux" else 512
GAP = 0.002  # seconds between two writes: a tight loop of reports costs no syscall each
HOLD = 0.01  # seconds to hold reports back once the pipe was full
_INF = float("inf")

_fd = -1
_pid = 0  # the process _fd was looked up in: a job's forked child looks again
_pending: "tuple[object, object, object] | None" = None  # newest report not yet written
_next_write = 0.0


def progress(done: "int | float", total: "int | float | None" = None,
             message: "str | None" = None) -> None:
    """Report that the job has done `done` of `total` (optional), with a short message.

    Raises ValueError for a negative or non-finite number, a bool or a non-number,
    `done > total`, or a message that is not a string or is over 1 KiB in UTF-8 — inside
    a job and outside one alike, so a bad call fails the same way in tests.

    Reports closer together than GAP are coalesced in the job: the newest is written by
    the next call after the gap, or when the job's process exits.
    """
    global _pending
    check(done, total, message)
    if (_fd if _pid == os.getpid() else _lookup()) < 0:
        return
    _pending = (done, total, message)
    now = monotonic()
    if now >= _next_write:
        _send(now)


def check(done: object, total: object, message: object) -> None:
    """ValueError unless the three values make a valid report."""
    low = _number(done, "done")
    if total is not None and low > _number(total, "total"):
        raise ValueError(f"progress: done ({done!r}) is more than total ({total!r})")
    if message is not None:
        if type(message) is not str:
            raise ValueError(f"progress: message must be a string, not {type(message).__name__}")
        if len(message) > MAX_MESSAGE // 4 and _utf8_size(message) > MAX_MESSAGE:
            raise ValueError(f"progress: message is over {MAX_MESSAGE} bytes")


def _number(value: object, name: str) -> "int | float":
    if type(value) is not int and type(value) is not float:  # bool, str, None...: refused
        raise ValueError(f"progress: {name} must be a number, not {type(value).__name__}")
    if not 0 <= value < _INF:  # (NaN fails every comparison)
        raise ValueError(f"progress: {name} must be a finite number >= 0, not {value!r}")
    return value


def _utf8_size(message: str) -> int:
    try:
        return len(message.encode("utf-8"))
    except UnicodeEncodeError:
        raise ValueError("progress: message is not valid text (lone surrogates)") from None


def _lookup() -> int:
    """The report pipe of this job process, or -1 outside a job."""
    global _fd, _pid
    modules = sys.modules
    child = modules.get("_child") or modules.get("bgrun._child")  # spawned, forked
    fd = getattr(child, "PROGRESS_FD", -1)
    _fd, _pid = (fd if type(fd) is int else -1), os.getpid()
    if _fd >= 0:
        import atexit  # built in: nothing to load

        atexit.register(flush)  # the job's last report lands when its process exits
    return _fd


def _line(report: "tuple[object, object, object]") -> bytes:
    done, total, message = report
    line = repr(report).encode() + b"\n"  # (repr escapes lone surrogates)
    while len(line) > PIPE_ATOMIC and isinstance(message, str) and message:
        message = message[: len(message) // 2]  # escapes made a long message longer
        line = repr((done, total, message + "...")).encode() + b"\n"
    return line


def _send(now: float) -> bool:
    """Write the pending report; False if the pipe is full (it stays pending)."""
    global _pending, _fd, _next_write
    if _pending is None:
        return True
    try:
        os.write(_fd, _line(_pending))
    except BlockingIOError:  # the runner has not read the pipe yet: hold reports back
        _next_write = now + HOLD
        return False
    except OSError:  # the runner is gone (EPIPE) or the descriptor was closed
        _fd = -1
    _pending = None
    _next_write = now + GAP
    return True


def flush(seconds: float = 2.0) -> None:
    """Write the pending report, waiting up to `seconds` for the runner to read the pipe."""
    if _fd < 0 or _pid != os.getpid():
        return
    deadline = monotonic() + seconds
    while not _send(monotonic()) and monotonic() < deadline:
        sleep(0.01)
