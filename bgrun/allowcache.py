"""The parsed allowlist kept on disk, so a queueing process need not parse TOML.

`bgrun exec` is a whole process per job, and importing Python's TOML parser was its
dearest import (tomllib pulls in datetime and compiles its regular expressions). A
queueing process that finds the allowlist's bytes unchanged reuses the parse an
earlier one kept, and then never imports tomllib.

- The key is the file's whole content, compared byte for byte: no clock, size or inode
  can make an edited allowlist look unchanged.
- The parse is plain data (marshal: never pickle, nothing in it is run), and is checked
  again exactly as a fresh parse is (`allowlist._parse`): the cache spares the parser,
  never the checks.
- It is trusted exactly as far as the allowlist itself: it is used only if its owner
  owns the allowlist too and nobody else may write it. Whoever could change it could
  then change the allowlist, so it grants nobody anything new (a root-owned allowlist
  is never overridden by a cache its job user wrote).
- It is used only when a job is queued. A job's own check before its import always
  parses the file itself.
- It lives in the store's state folder (0700, files 0600), and only where that folder
  exists: a refused request in the wrong folder makes nothing.
"""

from __future__ import annotations

import contextlib
import marshal
import os
import sys
from pathlib import Path
from typing import Any

FILE = "allowlist.parsed"
_FORMAT = 1


def read(folder: Path, path: Path, raw: bytes) -> dict[str, Any] | None:
    """The kept parse of `raw`, the bytes of the allowlist at `path`; None if none fits."""
    try:
        with open(folder / FILE, "rb") as f:
            if not _trusted(os.fstat(f.fileno()), os.stat(path)):
                return None
            # Plain data of our own making, trusted as the allowlist is (above), and checked
            # again by the caller; marshal runs nothing it loads.
            kept = marshal.loads(f.read())  # noqa: S302
    except (OSError, EOFError, ValueError, TypeError):
        return None
    if (type(kept) is not tuple or len(kept) != 4 or kept[0] != _FORMAT
            or kept[1] != str(path) or kept[2] != raw or type(kept[3]) is not dict):
        return None
    data: dict[str, Any] = kept[3]
    return data


def _trusted(kept: os.stat_result, allowlist: os.stat_result) -> bool:
    """The kept parse may stand for the allowlist: one owner, and only it may write.

    Never on Windows: its modes say only "read-only or not", and no owner is given.
    """
    if sys.platform == "win32":
        return False
    return kept.st_uid == allowlist.st_uid and not kept.st_mode & 0o022


def write(folder: Path, path: Path, raw: bytes, data: dict[str, Any]) -> None:
    """Keep the parse `data` of `raw` (best effort: a cache that cannot be written is
    simply not kept)."""
    if not folder.is_dir():
        return
    try:
        blob = marshal.dumps((_FORMAT, str(path), raw, data))
    except ValueError:  # a value marshal cannot hold: parse each time
        return
    temporary = folder / f"{FILE}.{os.getpid()}"
    try:
        fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            if os.write(fd, blob) != len(blob):  # the disk is full
                raise OSError("short write")
        finally:
            os.close(fd)
        os.replace(temporary, folder / FILE)  # whole or not at all, for a reader
    except OSError:
        with contextlib.suppress(OSError):
            os.unlink(temporary)
