"""The shared test helpers themselves (tests/conftest.py): what a plain helper sets is undone after the test."""

from __future__ import annotations

import os
from pathlib import Path

import conftest
import pytest


def test_run_page_model_root_is_undone_when_the_test_ends(tmp_path: Path, app_env: Path) -> None:
    """run_page(model=...) allows the model's folder through the running test's monkeypatch (a nested one here,
    undone at once), so BRATS_MODEL_ROOTS does not leak into later tests."""
    before = os.environ.get("BRATS_MODEL_ROOTS")
    model = tmp_path / "models" / "absent"
    with pytest.MonkeyPatch.context() as mp:
        conftest._MONKEYPATCHES.append(mp)
        try:
            conftest.run_page(model=model)
            assert str(model.parent) in os.environ["BRATS_MODEL_ROOTS"].split(os.pathsep)
        finally:
            conftest._MONKEYPATCHES.remove(mp)
    assert os.environ.get("BRATS_MODEL_ROOTS") == before
