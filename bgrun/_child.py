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
    from typing import Any, NoReturn

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
    _line_buffered()
    if "warm_fd" in spec:  # a warm child (`reuse` in the allowlist): jobs come one by one
        _warm_child(spec)
        return
    fd = spec.get("progress_fd", -1)
    if fd >= 0:
        os.set_inheritable(fd, False)  # the job's own subprocesses do not get it
        PROGRESS_FD = fd
    result, _ = _call(spec)
    _finish(spec, EXIT_OK, ("ok", *_portable(result, spec["max_result"])))


def _line_buffered() -> None:
    for stream in (sys.stdout, sys.stderr):
        if hasattr(stream, "reconfigure"):
            stream.reconfigure(line_buffering=True)


def _call(spec: dict) -> "tuple[Any, bool]":  # type: ignore[type-arg]
    """(the method's return value, True if it returned); a refusal or a failure exits."""
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
        return None, False  # sys.exit() or sys.exit(0) in a job: a clean end, of the process
    except BaseException as exc:
        _failed(spec, exc)
    return result, True


def _warm_child(setup: dict) -> None:  # type: ignore[type-arg]
    """Run the jobs the runner sends over the `warm_fd` socket until it closes, then exit.

    The child stays only while its jobs return: a refusal, an exception, `sys.exit()`, or
    threads left running end it exactly as they end a one-job child (see bgrun/warm.py).
    """
    import socket  # (once per warm child, not once per job)

    sock = socket.socket(fileno=setup["warm_fd"])
    unread = None  # the last job's (spec, verdict), until the runner shows it read it
    while True:
        try:
            spec = _next_job(sock, setup)
        except OSError:  # the runner is gone
            spec = None
        if not spec:  # {}: the runner said goodbye; None: it died (EOF) and nothing comes
            if spec is None and unread is not None:
                _write_result(*unread)  # where the settling of its job looks (see warm.py)
            _finish_process(setup, EXIT_OK)
        unread = None  # (a new job: the runner read the last verdict)
        result, returned = _call(spec)
        verdict = ("ok", *_portable(result, spec["max_result"]))
        threading = sys.modules.get("threading")
        if not returned or (threading is not None and threading.active_count() > 1):
            _finish(spec, EXIT_OK, verdict)  # as a one-job child ends: the child retires
        _between_jobs()
        data = _verdict_bytes(verdict)
        try:
            sock.sendall(len(data).to_bytes(8, "big") + data)  # done, with its verdict
        except OSError:  # the runner is gone: the verdict goes where settling looks
            _finish(spec, EXIT_OK, verdict)
        unread = (spec, verdict)


def _next_job(sock, setup: dict) -> "dict | None":  # type: ignore[no-untyped-def, type-arg]
    """The next job's spec, its output file on stdout and stderr; None at the end."""
    global PROGRESS_FD
    if sys.platform == "win32":  # (warm children are POSIX only)
        return None
    import socket

    data, fds, _, _ = socket.recv_fds(sock, 1 << 16, 2)  # (the whole spec, usually)
    if not data:
        return None
    while len(data) < 8:
        more = sock.recv(8 - len(data))
        if not more:
            return None
        data += more
    size = int.from_bytes(data[:8], "big")
    if size == 0:
        return {}  # goodbye: the runner read every verdict and closes
    body = bytearray(data[8:])
    while len(body) < size:
        more = sock.recv(min(size - len(body), 1 << 20))
        if not more:
            return None
        body += more
    spec: dict = marshal.loads(body)  # type: ignore[type-arg]  # noqa: S302 - our runner's
    out_fd, progress_fd = fds
    os.dup2(out_fd, 1)
    os.dup2(out_fd, 2)
    os.close(out_fd)
    if PROGRESS_FD < 0:
        PROGRESS_FD = progress_fd  # kept under one number: bgrun.progress() caches it
    else:
        os.dup2(progress_fd, PROGRESS_FD, inheritable=False)
        os.close(progress_fd)
    os.environ.update(spec["job_env"])  # BGRUN_JOB_ID and the tree's tag, per job
    spec["forked"] = setup.get("forked", False)
    return spec


def _between_jobs() -> None:
    """Flush what the job wrote (output, its last progress report) before it is done."""
    sys.stdout.flush()
    sys.stderr.flush()
    progress = sys.modules.get("bgrun._progress") or sys.modules.get("_progress")
    if progress is not None and progress._pid == os.getpid():
        progress.flush()
        # (a report that met the last job's closed pipe dropped the descriptor)
        progress.__dict__.update(_fd=PROGRESS_FD, _pending=None, _next_write=0.0)


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


def _finish(spec: dict, code: int, verdict: tuple) -> "NoReturn":  # type: ignore[type-arg]
    _write_result(spec, verdict)
    _finish_process(spec, code)


def _verdict_bytes(verdict: tuple) -> bytes:  # type: ignore[type-arg]
    try:
        return marshal.dumps(verdict)
    except ValueError:
        return marshal.dumps(("ok", "<unrepresentable result>", True))


def _write_result(spec: dict, verdict: tuple) -> None:  # type: ignore[type-arg]
    data = _verdict_bytes(verdict)
    fd = os.open(spec["result_path"], os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    os.write(fd, data)
    os.close(fd)


def _finish_process(spec: dict, code: int) -> "NoReturn":  # type: ignore[type-arg]
    """End this process with exit status `code`, as interpreter shutdown would."""
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
