"""The shape of the code (issue 11): no import cycle in ``nrm`` or ``nrm_verify`` (counting
imports inside functions), no private name used across modules, at most a dozen entries
at ``nrm_verify``'s top level, no function over 80 lines, distinct class names for the
ideas a reader meets (one ``Case``), and ``nrm`` free of the verification layer's
dependencies."""

from __future__ import annotations

import ast
import collections
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("nrm", "nrm_verify")
MAX_FUNCTION_LINES = 80
MAX_TOP_LEVEL = 12


def _modules() -> dict[str, Path]:
    out = {}
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            parts = path.relative_to(ROOT).with_suffix("").parts
            name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
            out[name] = path
    return out


MODULES = _modules()
TREES = {name: ast.parse(path.read_text(encoding="utf-8"), str(path)) for name, path in MODULES.items()}


def _imported(module: str, node: ast.AST) -> list[str]:
    """The project modules an import statement loads (the module itself for ``from m import name``)."""
    if isinstance(node, ast.Import):
        names = [a.name for a in node.names]
    elif isinstance(node, ast.ImportFrom):
        base = node.module or ""
        if node.level:
            package = module.split(".")
            if not str(MODULES[module]).endswith("__init__.py"):
                package = package[:-1]
            package = package[: len(package) - node.level + 1]
            base = ".".join(package + ([base] if base else []))
        names = [f"{base}.{a.name}" if f"{base}.{a.name}" in MODULES else base for a in node.names]
    else:
        return []
    out = []
    for name in names:
        while name not in MODULES and "." in name:
            name = name.rsplit(".", 1)[0]
        if name in MODULES and name != module:
            out.append(name)
            parts = name.split(".")  # importing a.b.c runs a/__init__ and a/b/__init__ first
            out += [p for p in (".".join(parts[:i]) for i in range(1, len(parts)))
                    if p in MODULES and not module.startswith(p + ".") and p != module]
    return out


def import_graph() -> dict[str, set[str]]:
    return {m: {d for node in ast.walk(tree) for d in _imported(m, node)} for m, tree in TREES.items()}


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []
    counter = [0]

    def visit(v: str) -> None:
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on_stack.add(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in graph:
        if v not in index:
            visit(v)
    return found


def test_no_import_cycle():
    graph = import_graph()
    found = cycles(graph)
    assert not found, "import cycles (counting imports inside functions):\n" + "\n".join(
        f"  {c}: " + "; ".join(f"{a} → {sorted(graph[a] & set(c))}" for a in c) for c in found)


def test_the_cycle_finder_finds_a_cycle():
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert cycles({"a": {"b"}, "b": set()}) == []


def _private(name: str) -> bool:
    return name.startswith("_") and not name.startswith("__")


def _defined_privates(tree: ast.AST) -> set[str]:
    """Private names a module defines: functions, classes, module and class attributes,
    and attributes it assigns on objects (``self._x = …``)."""
    out = set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)) and _private(node.name):
            out.add(node.name)
        elif isinstance(node, ast.Name) and isinstance(node.ctx, ast.Store) and _private(node.id):
            out.add(node.id)
        elif isinstance(node, ast.Attribute) and isinstance(node.ctx, ast.Store) and _private(node.attr):
            out.add(node.attr)
        elif isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name) and _private(node.target.id):
            out.add(node.target.id)
    return out


def private_uses() -> list[str]:
    """``from project.module import _name``, and ``obj._name`` where this module does not
    define ``_name`` but another module of the project does."""
    defined = {m: _defined_privates(tree) for m, tree in TREES.items()}
    anywhere = set().union(*defined.values())
    out = []
    for m, tree in TREES.items():
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and (node.level or (node.module or "").split(".")[0] in PACKAGES):
                out += [f"{m}:{node.lineno} imports {a.name}" for a in node.names if _private(a.name)]
            elif isinstance(node, ast.Attribute) and _private(node.attr) and node.attr not in defined[m] \
                    and node.attr in anywhere:
                out.append(f"{m}:{node.lineno} reads {ast.unparse(node)}")
    return out


def test_no_private_name_used_across_modules():
    found = private_uses()
    assert not found, "private names used across modules:\n  " + "\n  ".join(found)


def test_top_level_of_nrm_verify_is_small():
    entries = [p.name for p in (ROOT / "nrm_verify").iterdir() if p.name not in ("__pycache__",)]
    assert len(entries) <= MAX_TOP_LEVEL, sorted(entries)


def long_functions(limit: int = MAX_FUNCTION_LINES) -> list[str]:
    out = []
    for m, tree in TREES.items():
        for node in ast.walk(tree):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                lines = node.end_lineno - node.lineno + 1
                if lines > limit:
                    out.append(f"{m}.{node.name}: {lines} lines")
    return out


def test_no_function_over_80_lines():
    found = long_functions()
    assert not found, found


def test_class_names_are_distinct():
    """The same class name in two modules makes a reader (and a traceback) guess which is
    meant; the exceptions are listed with their reason."""
    allowed = {
        "Sum": "nrm.markers.Sum (a module marking a sum in a model) and nrm.layers.Sum (its layer kind's role)",
        "Concat": "nrm.markers.Concat and nrm.layers.Concat, likewise",
    }
    where = collections.defaultdict(list)
    for m, tree in TREES.items():
        for node in tree.body:
            if isinstance(node, ast.ClassDef) and not _private(node.name):
                where[node.name].append(m)
    repeated = {name: mods for name, mods in where.items() if len(mods) > 1 and name not in allowed}
    assert not repeated, repeated


@pytest.mark.parametrize("package", ["sympy", "hypothesis", "nrm_verify"])
def test_nrm_never_imports_the_verification_layer(package):
    """``nrm`` runs with torch and numpy alone: no import of sympy, hypothesis or
    nrm_verify anywhere in it, not even inside a function."""
    found = []
    for m, tree in TREES.items():
        if not m.startswith("nrm.") and m != "nrm":
            continue
        for node in ast.walk(tree):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else \
                [node.module or ""] if isinstance(node, ast.ImportFrom) and not node.level else []
            found += [f"{m}:{node.lineno}" for n in names if n.split(".")[0] == package]
    assert not found, found
