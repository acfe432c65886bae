"""What every bgrun process opens once: settings, store, event log and state folder."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import NamedTuple

from bgrun.config import Config
from bgrun.errors import NoStoreError, StoreGoneError
from bgrun.files import private_dir
from bgrun.jobfiles import jobs_dir
from bgrun.joblog import EventLog
from bgrun.slots import state_dir
from bgrun.store import Role, Store, open_store
from bgrun.whereis import no_store_message, store_missing

RUNNER_SCRIPT = str(Path(__file__).resolve().with_name("_runner_main.py"))


class Context(NamedTuple):
    """A process's open store and logs for one configuration."""

    config: Config
    store: Store
    log: EventLog
    state: Path

    @classmethod
    def open(cls, config: Config, role: Role = Role.CALLER, *, create: bool = True
             ) -> Context:
        """Create the log folder (0700) and open the store and logs in it.

        `role`: a runner's writes may be less durable than a caller's (store.Role).
        `create=False` (commands that only read or act on existing jobs): NoStoreError,
        and nothing made on disk, when there is no store where the settings point.
        """
        if not create and store_missing(config):
            raise NoStoreError(no_store_message(config))
        private_dir(config.log_dir)
        private_dir(jobs_dir(config.log_dir))
        store = open_store(config, role, create=create)
        log = EventLog(config.log_dir, config.log_max_bytes, config.log_backups, config.host)
        return cls(config, store, log, state_dir(config.store))

    def is_current(self) -> bool:
        """False once the store or the log folder was deleted, moved or replaced."""
        try:
            self.store.check_current()
        except StoreGoneError:
            return False
        return self.config.log_dir.is_dir()


_open: dict[tuple[Config, int], Context] = {}


def context_for(config: Config, *, create: bool = True) -> Context:
    """The Context of `config`, opened once per process (a long-lived caller reuses it).

    One whose store or log folder was deleted, moved or replaced is opened afresh, as a
    process started now would open it (`create=False`: only if a store is there): jobs
    must go where runners and `bgrun list` will look, never into an unlinked file.
    """
    key = (config, os.getpid())  # a forked caller must not share its parent's connection
    ctx = _open.get(key)
    if ctx is None or not ctx.is_current():
        # The old one is not closed: a job handle may still hold it (and then reads a
        # StoreGoneError, never another store's job of the same id).
        ctx = _open[key] = Context.open(config, create=create)
    return ctx


def runner_python(config: Config) -> str:
    """The interpreter that runs runners: ours where we are Python, else BGRUN_PYTHON."""
    return config.python if config.python else sys.executable
