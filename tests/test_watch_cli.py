"""`bgrun wait`'s progress bar on a real terminal, `bgrun runners`, and shell completion."""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import time

import pytest

from bgrun import run_background_job
from bgrun.procstart import process_start
from bgrun.runners import live_runners
from tests.conftest import wait_until

TMUX = shutil.which("tmux")


@pytest.fixture
def tmux(project):
    """A detached tmux server of our own (its own socket), 100 columns wide."""
    if TMUX is None or sys.platform == "win32":
        pytest.skip("no tmux")
    socket = str(project.path / "tmux.sock")

    def run(*args: str) -> str:
        return subprocess.run([TMUX, "-S", socket, *args], capture_output=True, text=True,
                              timeout=10, check=True).stdout

    yield run
    subprocess.run([TMUX, "-S", socket, "kill-server"], capture_output=True, timeout=10)


def test_wait_draws_a_bar_on_a_terminal_and_nothing_elsewhere(project, tmux):
    job = run_background_job("jobs", "report", [16, 0.4, "all rows loaded"])
    env = " ".join(f"{k}={shlex.quote(v)}" for k, v in os.environ.items()
                   if k.startswith(("BGRUN_", "JOBS_")))
    command = (f"cd {shlex.quote(str(project.path))} && env {env} {shlex.quote(sys.executable)}"
               f" -m bgrun wait {job.id}; echo exit=$?; sleep 30")
    tmux("new-session", "-d", "-x", "100", "-y", "10", "-s", "w", command)

    def screen() -> str:
        return tmux("capture-pane", "-p", "-t", "w")

    bar = re.compile(rf"job {job.id} \[(#*)(-*)\] +(\d+)/16 +(\d+)%(  ETA \d+:\d\d)?  step \d+")
    drawn = wait_until(lambda: bar.search(screen()), timeout=30)
    assert len(drawn.group(1)) + len(drawn.group(2)) >= 10
    assert int(drawn.group(4)) == 100 * int(drawn.group(3)) // 16
    wait_until(lambda: (m := bar.search(screen())) and m.group(5), timeout=30)  # an ETA
    final = wait_until(lambda: "exit=" in screen() and screen(), timeout=30)
    lines = [line for line in final.splitlines() if line.strip()]
    assert re.fullmatch(rf"job {job.id} \[#+\] 16/16 100%  all rows loaded", lines[0]), lines
    assert lines[1:3] == ["completed", "exit=0"]
    assert len(lines) == 3  # one line, redrawn in place
    plain = project.cli("wait", job.id)  # stderr not a terminal: no bar, no escapes
    assert (plain.returncode, plain.stdout, plain.stderr) == (0, "completed\n", "")


def test_runners_lists_live_runners_and_their_jobs(project, monkeypatch):
    project.ctx  # a store to read: reading commands never make one
    assert project.cli("runners").stdout == "no live runner\n"
    job = run_background_job("jobs", "report", [100, 0.3])
    wait_until(lambda: project.show(job.id)["progress"])
    runners = json.loads(project.cli("runners", "--json").stdout)
    busy = [r for r in runners if r["job"]]
    assert len(busy) == 1 and not busy[0]["idle"]
    assert busy[0]["job"]["id"] == job.id and busy[0]["job"]["method"] == "report"
    assert busy[0]["job"]["since"].endswith("+00:00") and busy[0]["queues"] is None
    assert busy[0]["job"]["progress"]["total"] == 100
    table = project.cli("runners").stdout
    assert re.search(rf"busy +{job.id} jobs\.report", table), table
    os.kill(busy[0]["pid"], signal.SIGKILL)  # its row stays in the store: never shown
    wait_until(lambda: busy[0]["pid"] not in
               [r["pid"] for r in json.loads(project.cli("runners", "--json").stdout)])
    assert project.wait(job.id)["error"].startswith("RunnerLost")


def test_an_idle_runner_reads_idle_then_leaves(project):
    later = run_background_job("jobs", "noop", delay=60)  # one runner stays for it, idle
    runners = wait_until(lambda: json.loads(project.cli("runners", "--json").stdout))
    assert all(r["idle"] and r["job"] is None for r in runners)
    assert re.search(r"\bidle\b", project.cli("runners").stdout)
    later.cancel()
    wait_until(lambda: project.cli("runners").stdout == "no live runner\n")


@pytest.mark.parametrize("shell", ["bash", "zsh", "fish"])
def test_click_completes_command_names(project, shell):
    # (fish passes the token being completed, bash and zsh its index)
    result = project.cli(_BGRUN_COMPLETE=f"{shell}_complete", COMP_WORDS="bgrun ru",
                         COMP_CWORD="ru" if shell == "fish" else "1")
    assert result.returncode == 0, result.stderr
    assert "runners" in result.stdout and "run" in result.stdout
    assert "exec" not in result.stdout


def test_bash_completes_a_command_name_through_the_sourced_script(project):
    bash = shutil.which("bash")
    if bash is None:
        pytest.skip("no bash")
    bindir = os.path.dirname(sys.executable)
    # (bash calls the function with the command's name, as here)
    script = ('eval "$(_BGRUN_COMPLETE=bash_source bgrun)"; COMP_WORDS=(bgrun runn);'
              ' COMP_CWORD=1; _bgrun_completion bgrun; echo "${COMPREPLY[@]}"')
    result = subprocess.run([bash, "-c", script], capture_output=True, text=True, timeout=60,
                            env={**os.environ, "PATH": bindir + os.pathsep + os.environ["PATH"]})
    assert result.stdout.split() == ["runners"], result.stderr


def test_a_dead_runners_stored_row_is_never_shown(project):
    ctx = project.ctx
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()  # a pid that existed and has ended
    ctx.store.register_runner(7, gone.pid, time.time() - 5, time.time())
    me = os.getpid()
    ctx.store.register_runner(8, me, process_start(me) + 3600, time.time())  # pid reused
    assert {r.slot for r in ctx.store.runner_rows()} >= {7, 8}
    assert json.loads(project.cli("runners", "--json").stdout) == []
    assert live_runners(ctx) == []
