"""Log integrity: no input splits or forges a line of either log, and under contention and
rotation no line is interleaved or lost."""

from __future__ import annotations

import re
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bgrun import NotAllowedError, run_background_job
from bgrun.joblog import (
    ERRORS_LOG,
    EVENTS_LOG,
    EventLog,
    format_line,
    format_value,
    parse_line,
)

REQUIRED = ("job", "class", "method", "status", "attempt")
# Everything str.splitlines() splits on, plus what a terminal interprets.
LINE_BREAKERS = "\r\x0b\x0c\x1c\x1d\x1e\x85\u2028\u2029"
HOSTILE = [
    "a\nb", "a\rb", "\r\n", "x\n2026-01-01T00:00:00.000000+00:00 job=1 class=a method=b "
    'status=completed attempt=1', '"', '\\"', "\\", 'a="b"', "k=v", "\x1b[31mred\x1b[0m",
    "\x1b]0;title\x07", "\u2028", "\u2029", "\x85", "\x9b2J", "\x00", "\x7f", "\t", "",
    " ", "=", "-", '\\x41', '\\n', "\u202e", "\ufeff", "é ü 中文", "\U0001f600",
]


def assert_log_is_whole(path: Path) -> list[dict[str, str]]:
    """Every line of the log parses, starts with an ISO UTC timestamp, has the fields."""
    raw = path.read_bytes().decode("utf-8")
    assert raw.endswith("\n") or raw == ""
    assert not any(c in raw for c in LINE_BREAKERS + "\x1b\x00\x7f\x9b"), "a raw control char"
    assert not re.search(r"[\x00-\x09\x0b-\x1f\x7f-\x9f]", raw)
    lines = raw.split("\n")[:-1]
    assert len(lines) == len(raw.splitlines())
    parsed = []
    for line in lines:
        fields = parse_line(line)
        stamp = datetime.fromisoformat(fields["time"])
        assert stamp.utcoffset() is not None and stamp.utcoffset().total_seconds() == 0, line
        assert fields["time"].endswith("+00:00")
        for key in REQUIRED:
            assert key in fields, (key, line)
        assert line.startswith(fields["time"] + " job=")
        parsed.append(fields)
    return parsed


# -- format_value / parse_line -----------------------------------------------------------

_KEY = st.from_regex(r"[a-z_][a-z0-9_]{0,10}", fullmatch=True)
_TEXT = st.one_of(
    st.text(),
    st.lists(st.sampled_from([*'\\"= \n\r\t\x1b\x00\x7f\x85\x9b\u2028\u2029ab',
                              "x1b", "\\x", "\\u", "\\x0a", "\\u2028", '\\"'])).map("".join),
)


@settings(max_examples=400, database=None, deadline=None)
@given(st.dictionaries(_KEY, _TEXT, min_size=1, max_size=6))
def test_format_and_parse_round_trip(values):
    fields = {"job": "1", "class": "a.b", "method": "m", "status": "queued", "attempt": "0",
              **values}
    now = datetime(2026, 1, 2, 3, 4, 5, 6, tzinfo=UTC)
    line = format_line(fields, now)
    assert len(line.splitlines()) == 1 and "\n" not in line
    assert not re.search(r"[\x00-\x1f\x7f-\x9f\u2028\u2029]", line)
    parsed = parse_line(line)
    assert parsed.pop("time") == now.isoformat(timespec="microseconds")
    assert parsed == {k: str(v) for k, v in fields.items()}


@settings(max_examples=500, database=None, deadline=None)
@given(_TEXT)
def test_a_value_is_one_token(text):
    value = format_value(text)
    assert parse_line(f"T x={value} y=1") == {"time": "T", "x": text, "y": "1"}
    assert " " not in value or value.startswith('"')


@settings(max_examples=300, database=None, deadline=None)
@given(st.lists(st.tuples(_TEXT, _TEXT, st.one_of(st.none(), _TEXT)), min_size=1, max_size=5))
def test_event_log_writes_one_parsable_line_per_event(tmp_path_factory, events):
    folder = tmp_path_factory.mktemp("log")
    log = EventLog(folder)
    for target, method, error in events:
        log.event(job="-", target=target, method=method, status="rejected", error=error,
                  traceback=error)
    written = assert_log_is_whole(folder / EVENTS_LOG)
    assert [(e["class"], e["method"]) for e in written] == [(t, m) for t, m, _ in events]
    errors = [err for _, _, err in events if err is not None]
    if errors:
        logged = assert_log_is_whole(folder / ERRORS_LOG)
        assert [e["error"] for e in logged] == errors
        assert [e.get("traceback") for e in logged] == [err or None for err in errors]


# -- real jobs ---------------------------------------------------------------------------


def test_hostile_params_errors_names_and_output_never_split_a_line(project):
    jobs = []
    for text in HOSTILE:
        jobs.append(run_background_job("jobs", "fail", [text]))
        jobs.append(run_background_job("jobs", "echo", {"a": text, "b": [text]}))
        if not text:
            continue
        with pytest.raises(NotAllowedError):
            run_background_job("jobs", "noop" + text)
        with pytest.raises(NotAllowedError):
            run_background_job("jobs" + text, "noop")
    jobs.append(run_background_job("jobs", "hostile_output"))
    for job in jobs:
        assert job.wait(60) in ("completed", "failed")
    events = assert_log_is_whole(project.log_dir / EVENTS_LOG)
    errors = assert_log_is_whole(project.log_dir / ERRORS_LOG)
    # The hostile text is kept, escaped, and reads back exactly.
    failed = {e["error"] for e in errors if e["status"] == "failed"}
    for text in HOSTILE:
        assert f"ValueError: {text}" in failed, repr(text)
    refused = {e["method"] for e in events if e["status"] == "rejected"}
    assert {"noop" + t for t in HOSTILE} <= refused
    # Only the lines bgrun wrote: one queued, running and final line per job, no more.
    per_job: dict[str, list[str]] = {}
    for e in events:
        per_job.setdefault(e["job"], []).append(e["status"])
    assert len(per_job.pop("-")) == 2 * (len(HOSTILE) - 1)  # "" makes allowed names
    assert len(per_job) == len(jobs)
    for statuses in per_job.values():
        assert statuses[0] == "queued" and statuses[1] == "running" and len(statuses) == 3
    # `bgrun show` prints the traceback readably, and still as text without raw escapes.
    shown = project.cli("show", jobs[0].id)
    assert shown.returncode == 0 and "ValueError" in shown.stdout


# -- many writers, rotation --------------------------------------------------------------

WRITER = r"""
import sys
from pathlib import Path
from bgrun.joblog import EventLog
folder, who, count, max_bytes = Path(sys.argv[1]), sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
log = EventLog(folder, max_bytes=max_bytes, backups=10_000)
payload = 'pad\n"\x1b\u2028' * (int(who) % 7)
for i in range(count):
    log.event(job=f"{who}-{i}", target="t", method="m", status="queued", attempt=i,
              payload=payload + "x" * (i % 50), error="E: boom\n" if i % 3 == 0 else None,
              traceback="Traceback\n  line\n" * (i % 4) if i % 3 == 0 else None)
"""


def _all_lines(folder: Path, name: str) -> tuple[list[dict[str, str]], int]:
    files = sorted(folder.glob(name + "*"))
    parsed: list[dict[str, str]] = []
    for path in files:
        parsed += assert_log_is_whole(path)
    return parsed, len(files)


def test_many_processes_with_rotation_never_interleave_or_lose_a_line(tmp_path):
    writers, count, max_bytes = 8, 500, 16_384
    procs = [
        subprocess.Popen([sys.executable, "-c", WRITER, str(tmp_path), str(w), str(count),
                          str(max_bytes)], cwd=Path(__file__).resolve().parent.parent)
        for w in range(writers)
    ]
    for proc in procs:
        assert proc.wait(120) == 0
    events, files = _all_lines(tmp_path, EVENTS_LOG)
    assert files > 10, "rotation did not happen under contention"
    ids = [e["job"] for e in events]
    assert len(ids) == writers * count and len(set(ids)) == len(ids)
    errors, error_files = _all_lines(tmp_path, ERRORS_LOG)
    assert error_files > 1
    expected_errors = writers * len(range(0, count, 3))
    assert len(errors) == expected_errors and len({e["job"] for e in errors}) == expected_errors
    assert all(e["error"] == "E: boom\n" for e in errors)
    # Each file stays within its size limit (a line larger than the limit gets a file alone).
    for path in tmp_path.glob("background_jobs*.log*"):
        assert path.stat().st_size <= max_bytes or path.read_text().count("\n") == 1
    # Within one writer the order is kept (one lock, appends in order).
    for w in range(writers):
        mine = [int(e["job"].split("-")[1]) for e in _ordered(tmp_path) if
                e["job"].startswith(f"{w}-")]
        assert mine == list(range(count))


def _ordered(folder: Path) -> list[dict[str, str]]:
    """Events across rotated files, oldest file first."""
    rotated = sorted(folder.glob(EVENTS_LOG + ".*"), key=lambda p: -int(p.suffix[1:]))
    out: list[dict[str, str]] = []
    for path in [*rotated, folder / EVENTS_LOG]:
        out += [parse_line(line) for line in path.read_text().splitlines()]
    return out


_OLD_NOT_PLAIN = re.compile(r'[\s="\\\x00-\x1f\x7f-\x9f\u2028\u2029\u061c\u200e\u200f'
                            r"\u202a-\u202e\u2066-\u2069]")


@settings(max_examples=3000, database=None, deadline=None)
@given(st.text(alphabet=st.characters(max_codepoint=0x7f), max_size=10) | _TEXT)
def test_a_value_is_bare_exactly_when_the_pattern_allows(text):
    """format_value decides ASCII values without its pattern (compiled per process
    otherwise); the decision is the pattern's."""
    bare = format_value(text) == text
    assert bare == bool(text and not _OLD_NOT_PLAIN.search(text))
