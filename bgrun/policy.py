"""Pure policy: when a failed job runs again."""

from __future__ import annotations

import random


def compute_backoff(attempt: int, base: float, cap: float, rand: float | None = None) -> float:
    """Seconds to wait before the retry that follows attempt `attempt` (1-based).

    Exponential (base, 2·base, 4·base …, at most `cap`) with jitter over its upper half, so
    jobs that failed together do not all come back at the same instant.
    """
    ceiling = min(cap, base * 2.0 ** max(attempt - 1, 0))
    r = random.random() if rand is None else rand
    return ceiling / 2 + r * ceiling / 2


def may_retry(attempts: int, retries: int) -> bool:
    """True while runs started so far leave one of the `retries` extra attempts."""
    return attempts <= retries
