"""What every bgrun process opens once: settings, store, event log and state folder."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import NamedTuple

from bgrun.config import Config
from bgrun.files import private_dir
from bgrun.jobfiles import jobs_dir
from bgrun.joblog import EventLog
from bgrun.slots import state_dir
from bgrun.store import Role, Store, open_store

RUNNER_SCRIPT = str(Path(__file__).resolve().with_name("_runner_main.py"))


class Context(NamedTuple):
    """A process's open store and logs for one configuration."""

    config: Config
    store: Store
    log: EventLog
    state: Path

    @classmethod
    def open(cls, config: Config, role: Role = Role.CALLER) -> Context:
        """Create the log folder (0700) and open the store and logs in it.

        `role`: a runner's writes may be less durable than a caller's (store.Role).
        """
        private_dir(config.log_dir)
        private_dir(jobs_dir(config.log_dir))
        store = open_store(config, role)
        log = EventLog(config.log_dir, config.log_max_bytes, config.log_backups)
        return cls(config, store, log, state_dir(config.store))


_open: dict[tuple[Config, int], Context] = {}


def context_for(config: Config) -> Context:
    """The Context of `config`, opened once per process (a long-lived caller reuses it)."""
    key = (config, os.getpid())  # a forked caller must not share its parent's connection
    ctx = _open.get(key)
    if ctx is None:
        ctx = _open[key] = Context.open(config)
    return ctx


def runner_python(config: Config) -> str:
    """The interpreter that runs runners: ours where we are Python, else BGRUN_PYTHON."""
    return config.python if config.python else sys.executable
