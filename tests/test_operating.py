"""Operating bgrun as a new user does (issue 16): clear words for the usual mistakes."""

from __future__ import annotations

import json
import stat
import subprocess
import sys
import time

import pytest

from bgrun import run_background_job
from tests.conftest import wait_until


def one_error_line(result: subprocess.CompletedProcess[str]) -> str:
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("bgrun: error: "), result.stderr
    return lines[0]


def add_module(project, name: str, source: str, target: str, methods: list[str]) -> None:
    """Write `name.py` into the project and allow `target` with `methods`."""
    (project.path / f"{name}.py").write_text(source)
    with open(project.path / "allowlist.toml", "a") as f:
        f.write(f'\n[jobs."{target}"]\nmethods = {json.dumps(methods)}\n')


# -- item 8: usage errors are one line, as README says of every error -----------------

def test_click_usage_errors_are_one_line_with_exit_2(project):
    for args in (["list", "--bogus"], ["exec"], ["nosuchcommand"], ["wait"],
                 ["list", "--limit", "x"]):
        result = project.cli(*args)
        assert result.returncode == 2, args
        line = one_error_line(result)
        assert "--help" in line, line
    assert project.cli("--help").returncode == 0
    assert project.cli("list", "--help").stdout.startswith("Usage: bgrun list")


# -- item 7: the small things a user tripped on --------------------------------------

def test_exec_help_and_a_dotted_method_suggest_target_method(project):
    helped = project.cli("exec", "--help").stdout
    assert "TARGET METHOD [ARGS]..." in helped.split("Options:")[0].split("\n", 1)[1]
    assert "TARGET.METHOD(" not in helped
    alone = project.cli("exec", "jobs.Greeter.greet")
    assert alone.returncode == 2
    assert "'jobs.Greeter greet'" in one_error_line(alone)
    with_args = project.cli("exec", "jobs.Greeter.greet", "ada")
    assert with_args.returncode == 2
    assert "'jobs.Greeter greet'" in one_error_line(with_args)
    assert "did you mean" not in project.cli("exec", "jobs.Nope.greet", "x").stderr


def test_list_target_accepts_target_dot_method_as_list_prints_it(project):
    first = project.cli("exec", "jobs", "noop", "--delay", "60").stdout.strip()
    project.cli("exec", "jobs", "echo", "--delay", "60")
    listed = json.loads(project.cli("list", "--json", "--target", "jobs.noop").stdout)
    assert [j["id"] for j in listed] == [first]
    assert len(json.loads(project.cli("list", "--json", "--target", "jobs").stdout)) == 2
    assert "jobs.noop" in project.cli("list", "--target", "jobs.noop").stdout


def test_dir_of_bgrun_shows_the_api():
    import bgrun

    names = dir(bgrun)
    for name in ("run_background_job", "get_job", "Job", "Config", "BgrunError"):
        assert name in names
    assert "importlib" not in names and "TYPE_CHECKING" not in names


def test_unique_says_when_it_hands_back_an_existing_job(project):
    first = run_background_job("jobs", "sleep", [60], unique="nightly")
    assert first.existing is False
    again = run_background_job("jobs", "sleep", [60], unique="nightly")
    assert again.id == first.id and again.existing is True
    result = project.cli("exec", "jobs", "sleep", "60", "--unique", "nightly")
    assert result.returncode == 0 and result.stdout.strip() == first.id
    assert f"job {first.id}" in result.stderr and "nightly" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    fresh = project.cli("exec", "jobs", "noop", "--unique", "other")
    assert fresh.returncode == 0 and fresh.stderr == ""
    first.cancel()


def test_logs_of_a_job_whose_output_file_is_gone_says_so(project):
    job = run_background_job("jobs", "echo", ["hi"])
    assert job.wait(30) == "completed"
    assert "echo ('hi',)" in project.cli("logs", job.id).stdout
    (project.log_dir / "jobs" / f"{job.id}.log").unlink()
    for args in (["logs", job.id], ["logs", "-f", job.id]):
        result = project.cli(*args)
        assert result.returncode == 3, args
        assert "is gone" in one_error_line(result)
    waiting = run_background_job("jobs", "noop", delay=60)
    result = project.cli("logs", waiting.id)
    assert (result.returncode, result.stdout, result.stderr) == (0, "", "")


def test_a_log_dir_that_is_a_file_is_one_clear_line(project):
    for value in ("/dev/null", str(project.path / "jobs.py"), str(project.path / "jobs.py/x")):
        result = project.cli("exec", "jobs", "noop", BGRUN_LOG_DIR=value)
        assert result.returncode == 4, value
        line = one_error_line(result)
        assert "File exists" not in line and "folder" in line, line


def test_bgrun_keeps_the_mode_of_a_folder_it_did_not_make_and_warns_once(project):
    project.log_dir.mkdir(mode=0o755)
    project.log_dir.chmod(0o755)
    result = project.python(
        "from bgrun import run_background_job as r\n"
        "for _ in range(3): r('jobs', 'noop', delay=60)\n")
    assert result.returncode == 0, result.stderr
    assert stat.S_IMODE(project.log_dir.stat().st_mode) == 0o755
    warnings = [line for line in result.stderr.splitlines() if "bgrun: warning:" in line]
    assert len(warnings) == 1 and "chmod 700" in warnings[0], result.stderr
    assert stat.S_IMODE((project.log_dir / "jobs").stat().st_mode) == 0o700
    project.log_dir.chmod(0o700)
    assert "warning" not in project.cli("list").stderr


def test_forked_attempts_have_a_process_name_of_their_own(project, monkeypatch):
    if sys.platform != "linux":
        return
    monkeypatch.setenv("BGRUN_MODE", "fork")
    add_module(project, "named",
               "def comm():\n    return open('/proc/self/comm').read().strip()\n",
               "named", ["comm"])
    job = run_background_job("named", "comm")
    assert job.wait(30) == "completed"
    assert job.result == "bgrun-job"
    runners = wait_until(lambda: _runner_names(project), timeout=10)
    assert "bgrun-job" not in runners


def _runner_names(project) -> list[str]:
    from tests.conftest import runner_processes

    return [p.name() for p in runner_processes(project)]




# -- item 5: settings that exist, typos that are noticed, waits that say why --------

def test_bgrun_timeout_and_priority_defaults_rank_below_allowlist_and_call(project):
    env = {"BGRUN_TIMEOUT": "2", "BGRUN_PRIORITY": "3"}
    plain = project.cli("exec", "jobs", "noop", "--delay", "60", **env).stdout.strip()
    assert (project.show(plain)["timeout"], project.show(plain)["priority"]) == (2, 3)
    # jobs.Greeter sets priority = 0 in the allowlist: it wins over BGRUN_PRIORITY
    greeter = project.cli("exec", "jobs.Greeter", "greet", "x", "--delay", "60", **env)
    assert project.show(greeter.stdout.strip())["priority"] == 0
    called = project.cli("exec", "jobs", "noop", "--delay", "60", "--priority", "7",
                         "--timeout", "9", **env).stdout.strip()
    assert (project.show(called)["timeout"], project.show(called)["priority"]) == (9, 7)
    for bad in ({"BGRUN_TIMEOUT": "0"}, {"BGRUN_TIMEOUT": "soon"}, {"BGRUN_PRIORITY": "1.5"}):
        result = project.cli("exec", "jobs", "noop", **bad)
        assert result.returncode == 4, bad
        assert next(iter(bad)) in one_error_line(result)


def test_a_job_past_the_default_timeout_is_ended(project, monkeypatch):
    monkeypatch.setenv("BGRUN_TIMEOUT", "0.5")
    job = run_background_job("jobs", "sleep", [30])
    assert job.wait(30) == "failed"
    assert job.info()["error"].startswith("Timeout")


def test_unknown_bgrun_names_get_one_warning_line(project):
    project.ctx  # a store to list (reading commands make none)
    result = project.cli("list", BGRUN_CONCURENCY="1", BGRUN_NOPE="x")
    assert result.returncode == 0
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("bgrun: warning:"), result.stderr
    assert "BGRUN_CONCURENCY (did you mean BGRUN_CONCURRENCY?)" in lines[0]
    assert "BGRUN_NOPE" in lines[0]
    (project.path / ".env").write_text("BGRUN_RETRIE=2\n")
    assert "BGRUN_RETRIES?" in project.cli("list").stderr
    (project.path / ".env").unlink()
    assert project.cli("list").stderr == ""


def test_every_bgrun_name_the_code_reads_is_known():
    import re
    from pathlib import Path

    import bgrun
    from bgrun.config import KNOWN_NAMES

    source = "\n".join(p.read_text() for p in Path(bgrun.__file__).parent.rglob("*.py"))
    # (not Click's _BGRUN_COMPLETE, the shell-completion switch: no BGRUN_* setting)
    used = set(re.findall(r"(?<![A-Za-z0-9_])BGRUN_[A-Z][A-Z0-9_]*[A-Z0-9]", source))
    assert used <= KNOWN_NAMES, used - KNOWN_NAMES


def test_a_queued_job_says_why_it_waits(project, monkeypatch):
    monkeypatch.setenv("BGRUN_CONCURRENCY", "1")
    busy = run_background_job("jobs", "sleep", [30])
    wait_until(lambda: busy.status == "running")
    waiting = run_background_job("jobs", "noop")
    time.sleep(0.5)
    assert waiting.status == "queued"
    assert "every slot is busy" in waiting.info()["waiting_reason"]
    listed = json.loads(project.cli("list", "--json").stdout)
    reasons = {j["id"]: j["waiting_reason"] for j in listed}
    assert reasons[busy.id] is None and "every slot is busy" in reasons[waiting.id]
    assert "waiting: every slot is busy" in project.cli("list").stdout
    assert "every slot is busy" in project.cli("show", waiting.id).stdout
    assert "every slot is busy" in _api(f"/api/jobs/{waiting.id}")["waiting_reason"]
    assert {j["id"]: j["waiting_reason"] for j in _api("/api/jobs")} == reasons
    busy.cancel()
    assert waiting.wait(30) == "completed"
    assert waiting.info()["waiting_reason"] is None


def _api(path: str):
    """GET `path` from the dashboard's JSON API (Flask's test client, a real app)."""
    pytest.importorskip("flask")
    from bgrun.config import Config
    from bgrun.dashboard.app import create_app

    token = "test-token-0123456789abcdef"
    client = create_app(Config.load(), token).test_client()
    response = client.get(path, headers={"Authorization": f"Bearer {token}"})
    assert response.status_code == 200
    return response.get_json()


def test_a_job_held_by_a_broken_allowlist_says_so(project):
    job = run_background_job("jobs", "noop", delay=0.5)
    (project.path / "allowlist.toml").write_text("[jobs\n")
    time.sleep(1.0)
    info = project.show(job.id)
    assert info["status"] == "queued"
    assert "allowlist is unusable" in info["waiting_reason"]
    assert "allowlist.toml:1" in info["waiting_reason"]


# -- item 4: a long-lived caller checks new jobs against the code on disk --------------

SHOP_V1 = '''
class Mailer:
    def send(self, to):
        return "sent " + to


def resize(path, width: int):
    return [path, width]
'''

SHOP_V2 = '''
class Mailer:
    def send(self, to, subject="hi"):
        return "sent " + to + " " + subject

    def new_feature(self, level: int, loud: bool = False):
        return ["mailer", level, loud]


def resize(path, width: int, height: int = 0):
    return [path, width, height]


def new_feature(size: int):
    return size * 2


class Fresh:
    def run(self):
        return "fresh"
'''

LONG_LIVED_CALLER = '''
import json, pathlib, time
from bgrun import run_background_job, BgrunError
first = run_background_job("shop", "resize", ["a.png", 3])
assert first.wait(30) == "completed", first.info()
time.sleep(0.05)  # a new modification time, as a deploy gives
pathlib.Path("shop.py").write_text({v2!r})
with open("allowlist.toml", "a") as f:
    f.write({more!r})
jobs = [
    run_background_job("shop", "new_feature", [21]),
    run_background_job("shop", "resize", {{"path": "b.png", "width": 4, "height": 5}}),
    run_background_job("shop.Mailer", "new_feature", [2]),
    run_background_job("shop.Mailer", "send", ["ada"]),
    run_background_job("shop.Mailer", "send", {{"to": "ada", "subject": "news"}}),
    run_background_job("shop.Fresh", "run"),
]
print(json.dumps([[j.wait(30), j.result] for j in jobs]))
refused = []
for args in (("shop", "resize", ["c.png", 1, 2, 3]), ("shop", "gone", [])):
    try:
        run_background_job(*args)
    except BgrunError as exc:
        refused.append(type(exc).__name__)
print(json.dumps(refused))
'''


def test_a_long_lived_caller_accepts_what_the_file_on_disk_now_allows(project):
    (project.path / "shop.py").write_text(SHOP_V1)
    with open(project.path / "allowlist.toml", "a") as f:
        f.write('\n[jobs."shop"]\nmethods = ["resize", "new_feature", "gone"]\n'
                '\n[jobs."shop.Mailer"]\nmethods = ["send", "new_feature"]\n')
    more = '\n[jobs."shop.Fresh"]\nmethods = ["run"]\n'
    result = project.python(LONG_LIVED_CALLER.format(v2=SHOP_V2, more=more))
    assert result.returncode == 0, result.stderr
    done, refused = (json.loads(line) for line in result.stdout.splitlines()[-2:])
    assert done == [["completed", 42], ["completed", ["b.png", 4, 5]],
                    ["completed", ["mailer", 2, False]], ["completed", "sent ada hi"],
                    ["completed", "sent ada news"], ["completed", "fresh"]]
    assert refused == ["BadParamsError", "MethodNotFoundError"]


# -- item 6: check imports every target; a class that needs arguments is refused -------

PROBLEMS = '''
import sys

class NeedsArgs:
    def __init__(self, db):
        self.db = db

    def run(self):
        return None


class Fine:
    def run(self):
        return None


def work():
    return None

print("probe output must not break check")
'''


def test_check_reports_every_target_problem_with_file_and_line(project):
    (project.path / "probs.py").write_text(PROBLEMS)
    (project.path / "allowlist.toml").write_text(
        '[jobs."jobs"]\nmethods = ["noop"]\n'
        '\n[jobs."probs"]\nmethods = ["work", "wrok"]\n'
        '\n[jobs."probs.NeedsArgs"]\nmethods = ["run"]\n'
        '\n[jobs."probs.Fine"]\nmethods = ["run"]\n'
        '\n[jobs."nosuchmodule"]\nmethods = ["x"]\n'
        '\n[jobs."probs.Missing"]\nmethods = ["x"]\n'
        '\n[jobs."poison"]\nmethods = ["run"]\n')
    lines = (project.path / "allowlist.toml").read_text().splitlines()

    def line_of(needle: str) -> int:
        return next(i for i, line in enumerate(lines) if needle in line) + 1

    result = project.cli("check")
    assert result.returncode == 4
    assert one_error_line(result).endswith("(listed above)")
    problems = [line for line in result.stdout.splitlines() if line.startswith("problem:")]
    where = str(project.path / "allowlist.toml")
    assert len(problems) == 5, result.stdout
    assert f"{where}:{line_of('wrok')}: probs.wrok: MethodNotFound" in problems[0]
    assert f"{where}:{line_of('probs.NeedsArgs')}: probs.NeedsArgs: NotUsable" in problems[1]
    assert "'db'" in problems[1]
    assert f"{where}:{line_of('nosuchmodule')}: nosuchmodule: NotFound" in problems[2]
    assert f"{where}:{line_of('probs.Missing')}: probs.Missing: NotFound" in problems[3]
    assert f"{where}:{line_of('poison')}: poison: SystemExit" in problems[4]
    assert "probs" not in project.cli("list").stderr  # nothing stayed loaded: a new process
    (project.path / "allowlist.toml").write_text(
        '[jobs."probs.Fine"]\nmethods = ["run"]\ntimeout = 5\n')
    clean = project.cli("check")
    assert clean.returncode == 0, clean.stderr
    assert "problem:" not in clean.stdout and "warning:" not in clean.stdout


def test_check_refuses_a_standard_library_name_with_file_and_line(project):
    with open(project.path / "allowlist.toml", "a") as f:
        f.write('\n[jobs."json"]\nmethods = ["dumps"]\n')
    result = project.cli("check")
    assert result.returncode == 4
    assert "allowlist.toml:" in one_error_line(result) and "standard-library" in result.stderr


def test_check_warns_of_no_default_timeout_and_unknown_names(project):
    (project.path / "allowlist.toml").write_text('[jobs."jobs"]\nmethods = ["noop"]\n')
    result = project.cli("check", BGRUN_CONCURENCY="1")
    assert result.returncode == 0, result.stderr
    warnings = [line for line in result.stdout.splitlines() if line.startswith("warning:")]
    assert any("BGRUN_TIMEOUT" in w and "jobs" in w for w in warnings), result.stdout
    assert any("BGRUN_CONCURENCY (did you mean BGRUN_CONCURRENCY?)" in w for w in warnings)
    timed = project.cli("check", BGRUN_TIMEOUT="600")
    assert "BGRUN_TIMEOUT" not in timed.stdout


def test_queueing_refuses_a_class_that_needs_arguments(project):
    from bgrun import TargetNotUsableError

    add_module(project, "probs", PROBLEMS, "probs.NeedsArgs", ["run"])
    with pytest.raises(TargetNotUsableError, match="'db'"):
        run_background_job("probs.NeedsArgs", "run")
    result = project.cli("exec", "probs.NeedsArgs", "run")
    assert result.returncode == 2, result.stderr
    # the module's own print went to stderr: stdout is for the id alone
    assert result.stdout == ""
    assert "without arguments" in result.stderr.splitlines()[-1]
    assert project.events(errors=True)[-1]["status"] == "rejected"


# -- item 7: command-line words converted by simple annotations -------------------------

TYPED = '''
from __future__ import annotations
from typing import Optional


def resize(path: str, width: int, ratio: float = 1.0, keep: bool = False,
           limit: Optional[int] = None, *extra: int, **opts: float):
    return [path, width, ratio, keep, limit, list(extra), opts]


def untyped(a, b=None):
    return [a, b]
'''


def test_cli_words_are_converted_by_simple_annotations(project):
    add_module(project, "typed", TYPED, "typed", ["resize", "untyped"])
    ids = [project.cli("exec", "typed", "resize", *args).stdout.strip() for args in (
        ["p.jpg", "300", "1.5", "yes", "none", "4", "5"],
        ["--kw", "path=q", "--kw", "width=7", "--kw", "zoom=2.5", "--kw", "keep=off"],
        ["--kw", "path=r", "--kw-json", "width=8", "--kw", "limit=9"],
    )] + [project.cli("exec", "typed", "untyped", "300", "x").stdout.strip(),
          project.cli("exec", "typed", "resize", "s", "300", "--no-import-check").stdout.strip()]
    results = [project.wait(job_id)["result"] for job_id in ids]
    assert results == [["p.jpg", 300, 1.5, True, None, [4, 5], {}],
                       ["q", 7, 1.0, False, None, [], {"zoom": 2.5}],
                       ["r", 8, 1.0, False, 9, [], {}],
                       ["300", "x"],
                       ["s", "300", 1.0, False, None, [], {}]]  # no import, no conversion
    for args, word in ((["p", "wide"], "'wide' is not an int"), (["p", "1", "x"], "float"),
                       (["p", "1", "1", "maybe"], "bool"), (["p", "1", "1", "1", "nan?"], "int"),
                       (["p", "1", "inf"], "float")):
        result = project.cli("exec", "typed", "resize", *args)
        assert result.returncode == 2, args
        assert word in one_error_line(result), result.stderr
