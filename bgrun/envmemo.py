"""Memos of what a caller derives from its environment, kept while it is unchanged.

Every enqueue reads the settings (`Config.load`) and stores the caller's environment as
JSON. Both read many variables and cost more than the rest of the Python side of an
enqueue together (benchmarks/RESULTS.md), yet a long-lived caller's environment seldom
changes. `os.environ` wraps a plain dict (`_data`, encoded keys and values); comparing
a saved copy with it is one C-level dict comparison, so a memo is checked on every call
and redone the moment any variable is set, changed or removed.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from typing import Generic, TypeVar

from bgrun.launcher import without_secrets

T = TypeVar("T")

#: The dict `os.environ` wraps (None on an interpreter that keeps none: no memo then).
_ENVIRON: dict[object, object] | None = getattr(os.environ, "_data", None)


class EnvMemo(Generic[T]):
    """One value computed from the environment and `key`, reused while both are unchanged."""

    def __init__(self) -> None:
        self._kept: tuple[object, dict[object, object], T] | None = None

    def get(self, key: object, make: Callable[[], T]) -> T:
        """The kept value if `key` and the environment are what they were, else `make()`."""
        kept = self._kept
        if kept is not None and kept[0] == key and kept[1] == _ENVIRON:
            return kept[2]
        value = make()  # (an error is raised every time: only values are kept)
        if _ENVIRON is not None:
            self._kept = (key, dict(_ENVIRON), value)
        return value


_env_json: EnvMemo[str] = EnvMemo()


def environ_json() -> str:
    """The caller's environment, less bgrun's secrets, as the JSON a job stores."""
    return _env_json.get(None, lambda: json.dumps(without_secrets(os.environ)))
