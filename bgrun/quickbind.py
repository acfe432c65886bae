"""Whether a call surely binds to a plain function, read from its code object alone.

The queue-time check binds the params to the target's signature; `inspect` (with `ast`,
`dis` and `tokenize` behind it) is a good part of a whole `bgrun exec` process. For a
plain module function whose parameters are simple, the code object tells the same:
this answers True only where `func(*args, **kwargs)` binds for certain, and False
wherever it would not or is not sure (a decorated function, positional-only names
given by keyword...). False only means "ask inspect", which then words any refusal.
"""

from __future__ import annotations

from types import FunctionType
from typing import Any

_VARARGS = 0x04  # inspect.CO_VARARGS
_VARKEYWORDS = 0x08  # inspect.CO_VARKEYWORDS


def surely_binds(func: Any, args: list[Any], kwargs: dict[str, Any]) -> bool:
    """True if `func(*args, **kwargs)` certainly binds (see the module's note)."""
    if type(func) is not FunctionType or "__wrapped__" in func.__dict__ or (
            "__signature__" in func.__dict__):
        return False  # inspect.signature would follow these: so must we
    code = func.__code__
    count, flags = code.co_argcount, code.co_flags
    if len(args) > count and not flags & _VARARGS:
        return False
    names = code.co_varnames[:count]
    keyword_only = code.co_varnames[count:count + code.co_kwonlyargcount]
    for name in kwargs:
        if name in names[:max(len(args), code.co_posonlyargcount)]:
            return False  # given twice, or a positional-only name
        if name not in names and name not in keyword_only and not flags & _VARKEYWORDS:
            return False
    first_default = count - len(func.__defaults__ or ())
    if any(name not in kwargs for name in names[len(args):first_default]):
        return False  # a required positional parameter is missing
    defaults = func.__kwdefaults__ or {}
    return all(name in kwargs or name in defaults for name in keyword_only)
