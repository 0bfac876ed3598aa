"""The walls between core/'s subpackages (docs/layout.md): checked on the import statements of every module."""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

from core import config

CORE = config.PROJECT_ROOT / "core"


def _imports(path: Path) -> set[str]:
    """Every module named by an import statement in ``path`` (top level and inside functions)."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
            if node.module == "core":
                names.update(f"core.{a.name}" for a in node.names)
    return names


def _modules(sub: str) -> list[Path]:
    return sorted((CORE / sub).rglob("*.py"))


def test_every_subpackage_has_modules() -> None:
    for sub in ("data", "engine", "analysis", "views", "app", "cli"):
        assert [p for p in _modules(sub) if p.name != "__init__.py"], sub


@pytest.mark.parametrize("path", _modules("data"), ids=lambda p: p.name)
def test_data_imports_nothing_above_it(path: Path) -> None:
    above = {n for n in _imports(path) if n.startswith(("core.engine", "core.analysis", "core.views", "core.app", "core.cli"))}
    assert not above, f"{path.name} imports {above}"


@pytest.mark.parametrize("path", _modules("engine"), ids=lambda p: p.name)
def test_engine_does_not_import_views_or_app(path: Path) -> None:
    # training scores held-out cases for its model card with analysis.metrics (a numpy-only leaf): the one exception
    bad = {n for n in _imports(path) if n.startswith(("core.views", "core.app", "core.cli"))
           or (n.startswith("core.analysis") and n != "core.analysis.metrics")}
    assert not bad, f"{path.name} imports {bad}"


def test_only_app_imports_streamlit_and_only_engine_imports_tensorflow() -> None:
    for path in sorted(CORE.rglob("*.py")):
        names = _imports(path)
        sub = path.relative_to(CORE).parts[0]
        if any(n.split(".")[0] == "streamlit" for n in names):
            assert sub == "app", f"{path} imports streamlit"
        if any(n.split(".")[0] in {"tensorflow", "keras"} for n in names):
            assert sub == "engine", f"{path} imports tensorflow/keras"


PAGES = sorted((config.PROJECT_ROOT / "pages").glob("*.py")) + [config.PROJECT_ROOT / "Home.py"]


@pytest.mark.parametrize("path", PAGES, ids=lambda p: p.name)
def test_pages_reach_the_engine_through_app_only(path: Path) -> None:
    """Anything that runs the model (or checks a case for it) goes through core/app; the CLI is not the pages' API."""
    bad = {n for n in _imports(path) if n.startswith(("core.engine", "core.cli"))
           or n.split(".")[0] in {"tensorflow", "keras", "onnxruntime"}}
    assert not bad, f"{path.name} imports {bad}"


@pytest.mark.parametrize("path", _modules("cli"), ids=lambda p: p.name)
def test_cli_does_not_import_app(path: Path) -> None:
    """The command line never needs the Streamlit glue: services both use (the audit log) live below them."""
    bad = {n for n in _imports(path) if n.startswith("core.app")}
    assert not bad, f"{path.name} imports {bad}"


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(config.PROJECT_ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def import_graph(root: Path = CORE) -> dict[str, set[str]]:
    """Module -> the modules of ``root``'s package it imports (any import statement, lazy ones included; a
    ``from core.x import y`` names the module ``core.x.y`` when that is a module, else ``core.x``)."""
    modules = {_module_name(p): p for p in sorted(root.rglob("*.py"))}
    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        targets: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            named: list[str] = []
            if isinstance(node, ast.Import):
                named = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:  # relative: resolve against this module's package
                    pkg = name.split(".") if path.name == "__init__.py" else name.split(".")[:-1]
                    base = ".".join(pkg[: len(pkg) - node.level + 1] + ([base] if base else []))
                named = [base] + [f"{base}.{a.name}" for a in node.names]
            for n in named:
                while n and n not in modules:
                    n = n.rpartition(".")[0]
                if n and n != name:
                    targets.add(n)
        graph[name] = targets
    return graph


def import_cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (each holds an import circle), sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph.get(v, ())):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp: list[str] = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                found.append(sorted(comp))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return sorted(found)


def test_import_cycles_finds_a_circle() -> None:
    """The circle finder itself: a -> b -> c -> a is one circle, d -> a is not part of it."""
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}, "e": set()}
    assert import_cycles(graph) == [["a", "b", "c"]]
    assert import_cycles({"a": {"b"}, "b": set()}) == []


def test_no_import_circle_in_core() -> None:
    graph = import_graph()
    assert "core.engine.model" in graph and "core.engine.model_files" in graph["core.engine.model"]
    cycles = import_cycles(graph)
    assert not cycles, f"import circles in core/: {cycles}"
