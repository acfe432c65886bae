"""Command-line words to the types a method's simple annotations ask for.

`bgrun exec shop.images resize photo.jpg 300` passes "300"; `def resize(path: str,
width: int)` wants 300. Only words typed as ARGS or `--kw NAME=VALUE` are converted
(`--params` and `--kw-json` are JSON, typed already), only for the annotations `int`,
`float`, `bool` and `str` and their optional forms (`int | None`, `Optional[int]`),
and only where the target was imported to check it (not with `--no-import-check`).
Anything else stays the string it was typed as.
"""

from __future__ import annotations

import math
import types
import typing
from typing import TYPE_CHECKING, Any

from bgrun.errors import BadParamsError
from bgrun.lazyre import LazyPattern

if TYPE_CHECKING:  # the CLI imports this module for CliText: inspect (7 ms) waits
    import inspect

_SIMPLE = {"int": int, "float": float, "bool": bool, "str": str}
_OPTIONAL = LazyPattern(r"(?:typing\.)?Optional\[(\w+)\]|(\w+)\|None|None\|(\w+)"
                       r"|(?:typing\.)?Union\[(\w+),None\]")
_TRUE = ("true", "1", "yes", "on")
_FALSE = ("false", "0", "no", "off")
_NONE = ("none", "null", "")


class CliText(str):
    """A word typed on the command line: converted by the annotation it lands on."""

    __slots__ = ()


def convert_call(sig: inspect.Signature | None, args: list[Any], kwargs: dict[str, Any],
                 where: str) -> tuple[list[Any], dict[str, Any]]:
    """(args, kwargs) with every CliText converted by the annotation of its parameter."""
    if sig is None or not any(isinstance(v, CliText) for v in [*args, *kwargs.values()]):
        return args, kwargs
    positional = [p for p in sig.parameters.values() if p.kind in (
        p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
    rest = next((p for p in sig.parameters.values() if p.kind == p.VAR_POSITIONAL), None)
    return ([_convert(value, positional[i] if i < len(positional) else rest, where)
             for i, value in enumerate(args)],
            {name: _convert(value, _param_for(sig, name), where)
             for name, value in kwargs.items()})


def _param_for(sig: inspect.Signature, name: str) -> inspect.Parameter | None:
    param = sig.parameters.get(name)
    if param is not None and param.kind != param.POSITIONAL_ONLY:
        return param
    return next((p for p in sig.parameters.values() if p.kind == p.VAR_KEYWORD), None)


def _convert(value: Any, param: inspect.Parameter | None, where: str) -> Any:
    if not isinstance(value, CliText):
        return value
    simple = None if param is None else simple_annotation(param.annotation)
    if simple is None:
        return str(value)
    kind, optional = simple
    if optional and kind is not str and value.strip().lower() in _NONE:
        return None
    try:
        return _to(kind, value)
    except ValueError:
        assert param is not None
        raise BadParamsError(f"argument {param.name}={str(value)[:40]!r} is not"
                             f" {'an' if kind is int else 'a'} {kind.__name__}"
                             f" ({where} takes {param.name}: {_shown(param.annotation)})"
                             ) from None


def _to(kind: type, text: str) -> Any:
    if kind is bool:
        word = text.strip().lower()
        if word in _TRUE + _FALSE:
            return word in _TRUE
        raise ValueError(text)
    if kind is float:
        number = float(text)
        if not math.isfinite(number):
            raise ValueError(text)  # JSON has no inf or nan
        return number
    return kind(text)


def simple_annotation(annotation: Any) -> tuple[type, bool] | None:
    """(int/float/bool/str, whether None is allowed too) for a simple annotation, or None.

    Annotations may be strings (`from __future__ import annotations`, or read from source).
    """
    if isinstance(annotation, str):
        text = annotation.replace(" ", "")
        if text in _SIMPLE:
            return _SIMPLE[text], False
        match = _OPTIONAL.fullmatch(text)
        name = next((g for g in match.groups() if g), None) if match else None
        return (_SIMPLE[name], True) if name in _SIMPLE else None
    if annotation in _SIMPLE.values():
        return annotation, False
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        rest = [a for a in typing.get_args(annotation) if a is not type(None)]
        if len(rest) == 1 and rest[0] in _SIMPLE.values() and len(typing.get_args(annotation)) == 2:
            return rest[0], True
    return None


def _shown(annotation: Any) -> str:
    return annotation if isinstance(annotation, str) else getattr(
        annotation, "__name__", str(annotation))
