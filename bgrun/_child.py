"""The job child: runs one attempt of one job, then exits. Kept lean on purpose.

Spawned through `bgrun/_spawned.py`, which imports it as the top-level module `_child`
so that it pays for no part of bgrun: it reads its spec from stdin as marshal data
(plain values only, written by the runner; never pickle), checks the allowlist again,
imports the target, calls the method, and writes its verdict into the result file. Exit
status 0 means the method returned. In fork mode the runner calls `run()` directly in a
forked process instead.
"""

import marshal
import os
import sys
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # typing is not imported at run time: the child stays lean
    from typing import Any

EXIT_OK = 0
EXIT_ERROR = 1
EXIT_NOT_ALLOWED = 3  # the target left the allowlist: fail, never retry
EXIT_ALLOWLIST_BROKEN = 4  # the allowlist is missing or broken: hand the job back

#: The write end of the runner's progress pipe (-1: none); bgrun.progress() looks here.
PROGRESS_FD = -1


def main() -> None:
    spec = marshal.loads(sys.stdin.buffer.read())  # noqa: S302 - from our own runner
    devnull = os.open(os.devnull, os.O_RDONLY)
    os.dup2(devnull, 0)  # user code gets no stdin
    os.close(devnull)
    sys.path[0] = os.getcwd()  # as `python -m` does: the queueing folder first
    run(spec)


def run(spec: dict) -> None:  # type: ignore[type-arg]
    """Run the attempt described by `spec` and exit with its verdict."""
    global PROGRESS_FD
    fd = spec.get("progress_fd", -1)
    if fd >= 0:
        os.set_inheritable(fd, False)  # the job's own subprocesses do not get it
        PROGRESS_FD = fd
    for stream in (sys.stdout, sys.stderr):
        if hasattr(stream, "reconfigure"):
            stream.reconfigure(line_buffering=True)
    verdict = _check_allowlist(spec)
    if verdict is not None:
        _finish(spec, verdict[0], ("refused", verdict[1]))
    try:
        func = _resolve(spec["target"], spec["method"])
        result = func(*spec["args"], **spec["kwargs"])
        if hasattr(result, "__await__"):
            result = _await(result)
    except SystemExit as exc:
        if exc.code not in (0, None):
            _failed(spec, exc)
        result = None  # sys.exit() or sys.exit(0) in a job: a clean end
    except BaseException as exc:
        _failed(spec, exc)
    _finish(spec, EXIT_OK, ("ok", *_portable(result, spec["max_result"])))


def _failed(spec: dict, exc: BaseException) -> None:  # type: ignore[type-arg]
    """Report the job's exception (its traceback also goes to the job's output)."""
    import traceback

    # Drop our own frame: the traceback starts in the job's code.
    tb = exc.__traceback__.tb_next if exc.__traceback__ else None
    text = "".join(traceback.format_exception(type(exc), exc, tb))
    sys.stderr.write(text)
    _finish(spec, EXIT_ERROR, ("error", f"{type(exc).__name__}: {exc}", text))


def _check_allowlist(spec: dict) -> "tuple[int, str] | None":  # type: ignore[type-arg]
    """None if the job may run; else (exit code, message).

    The runner checked the file just before starting us and passes its signature: an
    unchanged file needs no second parse. A changed one is parsed again here.
    """
    path = spec["allowlist"]
    if _signature(path) == tuple(spec["signature"]):
        return None
    allowlist_module = _bgrun_module("allowlist", spec["package"])
    errors = _bgrun_module("errors", spec["package"])
    from pathlib import Path

    try:
        allowlist_module.check_at_run_time(Path(path), spec["target"], spec["method"])
    except errors.AllowlistError as exc:
        return EXIT_ALLOWLIST_BROKEN, f"AllowlistError: {exc}"
    except errors.RefusedError as exc:
        # errors.Failure.NOT_ALLOWED, spelled out: the child imports none of bgrun (lean)
        return EXIT_NOT_ALLOWED, f"NotAllowed: {exc}"
    finally:
        if getattr(sys.modules.get("bgrun"), "_bgrun_stub", False):
            del sys.modules["bgrun"]  # the job's own `import bgrun` gets the real package
    return None


def _bgrun_module(name: str, package: str):  # type: ignore[no-untyped-def]
    """Import bgrun.<name> without running bgrun/__init__ (and its imports)."""
    import importlib

    if "bgrun" not in sys.modules:
        import types

        stub = types.ModuleType("bgrun")
        stub.__path__ = [package]
        stub._bgrun_stub = True  # type: ignore[attr-defined]
        sys.modules["bgrun"] = stub
    return importlib.import_module("bgrun." + name)


# The child's own copies of two bgrun helpers. A spawned child runs this file as the
# top-level module `_child`, without the bgrun package: importing bgrun.resolve or
# bgrun.files would load bgrun's errors (and, for resolve, its error wrapping) into every
# job before user code runs. Here errors stay the job's own (a raw ModuleNotFoundError is
# the job's error). tests/test_lookup.py holds each copy to the original's answers.


def _signature(path: str) -> "tuple[int, int, int] | None":
    """As bgrun.files.file_signature."""
    try:
        st = os.stat(path)
    except OSError:
        return None
    return (st.st_mtime_ns, st.st_size, st.st_ino)


def _target(target: str):  # type: ignore[no-untyped-def]
    """As bgrun.resolve.import_target: the module `target`, else the class it names."""
    import importlib

    try:
        return importlib.import_module(target)
    except ModuleNotFoundError as exc:
        if exc.name != target or "." not in target:
            raise
    module_name, _, class_name = target.rpartition(".")
    owner = getattr(importlib.import_module(module_name), class_name)
    if not isinstance(owner, type):
        raise TypeError(f"{target} is neither a module nor a class of {module_name}")
    return owner


def _resolve(target: str, method: str):  # type: ignore[no-untyped-def]
    """The callable: a module's function, or the method of a new instance of a class."""
    owner = _target(target)
    return getattr(owner() if isinstance(owner, type) else owner, method)


def _await(awaitable: "Any") -> "Any":
    import asyncio

    async def wait() -> "Any":
        return await awaitable

    return asyncio.run(wait())


_PLAIN = (str, int, float, bool, type(None))


def _portable(value, limit: int) -> tuple:  # type: ignore[no-untyped-def, type-arg]
    """(value, False) where it is plain JSON-like data, else (its repr, True), both bounded."""
    if _is_plain(value, 0) and len(marshal.dumps(value)) <= limit:
        return value, False
    text = repr(value)
    return (text[:limit] + "...", True) if len(text) > limit else (text, True)


def _is_plain(value, depth: int) -> bool:  # type: ignore[no-untyped-def]
    if depth > 64:
        return False
    if type(value) in _PLAIN:
        return True
    if type(value) is list:
        return all(_is_plain(v, depth + 1) for v in value)
    if type(value) is dict:
        return all(type(k) is str and _is_plain(v, depth + 1) for k, v in value.items())
    return False


def _finish(spec: dict, code: int, verdict: tuple) -> None:  # type: ignore[type-arg]
    try:
        data = marshal.dumps(verdict)
    except ValueError:
        data = marshal.dumps(("ok", "<unrepresentable result>", True))
    fd = os.open(spec["result_path"], os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    os.write(fd, data)
    os.close(fd)
    if spec.get("forked"):
        try:  # what interpreter shutdown would do for the job: its threads, its exit hooks
            threading = sys.modules.get("threading")
            if threading is not None and threading.active_count() > 1:
                threading._shutdown()  # wait for the job's non-daemon threads
            import atexit  # built in: free

            atexit._run_exitfuncs()  # only the job's: the fork cleared the runner's
            sys.stdout.flush()
            sys.stderr.flush()
        finally:
            os._exit(code)  # a forked child must not run the runner's exit hooks
    sys.exit(code)  # a spawned one runs the job's own (logging handlers flush...)


if __name__ == "__main__":
    main()
