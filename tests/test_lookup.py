"""The one "module or module.Class" lookup and file signature, and the child's lean copies."""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

import bgrun
from bgrun import _child, files, resolve
from bgrun.errors import ExitCode, ImportFailedError, RefusedError, TargetNotFoundError

MODULES = {
    "__init__.py": "",
    "mod.py": "class C:\n    def go(self):\n        return 'c'\n\ndef f():\n    return 'f'\n"
              "X = 1\n",
    "broken.py": "raise RuntimeError('boom at import')\n",
    "needsdep.py": "import no_such_dependency_of_bgrun_tests\nclass C:\n    pass\n",
    "sub/__init__.py": "",
    "sub/deep.py": "class D:\n    pass\n",
}
CASES = [  # relative to the package; every way a name can resolve or fail
    "", ".mod", ".mod.C", ".sub", ".sub.deep", ".sub.deep.D", ".mod.f", ".mod.X",
    ".mod.Missing", ".nosuch", ".nosuch.C", ".broken", ".broken.C", ".needsdep",
    ".needsdep.C", ".sub.nosuch.D",
]


@pytest.fixture
def package(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    name = f"lookup_pkg_{os.getpid()}_{tmp_path.name}".replace("-", "_")
    for rel, text in MODULES.items():
        path = tmp_path / name / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    monkeypatch.syspath_prepend(str(tmp_path))
    yield name
    for key in [k for k in sys.modules if k == name or k.startswith(name + ".")]:
        del sys.modules[key]


def _outcome(find, target: str) -> object:
    try:
        return ("found", find(target))
    except Exception:
        return ("failed",)


@pytest.mark.parametrize("case", CASES)
def test_the_child_finds_what_queueing_finds(package: str, case: str) -> None:
    target = package + case
    assert _outcome(_child._target, target) == _outcome(resolve.import_target, target)


def test_the_lookup_says_which_way_a_name_failed(package: str) -> None:
    assert resolve.import_target(package + ".mod.C").__name__ == "C"
    with pytest.raises(TargetNotFoundError):
        resolve.import_target(package + ".mod.f")
    with pytest.raises(TargetNotFoundError):
        resolve.import_target(package + ".nosuch")
    with pytest.raises(ImportFailedError, match="no_such_dependency_of_bgrun_tests"):
        resolve.import_target(package + ".needsdep.C")
    with pytest.raises(ImportFailedError, match="boom at import"):
        resolve.import_target(package + ".broken")


def test_import_failed_is_in_the_one_tree() -> None:
    assert issubclass(bgrun.ImportFailedError, RefusedError)
    assert ImportFailedError.exit_code == ExitCode.USAGE
    assert ImportFailedError.kind == "ImportFailed"
    assert str(ImportFailedError("importing x failed:\n  boom")) == "importing x failed: boom"
    assert "ImportFailedError" in bgrun.__all__


def test_the_child_signs_a_file_as_bgrun_does(tmp_path: Path) -> None:
    path = tmp_path / "allowlist.toml"
    path.write_text("a")
    first = files.file_signature(path)
    assert first is not None and _child._signature(str(path)) == first
    path.write_text("ab")
    assert _child._signature(str(path)) == files.file_signature(path) != first
    replaced = tmp_path / "new"
    replaced.write_text("ab")
    os.replace(replaced, path)
    assert _child._signature(str(path)) == files.file_signature(str(path))
    for other in (tmp_path / "missing", tmp_path):
        assert _child._signature(str(other)) == files.file_signature(other)
    assert files.file_signature(tmp_path / "missing") is None
