"""`bgrun exec` without Click (bgrun/execwords.py) gives Click's answers, word for word."""

from __future__ import annotations

import re
import subprocess
import sys

import pytest

from bgrun.execwords import parse_exec

CLICK = "import sys; from bgrun.cli import main; sys.argv[0] = 'bgrun'; main()"
KEYS = ("target", "method", "params", "kwargs", "retries", "priority", "timeout", "queue",
        "status")


def run(project, argv: list[str], *, click: bool, **env: str) -> subprocess.CompletedProcess[str]:
    how = ["-c", CLICK] if click else ["-m", "bgrun"]
    return subprocess.run([sys.executable, *how, *argv], cwd=project.path, capture_output=True,
                          text=True, timeout=60, env={**dict(__import__("os").environ), **env})


def stored(project, job_id: str) -> dict[str, object]:
    shown = project.show(job_id)
    out = {key: shown[key] for key in KEYS}
    out["status"] = "scheduled" if out["status"] == "scheduled" else "ready"
    return out


def same_answer(project, argv: list[str], **env: str) -> subprocess.CompletedProcess[str]:
    fast, slow = run(project, argv, click=False, **env), run(project, argv, click=True, **env)
    assert (fast.returncode, fast.stderr) == (slow.returncode, slow.stderr), (fast, slow)
    if fast.returncode == 0 and re.fullmatch(r"\d+\n", fast.stdout):  # a job id
        assert re.fullmatch(r"\d+\n", slow.stdout)
        assert stored(project, fast.stdout.strip()) == stored(project, slow.stdout.strip())
    else:
        assert fast.stdout == slow.stdout  # nothing, or the help
    return fast


QUEUED = [
    ["exec", "jobs", "echo"],
    ["exec", "jobs", "echo", "a b", "", "-", "--retries", "2", "--priority=7", "c"],
    ["exec", "jobs", "echo", "--delay", "3600", "--timeout=2.5",
     "--queue", "q1", "--kw", "x=1", "--kw-json", 'y={"z": [1]}', "--kw", "w=="],
    ["exec", "jobs.Greeter", "greet", "ada", "--no-import-check", "--delay=3600.25"],
    ["exec", "jobs", "echo", "--params", '[1, "two", null]', "--kw-json", "n=3"],
    ["exec", "jobs", "echo", "--priority=-3", "--retries=0", "--delay", "0"],
]
REFUSED = [
    ["exec", "jobs"],  # no METHOD
    ["exec", "jobs.echo"],
    ["exec", "jobs", "nosuch"],
    ["exec", "nosuch", "f"],
    ["exec", "jobs", "echo", "--retries", "-1"],
    ["exec", "jobs", "echo", "--retries", "two"],
    ["exec", "jobs", "echo", "--priority", "-3"],  # a value like an option: Click's reading
    ["exec", "jobs", "echo", "--timeout", "0"],
    ["exec", "jobs", "echo", "--delay", "1e3"],
    ["exec", "jobs", "echo", "--retries", "1", "--retries", "2"],
    ["exec", "jobs", "echo", "--bogus"],
    ["exec", "jobs", "echo", "-x"],
    ["exec", "jobs", "echo", "-5"],
    ["exec", "jobs", "echo", "--", "-5"],
    ["exec", "jobs", "echo", "--kw", "novalue"],
    ["exec", "jobs", "echo", "--kw-json", "x={bad"],
    ["exec", "jobs", "echo", "--params", "[1]", "extra"],
    ["exec", "jobs", "echo", "--queue", "Bad Name"],
    ["exec", "jobs", "echo", "--retries"],
    ["exec", "jobs", "echo", "--no-import-check=1"],
    ["exec", "jobs", "echo", "--help"],
    ["exec", "jobs", "echo", "\x1b[31mred"],
    ["exec", "jobs\x1b[31m", "echo"],
    ["exec", "jobs", "greet", "ünï"],
]


@pytest.mark.parametrize("argv", QUEUED, ids=lambda a: " ".join(a[1:]))
def test_a_job_queued_without_click_is_the_job_click_queues(project, argv):
    same_answer(project, argv)


@pytest.mark.parametrize("argv", REFUSED, ids=lambda a: repr(" ".join(a[1:])))
def test_every_refusal_and_usage_error_is_click_s_own(project, argv):
    same_answer(project, argv)


def test_an_unknown_setting_is_warned_about_the_same_way(project):
    result = same_answer(project, ["exec", "jobs", "echo"], BGRUN_CONCURENCY="2")
    assert "BGRUN_CONCURENCY (did you mean BGRUN_CONCURRENCY?)" in result.stderr


def test_a_unique_key_still_held_says_so_the_same_way(project):
    argv = ["exec", "jobs", "echo", "--unique", "once", "--delay", "3600"]
    first = run(project, argv, click=False)
    fast, slow = run(project, argv, click=False), run(project, argv, click=True)
    assert fast.stdout == slow.stdout == first.stdout
    assert fast.stderr == slow.stderr and "nothing new was queued" in fast.stderr


def test_exec_imports_neither_click_nor_inspect_nor_the_runner_side(project):
    (project.path / "quick.py").write_text("def noop(a, b=1):\n    return None\n")
    with open(project.path / "allowlist.toml", "a") as f:
        f.write('\n[jobs."quick"]\nmethods = ["noop"]\n')
    run(project, ["exec", "quick", "noop", "1"], click=False)  # the store and a runner exist
    out = subprocess.run([sys.executable, "-X", "importtime", "-m", "bgrun", "exec", "quick",
                          "noop", "x", "--kw", "b=2", "--delay", "3600"], cwd=project.path,
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    modules = {line.split("|")[-1].strip() for line in out.stderr.splitlines()
               if line.startswith("import time:")}
    assert "bgrun.enqueue" in modules
    assert not modules & {"click", "bgrun.cli", "bgrun.attempt", "bgrun.forkrun", "difflib",
                          "inspect"}


@pytest.mark.parametrize("argv", [
    ["list"], ["exec"], ["exec", "jobs"], ["run", "jobs", "noop"], ["--version"],
    ["exec", "jobs", "noop", "--"], ["exec", "jobs", "noop", "--kw"],
])
def test_other_command_lines_are_left_to_click(argv):
    assert parse_exec(argv) is None


def test_the_words_are_what_click_passes():
    assert parse_exec(["exec", "t", "m", "a", "--kw", "x=1", "--kw=y=2", "b",
                       "--no-import-check", "--priority=-2", "--delay", "1.5"]) == {
        "target": "t", "method": "m", "args": ("a", "b"), "params_json": None,
        "kwargs": ("x=1", "y=2"), "json_kwargs": (), "retries": None, "delay": 1.5,
        "priority": -2, "timeout": None, "unique": None, "queue": None,
        "no_import_check": True,
    }
