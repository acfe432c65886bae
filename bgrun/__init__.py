"""bgrun: run allow-listed Python callables as durable background jobs, no broker needed.

The API is imported lazily: a runner or a job child that imports one bgrun module does
not pay for the queueing side (inspect, the handle, the resolver) at start-up.

A map of the modules, by layer, is in README.md ("How it works").
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from bgrun.errors import (
    AllowlistError,
    BadNameError,
    BadParamsError,
    BgrunError,
    ConfigError,
    ImportFailedError,
    InvalidStateError,
    MethodNotFoundError,
    NoSuchJobError,
    NotAllowedError,
    OutputGoneError,
    RefusedError,
    StoreError,
    TargetNotFoundError,
    TargetNotUsableError,
    WaitTimeoutError,
)

if TYPE_CHECKING:
    from bgrun._progress import progress
    from bgrun.api import get_job, run_background_job
    from bgrun.config import Config
    from bgrun.handle import Job

__all__ = [
    "AllowlistError",
    "BadNameError",
    "BadParamsError",
    "BgrunError",
    "Config",
    "ConfigError",
    "ImportFailedError",
    "InvalidStateError",
    "Job",
    "MethodNotFoundError",
    "NoSuchJobError",
    "NotAllowedError",
    "OutputGoneError",
    "RefusedError",
    "StoreError",
    "TargetNotFoundError",
    "TargetNotUsableError",
    "WaitTimeoutError",
    "get_job",
    "progress",
    "run_background_job",
]

_LAZY = {"run_background_job": "bgrun.api", "get_job": "bgrun.api",
         "Config": "bgrun.config", "Job": "bgrun.handle", "progress": "bgrun._progress"}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        value = getattr(importlib.import_module(_LAZY[name]), name)
        globals()[name] = value  # looked up once: `bgrun.progress(...)` in a loop stays cheap
        return value
    raise AttributeError(f"module 'bgrun' has no attribute {name!r}")


def __dir__() -> list[str]:
    """The public API (most of it is imported only when first used), not the helpers."""
    return sorted({*__all__, *(name for name in globals() if name.startswith("__"))})
