"""Round two of hardening: look-alike job ids, str subclasses as names, bidi controls."""

from __future__ import annotations

import pytest

from bgrun import run_background_job
from bgrun.config import Config
from bgrun.context import context_for
from bgrun.errors import BadNameError, NoSuchJobError, NotAllowedError
from bgrun.joblog import format_line, parse_line

TOKEN = "input-token-0123456789abcdef"
BEARER = {"Authorization": f"Bearer {TOKEN}"}
#: Second spellings of job 1 that int() accepts (or that look like it).
LOOKALIKES = ["\uff11", "\u0661", "\u06f1", "+1", " 1 ", "1 ", "\t1", "01", "001", "1\n",
              "\U0001d7cf", "1\u200e", "\u00b9"]
BIDI = ["\u202a", "\u202b", "\u202c", "\u202d", "\u202e", "\u2066", "\u2067", "\u2068",
        "\u2069", "\u200e", "\u200f", "\u061c"]


@pytest.mark.parametrize("text", [*LOOKALIKES, "1_0", "0", "", "9" * 20,
                                  "9223372036854775808", "-1", "1.0", "0x1"])
def test_only_the_canonical_ascii_spelling_is_a_job_id(text):
    from bgrun.store.rows import parse_job_id

    assert parse_job_id(text) is None


def test_canonical_ids_parse():
    from bgrun.store.rows import parse_job_id

    assert parse_job_id("1") == 1
    assert parse_job_id("9223372036854775807") == 2**63 - 1
    assert parse_job_id(1) is None  # not a string


def test_lookalike_ids_reach_no_job_anywhere(project):
    flask = pytest.importorskip("flask")
    del flask
    from bgrun.dashboard.app import create_app

    job_id = run_background_job("jobs", "record", ["never"], delay=3600).id
    assert job_id == "1"
    store = context_for(Config.load()).store
    client = create_app(Config.load(), TOKEN).test_client()
    for text in LOOKALIKES:
        with pytest.raises(NoSuchJobError):
            store.get(text)
        quoted = "".join(c if c.isalnum() and c.isascii() else f"%{b:02X}"
                         for c in text for b in c.encode())
        for path in (f"/api/jobs/{quoted}", f"/jobs/{quoted}", f"/api/jobs/{quoted}/output"):
            assert client.get(path, headers=BEARER).status_code == 404, (path, text)
        for path in (f"/api/jobs/{quoted}/cancel", f"/jobs/{quoted}/cancel"):
            assert client.post(path, headers=BEARER).status_code == 404, (path, text)
        assert client.get(f"/api/jobs?before={quoted}", headers=BEARER).status_code == 400
    assert store.get("1").status_at(0).value == "scheduled"  # never cancelled


@pytest.mark.parametrize("text", ["\uff11", "+1", " 1 ", "01", "\u0661"])
def test_lookalike_ids_on_the_command_line_exit_3(project, text):
    run_background_job("jobs", "record", ["never"], delay=3600)
    for command in ("show", "cancel", "logs", "retry"):
        result = project.cli(command, text)
        assert result.returncode == 3, (command, text, result.stderr)
        assert result.stderr.count("\n") == 1
    assert project.show("1")["status"] == "scheduled"


class Sneaky(str):
    """A name that claims to be 'jobs' to every comparison, while its characters say 'os'."""

    def __eq__(self, other: object) -> bool:
        return other == "jobs" or other == "noop" or str.__eq__(self, other)

    def __hash__(self) -> int:
        return hash("jobs")


def test_a_str_subclass_does_not_pass_the_queue_time_check(project):
    with pytest.raises(NotAllowedError, match="'os'"):
        run_background_job(Sneaky("os"), "system", ["true"], check_import=False)
    with pytest.raises(NotAllowedError):
        run_background_job("jobs", Sneaky("system"), ["true"], check_import=False)
    assert context_for(Config.load()).store.list_jobs() == []
    job = run_background_job(Sneaky("jobs"), Sneaky("noop"))
    assert type(project.show(job.id)["target"]) is str
    assert project.wait(job.id)["status"] == "completed"


@pytest.mark.parametrize("char", BIDI)
def test_bidi_controls_are_escaped_in_log_lines(char):
    line = format_line({"class": f"jobs{char}txt.exe", "error": f"x{char}y"})
    assert char not in line
    assert f"\\u{ord(char):04x}" in line
    assert parse_line(line)["class"] == f"jobs{char}txt.exe"


def test_bidi_controls_in_a_refused_name_reach_the_error_log_escaped(project):
    name = "jobs\u202eexe.txt"
    with pytest.raises(BadNameError):
        run_background_job(name, "noop")
    raw = (project.log_dir / "background_jobs_errors.log").read_text()
    assert "\u202e" not in raw and "\\u202e" in raw


def test_bidi_controls_are_spelled_out_in_pages_and_output(project):
    pytest.importorskip("flask")
    from bgrun.dashboard.app import create_app

    payload = "invoice\u202efdp.exe \u2067x\u2069"
    echo = run_background_job("jobs", "echo", [payload])
    failing = run_background_job("jobs", "fail", [payload])
    project.wait(echo.id)
    project.wait(failing.id)
    client = create_app(Config.load(), TOKEN).test_client()
    for path in ["/", f"/jobs/{echo.id}", f"/jobs/{failing.id}", "/?target=" + payload]:
        html = client.get(path, headers=BEARER).get_data(as_text=True)
        for char in BIDI:
            assert char not in html, (path, char)
    html = client.get(f"/jobs/{echo.id}", headers=BEARER).get_data(as_text=True)
    assert "invoice[U+202E]fdp.exe [U+2067]x[U+2069]" in html  # params, result, output
    output = client.get(f"/api/jobs/{failing.id}/output", headers=BEARER).get_json()["text"]
    assert "\u202e" not in output and "invoice[U+202E]fdp.exe" in output  # the traceback
