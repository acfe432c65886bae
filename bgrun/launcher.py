"""The one place that starts processes: detached runners and supervised job children.

The platform difference lives here. A started process never inherits the caller's
stdin/stdout/stderr (a caller capturing output would hang) nor its descriptors.
"""

from __future__ import annotations

import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import subprocess

#: bgrun's one name for the platform test where it is a value (mypy narrows only on the
#: `sys.platform` comparison itself, so branches that need narrowing spell that out).
WINDOWS = sys.platform == "win32"

# Windows process-creation flags (winbase.h); spelled out so POSIX code type-checks.
DETACHED_PROCESS = 0x00000008
CREATE_NEW_PROCESS_GROUP = 0x00000200
CREATE_NO_WINDOW = 0x08000000
CREATE_BREAKAWAY_FROM_JOB = 0x01000000


#: bgrun's own secrets, which no process it starts may inherit: the dashboard's token
#: would otherwise reach every runner a dashboard starts (its retry, its orphan settling)
#: and, through the runner's exec-time environment, every job forked from it.
PRIVATE_VARS = frozenset({"BGRUN_DASHBOARD_TOKEN"})


def without_secrets(env: Mapping[str, str]) -> dict[str, str]:
    """A copy of `env` without PRIVATE_VARS: the environment a started process may have."""
    return {key: value for key, value in env.items() if key not in PRIVATE_VARS}


def detached_flags(breakaway: bool) -> int:
    """Windows flags for a process that must outlive its starter (and its console)."""
    flags = DETACHED_PROCESS | CREATE_NEW_PROCESS_GROUP
    return flags | CREATE_BREAKAWAY_FROM_JOB if breakaway else flags


def start_detached(argv: Sequence[str], *, cwd: Path, env: Mapping[str, str],
                   reap: bool = True, pass_fd: int | None = None
                   ) -> subprocess.Popen[bytes] | None:
    """Start `argv` in the background, detached from the caller, its terminal and session.

    POSIX: a new session, and the started script forks at once and its first half exits,
    so we reap it here and leave no zombie in a long-lived caller; with `reap=False` the
    caller gets that first half back to reap later (it does not wait for an interpreter
    to start), and `pass_fd` is a descriptor the started process inherits (POSIX: a lock
    handed over). Windows: detached and outside the caller's job object where allowed
    (Task Scheduler and terminals kill their job's processes otherwise), falling back
    without breakaway where the job forbids it.
    """
    import subprocess  # not at the top: a runner's start need not wait for it

    common: dict[str, object] = {
        "cwd": str(cwd),
        "env": without_secrets(env),
        "stdin": subprocess.DEVNULL,
        "stdout": subprocess.DEVNULL,
        "stderr": subprocess.DEVNULL,
        "close_fds": True,
    }
    if WINDOWS:
        try:
            subprocess.Popen(list(argv), creationflags=detached_flags(True), **common)  # type: ignore[call-overload]
        except OSError:
            subprocess.Popen(list(argv), creationflags=detached_flags(False), **common)  # type: ignore[call-overload]
        return None
    proc: subprocess.Popen[bytes]
    if pass_fd is not None:
        common["pass_fds"] = (pass_fd,)
    proc = subprocess.Popen([*argv, "--daemonize"], start_new_session=True, **common)  # type: ignore[call-overload]
    if not reap:
        return proc
    proc.wait()
    return None


def start_child(
    argv: Sequence[str], *, cwd: str, env: Mapping[str, str], output_fd: int,
    keep_fd: int = -1,
) -> subprocess.Popen[bytes]:
    """Start one job attempt in its own process group, its output going to `output_fd`.

    The child reads its job spec from the stdin pipe, then detaches stdin. `keep_fd`
    (POSIX; -1 for none) is inherited under the same number: the progress pipe.
    """
    import subprocess

    kwargs: dict[str, object] = {
        "cwd": cwd,
        "env": without_secrets(env),
        "stdin": subprocess.PIPE,
        "stdout": output_fd,
        "stderr": output_fd,
        "close_fds": True,
    }
    if WINDOWS:
        kwargs["creationflags"] = CREATE_NEW_PROCESS_GROUP | CREATE_NO_WINDOW
    else:
        kwargs["start_new_session"] = True
        if keep_fd >= 0:
            kwargs["pass_fds"] = (keep_fd,)
    return subprocess.Popen(list(argv), **kwargs)  # type: ignore[call-overload, no-any-return]
