"""Every example in the README works as written (in a fresh folder with the examples)."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
README = (ROOT / "README.md").read_text()


def blocks(language: str) -> list[str]:
    return re.findall(rf"```{language}\n(.*?)```", README, flags=re.S)


def example_folder(tmp_path: Path) -> Path:
    """The examples as a fresh clone has them, with every folder git would make there."""
    shutil.copytree(ROOT / "examples", tmp_path / "examples")
    shutil.copy(ROOT / "allowlist.toml", tmp_path / "allowlist.toml")
    tracked = subprocess.run(["git", "ls-files", "logs"], cwd=ROOT, capture_output=True,
                             text=True, check=True).stdout.split()
    for name in tracked:  # as a clone makes it: 0755, from the umask
        (tmp_path / name).parent.mkdir(mode=0o755, exist_ok=True)
        (tmp_path / name).parent.chmod(0o755)
        (tmp_path / name).touch()
    return tmp_path


def run_shell(command: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    bindir = str(Path(sys.executable).parent)
    env = {**os.environ, "PATH": bindir + os.pathsep + os.environ["PATH"]}
    return subprocess.run(["bash", "-c", command], cwd=cwd, capture_output=True, text=True,
                          timeout=120, env=env)


def test_quick_start_runs_a_job_and_shows_its_log(project):
    command = blocks("sh")[0].strip()
    assert command.startswith("pip install . && ")
    # The test environment has bgrun installed already: the rest runs as written.
    result = run_shell(command.removeprefix("pip install . && "), example_folder(project.path))
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""  # a fresh clone's first run has nothing to warn about
    assert "completed" in result.stdout
    assert "sent to ada@example.com" in result.stdout
    assert "status=completed" in result.stdout


def test_test_command_is_what_ci_runs():
    command = blocks("sh")[1].strip()
    assert command in (ROOT / ".ci" / "run").read_text()


def test_python_api_example(project):
    folder = example_folder(project.path)
    code = next(b for b in blocks("python") if "run_background_job" in b)
    result = subprocess.run([sys.executable, "-c", code], cwd=folder, capture_output=True,
                            text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[1] == "completed"
    assert "sent to ada@example.com" in lines[2]
    statuses = [line for line in lines if line in ("scheduled", "cancelled", "queued")]
    assert statuses == ["scheduled", "cancelled", "queued"]
    assert lines[-1] == "{'subject': 'Welcome'}"


def test_command_line_examples(project):
    folder = example_folder(project.path)
    block = next(b for b in blocks("sh") if b.startswith("bgrun exec"))
    ran = 0
    for line in block.splitlines():
        command = line.split("  #")[0].strip()
        if not command or command.startswith(("bgrun worker", "bgrun dashboard")):
            continue  # those serve until stopped
        result = run_shell(command, folder)
        # 3 is a legitimate answer for an example whose job is in another state.
        assert result.returncode in (0, 3), (command, result.stderr)
        assert "Traceback" not in result.stderr
        ran += 1
    assert ran >= 16


def test_allowlist_example_matches_the_file():
    toml = next(b for b in blocks("toml") if "examples.mail.Mailer" in b)
    assert "examples.tasks" in toml
    shipped = (ROOT / "allowlist.toml").read_text()
    for target in re.findall(r'\[jobs\."([^"]+)"\]', toml):
        assert f'[jobs."{target}"]' in shipped


def test_queues_example(project):
    folder = example_folder(project.path)
    toml = next(b for b in blocks("toml") if "[queues.reports]" in b)
    assert toml.split("#")[0].strip() in (ROOT / "allowlist.toml").read_text()
    block = next(b for b in blocks("sh") if "--queue reports" in b)
    ids = []
    for line in block.splitlines():
        command = line.split("  #")[0].strip()
        if command.startswith("bgrun worker"):
            continue  # serves until stopped
        result = run_shell(command, folder)
        assert result.returncode == 0, (command, result.stderr)
        if command.startswith("bgrun exec"):
            ids.append(result.stdout.strip())
        else:
            listed = result.stdout
    rows = {line.split()[0]: line.split()[1] for line in listed.splitlines()[1:]}
    assert set(rows) == {ids[0], ids[1]}, listed  # the reports jobs only
    assert list(rows.values()).count("running") <= 1, listed
    waited = run_shell(f"bgrun wait {ids[1]} --timeout 60 && bgrun wait {ids[2]}", folder)
    assert waited.returncode == 0, waited.stderr
    first, second = (json.loads(run_shell(f"bgrun show {i} --json", folder).stdout)
                     for i in ids[:2])
    assert first["queue"] == second["queue"] == "reports"
    assert second["started_at"] >= first["finished_at"]  # one at a time


def test_several_hosts_setup_works_as_written(project, pg_server, monkeypatch):
    """The role and database of "Several hosts", made by its SQL as written, then used
    with its URL (only the server's address is this test's, and no TLS: the throwaway
    cluster has no certificate)."""
    section = README.split("## Several hosts", 1)[1].split("\n## ", 1)[0]
    setup = re.findall(r"```sql\n(.*?)```", section, flags=re.S)[0]
    url = re.search(r"BGRUN_STORE=(postgresql://\S+?)'", section).group(1)
    host, port = pg_server.host_port
    url = url.replace("db.example.com:5432", f"{host}:{port}").replace("?sslmode=verify-full", "")
    for statement in filter(None, (s.strip() for s in setup.split(";"))):
        pg_server.admin(statement)
    try:
        monkeypatch.setenv("BGRUN_STORE", url)
        monkeypatch.setenv("BGRUN_HOST", "web1")
        queued = project.cli("exec", "jobs", "echo", "hi")
        assert queued.returncode == 0, queued.stderr
        waited = project.cli("wait", queued.stdout.strip())
        assert waited.stdout.strip() == "completed", waited.stderr
        checked = project.cli("check").stdout
        assert f"store postgresql://bgrun@{host}:{port}/bgrun (1 job(s); postgresql" in checked
        assert "change-me" not in checked
    finally:
        pg_server.admin("DROP DATABASE IF EXISTS bgrun WITH (FORCE)")
        pg_server.admin("DROP ROLE IF EXISTS bgrun")
