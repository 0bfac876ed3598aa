"""Security rules that hold for the whole code base: nothing a user supplies is unpickled, models load in
Keras safe mode, and case ids cannot reach outside the chosen data folder."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from conftest import make_case_dir

from core import config
from core.data.cases import discover_cases, safe_case_ref
from core.errors import DataFolderError

SOURCES = sorted([*config.PROJECT_ROOT.joinpath("core").rglob("*.py"), *config.PROJECT_ROOT.joinpath("pages").glob("*.py"),
                  config.PROJECT_ROOT / "Home.py"])


@pytest.mark.parametrize("pattern", [r"\bimport pickle\b", r"pickle\.loads?\(", r"allow_pickle\s*=\s*True",
                                     r"safe_mode\s*=\s*False", r"\beval\(", r"\bexec\("])
def test_no_unsafe_deserialisation_in_project_code(pattern: str) -> None:
    hits = [f"{p.relative_to(config.PROJECT_ROOT)}:{i}" for p in SOURCES
            for i, line in enumerate(p.read_text(encoding="utf-8").splitlines(), 1) if re.search(pattern, line)]
    assert hits == []


def test_every_np_load_refuses_pickles() -> None:
    calls = [(p, line) for p in SOURCES for line in p.read_text(encoding="utf-8").splitlines() if "np.load(" in line]
    assert calls, "expected the edit store and training cache to use np.load"
    assert all("allow_pickle=False" in line for _, line in calls), calls


def test_every_keras_load_uses_safe_mode() -> None:
    text = "\n".join(p.read_text(encoding="utf-8") for p in SOURCES)
    keras_loads = re.findall(r"models\.load_model\((?:[^()]|\([^()]*\))*\)", text)
    assert len(keras_loads) >= 2 and all("safe_mode=True" in c for c in keras_loads), keras_loads


@pytest.mark.parametrize("case_id", ["../BraTS2021_00000", "/etc/passwd", "..", "BraTS2021_00000/../../x", ""])
def test_case_ids_outside_the_folder_are_refused(tmp_path: Path, case_id: str) -> None:
    make_case_dir(tmp_path / "data", "BraTS2021_00000")
    with pytest.raises(DataFolderError):
        safe_case_ref(tmp_path / "data", case_id)


def test_symlinked_case_outside_the_folder_is_not_listed(tmp_path: Path) -> None:
    outside = make_case_dir(tmp_path / "outside", "BraTS2021_00009")
    data = tmp_path / "data"
    make_case_dir(data, "BraTS2021_00000")
    (data / "link").symlink_to(outside, target_is_directory=True)
    (data / "BraTS2021_00010_flair.nii.gz").symlink_to(outside / "BraTS2021_00009_flair.nii.gz")
    assert [r.case_id for r in discover_cases(data)] == ["BraTS2021_00000"]
