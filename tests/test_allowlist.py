"""The allowlist file: format, fail-closed errors with file and line, exact matching."""

from __future__ import annotations

import pytest

from bgrun import allowlist
from bgrun.errors import AllowlistError, BadNameError, NotAllowedError


def load_text(tmp_path, text: str) -> allowlist.Allowlist:
    path = tmp_path / "allowlist.toml"
    path.write_text(text)
    return allowlist.load(path)


def test_targets_methods_and_defaults(tmp_path):
    rules = load_text(tmp_path, '[jobs."a.B"]\nmethods = ["run", "go"]\nretries = 3\n'
                                'timeout = 2.5\npriority = -1\n').rules
    rule = rules["a.B"]
    assert rule.methods == {"run", "go"}
    assert (rule.retries, rule.timeout, rule.priority) == (3, 2.5, -1)


@pytest.mark.parametrize(("text", "line", "words"), [
    ('[jobs."a"]\nmethods = ["x"]\nextra = 1\n', 3, "unknown key"),
    ('[jobs."a"]\nmethods = "x"\n', 2, "wrong type"),
    ('[jobs."a"]\nmethods = ["x"]\nretries = true\n', 3, "wrong type"),
    ('[jobs."a"]\nmethods = ["_x"]\n', 2, "not a method name"),
    ('[jobs."a"]\nmethods = []\n', 2, "non-empty"),
    ('\n[jobs."a..b"]\nmethods = ["x"]\n', 2, "bad target"),
    ('[jobs."a"]\nmethods = ["x"\n', 2, "not valid TOML"),
    ('[other]\nx = 1\n', 1, "unknown top-level key"),
])
def test_errors_name_the_file_and_line(tmp_path, text, line, words):
    with pytest.raises(AllowlistError) as info:
        load_text(tmp_path, text)
    message = str(info.value)
    assert f"allowlist.toml:{line}" in message
    assert words in message
    assert "\n" not in message


def test_missing_file_fails_closed(tmp_path):
    with pytest.raises(AllowlistError, match="not found"):
        allowlist.load(tmp_path / "nope.toml")


@pytest.mark.parametrize(("target", "method"), [
    ("a", "y"), ("A", "x"), ("a ", "x"), ("a.b", "x"), ("\uff41", "x"), ("a", "\uff58"),
])
def test_only_exact_names_are_allowed(tmp_path, target, method):
    rules = load_text(tmp_path, '[jobs."a"]\nmethods = ["x"]\n')
    rules.check("a", "x")
    with pytest.raises(NotAllowedError):
        rules.check(target, method)


@pytest.mark.parametrize("name", ["", ".", "a.", ".a", "a..b", "1a", "a-b", "a.__class__",
                                  "__import__", "a\nb", "x" * 300, "é"])
def test_malformed_targets_are_bad_names(name):
    with pytest.raises(BadNameError):
        allowlist.check_names(name, "run")


@pytest.mark.parametrize("name", ["", "_x", "__init__", "a.b", "a b", "1x"])
def test_malformed_methods_are_bad_names(name):
    with pytest.raises(BadNameError):
        allowlist.check_names("a", name)


def test_edited_file_is_read_again(tmp_path):
    load_text(tmp_path, '[jobs."a"]\nmethods = ["x"]\n').check("a", "x")
    rules = load_text(tmp_path, '[jobs."a"]\nmethods = ["y"]\n')
    with pytest.raises(NotAllowedError):
        rules.check("a", "x")


def test_a_refusal_at_run_time_stands_only_if_a_second_read_agrees(tmp_path):
    import threading
    import time

    path = tmp_path / "allowlist.toml"
    good = '[jobs."jobs"]\nmethods = ["noop"]\n'
    path.write_text("")  # caught mid-rewrite: empty, a valid allowlist that allows nothing
    with pytest.raises(NotAllowedError):
        allowlist.load(path).check("jobs", "noop")  # what a single read concludes
    rewrite = threading.Timer(0.03, lambda: path.write_text(good))
    rewrite.start()
    rules = allowlist.check_at_run_time(path, "jobs", "noop")
    rewrite.join()
    assert "jobs" in rules.rules

    path.write_text('[jobs."other"]\nmethods = ["x"]\n')  # a real refusal: confirmed, then raised
    start = time.monotonic()
    with pytest.raises(NotAllowedError):
        allowlist.check_at_run_time(path, "jobs", "noop")
    assert time.monotonic() - start >= allowlist.RECHECK_AFTER
    start = time.monotonic()
    with pytest.raises(BadNameError):  # a name's form does not depend on the file: at once
        allowlist.check_at_run_time(path, "jobs.__x__", "noop")
    assert time.monotonic() - start < allowlist.RECHECK_AFTER


@pytest.mark.parametrize("target", ["json", "os.path", "code.Runner", "_json", "email.mime"])
def test_a_standard_library_target_is_refused_at_load(tmp_path, target):
    # A local json.py would run in spawn mode and under `bgrun run`, while a forked job
    # and the queue-time check see the standard library's json: never allow-listed.
    assert allowlist.shadows_stdlib(target)
    with pytest.raises(AllowlistError) as info:
        load_text(tmp_path, f'[jobs."jobs"]\nmethods = ["x"]\n\n[jobs."{target}"]\n'
                            'methods = ["loads"]\n')
    message = str(info.value)
    assert "allowlist.toml:4:" in message
    assert "standard-library module" in message


@pytest.mark.parametrize("target", ["jobs", "jsonx.loads", "myapp.json", "Json", "tests"])
def test_names_near_the_standard_library_are_not_shadows(target):
    assert not allowlist.shadows_stdlib(target)


def test_a_standard_library_target_stops_the_cli_with_file_and_line(project):
    (project.path / "json.py").write_text("def dumps(*a):\n    print('local json ran')\n")
    with (project.path / "allowlist.toml").open("a") as f:
        f.write('\n[jobs."json"]\nmethods = ["dumps"]\n')
    for command in ("exec", "run"):
        result = project.cli(command, "json", "dumps", "1")
        assert result.returncode == 4, result.stderr
        assert "standard-library module" in result.stderr
        assert "local json ran" not in result.stdout
        assert "allowlist.toml:" in result.stderr
