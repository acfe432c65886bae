"""The allowlist: which targets and methods may run, checked before anything is imported.

Standard library only (and bgrun's errors and files), so the job child can load it
without the rest of bgrun.
"""

from __future__ import annotations

import re
import sys
import time
from pathlib import Path
from typing import Any, NamedTuple

from bgrun.errors import AllowlistError, BadNameError, BadQueueError, NotAllowedError
from bgrun.files import Signature, file_signature
from bgrun.queues import check_queue_name

MAX_NAME = 255
MAX_REUSE = 1_000_000  # `reuse`: jobs per warm child (a bound, so a typo is not forever)
_RULE_KEYS: dict[str, type | tuple[type, ...]] = {
    "methods": list, "retries": int, "timeout": (int, float), "priority": int, "queue": str,
    "reuse": int,
}
_TOP_KEYS = ("jobs", "queues")


class Rule(NamedTuple):
    """One allow-listed target: the methods it may run and its per-target defaults."""

    target: str
    methods: frozenset[str]
    retries: int | None = None
    timeout: float | None = None
    priority: int | None = None
    queue: str | None = None  # the target's queue unless the call names one
    reuse: int | None = None  # jobs one warm child may run in a row (bgrun/warm.py)


class Allowlist(NamedTuple):
    """A parsed, valid allowlist file."""

    path: Path
    rules: dict[str, Rule]
    signature: Signature
    #: `[queues.NAME] concurrency = N`: the queues with a limit (0 pauses the queue).
    limits: dict[str, int]

    def check(self, target: str, method: str) -> Rule:
        """The rule that allows `target.method`, or an error saying why it is refused."""
        check_names(target, method)
        target, method = plain(target), plain(method)
        rule = self.rules.get(target)
        if rule is None:
            raise NotAllowedError(f"{shown(target)} is not in the allowlist {self.path}")
        if method not in rule.methods:
            raise NotAllowedError(
                f"{shown(method)} is not an allowed method of {target} in {self.path}"
            )
        return rule


def shown(name: str) -> str:
    """A name as it can be quoted safely in a one-line message."""
    text = repr(name)
    return text if len(text) <= 80 else text[:77] + "..."


def plain(name: str) -> str:
    """`name` as a plain `str` of the same characters.

    A str subclass brings its own `__eq__` and `__hash__`, which a dict look-up or an `in`
    would trust: one that claims to equal an allowed name would pass as that name.
    """
    return name if type(name) is str else str.__str__(name)


def check_names(target: str, method: str) -> None:
    """Refuse names that are not well-formed dotted paths, before any other look at them."""
    if not isinstance(target, str) or not isinstance(method, str):
        raise BadNameError("target and method must be strings")
    if len(target) > MAX_NAME or not is_dotted_path(target):
        raise BadNameError(f"{shown(target)} is not a dotted path of identifiers")
    if any(part.startswith("__") for part in target.split(".")):
        raise BadNameError(f"{shown(target)} has a dunder part, which is never allowed")
    if len(method) > MAX_NAME or not is_method_name(method):
        raise BadNameError(
            f"{shown(method)} is not a method name (an identifier not beginning with '_')"
        )


def is_dotted_path(name: str) -> bool:
    """`name` is identifiers of [A-Za-z_][A-Za-z0-9_]* joined by dots.

    (str methods, not a pattern: an ASCII identifier is exactly that, and a pattern is
    compiled anew by every one-shot `bgrun exec`.)
    """
    return name.isascii() and all(part.isidentifier() for part in name.split("."))


def is_method_name(name: str) -> bool:
    """`name` is [A-Za-z][A-Za-z0-9_]*: an ASCII identifier not beginning with '_'."""
    return name.isascii() and name.isidentifier() and not name.startswith("_")


def shadows_stdlib(target: str) -> bool:
    """True if `target`'s top-level name is a standard-library module (never allowed).

    A file of that name in the job's directory would be imported by a spawned job and by
    `bgrun run`, while a forked job and the queue-time check see the standard library's
    module (already imported by the runner): what runs would depend on the mode.
    """
    return target.partition(".")[0] in sys.stdlib_module_names


_cache: dict[Path, Allowlist] = {}


def load(path: Path, cache: Path | None = None) -> Allowlist:
    """Parse and check the allowlist at `path` (cached while the file is unchanged).

    `cache`: a folder where the parsed TOML of the file is kept between processes
    (allowcache.py: for queueing processes only; a job's run-time check never passes one).
    """
    signature = file_signature(path)
    cached = _cache.get(path)
    if cached is not None and signature is not None and cached.signature == signature:
        return cached
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise AllowlistError(f"{path}: allowlist not found: nothing may run") from None
    except OSError as exc:
        raise AllowlistError(f"{path}: cannot read the allowlist: {exc.strerror}") from None
    text = raw.decode("utf-8", errors="replace")
    kept = None
    if cache is not None:  # (imported here: a job child's check never loads it)
        from bgrun import allowcache

        kept = allowcache.read(cache, path, raw)
    data = kept if kept is not None else _toml(path, text)
    _check_top_level(path, text, data)
    allowlist = Allowlist(path, _parse(path, text, data), signature or (0, 0, 0),
                          _parse_queues(path, text, data.get("queues", {})))
    if cache is not None and kept is None:
        allowcache.write(cache, path, raw, data)
    _cache[path] = allowlist
    return allowlist


def _toml(path: Path, text: str) -> dict[str, Any]:
    import tomllib  # (here: a queueing process with the parse cached never imports it)

    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        found = re.search(r"at line (\d+)", str(exc))
        line = int(found.group(1)) if found else max(len(text.splitlines()), 1)
        raise AllowlistError(f"{path}:{line}: not valid TOML: {exc}") from None


RECHECK_AFTER = 0.1  # seconds a run-time refusal waits before the second read that confirms it


def check_at_run_time(path: Path, target: str, method: str) -> Allowlist:
    """`load(path).check(target, method)` for a job about to run: a refusal stands only if
    a second read RECHECK_AFTER later agrees.

    At run time a refusal fails the job for good, and a file being rewritten in place
    (`open(path, "w")`, a shell's `>`) is empty for a moment: a valid allowlist that
    allows nothing. A name refused for its form is refused at once.
    """
    try:
        rules = load(path)
        rules.check(target, method)
        return rules
    except BadNameError:
        raise
    except NotAllowedError:
        time.sleep(RECHECK_AFTER)
    rules = load(path)
    rules.check(target, method)
    return rules


def _check_top_level(path: Path, text: str, data: dict[str, Any]) -> None:
    for key in data:
        if key not in _TOP_KEYS:
            raise _error(path, text, key, None,
                         f"unknown top-level key {key!r} (only [jobs.*] and [queues.*])")


def _parse(path: Path, text: str, data: dict[str, Any]) -> dict[str, Rule]:
    jobs = data.get("jobs", {})
    if not isinstance(jobs, dict):
        raise _error(path, text, "jobs", None, "'jobs' must be a table of targets")
    return {target: _rule(path, text, target, body) for target, body in jobs.items()}


def _rule(path: Path, text: str, target: str, body: Any) -> Rule:
    if not isinstance(body, dict):
        raise _error(path, text, target, None, f"jobs.{shown(target)} must be a table")
    _check_target(path, text, target)
    for key, value in body.items():
        expected = _RULE_KEYS.get(key)
        if expected is None:
            raise _error(path, text, target, key, f"unknown key {key!r} for {target}")
        if isinstance(value, bool) or not isinstance(value, expected):
            raise _error(path, text, target, key, f"{target}.{key} has the wrong type")
    methods = body.get("methods")
    if not methods:
        raise _error(path, text, target, "methods", f"{target} needs a non-empty 'methods' list")
    for method in methods:
        try:
            check_names(target, method)
        except BadNameError as exc:
            raise _error(path, text, target, "methods", str(exc)) from None
    numbers = {k: body[k] for k in ("retries", "timeout", "priority", "reuse") if k in body}
    if numbers.get("retries", 0) < 0 or numbers.get("timeout", 1) <= 0:
        raise _error(path, text, target, None, f"{target}: retries >= 0 and timeout > 0")
    if not 1 <= numbers.get("reuse", 1) <= MAX_REUSE:
        raise _error(path, text, target, "reuse",
                     f"{target}.reuse must be a whole number from 1 to {MAX_REUSE}"
                     " (jobs one warm child runs in a row)")
    return Rule(target, frozenset(methods), queue=_target_queue(path, text, target, body),
                **numbers)


def _target_queue(path: Path, text: str, target: str, body: dict[str, Any]) -> str | None:
    queue: str | None = body.get("queue")
    if queue is not None:
        try:
            check_queue_name(queue)
        except BadQueueError as exc:
            raise _error(path, text, target, "queue", f"{target}.queue: {exc}") from None
    return queue


def _parse_queues(path: Path, text: str, queues: Any) -> dict[str, int]:
    """The `[queues.NAME]` tables: each holds `concurrency`, a whole number from 0."""
    if not isinstance(queues, dict):
        raise _error(path, text, "queues", None, "'queues' must be a table of queues")
    limits = {}
    for name, body in queues.items():
        where = _queue_needle(text, name)
        try:
            check_queue_name(name)
        except BadQueueError as exc:
            raise _error(path, text, where, None, f"bad queue name: {exc}") from None
        if not isinstance(body, dict):
            raise _error(path, text, where, None, f"queues.{name} must be a table")
        for key in body:
            if key != "concurrency":
                raise _error(path, text, where, key,
                             f"unknown key {key!r} for queue {name} (only 'concurrency')")
        limit = body.get("concurrency")
        if isinstance(limit, bool) or not isinstance(limit, int) or limit < 0:
            raise _error(path, text, where, "concurrency" if "concurrency" in body else None,
                         f"queues.{name} needs 'concurrency', a whole number from 0"
                         " (0 pauses the queue)")
        limits[name] = limit
    return limits


def _queue_needle(text: str, name: str) -> str:
    """What `_line_of` looks for to find the table of queue `name` (however it is quoted)."""
    for needle in (f"queues.{name}", f'queues."{name}"', f"queues.'{name}'"):
        if needle in text:
            return needle
    return name


def _check_target(path: Path, text: str, target: str) -> None:
    try:
        check_names(target, "x")
    except BadNameError as exc:
        raise _error(path, text, target, None, f"bad target name: {exc}") from None
    if shadows_stdlib(target):
        raise _error(path, text, target, None,
                     f"{target}: {target.partition('.')[0]!r} is a standard-library module,"
                     " which a file in the job's directory could shadow: not allowed")


def _error(path: Path, text: str, target: str, key: str | None, message: str) -> AllowlistError:
    return AllowlistError(f"{path}:{_line_of(text, target, key)}: {message}")


def _line_of(text: str, target: str, key: str | None) -> int:
    """Best guess of the line that holds `target` (and `key` in its table): TOML gives none."""
    lines = text.splitlines()
    start = next((i for i, line in enumerate(lines) if target in line), 0)
    if key is not None:
        for i in range(start, len(lines)):
            stripped = lines[i].lstrip()
            if i > start and stripped.startswith("["):
                break
            if stripped.startswith(key):
                return i + 1
    return start + 1
