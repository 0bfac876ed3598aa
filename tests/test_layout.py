"""The walls between core/'s subpackages (README "Layout"): checked on the import statements of every module."""
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
