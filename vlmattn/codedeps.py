"""The project files a job's code reads: the closure of its imports, derived from the source.

A rule's code inputs are :func:`code_files` of its workflow script (and of the modules it loads by
name, such as a metric's module). The walk reads each file once with :mod:`ast` (nothing is
imported or run, so it works at workflow parse time without torch) and follows imports at the
granularity of top-level functions and classes:

* a unit is a module's top level (the code that runs when it is imported: its module-level imports
  and statements) or one top-level function or class of it;
* importing module ``a.b.c`` runs the top levels of ``a``, ``a.b`` and ``a.b.c``;
* ``from m import f`` with ``f`` a function or class of ``m`` reaches unit ``(m, f)``; a unit
  reaches what its body imports (an import inside a function is code the job may run) and the
  top-level functions and classes of its module it names;
* a module object bound by an import (``import m``, ``from pkg import m``) reaches ``(m, f)`` for
  each ``m.f`` the scope uses, and the whole module when the scope uses ``m`` otherwise.

The files of every unit reached are the job's code: editing one reruns the jobs whose code reads it,
and editing another function of the same file does too (the unit of a rerun is the file), but a
module that no reached unit imports is not an input.
"""

from __future__ import annotations

import ast
from collections.abc import Iterable
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path

PACKAGE = "vlmattn"
TOP = ""  # the unit of a module's top level
WHOLE = "*"  # every unit of a module


def _module_file(root: Path, name: str) -> Path | None:
    """The file of module ``name`` (``a.b`` → ``a/b.py`` or ``a/b/__init__.py``) under ``root``."""
    base = root.joinpath(*name.split("."))
    for path in (base.with_suffix(".py"), base / "__init__.py"):
        if path.is_file():
            return path
    return None


def _with_parents(name: str) -> list[str]:
    """``a.b.c`` → ``[a, a.b, a.b.c]``: importing a module runs its parent packages."""
    parts = name.split(".")
    return [".".join(parts[: i + 1]) for i in range(len(parts))]


@dataclass
class _Scope:
    """What one unit's body does: the units it imports and the names it loads."""

    imports: set[tuple[str, str]] = field(default_factory=set)  # (module, unit)
    modules: dict[str, str] = field(default_factory=dict)  # alias -> module bound as an object
    attrs: dict[str, set[str]] = field(default_factory=dict)  # alias -> attributes used
    bare: set[str] = field(default_factory=set)  # aliases used other than as alias.attr
    names: set[str] = field(default_factory=set)  # names loaded


@dataclass
class _Module:
    top: _Scope
    defs: dict[str, _Scope]


def _base(package: str, node: ast.ImportFrom) -> str:
    if not node.level:
        return node.module or ""
    anchor = package.split(".") if package else []
    anchor = anchor[: len(anchor) - (node.level - 1)]
    return ".".join(anchor + ([node.module] if node.module else []))


def _scan(root: Path, package: str, body: list[ast.stmt], scope: _Scope, nested: bool) -> None:
    """Fill ``scope`` from the statements ``body``; with ``nested`` False, top-level defs are skipped
    (they are units of their own)."""
    for stmt in body:
        if not nested and isinstance(stmt, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            for d in stmt.decorator_list:  # decorators run at import time
                _scan_expr(d, scope)
            continue
        for node in ast.walk(stmt):
            if isinstance(node, ast.Import):
                for a in node.names:
                    if a.name.split(".")[0] != PACKAGE:
                        continue
                    scope.imports.add((a.name, TOP))
                    if a.asname:
                        scope.modules[a.asname] = a.name
                    else:
                        scope.modules[a.name.split(".")[0]] = a.name.split(".")[0]
            elif isinstance(node, ast.ImportFrom):
                base = _base(package, node)
                if base.split(".")[0] != PACKAGE:
                    continue
                scope.imports.add((base, TOP))
                for a in node.names:
                    sub = f"{base}.{a.name}"
                    if _module_file(root, sub):
                        scope.imports.add((sub, TOP))
                        scope.modules[a.asname or a.name] = sub
                    else:
                        scope.imports.add((base, a.name))
            else:
                _scan_expr(node, scope, walk=False)


def _scan_expr(node: ast.AST, scope: _Scope, walk: bool = True) -> None:
    for n in ast.walk(node) if walk else (node,):
        if isinstance(n, ast.Attribute) and isinstance(n.value, ast.Name):
            scope.attrs.setdefault(n.value.id, set()).add(n.attr)
        elif isinstance(n, ast.Name) and isinstance(n.ctx, ast.Load):
            scope.names.add(n.id)


def _bare_uses(tree: ast.AST) -> set[str]:
    """Names loaded other than as the value of an attribute access."""
    under = {id(n.value) for n in ast.walk(tree) if isinstance(n, ast.Attribute) and isinstance(n.value, ast.Name)}
    return {n.id for n in ast.walk(tree)
            if isinstance(n, ast.Name) and isinstance(n.ctx, ast.Load) and id(n) not in under}


@cache
def _parse(root: Path, path: Path) -> _Module:
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    if path.is_relative_to(root):
        parts = list(path.relative_to(root).with_suffix("").parts)
        here = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
    else:
        here = ""
    package = here if path.name == "__init__.py" else here.rpartition(".")[0]
    top = _Scope()
    _scan(root, package, tree.body, top, nested=False)
    top.bare = _bare_uses(ast.Module(body=[s for s in tree.body if not isinstance(
        s, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef))], type_ignores=[]))
    defs = {}
    for stmt in tree.body:
        if isinstance(stmt, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            s = _Scope()
            _scan(root, package, [stmt], s, nested=True)
            s.bare = _bare_uses(stmt)
            defs[stmt.name] = s
    return _Module(top, defs)


def _reached(root: Path, path: Path, unit: str) -> list[tuple[str, str] | tuple[Path, str]]:
    """The units unit ``unit`` of file ``path`` reaches directly (module names or, for an entry file
    outside the package, paths)."""
    mod = _parse(root, path)
    if unit == WHOLE:
        return [(path, TOP)] + [(path, name) for name in mod.defs]
    scope = mod.top if unit == TOP else mod.defs.get(unit)
    if scope is None:  # a constant or other module-level name: the top level holds it
        return [(path, TOP)]
    out: list = [(path, TOP)] if unit != TOP else []
    out += sorted(scope.imports)
    for alias, name in scope.modules.items():
        if alias in scope.bare or alias not in scope.attrs:
            out.append((name, WHOLE))
        else:
            out += [(name, attr) for attr in sorted(scope.attrs[alias])]
    out += [(path, name) for name in sorted(scope.names & set(mod.defs)) if name != unit]
    return out


def code_files(root: str | Path, entries: Iterable[str | Path]) -> list[Path]:
    """Sorted files of the project units the ``entries`` reach, the entries' own files included.

    ``root`` is the folder that holds the ``vlmattn`` package (the repository); an entry is a path
    (a workflow script, a module file: its top level) or a dotted module name (``vlmattn.metrics.spatial``,
    the whole module, for a module a job loads by name). Raises ValueError for a module name without
    a file.
    """
    root = Path(root).resolve()
    todo: list[tuple[Path, str]] = []
    for entry in entries:
        if isinstance(entry, Path) or str(entry).endswith(".py"):
            todo.append((Path(entry).resolve(), TOP))
        else:
            path = _module_file(root, str(entry))
            if path is None:
                raise ValueError(f"no module {entry!r} under {root}")
            todo += [(_module_file(root, p), TOP) for p in _with_parents(str(entry))] + [(path, WHOLE)]
    seen: set[tuple[Path, str]] = set()
    while todo:
        path, unit = todo.pop()
        if (path, unit) in seen:
            continue
        seen.add((path, unit))
        for target, sub in _reached(root, path, unit):
            if isinstance(target, Path):
                todo.append((target, sub))
                continue
            for parent in _with_parents(target):
                f = _module_file(root, parent)
                if f is not None:
                    todo.append((f, TOP))
            f = _module_file(root, target)
            if f is not None:
                todo.append((f, sub))
    return sorted({path for path, _ in seen})
