"""The command line as a user meets it: output, one-line errors, exit codes."""

from __future__ import annotations

import json
import time

import pytest


def one_error_line(result) -> str:
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert "Traceback" not in result.stderr
    assert lines[0].startswith("bgrun: error: ")
    return lines[0]


def test_exec_prints_the_id_alone_and_wait_exits_by_outcome(project):
    result = project.cli("exec", "jobs", "echo", "a", "b")
    assert result.returncode == 0
    job_id = result.stdout.strip()
    assert job_id.isdigit() and result.stdout == job_id + "\n"
    waited = project.cli("wait", job_id, "--timeout", "30")
    assert (waited.returncode, waited.stdout.strip()) == (0, "completed")
    assert project.show(job_id)["result"] == {"args": ["a", "b"], "kwargs": {}}
    failing = project.cli("exec", "jobs", "fail").stdout.strip()
    assert project.cli("wait", failing, "--timeout", "30").returncode == 1


def test_exec_json_params_and_keyword_arguments(project):
    job = project.cli("exec", "jobs", "echo", "--params", '[1, {"x": null}]').stdout.strip()
    kw = project.cli("exec", "jobs.Greeter", "greet", "--kw", "name=ada",
                     "--kw-json", 'punctuation="?"').stdout.strip()
    assert project.cli("wait", job).returncode == 0
    assert project.cli("wait", kw).returncode == 0
    assert project.show(job)["result"]["args"] == [1, {"x": None}]
    assert project.show(kw)["result"] == "hello ada?"
    for bad in (["--params", "[NaN]"], ["--params", "{bad"], ["--params", "{}", "--kw", "a=b"],
                ["--kw", "novalue"], ["--kw-json", "a=nope"]):
        result = project.cli("exec", "jobs", "echo", *bad)
        assert result.returncode == 2, bad
        one_error_line(result)


def test_wait_times_out_with_124(project):
    job_id = project.cli("exec", "jobs", "sleep", "--kw-json", "seconds=5").stdout.strip()
    result = project.cli("wait", job_id, "--timeout", "0.3")
    assert result.returncode == 124
    one_error_line(result)


def test_show_and_list(project):
    job_id = project.cli("exec", "jobs", "fail", "--kw", "message=oops", "--retries", "1",
                         "--priority", "4").stdout.strip()
    project.cli("wait", job_id)
    info = project.show(job_id)
    for key in ("id", "target", "method", "params", "status", "priority", "attempts",
                "retries", "created_at", "run_at", "started_at", "finished_at", "error",
                "result"):
        assert key in info
    assert info["status"] == "failed" and info["priority"] == 4
    assert info["created_at"].endswith("+00:00")
    assert [a["outcome"] for a in info["attempt_history"]] == ["retrying", "failed"]
    page = project.cli("show", job_id).stdout
    assert "ValueError: oops" in page and "traceback:" in page and 'raise ValueError' in page
    listed = json.loads(project.cli("list", "--json").stdout)
    assert [j["id"] for j in listed] == [job_id]
    assert json.loads(project.cli("list", "--json", "--status", "completed").stdout) == []
    table = project.cli("list").stdout
    assert "failed" in table and "jobs.fail" in table


def test_list_limit_and_order(project):
    ids = [project.cli("exec", "jobs", "noop", "--delay", "60").stdout.strip()
           for _ in range(4)]
    listed = json.loads(project.cli("list", "--json", "--limit", "2").stdout)
    assert [j["id"] for j in listed] == ids[::-1][:2]
    assert len(json.loads(project.cli("list", "--json", "--limit", "0").stdout)) == 4
    scheduled = json.loads(project.cli("list", "--json", "--status", "scheduled").stdout)
    assert len(scheduled) == 4


@pytest.mark.parametrize(("args", "code", "words"), [
    (["exec", "os", "system", "id"], 2, "not in the allowlist"),
    (["exec", "jobs", "nope"], 2, "not an allowed method"),
    (["exec", "jobs..x", "noop"], 2, "not a dotted path"),
    (["exec", "jobs", "noop", "--retries", "-1"], 2, "-1"),
    (["show", "nope"], 3, "no job"),
    (["show", "42"], 3, "no job 42"),
    (["wait", "42"], 3, "no job 42"),
    (["logs", "42"], 3, "no job 42"),
])
def test_refusals_are_one_line_with_their_exit_code(project, args, code, words):
    project.ctx  # a store exists (reading commands refuse to run without one: exit 4)
    result = project.cli(*args)
    assert result.returncode == code
    if code != 2 or "--retries" not in args:
        assert words in one_error_line(result)


def test_unusable_settings_and_allowlist_exit_4(project):
    result = project.cli("exec", "jobs", "noop", BGRUN_CONCURRENCY="many")
    assert result.returncode == 4
    assert "BGRUN_CONCURRENCY" in one_error_line(result)
    (project.path / "allowlist.toml").write_text('[jobs."jobs"]\nmethods = ["noop"]\nwild = 1\n')
    result = project.cli("exec", "jobs", "noop")
    assert result.returncode == 4
    assert "allowlist.toml:3:" in one_error_line(result)
    (project.path / "allowlist.toml").unlink()
    result = project.cli("exec", "jobs", "noop")
    assert result.returncode == 4 and "not found" in one_error_line(result)


def test_dotenv_settings_are_read_and_environment_wins(project, monkeypatch):
    (project.path / ".env").write_text("BGRUN_LOG_DIR=dotenv-logs\nBGRUN_RETRIES=2\n")
    job_id = project.cli("exec", "jobs", "noop").stdout.strip()
    assert (project.path / "dotenv-logs" / "bgrun.sqlite3").exists()
    assert project.show(job_id)["retries"] == 2
    assert project.cli("exec", "jobs", "noop", BGRUN_RETRIES="0").returncode == 0
    shown = json.loads(project.cli("list", "--json").stdout)
    assert [j["retries"] for j in shown] == [0, 2]


def test_run_in_the_foreground(project):
    result = project.cli("run", "jobs.Greeter", "greet", "ada")
    assert result.returncode == 0
    assert "hello ada!" in result.stdout
    assert "completed" in result.stderr
    failed = project.cli("run", "jobs", "fail", "--retries", "1")
    assert failed.returncode == 1
    assert "ValueError: boom" in failed.stderr
    assert len(project.marks("fail")) == 2
    statuses = [j["status"] for j in json.loads(project.cli("list", "--json").stdout)]
    assert statuses == ["failed", "completed"]
    assert project.cli("run", "os", "system", "id").returncode == 2


def test_check_lists_what_may_run(project):
    result = project.cli("check")
    assert "jobs.Greeter: agreet, greet" in result.stdout
    # check imports every target (in a child): the fixture's poison module fails to import
    assert result.returncode == 4
    assert "problem:" in result.stdout and "poison: SystemExit" in result.stdout


def test_help_and_usage_errors(project):
    assert project.cli("--help").returncode == 0
    assert project.cli("exec").returncode == 2
    assert project.cli("frobnicate").returncode == 2
    assert project.cli("list", "--status", "weird").returncode == 2


def test_python_module_entry_point_and_cancel_output(project):
    job_id = project.cli("exec", "jobs", "noop", "--delay", "30").stdout.strip()
    result = project.cli("cancel", job_id)
    assert (result.returncode, result.stdout.strip()) == (0, "cancelled")
    time.sleep(0.1)
    assert project.show(job_id)["status"] == "cancelled"
