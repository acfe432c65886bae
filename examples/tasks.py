"""Module functions that run as jobs: bgrun imports the module and calls the function."""

from __future__ import annotations

import asyncio
import os
import random
import time


def cleanup(days: int = 30) -> str:
    """A quick housekeeping job."""
    print(f"removing files older than {days} days")
    return f"cleaned up {days} days"


def slow(seconds: float = 5) -> float:
    """Sleeps, printing each second: good for `bgrun logs -f` and `bgrun cancel`."""
    for n in range(int(seconds)):
        print(f"working... {n + 1}/{int(seconds)}")
        time.sleep(1)
    return seconds


def flaky(chance: float = 0.5) -> str:
    """Fails at random: shows retries and back-off."""
    if random.random() < chance:
        raise RuntimeError("the network blinked")
    return "made it"


async def fetch(url: str) -> int:
    """An `async def` job: bgrun awaits it."""
    await asyncio.sleep(0.1)
    print(f"fetched {url}")
    return len(url)


def crash() -> None:
    """Dies without a word: the runner reads the exit status."""
    os._exit(3)
