"""The enqueue's memos and kept descriptors (issue 14): reused while nothing changed, and
redone the moment anything they stand for changes."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import pytest

from bgrun import logfile, run_background_job
from bgrun.config import Config
from bgrun.envmemo import environ_json
from bgrun.errors import BadParamsError, ConfigError
from bgrun.joblog import EVENTS_LOG, EventLog, parse_line


def test_settings_are_read_once_while_nothing_changed(project, monkeypatch):
    first = Config.load()
    assert Config.load() is first  # kept: the same object, not read again
    monkeypatch.setenv("BGRUN_CONCURRENCY", "3")
    assert Config.load().concurrency == 3  # a variable set: read again
    monkeypatch.delenv("BGRUN_CONCURRENCY")
    assert Config.load().concurrency == os.cpu_count()
    (project.path / ".env").write_text("BGRUN_PRIORITY=7\n")
    assert Config.load().priority == 7  # a .env appeared
    (project.path / ".env").write_text("BGRUN_PRIORITY=-42\n")
    assert Config.load().priority == -42  # and changed
    other = project.path / "elsewhere"
    other.mkdir()
    monkeypatch.chdir(other)
    assert Config.load().log_dir == other / "logs"  # another working directory


def test_a_bad_setting_is_refused_every_time(project, monkeypatch):
    monkeypatch.setenv("BGRUN_CONCURRENCY", "zero")
    for _ in range(2):
        with pytest.raises(ConfigError, match="BGRUN_CONCURRENCY"):
            Config.load()


def test_the_stored_environment_follows_every_change(project, monkeypatch):
    first = environ_json()
    assert environ_json() is first  # kept
    monkeypatch.setenv("SPEED_TEST_VAR", "one")
    assert json.loads(environ_json())["SPEED_TEST_VAR"] == "one"
    monkeypatch.setenv("SPEED_TEST_VAR", "two")  # same length, other value
    assert json.loads(environ_json())["SPEED_TEST_VAR"] == "two"
    monkeypatch.setenv("BGRUN_DASHBOARD_TOKEN", "secret")
    assert "BGRUN_DASHBOARD_TOKEN" not in json.loads(environ_json())
    monkeypatch.delenv("SPEED_TEST_VAR")
    assert "SPEED_TEST_VAR" not in json.loads(environ_json())
    job = run_background_job("jobs", "env_value", ["SPEED_TEST_LATE"], delay=3600)
    monkeypatch.setenv("SPEED_TEST_LATE", "late")
    later = run_background_job("jobs", "env_value", ["SPEED_TEST_LATE"])
    assert later.wait(timeout=30) == "completed" and later.result == "late"
    job.cancel()


def _opens(monkeypatch) -> list[Path]:
    seen: list[Path] = []
    real = logfile.open_append

    def spy(path: Path) -> int:
        seen.append(path)
        return real(path)

    monkeypatch.setattr(logfile, "open_append", spy)
    return seen


def _event(log: EventLog, job: str) -> None:
    log.event(job=job, target="jobs", method="noop", status="queued")


def _jobs_in(path: Path) -> list[str]:
    return [parse_line(line)["job"] for line in path.read_text().splitlines()]


def test_the_event_log_is_opened_once_for_many_lines(tmp_path, monkeypatch):
    opens = _opens(monkeypatch)
    log = EventLog(tmp_path)
    log.check()
    for n in range(5):
        _event(log, str(n))
    assert opens == [tmp_path / EVENTS_LOG]
    assert _jobs_in(tmp_path / EVENTS_LOG) == ["0", "1", "2", "3", "4"]


def test_a_log_rotated_or_replaced_by_another_process_is_opened_again(tmp_path, monkeypatch):
    opens = _opens(monkeypatch)
    log, other = EventLog(tmp_path), EventLog(tmp_path, max_bytes=1)
    _event(log, "1")
    _event(other, "2")
    _event(other, "3")  # the other writer rotated the log under our kept descriptor
    _event(log, "4")
    path = tmp_path / EVENTS_LOG
    assert _jobs_in(path) == ["3", "4"]
    assert _jobs_in(path.with_name(EVENTS_LOG + ".1")) == ["2"]
    path.unlink()
    path.write_text("")  # replaced by a new file of the same name
    _event(log, "5")
    assert _jobs_in(path) == ["5"]
    os.chmod(path, 0o400)  # its mode changed: looked at again (and opened, as root may)
    before = len(opens)
    _event(log, "6")
    assert len(opens) == before + 1


def test_a_log_that_became_a_folder_refuses_though_a_descriptor_was_kept(tmp_path):
    log = EventLog(tmp_path)
    log.check()
    _event(log, "1")
    path = tmp_path / EVENTS_LOG
    path.unlink()
    path.mkdir()
    with pytest.raises(ConfigError, match="cannot write the log"):
        log.check()
    with pytest.raises(ConfigError, match="cannot write the log"):
        _event(log, "2")


def test_a_log_folder_deleted_under_a_kept_descriptor_is_noticed(tmp_path):
    folder = tmp_path / "logs"
    folder.mkdir()
    log = EventLog(folder)
    _event(log, "1")
    (folder / EVENTS_LOG).unlink()
    (folder / ".logs.lock").unlink()
    folder.rmdir()
    with pytest.raises(ConfigError, match="cannot write the log"):
        _event(log, "2")
    with pytest.raises(ConfigError, match="cannot write the log"):
        log.check()


def _define(source: str) -> object:
    namespace: dict[str, object] = {}
    exec(source, namespace)
    return namespace["late"]


def test_a_signature_read_once_is_read_again_when_the_function_changes(project, monkeypatch):
    """A refusal is looked at again in the module's source, which keeps `late(a, b)`:
    only the live function, read afresh, can accept one argument."""
    with open(project.path / "allowlist.toml", "a") as f:
        f.write('\n[jobs."speedmod"]\nmethods = ["late"]\n')
    (project.path / "speedmod.py").write_text("def late(a, b):\n    return a\n")
    run_background_job("speedmod", "late", [1, 2], delay=3600)
    module = sys.modules["speedmod"]
    monkeypatch.delitem(sys.modules, "speedmod")
    monkeypatch.setitem(sys.modules, "speedmod", module)
    module.late = _define("def late(a):\n    return a\n")  # a new function
    run_background_job("speedmod", "late", [1], delay=3600)
    module.late = _define("def late(a, b):\n    return a\n")
    with pytest.raises(BadParamsError, match="missing a required argument"):
        run_background_job("speedmod", "late", [1], delay=3600)
    module.late.__defaults__ = (2,)  # its defaults replaced in place
    run_background_job("speedmod", "late", [1], delay=3600)


# -- quickbind: a call checked without inspect -------------------------------------------

def _make(spec: list[str]) -> object:
    return _define_named(f"def late({', '.join(spec)}):\n    return None\n")


def _define_named(source: str) -> object:
    namespace: dict[str, object] = {}
    exec(source, namespace)
    return namespace["late"]


SIGNATURES = [
    [], ["a"], ["a", "b=1"], ["a", "/", "b"], ["a", "/", "b=1", "*", "k"],
    ["a", "*args"], ["a", "**kw"], ["a", "/", "**kw"], ["*", "k", "k2=2"],
    ["a", "b=1", "*args", "k", "k2=2", "**kw"], ["a=0", "/", "b=1"],
]
CALLS = [
    ([], {}), ([1], {}), ([1, 2], {}), ([1, 2, 3], {}), ([], {"a": 1}), ([1], {"a": 1}),
    ([1], {"b": 2}), ([1], {"k": 3}), ([1], {"k": 3, "k2": 4}), ([], {"k": 1}),
    ([1, 2], {"k": 3, "x": 5}), ([1], {"x-y": 1}), ([], {"a": 1, "b": 2, "k": 3}),
    ([], {"k": 1, "k2": 2}),
]


@pytest.mark.parametrize("spec", SIGNATURES, ids=lambda s: ",".join(s) or "none")
def test_quickbind_says_binds_only_where_inspect_binds(spec):
    import inspect

    from bgrun.quickbind import surely_binds

    func = _make(spec)
    sig = inspect.signature(func)
    said_yes = 0
    for args, kwargs in CALLS:
        try:
            sig.bind(*args, **kwargs)
            binds = True
        except TypeError:
            binds = False
        if surely_binds(func, list(args), dict(kwargs)):
            said_yes += 1
            assert binds, (spec, args, kwargs)
        elif "/" not in spec:  # (positional-only names by keyword: inspect decides)
            assert not binds, (spec, args, kwargs)
    assert said_yes > 0  # (each signature has a call it binds for certain)


def test_a_decorated_function_is_left_to_inspect():
    import functools

    from bgrun.quickbind import surely_binds

    def inner(a, b):
        return a

    @functools.wraps(inner)
    def outer(*args, **kwargs):
        return inner(*args, **kwargs)

    assert not surely_binds(outer, [1], {})  # inspect reads inner's (a, b): refused
    assert not surely_binds(len, [1], {})


def test_threads_sharing_an_event_log_neither_leak_nor_lose_descriptors(tmp_path):
    """check() runs outside the file lock: without a lock of its own, threads racing it
    and event() opened descriptors that were never closed (or closed one in use)."""
    import threading

    log = EventLog(tmp_path, max_bytes=2000, backups=2)  # rotated every few lines
    before = len(os.listdir("/proc/self/fd"))
    errors: list[Exception] = []

    def worker(n: int) -> None:
        for i in range(1500):
            try:
                log.check()
                _event(log, f"{n}-{i}")
            except ConfigError as exc:
                errors.append(exc)

    threads = [threading.Thread(target=worker, args=(n,)) for n in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    assert len(os.listdir("/proc/self/fd")) <= before + 2  # the two logs, kept
    lines = [line for path in tmp_path.glob(EVENTS_LOG + "*")
             for line in path.read_text().splitlines()]
    assert lines and all(parse_line(line)["status"] == "queued" for line in lines)


def test_a_log_made_for_one_line_closes_its_descriptor(tmp_path):
    """A refusal in a long-lived caller writes through an EventLog made for it."""
    before = len(os.listdir("/proc/self/fd"))
    for n in range(20):
        _event(EventLog(tmp_path), str(n))
    assert len(os.listdir("/proc/self/fd")) <= before
    assert len(_jobs_in(tmp_path / EVENTS_LOG)) == 20
