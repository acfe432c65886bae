"""The two flat event logs: one logfmt line per event, written whole under a file lock.

`background_jobs.log` gets every transition; `background_jobs_errors.log` gets every
failure, timeout, refusal and crash with its traceback. Values are escaped so that no
input can split a line or forge one (CWE-117).
"""

from __future__ import annotations

import contextlib
import os
import re
from _thread import allocate_lock  # threading.Lock, without threading's import
from collections.abc import Mapping
from datetime import UTC, datetime
from pathlib import Path

from bgrun.errors import ConfigError
from bgrun.lazyre import LazyPattern
from bgrun.locks import FileLock
from bgrun.logfile import KeptAppend

EVENTS_LOG = "background_jobs.log"
ERRORS_LOG = "background_jobs_errors.log"

#: Bidirectional controls (and the Arabic letter mark): they reorder what a reader sees.
BIDI = "\u061c\u200e\u200f\u202a-\u202e\u2066-\u2069"
#: What a bare value may not hold (a value with none of these is written unquoted). A
#: positive class: its negation, compiled at every start, cost a command line more.
_NOT_PLAIN = LazyPattern(rf"[\s=\"\\\x00-\x1f\x7f-\x9f\u2028\u2029{BIDI}]")
#: What an ASCII value may not hold beside its unprintable characters (\x00-\x1f, \x7f).
_ASCII_NOT_PLAIN = (" ", "=", '"', "\\")
_ESCAPE = LazyPattern(rf"[\\\"\x00-\x1f\x7f-\x9f\u2028\u2029{BIDI}]")
_FIELD = LazyPattern(r'([^\s=]+)=("(?:[^"\\]|\\.)*"|[^\s"]*)')
_UNESCAPE = LazyPattern(r"\\(x[0-9a-f]{2}|u[0-9a-f]{4}|.)")


def _escape_char(match: re.Match[str]) -> str:
    char = match.group()
    if char in '\\"':
        return "\\" + char
    if char == "\n":
        return "\\n"
    code = ord(char)
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"


def format_value(value: object) -> str:
    """One logfmt value: bare where safe, else quoted with every control character escaped."""
    text = "-" if value is None else str(value)
    if text.isascii():  # most values: no pattern to compile (a one-shot caller's cost)
        if text and text.isprintable() and not any(c in text for c in _ASCII_NOT_PLAIN):
            return text
    elif not _NOT_PLAIN.search(text):
        return text
    return '"' + _ESCAPE.sub(_escape_char, text) + '"'


def format_line(fields: Mapping[str, object], now: datetime | None = None) -> str:
    """A whole log line: a UTC timestamp, then `key=value` fields."""
    stamp = (now or datetime.now(UTC)).isoformat(timespec="microseconds")
    return stamp + "".join(f" {key}={format_value(value)}" for key, value in fields.items())


def parse_line(line: str) -> dict[str, str]:
    """The fields of a line written by format_line (for `bgrun show` and the tests)."""
    stamp, _, rest = line.rstrip("\n").partition(" ")
    fields = {"time": stamp}
    for key, raw in _FIELD.findall(rest):
        fields[key] = _unquote(raw)
    return fields


def _unquote(raw: str) -> str:
    if not raw.startswith('"'):
        return raw

    def one(match: re.Match[str]) -> str:
        code = match.group(1)
        if code == "n":
            return "\n"
        if len(code) > 1:
            return chr(int(code[1:], 16))
        return code

    return _UNESCAPE.sub(one, raw[1:-1])


def _unwritable(path: Path, exc: OSError) -> ConfigError:
    return ConfigError(f"cannot write the log {path}: {exc.strerror or exc}")


class EventLog:
    """Appends events to the two logs in `log_dir`, rotating them by size."""

    def __init__(self, log_dir: Path, max_bytes: int = 10 << 20, backups: int = 5,
                 host: str | None = None) -> None:
        self.log_dir = log_dir
        self.host = host  # BGRUN_HOST: every line says which host wrote it (SPEC)
        self.max_bytes = max_bytes
        self.backups = backups
        self._lock = FileLock(log_dir / ".logs.lock")
        # Descriptors kept open between events (see logfile.py: re-checked every time),
        # used by one thread at a time: check() runs outside the file lock, and must not
        # close or replace a descriptor another thread is writing a line to.
        self._files = {name: KeptAppend(log_dir / name) for name in (EVENTS_LOG, ERRORS_LOG)}
        self._files_lock = allocate_lock()

    def event(
        self,
        *,
        job: object,
        target: str,
        method: str,
        status: str,
        attempt: int = 0,
        queue: str | None = None,
        **extra: object,
    ) -> None:
        """Write one event; one with an `error` goes to the error log too, with its traceback.

        `queue` is written after `method` on every line about a job (SPEC: `queue=`), and
        `host` (this host's BGRUN_HOST) after `attempt` on every line.
        """
        traceback = extra.pop("traceback", None)
        fields = {"job": job, "class": target, "method": method,
                  **({"queue": queue} if queue is not None else {}), "status": status,
                  "attempt": attempt, **({"host": self.host} if self.host else {}),
                  **{k: v for k, v in extra.items() if v is not None}}
        now = datetime.now(UTC)
        try:
            self._lock.acquire()
        except OSError as exc:  # the folder was deleted under us: never recreated here
            raise _unwritable(self._lock.path, exc) from None
        try:
            with self._files_lock:
                self._append(EVENTS_LOG, format_line(fields, now))
                if fields.get("error") is not None:
                    if traceback:
                        fields["traceback"] = traceback
                    self._append(ERRORS_LOG, format_line(fields, now))
        finally:
            self._lock.release()

    def check(self) -> None:
        """ConfigError now if the event log cannot be opened for writing.

        The descriptor opened is kept for the event that follows (an enqueue's line).
        """
        file = self._files[EVENTS_LOG]
        with self._files_lock:
            try:
                file.current()
            except OSError as exc:
                raise _unwritable(file.path, exc) from None
            file.done()

    def _append(self, name: str, line: str) -> None:
        file = self._files[name]
        data = (line + "\n").encode("utf-8", errors="backslashreplace")
        try:
            fd, start = file.current()
            if self.max_bytes and self._rotate_if_full(file.path, start, len(data)):
                fd, start = file.current()
        except OSError as exc:
            raise _unwritable(file.path, exc) from None
        try:
            written = os.write(fd, data)
            if written != len(data):  # the disk filled up mid-line
                raise OSError(28, os.strerror(28))
        except OSError as exc:
            with contextlib.suppress(OSError):
                os.ftruncate(fd, start)  # a line is written whole or not at all
            file.forget()
            raise _unwritable(file.path, exc) from None
        file.done()

    def _rotate_if_full(self, path: Path, size: int, incoming: int) -> bool:
        """Rotate the log at `path` (now `size` bytes) if `incoming` more would pass the
        limit; True when it was rotated (its descriptor must be looked up again)."""
        if size == 0 or size + incoming <= self.max_bytes:
            return False
        if self.backups == 0:
            os.truncate(path, 0)
            return True
        for n in range(self.backups - 1, 0, -1):
            older = path.with_name(f"{path.name}.{n}")
            if older.exists():
                os.replace(older, path.with_name(f"{path.name}.{n + 1}"))
        os.replace(path, path.with_name(f"{path.name}.1"))
        return True
