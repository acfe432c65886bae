"""Job parameters: strict JSON data, checked and encoded once, when the job is queued."""

from __future__ import annotations

import json
import math
from typing import Any

from bgrun.errors import BadParamsError

Params = list[Any] | dict[str, Any]


#: How a call with both positional and keyword arguments is stored: a JSON object whose
#: keys no keyword argument can have (they are not identifiers), so the three shapes (a
#: list, a dict of keywords, both) never mix up, and the stored text stays one JSON value
#: that any store keeps as it is.
ARGS_KEY, KWARGS_KEY = "*args", "**kwargs"


def encode_params(params: object, max_bytes: int, max_depth: int,
                  kwargs: object = None) -> str:
    """The call's arguments as compact JSON text, or BadParamsError saying what is wrong.

    `params` is a list (positional arguments) or a dict with string keys (keyword
    arguments); `kwargs`, a dict of keyword arguments beside a positional list. Only
    strict JSON values pass: json.dumps alone would turn int keys into strings, write NaN
    and follow any object with a default= hook. The size and depth limits apply to the
    whole; each of the list and the dict is level 1.
    """
    args, keywords = split_call(params, kwargs)
    stored: object = args
    if keywords:
        stored = {ARGS_KEY: args, KWARGS_KEY: keywords} if args else keywords
    try:
        _check(args, 1, max_depth)
        _check(keywords, 1, max_depth)
        text = json.dumps(stored, ensure_ascii=False, allow_nan=False, separators=(",", ":"))
    except RecursionError:  # a depth limit above Python's own, or a list that holds itself
        raise BadParamsError("params are nested too deeply (or contain themselves)") from None
    except ValueError as exc:  # e.g. an int too long to write (sys.get_int_max_str_digits)
        raise BadParamsError(f"params are not JSON data: {exc}") from None
    size = len(text.encode("utf-8", errors="surrogatepass"))
    if size > max_bytes:
        raise BadParamsError(f"params are {size} bytes as JSON, more than the limit {max_bytes}")
    return text


def split_call(params: object, kwargs: object = None) -> tuple[list[Any], dict[str, Any]]:
    """(positional, keyword) arguments of a call, or BadParamsError for a wrong shape."""
    if params is None:
        params = []
    if not isinstance(params, list | dict):
        raise BadParamsError(
            f"params must be a list (positional) or a dict (keyword), not {type(params).__name__}"
        )
    if kwargs is not None and not isinstance(kwargs, dict):
        raise BadParamsError(f"kwargs must be a dict, not {type(kwargs).__name__}")
    if isinstance(params, dict):
        if kwargs is not None:
            raise BadParamsError("kwargs= goes beside a positional list: params is already a"
                                 " dict of keyword arguments")
        args, keywords = [], params
    else:
        args, keywords = params, kwargs or {}
    for k in keywords:
        if not isinstance(k, str) or not k.isidentifier() or k.startswith("__"):
            raise BadParamsError(f"keyword argument name {str(k)[:40]!r} is not an"
                                 " identifier (or is a dunder name)")
    return args, keywords


def decode_call(text: str) -> tuple[list[Any], dict[str, Any]]:
    """(positional, keyword) arguments as stored: always valid, only encode_params writes."""
    value = json.loads(text)
    if isinstance(value, list):
        return value, {}
    if ARGS_KEY in value:
        return value[ARGS_KEY], value[KWARGS_KEY]
    return [], value


def shown_params(text: str) -> tuple[Params, dict[str, Any] | None]:
    """The JSON keys `params` and `kwargs` (SPEC): kwargs only beside a positional list."""
    value: Params = json.loads(text)
    if isinstance(value, dict) and ARGS_KEY in value:
        return value[ARGS_KEY], value[KWARGS_KEY]
    return value, None


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
