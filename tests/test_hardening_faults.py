"""Faults of the environment: each gives one clear error, loses no stored job and
half-writes nothing."""

from __future__ import annotations

import contextlib
import hashlib
import os
import shutil
import sqlite3
import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from bgrun import BgrunError, ConfigError, StoreError, run_background_job
from bgrun.errors import ExitCode
from bgrun.joblog import ERRORS_LOG, EVENTS_LOG
from bgrun.store.sqlite import SqliteStore as Store
from tests.conftest import kill_processes_of, wait_until
from tests.test_hardening_logs import assert_log_is_whole


def one_line(result: subprocess.CompletedProcess[str], code: int) -> str:
    assert result.returncode == code, (result.returncode, result.stdout, result.stderr)
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("bgrun: error: "), result.stderr
    assert "Traceback" not in result.stderr and "internal error" not in result.stderr
    return lines[0]


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def store_rows(path: Path) -> list[tuple[object, ...]]:
    db = sqlite3.connect(path)
    try:
        return db.execute("SELECT id, status, attempts, params FROM jobs ORDER BY id").fetchall()
    finally:
        db.close()


def queue_waiting(project, n: int = 3) -> list[str]:
    """`n` jobs stored and waiting far in the future (no runner will touch them)."""
    return [run_background_job("jobs", "record", ["kept", i], delay=3600).id for i in range(n)]


# -- settings and log folder -------------------------------------------------------------


@pytest.mark.parametrize(("name", "value"), [
    ("BGRUN_CONCURRENCY", "abc"), ("BGRUN_TICK", "nan"), ("BGRUN_MAX_PARAMS_BYTES", "-1"),
    ("BGRUN_MODE", "thread"),
])
def test_unusable_setting_exits_4_and_touches_nothing(project, name, value):
    kept = queue_waiting(project, 2)
    store = project.log_dir / "bgrun.sqlite3"
    before = store_rows(store)
    for args in (["exec", "jobs", "noop"], ["list"], ["show", kept[0]], ["recover"]):
        line = one_line(project.cli(*args, **{name: value}), ExitCode.UNUSABLE)
        assert name in line
    with pytest.raises(ConfigError, match=name):
        os.environ[name] = value
        try:
            run_background_job("jobs", "noop")
        finally:
            del os.environ[name]
    assert store_rows(store) == before
    # The same setting in .env is read, and refused, the same way.
    (project.path / ".env").write_text(f"{name}={value}\n")
    one_line(project.cli("exec", "jobs", "noop"), ExitCode.UNUSABLE)
    assert store_rows(store) == before


def test_log_folder_under_a_regular_file(project, monkeypatch):
    """Root ignores modes: what fails for root is a path whose parent is a file."""
    (project.path / "afile").write_text("not a folder")
    for log_dir in ("afile/logs", "afile"):
        line = one_line(project.cli("exec", "jobs", "noop", BGRUN_LOG_DIR=log_dir),
                        ExitCode.UNUSABLE)
        assert "afile" in line
        one_line(project.cli("list", BGRUN_LOG_DIR=log_dir), ExitCode.UNUSABLE)
        monkeypatch.setenv("BGRUN_LOG_DIR", log_dir)
        with pytest.raises(ConfigError):
            run_background_job("jobs", "noop")
    assert (project.path / "afile").read_text() == "not a folder"
    line = one_line(project.cli("exec", "jobs", "noop", BGRUN_STORE="afile/store.db"),
                    ExitCode.UNUSABLE)
    assert "afile" in line


def test_event_log_that_cannot_be_written_refuses_before_storing(project):
    kept = queue_waiting(project, 2)
    store = project.log_dir / "bgrun.sqlite3"
    before = store_rows(store)
    log = project.log_dir / EVENTS_LOG
    log.unlink()
    log.mkdir()  # what root cannot write either: the log's path is a folder
    line = one_line(project.cli("exec", "jobs", "noop"), ExitCode.UNUSABLE)
    assert EVENTS_LOG in line
    with pytest.raises(ConfigError):
        run_background_job("jobs", "noop")
    assert store_rows(store) == before  # nothing stored, nothing lost
    log.rmdir()
    assert project.cli("list").returncode == 0
    assert [j for j, *_ in store_rows(store)] == [int(k) for k in kept]


# -- the store ---------------------------------------------------------------------------


def _checkpointed_store(project, jobs: int) -> Path:
    """A store with `jobs` finished-or-waiting jobs, WAL folded into the main file."""
    for i in range(jobs):
        run_background_job("jobs", "echo", ["x" * 200, i], delay=3600, check_import=i == 0)
    kill_processes_of(project.path)
    store = project.log_dir / "bgrun.sqlite3"
    db = sqlite3.connect(store)
    db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    db.close()
    from bgrun.context import _open

    for ctx in _open.values():
        ctx.store.close()
    _open.clear()
    for suffix in ("-wal", "-shm"):
        Path(str(store) + suffix).unlink(missing_ok=True)
    return store


@pytest.mark.parametrize("damage", ["garbage", "truncated", "header", "zeroed-page"])
def test_corrupt_store_exits_4_and_is_left_as_it_is(project, damage):
    store = _checkpointed_store(project, 150)
    data = store.read_bytes()
    assert len(data) > 8 * 4096
    if damage == "garbage":
        store.write_bytes(os.urandom(len(data)))
    elif damage == "truncated":
        store.write_bytes(data[: len(data) // 2])
    elif damage == "header":
        store.write_bytes(b"not an sqlite file" + data[18:])
    else:
        page = 4096
        store.write_bytes(data[:page * 2] + b"\xff" * page + data[page * 3:])
    before = digest(store)
    for args in (["exec", "jobs", "noop"], ["list", "--limit", "0"], ["show", "1"],
                 ["recover"], ["exec", "jobs", "noop", "--delay", "5"], ["check"]):
        result = project.cli(*args)
        if damage == "zeroed-page" and result.returncode == 0:
            continue  # SQLite finds a damaged page only when it reads it
        line = one_line(result, ExitCode.UNUSABLE)
        assert str(store) in line or "store" in line, line
        if damage != "zeroed-page":
            assert digest(store) == before, f"{args} changed the damaged store"
    if damage == "zeroed-page":
        return
    with pytest.raises(StoreError):
        run_background_job("jobs", "noop")
    assert digest(store) == before
    assert not Path(str(store) + "-wal").exists() or Path(str(store) + "-wal").stat().st_size == 0


def test_store_that_is_not_a_bgrun_store_is_refused(project):
    other = project.path / "other.sqlite3"
    db = sqlite3.connect(other)
    db.execute("CREATE TABLE mine (x)")
    db.execute("INSERT INTO mine VALUES (1)")
    db.commit()
    db.close()
    before = digest(other)
    line = one_line(project.cli("exec", "jobs", "noop", BGRUN_STORE=str(other)),
                    ExitCode.UNUSABLE)
    assert "not a bgrun store" in line
    assert digest(other) == before


class _NoWal(sqlite3.Connection):
    """What SQLite answers on a file system without shared memory: no WAL."""

    def execute(self, sql: str, *args: object) -> sqlite3.Cursor:  # type: ignore[override]
        if sql.strip().upper() == "PRAGMA JOURNAL_MODE=WAL":
            sql = "PRAGMA journal_mode"  # stays 'delete', as on NFS/SMB without locking
        return super().execute(sql, *args)  # type: ignore[arg-type]


def test_store_refuses_a_file_system_without_wal(tmp_path, monkeypatch):
    """This machine has no network file system: the seam (journal_mode=WAL must answer
    'wal') is monkeypatched, nothing else."""
    real = sqlite3.connect
    monkeypatch.setattr(sqlite3, "connect",
                        lambda *a, **k: real(*a, **{**k, "factory": _NoWal}))
    with pytest.raises(StoreError) as info:
        Store(tmp_path / "s.sqlite3", tmp_path)
    message = str(info.value)
    assert "WAL" in message and "network file system" in message and "\n" not in message
    assert (tmp_path / "s.sqlite3").stat().st_size == 0  # nothing written into it
    monkeypatch.undo()
    Store(tmp_path / "s.sqlite3", tmp_path).close()  # the same file is fine on a local disk


# -- the allowlist while jobs wait -------------------------------------------------------


@pytest.mark.parametrize("fault", ["deleted", "broken-toml", "bad-key", "bad-name"])
def test_allowlist_broken_while_jobs_wait_then_recover(project, fault):
    allowlist = project.path / "allowlist.toml"
    good = allowlist.read_text()
    jobs = [run_background_job("jobs", "record", ["wait", i], delay=0.8) for i in range(6)]
    if fault == "deleted":
        allowlist.unlink()
    elif fault == "broken-toml":
        allowlist.write_text(good + "\n[jobs.\n")
    elif fault == "bad-key":
        allowlist.write_text(good + '\n[jobs."more"]\nmethods = ["x"]\nwildcard = true\n')
    else:
        allowlist.write_text(good + '\n[jobs."more.__x__"]\nmethods = ["x"]\n')
    time.sleep(2.5)  # past their start time: runners looked, logged, and left
    wait_until(lambda: not _runners(project), timeout=20)  # they looked, logged, and left
    for job in jobs:
        info = job.info()
        assert info["status"] == "queued", info
        assert info["attempts"] == 0 and info["error"] is None
    assert project.marks("wait") == []
    problems = [e for e in project.events(errors=True) if "AllowlistError" in e.get("error", "")]
    assert problems, "the broken allowlist was not logged"
    one_line(project.cli("exec", "jobs", "noop"), ExitCode.UNUSABLE)
    one_line(project.cli("recover"), ExitCode.UNUSABLE)  # says the jobs cannot run yet
    allowlist.write_text(good)
    result = project.cli("recover")
    assert result.returncode == 0, result.stderr
    for job in jobs:
        assert job.wait(30) == "completed", job.info()["error"]
        assert job.info()["attempts"] == 1
    tags = sorted(m["tag"] for m in project.marks("wait") if m.get("start"))
    assert tags == list(range(6))  # each ran exactly once
    assert_log_is_whole(project.log_dir / EVENTS_LOG)


def _runners(project) -> list[int]:
    from tests.conftest import processes_of

    found = []
    for proc in processes_of(project.path):
        with contextlib.suppress(Exception):  # gone or a zombie meanwhile
            if "_runner_main" in " ".join(proc.cmdline()):
                found.append(proc.pid)
    return found


# -- disk full ---------------------------------------------------------------------------


@contextlib.contextmanager
def small_tmpfs(base: Path, size: str = "1m") -> Iterator[Path]:
    mount = base / f"tmpfs-{uuid.uuid4().hex[:8]}"
    mount.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size},mode=0700", "tmpfs",
                           str(mount)], capture_output=True, text=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a small tmpfs here ({done.stderr.strip()}): the disk-full "
                    "faults need one")
    try:
        yield mount
    finally:
        kill_processes_of(base)
        subprocess.run(["umount", "-l", str(mount)], capture_output=True)


def _fill(folder: Path, leave: int) -> Path:
    """Fill the file system of `folder` up to `leave` bytes free."""
    filler = folder / "filler"
    st = os.statvfs(folder)
    free = st.f_bavail * st.f_frsize
    with open(filler, "wb") as f, contextlib.suppress(OSError):
        f.write(b"\0" * max(free - leave, 0))
    return filler


def test_disk_full_store_and_logs(project, monkeypatch):
    """Store and logs on a full disk: a clear error, no accepted job lost, logs whole."""
    with small_tmpfs(project.path) as mount:
        monkeypatch.setenv("BGRUN_LOG_DIR", str(mount / "logs"))
        accepted = [run_background_job("jobs", "record", ["full", i], delay=1.5).id
                    for i in range(5)]
        _fill(mount, leave=8192)
        refused = 0
        for i in range(200):
            try:
                accepted.append(run_background_job("jobs", "record", ["full", 100 + i],
                                                   delay=1.5).id)
            except BgrunError as exc:
                assert isinstance(exc, ConfigError), exc
                assert "\n" not in str(exc)
                refused += 1
        assert refused > 0, "the disk never filled"
        result = project.cli("exec", "jobs", "record", "full", "x",
                             BGRUN_LOG_DIR=str(mount / "logs"))
        line = one_line(result, ExitCode.UNUSABLE)
        assert "space" in line or "full" in line, line
        assert_log_is_whole(mount / "logs" / EVENTS_LOG)
        if (mount / "logs" / ERRORS_LOG).exists():
            assert_log_is_whole(mount / "logs" / ERRORS_LOG)
        (mount / "filler").unlink()
        recovered = project.cli("recover", BGRUN_LOG_DIR=str(mount / "logs"))
        assert recovered.returncode == 0, recovered.stderr
        from bgrun import get_job

        for job_id in accepted:
            assert get_job(job_id).wait(60) == "completed", job_id
        starts = [m["tag"] for m in project.marks("full") if m.get("start")]
        assert len(starts) == len(set(starts)) == len(accepted)
        assert_log_is_whole(mount / "logs" / EVENTS_LOG)


def test_disk_full_for_the_logs_only_never_half_writes_a_line(project, monkeypatch):
    with small_tmpfs(project.path, "256k") as mount:
        monkeypatch.setenv("BGRUN_LOG_DIR", str(mount / "logs"))
        monkeypatch.setenv("BGRUN_STORE", str(project.path / "store.sqlite3"))
        kept = [run_background_job("jobs", "record", ["logs", i], delay=3600).id for i in range(3)]
        events = mount / "logs" / EVENTS_LOG
        before = events.read_bytes()
        _fill(mount, leave=0)
        # Leave exactly room for part of a line: a short write must not stay in the log.
        (mount / "filler").write_bytes(b"")
        _fill(mount, leave=60)
        outcomes: list[str] = []
        for i in range(100):  # the log's last page has some room left: use it up
            try:
                outcomes.append(run_background_job("jobs", "record", ["logs", 10 + i],
                                                   delay=3600).id)
            except ConfigError as exc:
                outcomes.append(str(exc))
                if sum(not t.isdigit() for t in outcomes) >= 3:
                    break
        for text in outcomes:
            assert text.isdigit() or "log" in text, text
        told = [t.split()[1] for t in outcomes if "is stored and waits" in t]
        assert told, outcomes  # the short write was noticed, and the caller told the id
        data = events.read_bytes()
        assert data.startswith(before) and data.endswith(b"\n")
        assert_log_is_whole(events)
        rows = store_rows(project.path / "store.sqlite3")
        assert [str(r[0]) for r in rows][:3] == kept  # nothing lost
        assert set(told) <= {str(r[0]) for r in rows}
    shutil.rmtree(project.path / "marks", ignore_errors=True)

