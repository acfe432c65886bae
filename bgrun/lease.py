"""A runner's lease on a store shared by several hosts (PostgreSQL): keep it, or stop.

On such a store a runner is alive while its lease row is: the server's clock times it,
and any runner on any host takes over the jobs of a lapsed lease. So the runner itself
must stop before its lease can lapse: it renews every quarter lease, and remembers, by
its own monotonic clock, when it SENT its last renew that succeeded. Once the lease,
less a margin of two ticks, has passed since then (a network cut, the database down, a
freeze) the lease is lost: the runner ends its attempt's tree, records nothing for it
(it will be taken over), claims nothing, and keeps trying to reach the store.

A store call can block far longer than a tick while the network is cut (a connect, a
query waiting for its TCP timeout), so a timer (SIGALRM, POSIX) also fires at that
moment and ends the running attempt's tree from wherever the runner is blocked: no
thread is needed (fork mode refuses threaded runners). A store that is not leased
(SQLite: liveness is the slot lock) has nothing of this: `held()` is always True.
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys
import time
from collections.abc import Callable
from types import FrameType
from typing import TYPE_CHECKING, ParamSpec, TypeVar

from bgrun.context import Context
from bgrun.errors import ConfigError, StoreError, StoreGoneError
from bgrun.records import JobRecord
from bgrun.store import Store

if TYPE_CHECKING:
    from bgrun.attempt import Verdict


class LeaseLost(Exception):
    """The runner's lease lapsed, or its row is gone: its attempt must end, unrecorded."""

    kind = "LeaseLost"


class Fenced(Exception):
    """A write about the runner's own attempt changed nothing: it was taken over."""


P = ParamSpec("P")
T = TypeVar("T")


def tolerant(store: Store, call: Callable[P, T], *args: P.args, **kwargs: P.kwargs
             ) -> T | None:
    """`call()`, or None if it raised StoreError on a leased store.

    There a runner supervising an attempt outlives an unreachable store: its lease says
    when it must give the attempt up (LeaseLost), not the first failed query.
    """
    try:
        return call(*args, **kwargs)
    except StoreError as exc:
        if not store.leased or isinstance(exc, StoreGoneError):
            raise
        return None


class Lease:
    """One runner's lease: when to renew, whether it is still held, and its guard timer."""

    def __init__(self, ctx: Context, slot: int) -> None:
        self.ctx = ctx
        self.slot = slot
        self.active = ctx.store.leased
        self.length = ctx.config.lease_term  # as long as the row lasts on the server
        self.every = self.length / 4
        self.margin = 2 * ctx.config.tick
        self.sent_ok = time.monotonic()  # when the last renew that succeeded was sent
        self.tried = time.monotonic()
        self.gone = False  # renew said our row was removed (we lapsed)
        self.lost = False
        self.child: tuple[int, float, str] | None = None  # (pid, start, marker) to end
        self.ended_child = False  # the guard timer ended the attempt's tree
        self._armed = False

    def registered(self, slot: int) -> None:
        """The runner registered (again) in `slot`, or renewed after a loss: a fresh lease."""
        self.slot = slot
        self.gone = self.lost = False
        self.sent_ok = self.tried = time.monotonic()
        self._arm()

    def held(self) -> bool:
        """True while the lease is surely valid (always on a store that is not leased).

        Once lost it stays lost (an attempt that lost it must end, even if a renew gets
        through later) until the runner has the store back (`registered`).
        """
        if not self.active:
            return True
        if not self.lost and (self.gone or self.left() <= 0.0):
            self.lost = True
        return not self.lost

    def left(self) -> float:
        """Seconds until the lease counts as lost (a runner sleeps no longer than this)."""
        if not self.active:
            return float("inf")
        return max(self.sent_ok + self.length - self.margin - time.monotonic(), 0.0)

    def keep(self) -> bool:
        """Renew when a quarter lease has passed since the last try; True while held.

        A StoreError counts as a failed renew (the store may be back at the next try).
        """
        if not self.held():
            return False
        sent = time.monotonic()
        if sent - self.tried < self.every:
            return True
        self.tried = sent
        try:
            still = self.ctx.store.renew_runner(self.slot, os.getpid())
        except StoreError:
            return self.held()
        if not still:
            self.gone = True
        elif self.held():
            self.sent_ok = sent
            self._arm()
        return self.held()

    def regain(self) -> bool:
        """After a loss: renew (or report the row gone); True, lease fresh, if it worked.

        StoreError when the store is still unreachable.
        """
        if not self.gone and self.ctx.store.renew_runner(self.slot, os.getpid()):
            self.registered(self.slot)
            return True
        self.gone = True
        return False

    def why(self) -> str:
        """Why the lease is lost, for the event log."""
        if self.gone:
            return "the runner's lease lapsed and its row was removed"
        return (f"the lease could not be renewed for {self.length - self.margin:g} s"
                f" (BGRUN_LEASE={self.ctx.config.lease:g})")

    def watch_child(self, pid: int, started: float, marker: str) -> None:
        """The attempt's process: ended by the guard timer if the lease is lost."""
        self.child = (pid, started, marker)
        self.ended_child = False
        self._arm()

    def child_done(self) -> None:
        """The attempt is over: the guard timer has nothing to end."""
        self.child = None
        self._disarm()

    def end_child(self) -> None:
        """End the running attempt's tree now (the lease is lost)."""
        child = self.child
        if child is None or self.ended_child:
            return
        from bgrun import proctree

        self.ended_child = True
        proctree.kill_tree(*child)

    def _arm(self) -> None:
        """Set the guard timer to the moment the lease counts as lost."""
        if sys.platform == "win32" or not self.active or self.child is None:
            return
        signal.signal(signal.SIGALRM, self._on_alarm)
        signal.setitimer(signal.ITIMER_REAL, max(self.left(), 0.001))
        self._armed = True

    def _disarm(self) -> None:
        if sys.platform != "win32" and self._armed:
            signal.setitimer(signal.ITIMER_REAL, 0)
            self._armed = False

    def _on_alarm(self, signum: int, frame: FrameType | None) -> None:
        if self.held():  # renewed since it was set (a renew re-arms it): too early
            self._arm()
            return
        self._armed = False
        self.end_child()


def note_abandoned(ctx: Context, job: JobRecord, exc: StoreGoneError | LeaseLost) -> None:
    """Say, where the log folder still is, that an attempt ended with no verdict recorded."""
    taken = isinstance(exc, LeaseLost)
    with contextlib.suppress(ConfigError):
        ctx.log.event(job=job.id, target=job.target, method=job.method, queue=job.queue,
                      status="abandoned", attempt=job.attempts, error=f"{exc.kind}: {exc}",
                      pid=os.getpid(),
                      note="the attempt was ended and no verdict recorded; " + (
                          "another runner takes it over" if taken else "the runner exits"))


def note_fenced(ctx: Context, job: JobRecord) -> None:
    """Say that a write about this runner's own attempt changed nothing: it was taken
    over (its runner's lease lapsed), so this runner's verdict is not the job's."""
    with contextlib.suppress(ConfigError):
        ctx.log.event(job=job.id, target=job.target, method=job.method, queue=job.queue,
                      status="fenced", attempt=job.attempts, pid=os.getpid(),
                      note="the attempt was taken over: nothing recorded by this runner")


def wait_for_store(ctx: Context, lease: Lease, exc: BaseException,
                   register: Callable[[], None], stopping: Callable[[], bool]) -> None:
    """A runner that lost the store (or its lease): claim nothing until it is back, then
    renew the lease, or `register()` again if its row is gone, and settle whatever it
    had claimed (it ended those attempts' trees). Returns at once when `stopping()`."""
    from bgrun.settle import settle_mine

    kind = getattr(exc, "kind", type(exc).__name__)
    with contextlib.suppress(ConfigError):
        ctx.log.event(job="-", target="-", method="-", status="runner-error",
                      error=f"{kind}: {exc}", pid=os.getpid(),
                      note="claiming nothing until the store is back")
    while not stopping():
        time.sleep(ctx.config.tick)
        try:
            if not lease.regain():
                register()
            settle_mine(ctx, lease.slot)
            return
        except StoreError:
            continue


def record_while_held(ctx: Context, lease: Lease, job: JobRecord, verdict: Verdict) -> bool:
    """Record the verdict (settle.record); False if fenced. On a leased store an
    unreachable store is tried again while the lease holds; LeaseLost after that, with
    nothing recorded (the job is taken over)."""
    from bgrun.settle import record

    while True:
        try:
            return record(ctx, job, verdict, own=True) is not None
        except StoreError as exc:
            if not lease.active or isinstance(exc, StoreGoneError):
                raise
            if not lease.keep():
                lost = LeaseLost(lease.why())
                note_abandoned(ctx, job, lost)
                raise lost from None
        time.sleep(ctx.config.tick)
