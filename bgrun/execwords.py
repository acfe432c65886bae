"""`bgrun exec` and `bgrun run` words to a Request, and `bgrun exec`'s path without Click.

A command line that queues a job is run by cron and scripts, often in loops, and its
whole cost is the process: importing Click and every command's modules was more than
half of it. `fast_exec` takes a plain `bgrun exec TARGET METHOD [ARGS]... [options]`
that it understands word for word and queues it with the modules queueing needs; any
other command line (help, an unknown or repeated option, a value that is not plainly
valid, `--`, fewer than two words...) goes to Click, untouched, so every message and
exit code stays Click's own. tests/test_execwords.py holds the two paths to the same
answers.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Sequence
from typing import Any

from bgrun.convert import CliText
from bgrun.enqueue import Request
from bgrun.errors import BadParamsError, BgrunError, ExitCode
from bgrun.lazyre import LazyPattern


def build_request(target: str, method: str | None, args: tuple[str, ...],
                  params_json: str | None, kwargs: tuple[str, ...], json_kwargs: tuple[str, ...],
                  **opts: Any) -> Request:
    """A Request from the command line's words: ARGS (or --params) and --kw/--kw-json mix."""
    if method is None:
        owner, _, name = target.rpartition(".")
        hint = f": did you mean '{owner} {name}'?" if owner else ""
        raise BadParamsError(f"missing METHOD: the syntax is TARGET METHOD [ARGS]...{hint}")
    params: Any = [CliText(arg) for arg in args]  # converted by the method's annotations
    keywords: dict[str, Any] = {}
    for item in kwargs:
        name, value = _split_kw(item)
        keywords[name] = CliText(value)
    for item in json_kwargs:
        name, value = _split_kw(item)
        keywords[name] = _json(value, f"--kw-json {name}")
    if params_json is not None:
        if args:
            raise BadParamsError("--params replaces ARGS: use one or the other")
        params = _json(params_json, "--params")
        if isinstance(params, dict) and keywords:
            raise BadParamsError("--params is an object (keyword arguments): put the --kw and"
                                 " --kw-json values in it, or give a list")
    return Request(target, method, params, opts["retries"], opts["delay"], opts["priority"],
                   opts["timeout"], opts["unique"], not opts["no_import_check"],
                   kwargs=keywords or None, queue=opts["queue"])


def _split_kw(item: str) -> tuple[str, str]:
    name, sep, value = item.partition("=")
    if not sep or not name:
        raise BadParamsError(f"{item[:40]!r} is not NAME=VALUE")
    return name, value


def _json(text: str, where: str) -> Any:
    try:
        return json.loads(text, parse_constant=_no_constant)
    except ValueError as exc:
        raise BadParamsError(f"{where} is not valid JSON: {exc}") from None
    except RecursionError:
        raise BadParamsError(f"{where} is nested too deeply") from None


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON value")


# -- `bgrun exec` without Click ---------------------------------------------------------

#: The value options of `exec` (cli.job_options), with the form of a value taken here
#: as it is; any other value goes to Click, which converts it or refuses it its way.
_WHOLE = LazyPattern(r"[0-9]{1,9}")
_SIGNED = LazyPattern(r"-?[0-9]{1,9}")
_SECONDS = LazyPattern(r"[0-9]{1,9}(\.[0-9]{1,9})?")
_VALUES: dict[str, LazyPattern | None] = {
    "--retries": _WHOLE, "--priority": _SIGNED, "--delay": _SECONDS, "--timeout": _SECONDS,
    "--params": None, "--kw": None, "--kw-json": None, "--unique": None, "--queue": None,
}
_MULTIPLE = ("--kw", "--kw-json")
_FLAG = "--no-import-check"


def parse_exec(argv: Sequence[str]) -> dict[str, Any] | None:
    """The options and words of `exec ...` as Click would pass them, or None when Click
    must read this command line itself."""
    if len(argv) < 3 or argv[0] != "exec":
        return None
    opts: dict[str, Any] = {"kwargs": [], "json_kwargs": []}
    words: list[str] = []
    rest = list(argv[1:])
    while rest:
        word = rest.pop(0)
        if not word.startswith("-") or word == "-":
            words.append(word)
        elif not _take_option(word, rest, opts):
            return None  # help, an unknown or repeated option, `--`...: Click's to say
    if len(words) < 2 or ("--timeout" in opts and float(opts["--timeout"]) <= 0):
        return None
    return _as_click_passes(opts, words)


def _take_option(word: str, rest: list[str], opts: dict[str, Any]) -> bool:
    """Put option `word` (its value from `rest` if it is not `--name=value`) in `opts`;
    False if it is not one taken here as it is."""
    name, eq, value = word.partition("=")
    if name == _FLAG and not eq and _FLAG not in opts:
        opts[_FLAG] = True
        return True
    if name not in _VALUES or (name in opts and name not in _MULTIPLE):
        return False
    if not eq:
        if not rest or rest[0].startswith("-"):
            return False
        value = rest.pop(0)
    form = _VALUES[name]
    if form is not None and not form.fullmatch(value):
        return False
    if name in _MULTIPLE:
        opts["kwargs" if name == "--kw" else "json_kwargs"].append(value)
    else:
        opts[name] = value
    return True


def _as_click_passes(opts: dict[str, Any], words: list[str]) -> dict[str, Any]:
    def number(name: str, kind: type[Any], default: Any = None) -> Any:
        return kind(opts[name]) if name in opts else default

    return {
        "target": words[0], "method": words[1], "args": tuple(words[2:]),
        "params_json": opts.get("--params"), "kwargs": tuple(opts["kwargs"]),
        "json_kwargs": tuple(opts["json_kwargs"]), "retries": number("--retries", int),
        "delay": number("--delay", float, 0.0), "priority": number("--priority", int),
        "timeout": number("--timeout", float), "unique": opts.get("--unique"),
        "queue": opts.get("--queue"), "no_import_check": opts.get(_FLAG, False),
    }


def echo(message: str, err: bool = False) -> None:
    """click.echo's output for `message`, without importing Click where it would write
    the very same bytes (plain printable ASCII; else Click itself writes it)."""
    if not (message.isascii() and message.isprintable()):
        import click

        click.echo(message, err=err)
        return
    stream = sys.stderr if err else sys.stdout
    stream.write(message + "\n")
    stream.flush()


def fast_exec(argv: Sequence[str]) -> bool:
    """Queue the job of `bgrun exec ...` as cli.exec_ does, if `argv` is plain enough
    (see parse_exec); False, having done nothing, when Click must read it. Exits."""
    if sys.platform == "win32" or "_BGRUN_COMPLETE" in os.environ:
        return False  # Click expands wildcards in arguments there; it completes words
    call = parse_exec(argv)
    if call is None:
        return False
    _warn_unknown_settings()
    code = 0
    try:
        _queue(call)
    except BgrunError as exc:
        echo(f"bgrun: error: {exc}", err=True)
        code = exc.exit_code
    except KeyboardInterrupt:
        echo("bgrun: error: interrupted", err=True)
        code = 130
    except BrokenPipeError:
        code = 1  # Click's answer when stdout is closed early (`| head -c0`)
    except Exception as exc:  # the rare path: Click's module says it its way
        from bgrun.cli import _log_internal

        _log_internal(exc)
        echo(f"bgrun: error: internal error: {type(exc).__name__}: {exc} (traceback in the"
             " error log)", err=True)
        code = ExitCode.UNUSABLE
    sys.exit(code)


def _queue(call: dict[str, Any]) -> None:
    import contextlib

    from bgrun.config import Config
    from bgrun.enqueue import submit

    request = build_request(**call)
    with contextlib.redirect_stdout(sys.stderr):  # what the target's import prints:
        job_id, created = submit(Config.load(), request)  # stdout is the id alone
    if not created:
        echo(f"bgrun: job {job_id} with unique key {request.unique!r} is still waiting"
             " or running: nothing new was queued", err=True)
    echo(job_id)


def _warn_unknown_settings() -> None:
    """cli.warn_unknown_settings, which Click's group runs before every command."""
    import contextlib
    from pathlib import Path

    from bgrun.config import merged_environ, unknown_names

    with contextlib.suppress(OSError):
        unknown = unknown_names(merged_environ(Path.cwd(), os.environ))
        if unknown:
            echo(f"bgrun: warning: unknown setting(s), ignored: {', '.join(unknown)}",
                 err=True)
