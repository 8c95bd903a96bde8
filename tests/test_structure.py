"""The package's structure: no import circle, small modules and functions, doctested examples.

The import graph is read from the installed package's source (module-level and
function-level imports alike), so a circle hidden inside a function counts too.
"""

from __future__ import annotations

import ast
import doctest
import importlib
import pkgutil
from pathlib import Path

import pytest

import hyperspy_partialscan

PACKAGE = Path(hyperspy_partialscan.__file__).parent
MAX_MODULE_LINES = 600
MAX_FUNCTION_LINES = 100


def _modules():
    """(dotted name, path) of every module of the package."""
    out = []
    for path in sorted(PACKAGE.rglob("*.py")):
        rel = path.relative_to(PACKAGE.parent).with_suffix("")
        parts = list(rel.parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        out.append((".".join(parts), path))
    return out


MODULES = _modules()
NAMES = {name for name, _ in MODULES}


def _resolve(module, node):
    """Package modules imported by an Import/ImportFrom node of ``module``."""
    if isinstance(node, ast.Import):
        targets = [a.name for a in node.names]
    else:
        if node.level:
            base = module.split(".")
            is_package = any(n == module and p.name == "__init__.py" for n, p in MODULES)
            base = base[: len(base) - node.level + (1 if is_package else 0)]
            prefix = ".".join(base + ([node.module] if node.module else []))
        else:
            prefix = node.module or ""
        targets = [prefix] + [f"{prefix}.{a.name}" for a in node.names]
    found = set()
    for t in targets:
        while t and t not in NAMES:
            t = t.rpartition(".")[0]
        if t:
            found.add(t)
    return found


def _graph():
    graph = {}
    for name, path in MODULES:
        tree = ast.parse(path.read_text())
        deps = set()
        for node in ast.walk(tree):
            if isinstance(node, (ast.Import, ast.ImportFrom)):
                deps |= _resolve(name, node)
        # a module depends on its own package's __init__ only through real imports; ignore self and parents
        graph[name] = {d for d in deps if d != name and not name.startswith(d + ".")}
    return graph


def _cycle(graph):
    """One import cycle as a list of modules, or None."""
    state, stack = {}, []

    def visit(n):
        state[n] = 1
        stack.append(n)
        for m in sorted(graph.get(n, ())):
            if state.get(m) == 1:
                return stack[stack.index(m):] + [m]
            if m not in state:
                found = visit(m)
                if found:
                    return found
        stack.pop()
        state[n] = 2
        return None

    for n in sorted(graph):
        if n not in state:
            found = visit(n)
            if found:
                return found
    return None


def test_no_import_circle():
    cycle = _cycle(_graph())
    assert cycle is None, "import circle: " + " -> ".join(cycle)


def test_cycle_detection_finds_a_planted_circle():
    assert _cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert _cycle({"a": {"b"}, "b": set()}) is None


def test_signal_module_is_imported_by_no_processing_module():
    graph = _graph()
    importers = sorted(n for n, deps in graph.items() if "hyperspy_partialscan.signals" in deps)
    assert importers == [], f"the signal module must only import the others, not be imported: {importers}"


@pytest.mark.parametrize("name,path", MODULES, ids=[n for n, _ in MODULES])
def test_module_and_function_sizes(name, path):
    source = path.read_text()
    assert len(source.splitlines()) <= MAX_MODULE_LINES, f"{name} has {len(source.splitlines())} lines"
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            body = node.body
            if body and isinstance(body[0], ast.Expr) and isinstance(getattr(body[0], "value", None), ast.Constant):
                body = body[1:]  # the docstring does not count
            if not body:
                continue
            lines = body[-1].end_lineno - body[0].lineno + 1
            assert lines <= MAX_FUNCTION_LINES, f"{name}.{node.name} has {lines} lines (docstring excluded)"


@pytest.mark.parametrize("name", sorted(NAMES))
def test_doctests(name):
    """Every Examples section of the package runs and gives what it shows."""
    module = importlib.import_module(name)
    result = doctest.testmod(module, optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE, verbose=False)
    assert result.failed == 0, f"{result.failed} of {result.attempted} doctest examples failed in {name}"


def test_every_public_function_has_an_executed_example():
    missing = []
    for name in hyperspy_partialscan.__all__:
        obj = getattr(hyperspy_partialscan, name)
        if callable(obj) and not isinstance(obj, type(hyperspy_partialscan)):
            doc = obj.__doc__ or ""
            if "Examples" not in doc or ">>>" not in doc:
                missing.append(name)
    assert missing == [], f"public API without an Examples section: {missing}"


def test_every_signal_method_has_a_full_docstring():
    from hyperspy_partialscan.signals import PartialScan2D

    for name in ("to_partial_scan", "complete_partial_scan", "denoise", "plot_scan_path"):
        doc = getattr(PartialScan2D, name).__doc__
        assert "Parameters" in doc and "Returns" in doc and ">>>" in doc, name
        assert "\nsignal :" not in doc, f"{name}: the method's docstring still documents `signal`"


def test_all_entries_exist():
    for name, _ in MODULES:
        module = importlib.import_module(name)
        for entry in getattr(module, "__all__", ()):
            assert hasattr(module, entry), f"{name}.__all__ names {entry!r}, which it does not define"


def test_package_walk_matches_files():
    walked = {m.name for m in pkgutil.walk_packages([str(PACKAGE)], prefix="hyperspy_partialscan.")}
    assert walked <= NAMES
