"""Private folders and files: job params and output can hold secrets (0700 / 0600 on POSIX)."""

from __future__ import annotations

import os
import stat
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

#: Folders others can read, found this process (warned about once each; `bgrun check`
#: lists them again).
OPEN_FOLDERS: dict[Path, str] = {}


def private_dir(path: Path) -> Path:
    """Make `path` (and parents) exist: a folder bgrun creates is 0700.

    A folder that already exists keeps its mode, whoever made it (a `logs/` from git is
    0755): bgrun warns once, on stderr, when others can read it, and never chmods what it
    did not create. The files in it are 0600 whatever the folder's mode.
    """
    try:
        created = _make(path)
    except NotADirectoryError:
        raise ConfigError(f"folder {path} cannot be made: a part of its path is a file"
                          " (check BGRUN_LOG_DIR and BGRUN_STORE)") from None
    except OSError as exc:
        raise ConfigError(f"log folder {path} is unusable: {exc.strerror or exc}") from None
    if not created:
        _warn_if_open(path)
    if not os.access(path, os.W_OK | os.X_OK):
        raise ConfigError(f"log folder {path} is not writable")
    return path


def _make(path: Path) -> bool:
    """Create `path` (mode 0700, less the umask); False when it already was a folder."""
    try:
        path.mkdir(mode=0o700)
        return True
    except FileNotFoundError:
        path.parent.mkdir(parents=True, exist_ok=True)  # parents: the default mode, as mkdir -p
        return _make(path)
    except FileExistsError:
        if not path.is_dir():
            raise ConfigError(f"{path} exists but is not a folder: point BGRUN_LOG_DIR"
                              " (or BGRUN_STORE) at a folder") from None
        return False


def _warn_if_open(path: Path) -> None:
    if sys.platform == "win32":
        return
    if path in OPEN_FOLDERS:
        return
    st = path.stat()
    if st.st_uid != os.getuid() or not st.st_mode & 0o077:
        return
    mode = stat.S_IMODE(st.st_mode)
    OPEN_FOLDERS[path] = (f"folder {path} is readable by others (mode {mode:o}): job names"
                          f" and ids show there; run: chmod 700 {path}")
    print(f"bgrun: warning: {OPEN_FOLDERS[path]}", file=sys.stderr)


def touch_private(path: Path) -> None:
    """Create `path` as an empty 0600 file if it does not exist (its mode is then kept)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    os.close(fd)


def open_append(path: Path) -> int:
    """A descriptor appending to `path`, created 0600 (the umask cannot widen it)."""
    return os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
