"""Preloading (fork mode, `BGRUN_PRELOAD=1`): import each job's module once, in the runner.

A forked attempt then finds its module already imported, as a warm worker would, instead
of importing it again (what that saves grows with what the module imports: see
benchmarks/RESULTS.md). Only allow-listed names get here: the runner checks
the allowlist before it preloads, exactly as before it forks.

What it means for the job's code, and how bgrun limits it:

- module-level code runs once per runner, in the runner, with the runner's environment
  (the environment of the caller that started it), not once per job;
- modules are imported only for jobs queued from the folder of the runner's first
  preloaded job (a module name means the module in that folder, as on `sys.path`);
- stale code: the files of every module a preload brought in are checked (their
  `file_signature`) at most once per `CHECK_EVERY` seconds, before a fork. Once one
  changed, that attempt is spawned in a new interpreter (so it runs the new code) and the
  runner retires after it, handing its slot to a fresh runner;
- a module whose import starts a thread makes forking unsafe: the runner then spawns
  every attempt (forkrun.usable checks), which is correct, only slower.
"""

from __future__ import annotations

import sys
import time

from bgrun.files import Signature, file_signature
from bgrun.resolve import cwd_first, import_target

CHECK_EVERY = 1.0  # seconds between looks at the preloaded files (each look: one stat each)


class Preloaded:
    """The modules this runner preloaded, and whether their files changed since."""

    def __init__(self) -> None:
        self.cwd: str | None = None
        self.tried: set[str] = set()
        self.files: dict[str, Signature | None] = {}
        self.checked = 0.0
        self.stale = False

    def load(self, target: str, cwd: str) -> None:
        """Import `target`'s module into this process, once (errors are left to the child)."""
        if self.cwd is None:
            self.cwd = cwd
        if cwd != self.cwd or target in self.tried or self.stale:
            return
        self.tried.add(target)
        before = set(sys.modules)
        try:
            with cwd_first(cwd):
                import_target(target)
        except BaseException:  # noqa: S110 - the child imports it again and reports it
            pass
        for name in set(sys.modules) - before:
            path = getattr(sys.modules[name], "__file__", None)
            if isinstance(path, str):
                self.files[path] = file_signature(path)

    def is_stale(self) -> bool:
        """True once a preloaded module's file changed (looked at every CHECK_EVERY)."""
        if self.stale or not self.files:
            return self.stale
        now = time.monotonic()
        if now - self.checked >= CHECK_EVERY:
            self.checked = now
            self.stale = any(file_signature(p) != sig for p, sig in self.files.items())
        return self.stale


PRELOADED = Preloaded()  # one per process: a runner is one process
