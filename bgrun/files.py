"""Private folders and files: job params and output can hold secrets (0700 / 0600 on POSIX)."""

from __future__ import annotations

import os
import sys
from pathlib import Path

from bgrun.errors import ConfigError

#: (st_mtime_ns, st_size, st_ino) of a file: equal signatures mean an unchanged file.
Signature = tuple[int, int, int]


def file_signature(path: str | Path) -> Signature | None:
    """The file's signature, or None where it cannot be read (it does not exist...).

    Used for the allowlist's cache, the child's "unchanged since the runner checked it"
    and preloading's stale-code check; `bgrun._child` keeps a lean copy (tested equal).
    """
    try:
        st = os.stat(path)
    except OSError:
        return None
    return (st.st_mtime_ns, st.st_size, st.st_ino)


def private_dir(path: Path) -> Path:
    """Make `path` (and parents) exist; tighten it to 0700 where bgrun owns it."""
    try:
        path.mkdir(mode=0o700, parents=True, exist_ok=True)
        if sys.platform != "win32":
            st = path.stat()
            if st.st_uid == os.getuid() and st.st_mode & 0o077:
                path.chmod(0o700)
    except OSError as exc:
        raise ConfigError(f"log folder {path} is unusable: {exc.strerror or exc}") from None
    if not os.access(path, os.W_OK | os.X_OK):
        raise ConfigError(f"log folder {path} is not writable")
    return path


def touch_private(path: Path) -> None:
    """Create `path` as an empty 0600 file if it does not exist (its mode is then kept)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    os.close(fd)


def open_append(path: Path) -> int:
    """A descriptor appending to `path`, created 0600 (the umask cannot widen it)."""
    return os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
