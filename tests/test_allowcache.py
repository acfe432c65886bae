"""The parsed allowlist kept between queueing processes (bgrun/allowcache.py).

It spares `bgrun exec` the TOML parser; it must never let through a name the file on
disk refuses, nor trust a file someone else could have written.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from bgrun import allowcache, allowlist
from bgrun.errors import NotAllowedError

LOADS = ("import sys; from bgrun import run_background_job as r; {call};"
         " print('tomllib' in sys.modules)")


def _queue_and_report(project, call: str) -> str:
    """In a new process (a one-shot caller): queue with `call`, then say whether tomllib
    was imported."""
    env = {**os.environ, "BGRUN_START_RUNNERS": "0"}
    out = subprocess.run([sys.executable, "-c", LOADS.format(call=call)], cwd=project.path,
                         env=env, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    return out.stdout.strip()


def _state(project) -> Path:
    return project.log_dir / "bgrun.sqlite3.d"


def _kept(project) -> None:
    """Two callers: the first makes the state folder, the second keeps its parse there."""
    for _ in range(2):
        _queue_and_report(project, "r('jobs', 'noop', delay=3600)")
    assert (_state(project) / allowcache.FILE).is_file()


def test_a_second_caller_queues_without_the_toml_parser(project):
    call = "r('jobs', 'noop', delay=3600)"
    assert _queue_and_report(project, call) == "True"  # before the state folder: not kept
    assert _queue_and_report(project, call) == "True"  # parsed, and kept
    kept = _state(project) / allowcache.FILE
    assert kept.is_file() and kept.stat().st_mode & 0o777 == 0o600
    assert _queue_and_report(project, call) == "False"
    assert project.cli("list", "--json").stdout.count('"noop"') == 3


def test_an_edit_that_keeps_size_and_times_is_seen_at_once(project):
    """The key is the content: an edit the file's size and times cannot tell is seen."""
    _kept(project)
    path = project.path / "allowlist.toml"
    st = path.stat()
    text = path.read_text()
    path.write_text(text.replace('"noop"', '"nope"'))  # same length
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert path.stat().st_size == st.st_size
    call = "import pytest; pytest.raises(Exception, r, 'jobs', 'noop', delay=3600)"
    assert _queue_and_report(project, call) == "True"
    assert "is not an allowed method" in project.log_dir.joinpath(
        "background_jobs_errors.log").read_text()


def _tampered(project) -> Path:
    """A kept parse that allows `poison.run2`, beside an allowlist that does not."""
    _kept(project)
    path = project.path / "allowlist.toml"
    raw = path.read_bytes()
    data = allowlist._toml(path, raw.decode())
    data["jobs"]["poison"]["methods"] = ["run", "run2"]
    state = _state(project)
    allowcache.write(state, path, raw, data)
    allowlist._cache.clear()
    return state / allowcache.FILE


def test_a_kept_parse_someone_else_may_write_is_not_trusted(project):
    kept = _tampered(project)
    path = project.path / "allowlist.toml"
    assert allowcache.read(kept.parent, path, path.read_bytes()) is not None  # it would
    os.chmod(kept, 0o620)  # group-writable: another user could have written it
    assert allowcache.read(kept.parent, path, path.read_bytes()) is None
    with pytest.raises(NotAllowedError):
        allowlist.load(path, cache=kept.parent).check("poison", "run2")


@pytest.mark.skipif(os.geteuid() != 0, reason="chown needs root")
def test_a_kept_parse_owned_by_another_user_is_not_trusted(project):
    kept = _tampered(project)
    os.chown(kept, 65534, 65534)  # a cache the job user wrote, beside root's allowlist
    path = project.path / "allowlist.toml"
    with pytest.raises(NotAllowedError):
        allowlist.load(path, cache=kept.parent).check("poison", "run2")


def test_the_run_time_check_never_reads_the_kept_parse(project, monkeypatch):
    """A job's check before its import parses the file itself."""
    _tampered(project)
    monkeypatch.setattr(allowcache, "read", lambda *a: pytest.fail("read the kept parse"))
    with pytest.raises(NotAllowedError):
        allowlist.check_at_run_time(project.path / "allowlist.toml", "poison", "run2")


def test_a_broken_kept_parse_is_parsed_again(project):
    _kept(project)
    (_state(project) / allowcache.FILE).write_bytes(b"\x00garbage")
    assert _queue_and_report(project, "r('jobs', 'noop', delay=3600)") == "True"
    assert _queue_and_report(project, "r('jobs', 'noop', delay=3600)") == "False"


def test_windows_never_trusts_a_kept_parse(project, monkeypatch):
    """Windows file modes cannot say who may write a file: it always parses."""
    _kept(project)
    path = project.path / "allowlist.toml"
    state = _state(project)
    assert allowcache.read(state, path, path.read_bytes()) is not None
    monkeypatch.setattr(allowcache.sys, "platform", "win32")
    assert allowcache.read(state, path, path.read_bytes()) is None
