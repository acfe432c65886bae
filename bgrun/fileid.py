"""Noticing a file deleted, moved or replaced under a process that holds it open.

An open descriptor follows its inode, not its name: after `rm -rf logs` (or `mv logs
old`, or a restore from a backup) a long-lived process would go on writing into a file
nobody will ever read again. So the store remembers the (st_dev, st_ino) of the file it
opened and compares it with a fresh stat of the path before every use: one system call
per read or write, against jobs lost without a word.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import NamedTuple


class FileId(NamedTuple):
    """Which file a path named when it was looked at."""

    dev: int
    ino: int


def file_id(path: Path | str) -> FileId | None:
    """The identity of the file at `path` now, or None if there is none."""
    try:
        st = os.stat(path)
    except (FileNotFoundError, NotADirectoryError):
        return None
    return FileId(st.st_dev, st.st_ino)


def gone_reason(path: Path | str, opened: FileId) -> str | None:
    """Why `path` no longer names the file opened as `opened`, or None if it still does."""
    now = file_id(path)
    if now == opened:
        return None
    if now is None:
        return "was deleted or moved away"
    return "was replaced by another file"
