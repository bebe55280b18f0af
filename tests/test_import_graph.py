"""The package's layering, read from the source (every import, at module level or inside a function):
wings import only the core and the engine, never each other; the core and the engine import no wing;
the one module that knows every wing (``vlmattn.workflow``) is imported by none; and no two units
import each other, directly or through others."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from tests import REPO

PACKAGE = REPO / "vlmattn"
WINGS = ("extraction", "metrics", "contrasts", "pruning", "attribution", "validation")
ENGINE = "engine"
ROOT = "workflow"


def module_name(path: Path) -> str:
    parts = list(path.relative_to(REPO).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def is_module(name: str) -> bool:
    base = REPO.joinpath(*name.split("."))
    return base.with_suffix(".py").is_file() or (base / "__init__.py").is_file()


def imports(path: Path, name: str | None = None) -> set[str]:
    """The project modules ``path`` (module ``name``, by default its own) imports (``from p import m``
    counts module ``p.m`` when it is one)."""
    name, is_package = name or module_name(path), path.name == "__init__.py"
    out = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            out |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = name.split(".") if is_package else name.split(".")[:-1]
                base = base[: len(base) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module
            out.add(target)
            out |= {f"{target}.{a.name}" for a in node.names if is_module(f"{target}.{a.name}")}
    return {m for m in out if m == "vlmattn" or m.startswith("vlmattn.")}


def unit(module: str) -> str:
    """A wing, the engine, the root, or a core module or package (by its top-level name)."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "__init__"


def kind(u: str) -> str:
    return "wing" if u in WINGS else u if u in (ENGINE, ROOT) else "core"


@pytest.fixture(scope="module")
def edges() -> set[tuple[str, str, str, str]]:
    """``(unit, imported unit, module, imported module)`` for every import across units."""
    out = set()
    for path in PACKAGE.rglob("*.py"):
        m = module_name(path)
        for t in imports(path):
            if unit(m) != unit(t) and t != "vlmattn":
                out.add((unit(m), unit(t), m, t))
    return out


def test_the_units_exist(edges):
    assert all((PACKAGE / w / "__init__.py").is_file() for w in (*WINGS, ENGINE))
    assert {u for u, *_ in edges} >= {*WINGS, ENGINE, ROOT}


def wing_violations(edges) -> list[str]:
    return sorted(f"{m} -> {t}" for a, b, m, t in edges if kind(a) == "wing" and kind(b) in ("wing", ROOT))


def test_wings_import_only_the_core_and_the_engine(edges):
    assert wing_violations(edges) == []


def test_core_and_engine_import_no_wing(edges):
    bad = sorted(f"{m} -> {t}" for a, b, m, t in edges if kind(a) in ("core", ENGINE) and kind(b) in ("wing", ROOT))
    assert bad == []


def test_the_root_imports_every_wing_and_nothing_imports_it(edges):
    assert {b for a, b, *_ in edges if a == ROOT} >= set(WINGS) - {"extraction"}
    assert not [m for a, b, m, _ in edges if b == ROOT]


def test_no_import_circles_between_units(edges):
    graph: dict[str, set[str]] = {}
    for a, b, *_ in edges:
        graph.setdefault(a, set()).add(b)

    def reaches(start: str) -> set[str]:
        seen, todo = set(), [start]
        while todo:
            for n in graph.get(todo.pop(), ()):
                if n not in seen:
                    seen.add(n)
                    todo.append(n)
        return seen

    circles = sorted(u for u in graph if u in reaches(u))
    assert circles == [], {u: sorted(graph[u]) for u in circles}


def test_the_checker_sees_a_planted_cross_wing_import(tmp_path):
    """An import of one wing by another, written into a copy of a wing module, is reported."""
    probe = tmp_path / "vlmattn" / "contrasts" / "probe.py"
    probe.parent.mkdir(parents=True)
    probe.write_text("def f():\n    from ..pruning import scorers\n")
    m = "vlmattn.contrasts.probe"
    found = {(unit(m), unit(t), m, t) for t in imports(probe, m)}
    assert wing_violations(found) == ["vlmattn.contrasts.probe -> vlmattn.pruning",
                                      "vlmattn.contrasts.probe -> vlmattn.pruning.scorers"]

