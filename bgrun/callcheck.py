"""The queue-time check of a call: the target and method exist, a class can be made
without arguments, and the params fit the signature (command-line words converted by it).

It asks the imported module first. When that refuses, the module's current source has
the last word (`bgrun.sourcecheck`): a long-lived caller's copy may be older than the
file on disk, and a check must never refuse for that.
"""

from __future__ import annotations

from types import FunctionType
from typing import TYPE_CHECKING, Any

from bgrun.convert import CliText, convert_call
from bgrun.errors import (
    BadParamsError,
    MethodNotFoundError,
    RefusedError,
    TargetNotFoundError,
    TargetNotUsableError,
)
from bgrun.quickbind import surely_binds
from bgrun.resolve import find_callable

if TYPE_CHECKING:  # imported where a signature is read (quickbind spares most calls)
    import inspect

#: Refusals the module's current source may overturn (not an import that fails).
_STALE_COPY_MAY_SAY = (TargetNotFoundError, MethodNotFoundError, TargetNotUsableError,
                       BadParamsError)


Call = tuple[list[Any], dict[str, Any]]


def check_call(target: str, method: str, args: list[Any], kwargs: dict[str, Any], cwd: str
               ) -> Call:
    """(args, kwargs), converted, once the call `target.method(*args, **kwargs)` passed
    the check; a RefusedError otherwise."""
    where = f"{target}.{method}"
    refusal: RefusedError
    try:
        func, binds_self = find_callable(target, method, cwd)
        if not binds_self and not _converts(func, args, kwargs) and surely_binds(
                func, args, kwargs):
            return args, kwargs
        return _fit(_live_signature(func, binds_self), args, kwargs, where)
    except _STALE_COPY_MAY_SAY as exc:
        refusal = exc
    from bgrun.sourcecheck import current_signature  # (ast: paid only on a refusal)

    current = current_signature(target, method)
    if current is None:
        raise refusal
    return _fit(current, args, kwargs, where)


#: Signatures read, by plain function: kept while its code and defaults are the same
#: objects (a module imported again makes new functions). Bounded by the functions a
#: process queues; any other callable is read each time.
_signatures: dict[tuple[FunctionType, bool],
                  tuple[tuple[object, ...], inspect.Signature | None]] = {}


def _live_signature(func: Any, binds_self: bool) -> inspect.Signature | None:
    if type(func) is not FunctionType or "__wrapped__" in func.__dict__ or (
            "__signature__" in func.__dict__):
        return _read_signature(func, binds_self)
    parts: tuple[object, ...] = (func.__code__, func.__defaults__, func.__kwdefaults__,
                                 func.__annotations__)
    kept = _signatures.get((func, binds_self))
    if kept is not None and all(a is b for a, b in zip(kept[0], parts, strict=True)):
        return kept[1]
    sig = _read_signature(func, binds_self)
    _signatures[func, binds_self] = (parts, sig)
    return sig


def _converts(func: Any, args: list[Any], kwargs: dict[str, Any]) -> bool:
    """True unless no command-line word can meet an annotation (none, or none given)."""
    if not any(isinstance(v, CliText) for v in [*args, *kwargs.values()]):
        return False
    try:
        return bool(func.__annotations__)
    except Exception:  # (an annotation that cannot be read: inspect will say)
        return True


def _read_signature(func: Any, binds_self: bool) -> inspect.Signature | None:
    import inspect

    try:
        sig = inspect.signature(func)
    except (TypeError, ValueError):
        return None  # some builtins have none: the job child will tell
    if binds_self:
        sig = sig.replace(parameters=list(sig.parameters.values())[1:])
    return sig


def _fit(sig: inspect.Signature | None, args: list[Any], kwargs: dict[str, Any], where: str
         ) -> Call:
    """Refuse arguments the callable cannot take, now rather than at run time."""
    args, kwargs = convert_call(sig, args, kwargs, where)
    if sig is not None:
        try:
            sig.bind(*args, **kwargs)
        except TypeError as exc:
            raise BadParamsError(f"params do not fit {where}: {exc}") from None
    return args, kwargs
