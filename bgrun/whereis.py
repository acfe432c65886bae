"""Telling a user who is in the wrong folder where bgrun looked, and where to go instead.

bgrun does not walk up from the working directory to find its project (as git, pytest
and ruff do): a job runs in the folder it was queued from, with that folder first on
its import path, so a store and allowlist borrowed from a parent folder would check and
run names against different code. It only says where the nearest project is.
"""

from __future__ import annotations

from pathlib import Path

from bgrun.config import STORE_NAME, Config

PROJECT_MARKS = ("allowlist.toml", f"logs/{STORE_NAME}")


def store_missing(config: Config) -> bool:
    """True when the settings name an SQLite store file that does not exist."""
    return config.store_url is None and not config.store.is_file()


def origin(config: Config, cwd: Path | None = None) -> str:
    """Which setting put the store where it is, in words."""
    cwd = Path.cwd() if cwd is None else cwd
    if config.store_url is not None or config.store != config.log_dir / STORE_NAME:
        return "BGRUN_STORE"
    if config.log_dir == (cwd / "logs").absolute():
        return f"no BGRUN_LOG_DIR: logs/ in the working directory {cwd}"
    return "BGRUN_LOG_DIR"


def nearest_project(start: Path) -> Path | None:
    """The nearest folder above `start` that holds an allowlist.toml or a logs/ store."""
    for folder in start.absolute().parents:
        if any((folder / mark).is_file() for mark in PROJECT_MARKS):
            return folder
    return None


def no_store_message(config: Config, cwd: Path | None = None) -> str:
    """One line: no store here, where bgrun looked, and how to point it at the right one."""
    cwd = Path.cwd() if cwd is None else cwd
    hint = ""
    near = nearest_project(cwd)
    if near is not None:
        hint = f" ({near} looks like a bgrun project: cd there?)"
    return (f"no job store at {config.store} ({origin(config, cwd)}); nothing was created."
            f" Run bgrun in your project's folder, or set BGRUN_LOG_DIR (or BGRUN_STORE)"
            f" to where its store is{hint}")
