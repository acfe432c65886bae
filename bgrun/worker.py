"""`bgrun worker`: a permanent runner in the foreground, for systemd, supervisord or NSSM.

It must start whatever state it finds: runners started on demand (by `bgrun recover`
just before it, or by callers) may hold every slot. Then it waits for a slot, saying so,
and raises its hand (the waiting lock): an on-demand runner that sees it hands its slot
over once its current attempt is recorded. It never exits for want of a slot, so a
supervisor's restart limit is never hit.
"""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Callable
from types import FrameType

from bgrun.config import Config
from bgrun.context import Context
from bgrun.locks import FileLock
from bgrun.runner import Runner
from bgrun.settle import ensure_runner
from bgrun.slots import take_free_slot, try_acquire, waiting_lock
from bgrun.store import Role


class _Stop:
    """The stop signals: remembered while waiting, passed on to the runner once it runs."""

    def __init__(self) -> None:
        self.requested = False
        self.runner: Runner | None = None

    def __call__(self, signum: int, frame: FrameType | None) -> None:
        self.requested = True
        if self.runner is not None:
            self.runner.stop(signum, frame)


def run_worker(config: Config, *, requeue_on_stop: bool, say: Callable[[str], None],
               queues: frozenset[str] | None = None) -> None:
    """Serve jobs (of `queues` only, if given) until SIGTERM or Ctrl-C, waiting first for
    a slot if none is free."""
    ctx = Context.open(config, Role.RUNNER)
    stop = _Stop()
    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    taken = _wait_for_slot(ctx, stop, say)
    if taken is None:
        say("bgrun worker: stopped (it never had a slot)")
        ensure_runner(ctx)  # a runner may have handed its slot over to us: not lost
        return
    slot, lock = taken
    say(f"bgrun worker: started, pid {os.getpid()}, slot {slot + 1} of"
        f" {config.concurrency}, store {ctx.store.describe()}")
    runner = stop.runner = Runner(ctx, slot, lock, linger=True,
                                  requeue_on_stop=requeue_on_stop, queues=queues)
    try:
        if not stop.requested:
            runner.serve()
    finally:
        runner.close()
        say("bgrun worker: stopped")


def _wait_for_slot(ctx: Context, stop: _Stop, say: Callable[[str], None]
                   ) -> tuple[int, FileLock] | None:
    """A free slot, waited for while every one has a runner; None if stopped first."""
    taken = take_free_slot(ctx.state, ctx.config.concurrency)
    if taken is not None:
        return taken
    say(f"bgrun worker: every slot (BGRUN_CONCURRENCY={ctx.config.concurrency}) has a"
        " runner; waiting for one (runners started on demand hand theirs over)")
    hand = waiting_lock(ctx.state)
    try:
        while not stop.requested:
            if not hand.is_locked:  # (a second waiting worker takes it after the first)
                try_acquire(hand)
            taken = take_free_slot(ctx.state, ctx.config.concurrency)
            if taken is not None:
                return taken
            time.sleep(ctx.config.tick)
        return None
    finally:
        if hand.is_locked:
            hand.release()
