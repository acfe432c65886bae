"""Named queues: the name rule, and which queues a runner serves under which limits.

Standard library only (the job child loads the allowlist, which uses the name rule).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import NamedTuple

from bgrun.errors import BadQueueError
from bgrun.lazyre import LazyPattern

DEFAULT_QUEUE = "default"
_NAME = LazyPattern(r"[a-z0-9][a-z0-9_-]{0,63}")


def check_queue_name(name: object) -> str:
    """`name` if it is a valid queue name (SPEC: `[a-z0-9][a-z0-9_-]{0,63}`), else
    BadQueueError saying so."""
    if not isinstance(name, str):
        raise BadQueueError(f"a queue name must be a string, not {type(name).__name__}")
    if not _NAME.fullmatch(name):
        shown = repr(name) if len(name) <= 70 else repr(name[:67]) + "..."
        raise BadQueueError(f"{shown} is not a queue name (1 to 64 of a-z 0-9 _ -,"
                            " beginning with a letter or digit)")
    return name


def parse_queue_list(text: str) -> frozenset[str]:
    """The queues of a `--queue a,b` option: comma-separated names, at least one."""
    names = [part.strip() for part in text.split(",")]
    return frozenset(check_queue_name(name) for name in names)


class QueuePlan(NamedTuple):
    """What a runner may claim from: the queues it serves and the limits it honours.

    `serves` is None for every queue (runners started on demand). `limits` maps a queue
    to its concurrency across every runner of the store; a queue not in it is limited
    only by runner slots, and a limit of 0 pauses the queue.
    """

    serves: frozenset[str] | None = None
    limits: Mapping[str, int] = {}

    def may_serve(self, queue: str) -> bool:
        """True if this runner takes jobs of `queue` at all."""
        return self.serves is None or queue in self.serves

