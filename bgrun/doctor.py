"""`bgrun check`: what may run, and every problem found, each with its file and line.

The targets are imported in a child process (`bgrun/_probe.py`), with the jobs'
interpreter and the working directory first on `sys.path`, as a job would: nothing they
load stays in the command, and an import that hangs is given up after PROBE_TIMEOUT.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from bgrun.allowlist import Allowlist
from bgrun.config import Config, merged_environ, unknown_names
from bgrun.files import OPEN_FOLDERS
from bgrun.launcher import without_secrets

PROBE = str(Path(__file__).resolve().with_name("_probe.py"))
PROBE_TIMEOUT = 60.0  # seconds for importing every target


def target_problems(config: Config, rules: Allowlist) -> list[str]:
    """One line per problem, `FILE:LINE: TARGET[.METHOD]: Kind: message`."""
    python = config.python or sys.executable
    payload = json.dumps({t: sorted(rule.methods) for t, rule in rules.rules.items()})
    where = str(rules.path)
    try:
        done = subprocess.run([python, PROBE], input=payload, capture_output=True, text=True,
                              timeout=PROBE_TIMEOUT, env=without_secrets(os.environ),
                              check=False)
    except subprocess.TimeoutExpired:
        return [f"{where}: importing the targets took more than {PROBE_TIMEOUT:g} s"
                " (an import that blocks?)"]
    except OSError as exc:
        return [f"{where}: cannot start {python} to import the targets: {exc.strerror}"]
    try:
        found = json.loads(done.stdout)
    except ValueError:
        last = (done.stderr.strip().splitlines() or ["(nothing on stderr)"])[-1]
        return [f"{where}: importing the targets failed ({python} exited"
                f" {done.returncode}): {last}"]
    text = rules.path.read_text(errors="replace")
    return [f"{where}:{_line(text, target, method)}: {target}{'.' + method if method else ''}:"
            f" {message}" for target, method, message in found]


def warnings(config: Config, rules: Allowlist) -> list[str]:
    """What may hurt later: typos in BGRUN_* names, no default timeout, open folders."""
    found = [f"unknown setting, ignored: {name}"
             for name in unknown_names(merged_environ(Path.cwd(), os.environ))]
    endless = sorted(t for t, rule in rules.rules.items() if rule.timeout is None)
    if config.timeout is None and endless:
        found.append("no default timeout (BGRUN_TIMEOUT): a job of "
                     f"{', '.join(endless)} that never ends holds a slot for good")
    found.extend(OPEN_FOLDERS.values())
    return found


def _line(text: str, target: str, method: str | None) -> int:
    """The line of the target's table, or of the method's name in it."""
    lines = text.splitlines()
    start = next((i for i, line in enumerate(lines)
                  if line.lstrip().startswith("[") and target in line), 0)
    if method is not None:
        for i in range(start, len(lines)):
            if i > start and lines[i].lstrip().startswith("["):
                break
            if f'"{method}"' in lines[i] or f"'{method}'" in lines[i]:
                return i + 1
    return start + 1
