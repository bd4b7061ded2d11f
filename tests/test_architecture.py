"""The package's import graph: no cycles, dependencies pointing one way, imports at module top.

The graph is read from the source with :mod:`ast` (nothing is imported), so a violation is found whatever
the import order at run time happens to be.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = "scatterbird"
#: The repository folders and top-level modules that make up the installed package.
PARTS = ("pipeline", "models", "data")
TOP_MODULES = ("__init__.py", "__main__.py", "api.py", "cli.py", "errors.py", "version.py")


def package_modules() -> dict[str, Path]:
    """Every module of the package by its dotted name."""
    mods = {}
    for name in TOP_MODULES:
        if (ROOT / name).exists():
            mods[PACKAGE if name == "__init__.py" else f"{PACKAGE}.{name[:-3]}"] = ROOT / name
    for part in PARTS:
        for path in sorted((ROOT / part).rglob("*.py")):
            rel = path.relative_to(ROOT).with_suffix("").parts
            if rel[-1] == "__init__":
                rel = rel[:-1]
            mods[".".join((PACKAGE, *rel))] = path
    return mods


def _is_package(path: Path) -> bool:
    return path.name == "__init__.py"


def _absolute(module: str, path: Path, node: ast.ImportFrom) -> str:
    if not node.level:
        return node.module or ""
    base = module.split(".") if _is_package(path) else module.split(".")[:-1]
    base = base[: len(base) - (node.level - 1)]
    return ".".join(base + ([node.module] if node.module else []))


def _type_checking_block(node: ast.AST) -> bool:
    return isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test)


def imports_of(module: str, path: Path, known: set[str]) -> tuple[set[str], list[str]]:
    """(package modules imported at module level, package imports found inside functions or classes)."""
    tree = ast.parse(path.read_text(), filename=str(path))
    top: set[str] = set()
    nested: list[str] = []

    def targets(node: ast.AST) -> list[str]:
        if isinstance(node, ast.Import):
            return [a.name for a in node.names]
        if isinstance(node, ast.ImportFrom):
            base = _absolute(module, path, node)
            # `from pkg import mod` imports the submodule pkg.mod when there is one
            return [f"{base}.{a.name}" if f"{base}.{a.name}" in known else base for a in node.names]
        return []

    def visit(node: ast.AST, depth: int) -> None:
        for child in ast.iter_child_nodes(node):
            if _type_checking_block(child):
                continue
            inner = depth + isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef, ast.Lambda))
            for t in targets(child):
                if t == PACKAGE or t.startswith(PACKAGE + "."):
                    (nested.append(f"{path.relative_to(ROOT)}:{child.lineno}: {t}") if depth else top.add(t))
            visit(child, inner)

    visit(tree, 0)
    return top, nested


@pytest.fixture(scope="module")
def graph() -> dict[str, set[str]]:
    mods = package_modules()
    known = set(mods)
    return {m: imports_of(m, p, known)[0] for m, p in mods.items()}


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module, or a module importing itself (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def strong(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in graph.get(v, ()):
            if w not in graph:
                continue
            if w not in index:
                strong(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1 or v in graph.get(v, ()):
                found.append(sorted(comp))

    for v in sorted(graph):
        if v not in index:
            strong(v)
    return found


def test_the_cycle_finder_finds_a_known_cycle():
    g = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}, "e": {"e"}}
    assert sorted(_cycles(g)) == [["a", "b", "c"], ["e"]]
    assert _cycles({"a": {"b"}, "b": set()}) == []


def test_every_part_of_the_package_is_found(graph):
    for name in ("scatterbird", "scatterbird.cli", "scatterbird.errors", "scatterbird.models.registry",
                 "scatterbird.pipeline.frontend.scattering", "scatterbird.pipeline.detect.batch",
                 "scatterbird.data.synthetic"):
        assert name in graph, name
    assert "scatterbird.pipeline.frontend.audio" in graph["scatterbird.pipeline.detect.batch"]


def test_no_import_cycle(graph):
    assert _cycles(graph) == []


def _violations(graph: dict[str, set[str]], source: str, allowed) -> list[str]:
    return sorted(
        f"{m} imports {t}" for m, ts in graph.items() if m == source or m.startswith(source + ".")
        for t in ts if not allowed(t)
    )


def test_models_depend_on_arrays_and_the_feature_config_only(graph):
    def allowed(t: str) -> bool:
        return not t.startswith("scatterbird.pipeline") or t == "scatterbird.pipeline.config"

    assert _violations(graph, "scatterbird.models", allowed) == []


def test_the_front_end_knows_no_detector_store_or_later_stage(graph):
    def allowed(t: str) -> bool:
        later = ("scatterbird.models", "scatterbird.pipeline.detect", "scatterbird.pipeline.evaluate",
                 "scatterbird.pipeline.train", "scatterbird.pipeline.analysis", "scatterbird.cli")
        return not t.startswith(later)

    assert _violations(graph, "scatterbird.pipeline.frontend", allowed) == []


def test_data_imports_no_pipeline_stage_or_model(graph):
    def allowed(t: str) -> bool:
        return not t.startswith(("scatterbird.pipeline", "scatterbird.models", "scatterbird.cli"))

    assert _violations(graph, "scatterbird.data", allowed) == []


def test_nothing_inside_imports_the_public_face(graph):
    """Only the command line and ``python -m`` may build on the public API; the rest builds on the parts."""
    users = sorted(m for m, ts in graph.items() if ts & {"scatterbird", "scatterbird.api"}
                   and m not in ("scatterbird", "scatterbird.__main__", "scatterbird.cli"))
    assert users == []


def test_package_imports_are_at_module_top():
    mods = package_modules()
    nested = [line for m, p in mods.items() for line in imports_of(m, p, set(mods))[1]]
    assert nested == []
