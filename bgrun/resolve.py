"""Finding an allow-listed target: the one "module or module.Class" lookup of bgrun.

Only ever called after the allowlist has passed the names, character for character.
Queueing (`find_callable`) and preloading (`bgrun.preload`) both use `import_target`;
the job child keeps its own lean copy (`bgrun._child._target`, see why there), and a
test holds the two to the same answers.
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from types import ModuleType
from typing import Any

from bgrun.errors import (
    ImportFailedError,
    MethodNotFoundError,
    RefusedError,
    TargetNotFoundError,
    TargetNotUsableError,
)


@contextmanager
def cwd_first(cwd: str) -> Iterator[None]:
    """Put `cwd` first on sys.path for a moment, as the job child will have it."""
    sys.path.insert(0, cwd)
    try:
        yield
    finally:
        with suppress(ValueError):
            sys.path.remove(cwd)


def find_callable(target: str, method: str, cwd: str) -> tuple[Callable[..., Any], bool]:
    """The callable `target.method`, and whether calling it on an instance binds `self`.

    A class is not instantiated here (that would run user code at queueing time), but it
    must be one that can be made without arguments, as the job child will make it.
    """
    with cwd_first(cwd):
        owner = import_target(target)
    if isinstance(owner, type):
        check_makeable(owner, target)
    func = getattr(owner, method, None)
    kind = "class" if isinstance(owner, type) else "module"
    if func is None or not callable(func):
        raise MethodNotFoundError(f"{kind} {target} has no method or function {method!r}")
    if not isinstance(owner, type):
        return func, False
    # Not at the top: a runner that preloads needs only import_target, and a module's
    # function is checked without inspect where it can be (callcheck, quickbind).
    import inspect

    return func, inspect.isfunction(inspect.getattr_static(owner, method, None))


def check_makeable(cls: type, target: str) -> None:
    """Refuse a class whose constructor needs arguments (TargetNotUsableError)."""
    import inspect

    try:
        signature = inspect.signature(cls)
    except (TypeError, ValueError):
        return  # no signature to read (some builtins): the job child will tell
    try:
        signature.bind()
    except TypeError as exc:
        raise TargetNotUsableError(f"class {target} cannot be made without arguments,"
                                   f" as a job makes it: {exc}") from None


def import_target(target: str) -> ModuleType | type:
    """The module `target`, or else the class its last part names in the module before it.

    A name is a module first: `a.b.C` is the class C of module a.b only when there is no
    module a.b.C. Raises TargetNotFoundError when the target itself is missing, and
    ImportFailedError when its module exists but importing it fails (a module it imports
    is missing too: that is the target's bug, not a wrong name).
    """
    try:
        return _import(target)
    except ModuleNotFoundError as exc:
        if exc.name != target or "." not in target:
            raise _not_found(target, exc) from None
    module_name, _, class_name = target.rpartition(".")
    try:
        module = _import(module_name)
    except ModuleNotFoundError as exc:
        raise _not_found(target, exc) from None
    owner = getattr(module, class_name, None)
    if not isinstance(owner, type):
        raise TargetNotFoundError(f"{target} is neither a module nor a class of {module_name}")
    return owner


def _import(name: str) -> ModuleType:
    try:
        return importlib.import_module(name)
    except ModuleNotFoundError:
        raise
    except Exception as exc:
        raise ImportFailedError(f"importing {name} failed: {type(exc).__name__}: {exc}") from None


def _not_found(target: str, exc: ModuleNotFoundError) -> RefusedError:
    missing = exc.name or ""
    if missing and (target == missing or target.startswith(missing + ".")):
        return TargetNotFoundError(f"module {missing} not found (target {target})")
    return ImportFailedError(f"importing {target} failed: module {missing} not found")
