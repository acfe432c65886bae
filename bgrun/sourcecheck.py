"""The queue-time check against the code on disk, for a caller whose copy is older.

A long-lived caller (a web app) imports a job's module once; after a deploy that adds a
method or a parameter, its copy refuses what the file on disk allows. So when the
imported copy refuses, the check asks the module's current source, read and parsed (with
`ast`, never run: no user code runs for it, in this process or another). A refusal
stands only if the source agrees; a method the source defines plainly (a `def` in the
module, or in the class or a base class of the same module) is checked against the
signature written there. The runner and the job child check again against the real code.

What the source cannot tell (a method made by a decorator, inherited from another
module, or assigned at run time) leaves the imported copy's answer standing.
"""

from __future__ import annotations

import ast
import inspect
import sys
from pathlib import Path

from bgrun.errors import TargetNotUsableError
from bgrun.files import Signature, file_signature

_PLAIN_DECORATORS = {"staticmethod", "classmethod"}
_trees: dict[str, tuple[Signature | None, ast.Module | None]] = {}


def current_signature(target: str, method: str) -> inspect.Signature | None:
    """The signature `target.method` has in its module's current source, as a call sees
    it (no `self`), or None where the source does not define it plainly.

    Raises TargetNotUsableError when the class's `__init__` there needs arguments.
    """
    module = sys.modules.get(target)
    class_name = None
    if module is None:
        module_name, _, class_name = target.rpartition(".")
        module = sys.modules.get(module_name)
    path = getattr(module, "__file__", None)
    tree = _tree(path) if isinstance(path, str) and path.endswith(".py") else None
    if tree is None:
        return None
    if class_name is None:
        func = _last_def(tree.body, method)
        return None if func is None else _signature(func, drop_first=False)
    cls = _last(tree.body, ast.ClassDef, class_name)
    if cls is None:
        return None
    init = _find_in_class(tree, cls, "__init__", 0)
    needed = [] if init is None else _required(init)
    if needed:
        raise TargetNotUsableError(f"class {target} cannot be made without arguments, as a"
                                   f" job makes it: its __init__ needs {', '.join(needed)}")
    func = _find_in_class(tree, cls, method, 0)
    if func is None:
        return None
    return _signature(func, drop_first=_decorator(func) != "staticmethod")


def _tree(path: str) -> ast.Module | None:
    """The parsed source at `path`, parsed again only when the file changed."""
    signature = file_signature(path)
    cached = _trees.get(path)
    if cached is not None and cached[0] == signature:
        return cached[1]
    try:
        tree: ast.Module | None = ast.parse(Path(path).read_bytes(), path)
    except (OSError, SyntaxError, ValueError):
        tree = None  # the import will say what is wrong with it; not this check
    if len(_trees) > 64:
        _trees.clear()
    _trees[path] = (signature, tree)
    return tree


FuncDef = ast.FunctionDef | ast.AsyncFunctionDef


def _last(body: list[ast.stmt], kind: type[ast.ClassDef], name: str) -> ast.ClassDef | None:
    found = None
    for node in body:
        if isinstance(node, kind) and node.name == name:
            found = node
    return found


def _last_def(body: list[ast.stmt], name: str) -> FuncDef | None:
    """The last plain `def name` of `body` (the one a module or class ends up with)."""
    found = None
    for node in body:
        if isinstance(node, FuncDef) and node.name == name:
            found = node
    if found is not None and _decorator(found) not in (None, *_PLAIN_DECORATORS):
        return None  # a decorator may change the signature: the source cannot tell
    return found


def _decorator(func: FuncDef) -> str | None:
    if not func.decorator_list:
        return None
    if len(func.decorator_list) == 1 and isinstance(func.decorator_list[0], ast.Name):
        return func.decorator_list[0].id
    return "?"


def _find_in_class(tree: ast.Module, cls: ast.ClassDef, name: str, depth: int
                   ) -> FuncDef | None:
    """`def name` in the class, or in a base class of the same module (first found)."""
    found = _last_def(cls.body, name)
    if found is not None or depth > 8:
        return found
    for base in cls.bases:
        parent = _last(tree.body, ast.ClassDef, base.id) if isinstance(base, ast.Name) else None
        if parent is not None:
            found = _find_in_class(tree, parent, name, depth + 1)
            if found is not None:
                return found
    return None


def _required(init: FuncDef) -> list[str]:
    """The names `__init__` needs a value for (beyond `self`)."""
    sig = _signature(init, drop_first=True)
    return [repr(p.name) for p in sig.parameters.values()
            if p.default is p.empty and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)]


_SOME_DEFAULT = object()  # the source's default values are not evaluated


def _signature(func: FuncDef, drop_first: bool) -> inspect.Signature:
    a = func.args
    P = inspect.Parameter
    positional = [(arg, P.POSITIONAL_ONLY) for arg in a.posonlyargs] + [
        (arg, P.POSITIONAL_OR_KEYWORD) for arg in a.args]
    first_default = len(positional) - len(a.defaults)
    params = [_param(arg, kind, i >= first_default) for i, (arg, kind) in enumerate(positional)]
    if drop_first:
        params = params[1:]
    if a.vararg is not None:
        params.append(_param(a.vararg, P.VAR_POSITIONAL, False))
    params += [_param(arg, P.KEYWORD_ONLY, default is not None)
               for arg, default in zip(a.kwonlyargs, a.kw_defaults, strict=True)]
    if a.kwarg is not None:
        params.append(_param(a.kwarg, P.VAR_KEYWORD, False))
    return inspect.Signature(params)


def _param(arg: ast.arg, kind: inspect._ParameterKind, has_default: bool) -> inspect.Parameter:
    annotation: object = inspect.Parameter.empty
    if arg.annotation is not None:
        annotation = ast.unparse(arg.annotation)  # a string, as under `from __future__ ...`
    return inspect.Parameter(arg.arg, kind, annotation=annotation,
                             default=_SOME_DEFAULT if has_default else inspect.Parameter.empty)
