"""Job parameters: strict JSON data, checked and encoded once, when the job is queued."""

from __future__ import annotations

import json
import math
from typing import Any

from bgrun.errors import BadParamsError

Params = list[Any] | dict[str, Any]


def encode_params(params: object, max_bytes: int, max_depth: int) -> str:
    """The params as compact JSON text, or BadParamsError saying what is wrong with them.

    Only lists (positional arguments) and dicts with string keys (keyword arguments) of
    strict JSON values pass: json.dumps alone would turn int keys into strings, write NaN
    and follow any object with a default= hook.
    """
    if params is None:
        params = []
    if not isinstance(params, list | dict):
        raise BadParamsError(
            f"params must be a list (positional) or a dict (keyword), not {type(params).__name__}"
        )
    if isinstance(params, dict):
        for k in params:
            if not isinstance(k, str) or not k.isidentifier() or k.startswith("__"):
                raise BadParamsError(f"keyword argument name {str(k)[:40]!r} is not an"
                                     " identifier (or is a dunder name)")
    try:
        _check(params, 1, max_depth)  # the params list or dict is level 1
        text = json.dumps(params, ensure_ascii=False, allow_nan=False, separators=(",", ":"))
    except RecursionError:  # a depth limit above Python's own, or a list that holds itself
        raise BadParamsError("params are nested too deeply (or contain themselves)") from None
    except ValueError as exc:  # e.g. an int too long to write (sys.get_int_max_str_digits)
        raise BadParamsError(f"params are not JSON data: {exc}") from None
    size = len(text.encode("utf-8", errors="surrogatepass"))
    if size > max_bytes:
        raise BadParamsError(f"params are {size} bytes as JSON, more than the limit {max_bytes}")
    return text


def decode_params(text: str) -> Params:
    """Params as stored: always valid, since only encode_params writes them."""
    value: Params = json.loads(text)
    return value


def _check(value: object, depth: int, max_depth: int) -> None:
    if depth > max_depth and isinstance(value, list | dict):  # levels = brackets deep
        raise BadParamsError(f"params are nested deeper than the limit of {max_depth} levels")
    if value is None or isinstance(value, bool | int):
        return
    if isinstance(value, str):
        _check_text(value)
    elif isinstance(value, float):
        if not math.isfinite(value):
            raise BadParamsError(f"{value!r} is not a JSON number")
    elif isinstance(value, list):
        for item in value:
            _check(item, depth + 1, max_depth)
    elif isinstance(value, dict):
        for key, item in value.items():
            _check_key(key)
            _check(item, depth + 1, max_depth)
    else:
        raise BadParamsError(f"a {type(value).__name__} is not a JSON value")


def _check_key(key: object) -> None:
    if not isinstance(key, str):
        raise BadParamsError(f"object key {key!r} is not a string")
    _check_text(key)


def _check_text(text: str) -> None:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        raise BadParamsError("params hold a string that is not valid Unicode") from None
