"""Architecture rules kept by tests: only bgrun/store/ speaks SQL or builds job paths."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

PACKAGE = Path(__file__).parent.parent / "bgrun"
STORE = PACKAGE / "store"
SQL = re.compile(
    r"\b(SELECT\b[\s\S]*\bFROM|INSERT\s+(OR\s+\w+\s+)?INTO|UPDATE\s+\w+\s+SET|DELETE\s+FROM"
    r"|PRAGMA\s+\w+|BEGIN(\s+(IMMEDIATE|EXCLUSIVE|DEFERRED|TRANSACTION))?\s*$"
    r"|CREATE\s+(UNIQUE\s+)?(TABLE|INDEX))",
)  # keywords in capitals, as bgrun writes SQL: "Select the jobs to delete from" is prose


def strings(tree: ast.AST) -> list[tuple[int, str]]:
    """Every string literal, f-strings' literal parts included, with its line."""
    return [(n.lineno, n.value) for n in ast.walk(tree)
            if isinstance(n, ast.Constant) and isinstance(n.value, str)]


def sql_outside_the_store(root: Path) -> list[str]:
    found = []
    for path in sorted(root.rglob("*.py")):
        if STORE in path.parents:
            continue
        tree = ast.parse(path.read_text(), str(path))
        for node in ast.walk(tree):
            if isinstance(node, ast.Import | ast.ImportFrom):
                names = [a.name for a in node.names] + [getattr(node, "module", None) or ""]
                if any(n.split(".")[0] == "sqlite3" for n in names):
                    found.append(f"{path.name}:{node.lineno}: imports sqlite3")
        for line, text in strings(tree):
            if SQL.search(text):
                found.append(f"{path.name}:{line}: {text[:60]!r}")
    return found


def test_no_sql_and_no_sqlite3_outside_the_store_package():
    assert sql_outside_the_store(PACKAGE) == []


@pytest.mark.parametrize("code", [
    'import sqlite3\n',
    'from sqlite3 import connect\n',
    'Q = "SELECT id FROM jobs WHERE status = ?"\n',
    'def f(db):\n    db.execute(f"UPDATE jobs SET status = {1}")\n',
    'X = ("INSERT INTO jobs (a)"\n     " VALUES (1)")\n',
    'db.execute("PRAGMA synchronous=NORMAL")\n',
    'db.execute("BEGIN IMMEDIATE")\n',
    'db.execute("DELETE FROM attempts WHERE job_id = 1")\n',
])
def test_the_rule_catches_sql_put_back_into_another_module(tmp_path, code):
    (tmp_path / "control.py").write_text(code)
    assert sql_outside_the_store(tmp_path) != []


def test_the_rule_leaves_plain_words_alone(tmp_path):
    (tmp_path / "cli.py").write_text('HELP = "Select the jobs to delete from the list."\n'
                                     'B = "begin"\n# SELECT x FROM y in a comment\n')
    assert sql_outside_the_store(tmp_path) == []


def test_only_jobfiles_builds_a_job_s_file_paths():
    offenders = []
    for path in sorted(PACKAGE.rglob("*.py")):
        if path.name == "jobfiles.py":
            continue
        for line, text in strings(ast.parse(path.read_text())):
            if text in (".result", ".log") or text.endswith("}.result") or (
                    text == "jobs" and path.name != "allowlist.py"):  # its [jobs] table
                offenders.append(f"{path.name}:{line}: {text!r}")
    assert offenders == []


def test_the_child_names_not_allowed_as_errors_failure_does():
    from bgrun import _child
    from bgrun.errors import Failure

    assert f'"{Failure.NOT_ALLOWED.value}: ' in Path(_child.__file__).read_text()
