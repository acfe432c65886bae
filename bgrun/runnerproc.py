"""A detached runner process (started on demand): take a free slot, serve, log a crash.

Its entry script is `_runner_main.py`; the loop it runs is runner.Runner. Nothing is
ever printed: a detached process has no one to read it, so the error log says it.
"""

from __future__ import annotations

import contextlib
import os
import signal

from bgrun.config import Config
from bgrun.context import Context
from bgrun.errors import BgrunError, NoStoreError, StoreGoneError
from bgrun.joblog import EventLog
from bgrun.runner import Runner
from bgrun.settle import start_runner_for
from bgrun.slots import take_free_slot
from bgrun.store import Role


def serve(config: Config) -> bool:
    """Take a free slot and run jobs (on demand); False if every slot has a runner."""
    # A runner never creates a store: one started for a store that is gone has no jobs.
    ctx = Context.open(config, Role.RUNNER, create=False)
    taken = take_free_slot(ctx.state, config.concurrency)
    if taken is None:
        return False
    runner = Runner(ctx, *taken)
    signal.signal(signal.SIGTERM, runner.stop)
    try:
        runner.serve()
    finally:
        runner.close()
    return True


def main() -> None:
    """Entry of a detached runner: serve, and log (never print) anything unexpected."""
    config = Config.load()
    try:
        serve(config)
    except NoStoreError:
        pass  # the store was deleted before we started: nothing of ours to run
    except StoreGoneError as exc:
        log_crash(config, f"{exc.kind}: {exc}", None)
        if config.store.is_file():
            # A caller of the store now at the path may have woken us (our wake FIFO is
            # named by path) and counted on us: a fresh runner serves that store instead.
            start_runner_for(config)
    except BgrunError as exc:
        log_crash(config, f"{exc.kind}: {exc}", None)
    except Exception as exc:
        import traceback

        log_crash(config, f"{type(exc).__name__}: {exc}", traceback.format_exc())


def log_crash(config: Config, error: str, tb: str | None, status: str = "runner-error"
              ) -> None:
    """Write a detached process's failure to the error log, where the log folder is.

    Only into a log folder that exists: making one (or a store) here would start a new,
    empty world where the user deleted the old one.
    """
    if not config.log_dir.is_dir():
        return
    log = EventLog(config.log_dir, config.log_max_bytes, config.log_backups, config.host)
    with contextlib.suppress(BgrunError):  # nowhere left to write: callers say it too
        log.event(job="-", target="-", method="-", status=status, error=error,
                  traceback=tb, pid=os.getpid())
