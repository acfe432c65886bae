"""Settings: the environment first, then a `.env` file in the working directory, then defaults."""

from __future__ import annotations

import os
import re
import sys
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import NamedTuple

from bgrun.envmemo import EnvMemo
from bgrun.errors import ConfigError
from bgrun.files import file_signature
from bgrun.lazyre import LazyPattern

STORE_NAME = "bgrun.sqlite3"
# Warm fork on Linux (it drains far faster than spawn: benchmarks/RESULTS.md); spawn
# elsewhere: Windows has no fork, and macOS frameworks are unsafe to fork without exec.
DEFAULT_MODE = "fork" if sys.platform == "linux" else "spawn"
_PYTHON_NAME = LazyPattern(r"^(python|pypy)[0-9.]*w?(\.exe)?$", re.IGNORECASE)


#: The variable of each Config field.
SETTING_NAMES = {
    "allowlist": "BGRUN_ALLOWLIST", "log_dir": "BGRUN_LOG_DIR", "store": "BGRUN_STORE",
    "concurrency": "BGRUN_CONCURRENCY", "python": "BGRUN_PYTHON",
    "retries": "BGRUN_RETRIES", "timeout": "BGRUN_TIMEOUT", "priority": "BGRUN_PRIORITY",
    "backoff_base": "BGRUN_BACKOFF_BASE",
    "backoff_max": "BGRUN_BACKOFF_MAX", "runner_idle": "BGRUN_RUNNER_IDLE",
    "tick": "BGRUN_TICK", "cancel_grace": "BGRUN_CANCEL_GRACE",
    "max_params_bytes": "BGRUN_MAX_PARAMS_BYTES",
    "max_params_depth": "BGRUN_MAX_PARAMS_DEPTH",
    "max_result_bytes": "BGRUN_MAX_RESULT_BYTES",
    "log_max_bytes": "BGRUN_LOG_MAX_BYTES", "log_backups": "BGRUN_LOG_BACKUPS",
    "mode": "BGRUN_MODE", "preload": "BGRUN_PRELOAD",
    "store_url": "BGRUN_STORE", "host": "BGRUN_HOST", "lease": "BGRUN_LEASE",
    "start_runners": "BGRUN_START_RUNNERS", "pg_notify": "BGRUN_PG_NOTIFY",
    "max_output_bytes": "BGRUN_MAX_OUTPUT_BYTES",
}
#: Every BGRUN_* name bgrun reads or sets: the settings above, the dashboard's, those a
#: job sees, and the ones SPEC reserves. Any other is taken for a misspelling.
KNOWN_NAMES = frozenset({
    *SETTING_NAMES.values(), "BGRUN_DASHBOARD_TOKEN", "BGRUN_DASHBOARD_HOSTS",
    "BGRUN_DASHBOARD_IDLE", "BGRUN_DASHBOARD_LIFETIME",
    "BGRUN_JOB_ID", "BGRUN_JOB_TAG", "BGRUN_HOST", "BGRUN_LEASE", "BGRUN_PG_NOTIFY",
    "BGRUN_START_RUNNERS", "BGRUN_MAX_OUTPUT_BYTES",
})


class Config(NamedTuple):
    """Every setting bgrun reads, resolved to absolute paths and checked values."""

    allowlist: Path
    log_dir: Path
    store: Path
    concurrency: int
    python: str | None  # None when the caller is not a Python interpreter (uWSGI...)
    retries: int = 0
    timeout: float | None = None  # seconds an attempt may run, unless the call or allowlist say
    priority: int = 0
    backoff_base: float = 1.0
    backoff_max: float = 300.0
    runner_idle: float = 5.0
    tick: float = 0.25
    cancel_grace: float = 5.0
    max_params_bytes: int = 1 << 20
    max_params_depth: int = 64
    max_result_bytes: int = 64 * 1024
    log_max_bytes: int = 10 << 20
    log_backups: int = 5
    mode: str = DEFAULT_MODE
    preload: bool = False  # fork mode: import each job's module once, in the runner
    # A database server's URL (PostgreSQL). Secret: it may hold a password, so it is
    # never printed (store.describe() is). `store` is then only a local anchor path that
    # names this host's state folder (slot locks, wake FIFO), never a file.
    store_url: str | None = None
    host: str = ""  # this host's name in the store, event lines and JSON (BGRUN_HOST)
    lease: float = 15.0  # seconds a runner's lease lasts on a server store (BGRUN_LEASE)
    start_runners: bool = True  # False: this host never starts runners on demand
    pg_notify: bool = True  # False: runners poll (PgBouncer in transaction mode)
    max_output_bytes: int = 1 << 20  # of a job's output copied into a server store

    @classmethod
    def load(
        cls, cwd: Path | None = None, environ: Mapping[str, str] | None = None
    ) -> Config:
        """Read the settings the way every bgrun entry point does.

        Called with no arguments (every enqueue does), the answer is kept while the
        working directory, its `.env` file, the environment and the interpreter are what
        they were.
        """
        if cwd is None and environ is None:
            where = os.getcwd()
            key = (where, file_signature(os.path.join(where, ".env")), sys.executable)
            return _loaded.get(key, lambda: cls._read(Path(where), os.environ))
        return cls._read(Path.cwd() if cwd is None else cwd,
                         os.environ if environ is None else environ)

    @classmethod
    def _read(cls, cwd: Path, environ: Mapping[str, str]) -> Config:
        env = merged_environ(cwd, environ)
        log_dir = _path(env.get("BGRUN_LOG_DIR"), cwd, cwd / "logs")
        defaults = cls(
            allowlist=_path(env.get("BGRUN_ALLOWLIST"), cwd, cwd / "allowlist.toml"),
            log_dir=log_dir,
            store=_store(env.get("BGRUN_STORE"), cwd, log_dir),
            concurrency=_int(env, "BGRUN_CONCURRENCY", os.cpu_count() or 1, 1),
            python=env.get("BGRUN_PYTHON") or default_python(),
        )
        return defaults._replace(
            retries=_int(env, "BGRUN_RETRIES", defaults.retries, 0),
            timeout=_timeout(env, "BGRUN_TIMEOUT"),
            priority=_int(env, "BGRUN_PRIORITY", defaults.priority, -10**9, 10**9),
            backoff_base=_float(env, "BGRUN_BACKOFF_BASE", defaults.backoff_base),
            backoff_max=_float(env, "BGRUN_BACKOFF_MAX", defaults.backoff_max),
            runner_idle=_float(env, "BGRUN_RUNNER_IDLE", defaults.runner_idle),
            tick=_float(env, "BGRUN_TICK", defaults.tick, low=0.01, high=1.0),
            cancel_grace=_float(env, "BGRUN_CANCEL_GRACE", defaults.cancel_grace),
            max_params_bytes=_int(env, "BGRUN_MAX_PARAMS_BYTES", defaults.max_params_bytes, 2),
            max_params_depth=_int(env, "BGRUN_MAX_PARAMS_DEPTH", defaults.max_params_depth, 1),
            max_result_bytes=_int(env, "BGRUN_MAX_RESULT_BYTES", defaults.max_result_bytes, 16),
            log_max_bytes=_int(env, "BGRUN_LOG_MAX_BYTES", defaults.log_max_bytes, 0),
            log_backups=_int(env, "BGRUN_LOG_BACKUPS", defaults.log_backups, 0),
            mode=_choice(env, "BGRUN_MODE", defaults.mode, ("spawn", "fork")),
            preload=_bool(env, "BGRUN_PRELOAD", defaults.preload),
            store_url=_server_url(env.get("BGRUN_STORE")),
            host=_host(env.get("BGRUN_HOST")),
            lease=_float(env, "BGRUN_LEASE", defaults.lease, low=1.0, high=3600.0),
            start_runners=_bool(env, "BGRUN_START_RUNNERS", defaults.start_runners),
            pg_notify=_bool(env, "BGRUN_PG_NOTIFY", defaults.pg_notify),
            max_output_bytes=_int(env, "BGRUN_MAX_OUTPUT_BYTES", defaults.max_output_bytes,
                                  1024),
        )

    @property
    def takeover_look(self) -> float:
        """Seconds between one process's looks for lapsed leases (1 s at the default)."""
        return self.lease / 15

    @property
    def lease_term(self) -> float:
        """How long a lease row lasts after a renew: BGRUN_LEASE less one takeover look.

        So the job of a runner killed right after it renewed is taken over within
        BGRUN_LEASE, look included; its runner gives up before the row lapses (lease.py).
        """
        return self.lease - self.takeover_look

    def as_environ(self) -> dict[str, str]:
        """These settings as BGRUN_* variables, so a runner we start sees exactly them."""
        out = {}
        for name, value in zip(self._fields, self, strict=True):
            if name == "store" and self.store_url is not None:
                continue  # the anchor path is derived; BGRUN_STORE is the URL
            if isinstance(value, bool):
                out[SETTING_NAMES[name]] = "1" if value else "0"
            elif value is not None:
                out[SETTING_NAMES[name]] = str(value)
        return out

    def require_python(self) -> str:
        """The interpreter that runs jobs, or a clear error where it cannot be guessed."""
        if not self.python:
            raise ConfigError(
                f"cannot tell which Python runs jobs ({sys.executable or 'no sys.executable'} "
                "is not a Python interpreter): set BGRUN_PYTHON"
            )
        return self.python


_loaded: EnvMemo[Config] = EnvMemo()


def merged_environ(cwd: Path, environ: Mapping[str, str]) -> Mapping[str, str]:
    """BGRUN_* values from `.env` under those already in the environment (which win).

    A view, not a copy: settings look up a few names, and copying `os.environ` (decoding
    every variable) was a third of the cost of loading them on each enqueue.
    """
    dotenv = cwd / ".env"
    if not dotenv.is_file():
        return environ
    from collections import ChainMap

    from dotenv import dotenv_values  # only paid for by callers that have a .env

    values = {k: v for k, v in dotenv_values(dotenv).items() if v is not None}
    return ChainMap(dict(environ), values)


def unknown_names(env: Iterable[str]) -> list[str]:
    """A phrase for each BGRUN_* name in `env` that bgrun does not know (a typo is ignored
    silently otherwise), with the known name it most resembles."""
    found = []
    for name in sorted(n for n in env if n.startswith("BGRUN_") and n not in KNOWN_NAMES):
        import difflib  # (only where there is a typo: every command looks)

        close = difflib.get_close_matches(name, KNOWN_NAMES, n=1, cutoff=0.8)
        found.append(f"{name} (did you mean {close[0]}?)" if close else name)
    return found


def default_python() -> str | None:
    """`sys.executable` where it is a Python interpreter (not uWSGI or an embedding host)."""
    exe = sys.executable
    if exe and _PYTHON_NAME.match(Path(exe).name):
        return exe
    return None


#: BGRUN_STORE values that name a database server rather than an SQLite file (SPEC).
SERVER_SCHEMES = ("postgresql://", "postgres://")


#: The local anchor of a server store: names this host's state folder, never a file.
SERVER_ANCHOR = "postgresql.store"


def _store(value: str | None, cwd: Path, log_dir: Path) -> Path:
    # Read as a path, a URL would become an SQLite file under ./postgresql:/ at the
    # first write: a server store's path is only the anchor of this host's state folder.
    if _server_url(value) is not None:
        return log_dir / SERVER_ANCHOR
    return _path(value, cwd, log_dir / STORE_NAME)


def _server_url(value: str | None) -> str | None:
    """The BGRUN_STORE value when it names a database server, else None (a file path)."""
    return value if value and value.lower().startswith(SERVER_SCHEMES) else None


_HOST_NAME = LazyPattern(r"^[A-Za-z0-9][A-Za-z0-9._:-]{0,252}$")


def _host(value: str | None) -> str:
    """BGRUN_HOST, or the machine's host name: one word, as event lines and JSON show it."""
    if not value:
        if hasattr(os, "uname"):
            return os.uname().nodename or "localhost"
        import socket  # Windows: no os.uname

        return socket.gethostname() or "localhost"
    if not _HOST_NAME.match(value):
        raise ConfigError(f"BGRUN_HOST={value[:40]!r}: a host name is letters, digits and"
                          " . _ : - (at most 253, no spaces)")
    return value


def _path(value: str | None, cwd: Path, default: Path) -> Path:
    if not value:
        return default.absolute()
    path = Path(value).expanduser()
    return (path if path.is_absolute() else cwd / path).absolute()


def _int(env: Mapping[str, str], name: str, default: int, low: int, high: int | None = None
         ) -> int:
    raw = env.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        raise ConfigError(f"{name}={raw!r} is not a whole number") from None
    if value < low or (high is not None and value > high):
        upper = f" and at most {high}" if high is not None else ""
        raise ConfigError(f"{name}={raw!r} must be at least {low}{upper}")
    return value


def _timeout(env: Mapping[str, str], name: str) -> float | None:
    raw = env.get(name)
    if raw is None or raw == "":
        return None
    value = _float(env, name, 0.0, high=10.0**9)
    if value <= 0:
        raise ConfigError(f"{name}={raw!r} must be more than 0 seconds (unset it for none)")
    return value


def _float(
    env: Mapping[str, str], name: str, default: float, low: float = 0.0, high: float | None = None
) -> float:
    raw = env.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = float(raw)
    except ValueError:
        raise ConfigError(f"{name}={raw!r} is not a number") from None
    if not (value >= low and (high is None or value <= high)):  # also refuses nan
        upper = f" and at most {high}" if high is not None else ""
        raise ConfigError(f"{name}={raw!r} must be at least {low}{upper}")
    return value


_TRUE = ("1", "true", "yes", "on")
_FALSE = ("0", "false", "no", "off")


def _bool(env: Mapping[str, str], name: str, default: bool) -> bool:
    raw = env.get(name)
    if raw is None or raw == "":
        return default
    if raw.lower() in _TRUE + _FALSE:
        return raw.lower() in _TRUE
    raise ConfigError(f"{name}={raw!r} must be one of: {', '.join(_TRUE + _FALSE)}")


def _choice(env: Mapping[str, str], name: str, default: str, choices: tuple[str, ...]) -> str:
    raw = env.get(name) or default
    if raw not in choices:
        raise ConfigError(f"{name}={raw!r} must be one of: {', '.join(choices)}")
    return raw
