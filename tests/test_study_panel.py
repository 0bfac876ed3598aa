"""AppTest of the Case browser's raw-study tab (core/app/study_panel.py): a folder of NIfTI series inside the data
roots is listed with its sequence guesses; a study already in BraTS space opens as a case untouched; a study
without T1CE is refused in one line. (The registration path itself is tested in test_study.py.)"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from conftest import run_page, texts, write_nifti

from core.app import ui
from core.data import roots
from core.data.registration import BRATS_AFFINE, BRATS_SHAPE

BROWSER = "pages/1_Case_browser.py"


@pytest.fixture
def study_root(app_env: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    root = tmp_path / "studyroot"
    arr = np.zeros(BRATS_SHAPE, dtype=np.int16)
    arr[60:180, 50:190, 20:130] = 300
    for name in ("AX_FLAIR_fla.nii.gz", "T1_POST_GAD_t1c.nii.gz", "localizer.nii.gz"):
        write_nifti(root / "ready" / name, arr, BRATS_AFFINE)
    write_nifti(root / "no_t1ce" / "x_fla.nii.gz", arr, BRATS_AFFINE)
    write_nifti(root / "no_t1ce" / "x_t2.nii.gz", arr, BRATS_AFFINE)
    monkeypatch.setenv(roots.ROOTS_ENV, str(root))
    return root


def _read(at, sub: str):
    label = next(opt for opt in at.selectbox(key="study_root").options if opt.endswith("studyroot"))
    at.selectbox(key="study_root").set_value(label).run()
    at.selectbox(key="study_sub").set_value(sub)
    return at.button(key="study_read").click().run()


def test_brats_space_study_opens_as_a_case(study_root: Path, app_env: Path) -> None:
    at = run_page(BROWSER, timeout=60)
    assert not at.exception
    at = _read(at, "ready")
    assert not at.exception, at.exception
    table = next(df.value for df in at.dataframe if "Sequence" in df.value.columns) if at.dataframe else None
    if table is None:  # data_editor shows as an arrow data frame in AppTest
        table = at.get("arrow_data_frame")[0].value
    guesses = dict(zip(table["File"], table["Sequence"], strict=True))
    assert guesses == {"AX_FLAIR_fla.nii.gz": "flair", "T1_POST_GAD_t1c.nii.gz": "t1ce", "localizer.nii.gz": "skip"}
    at.button(key="study_run").click().run(timeout=60)
    assert not at.exception, at.exception
    assert not at.error, texts(at.error)
    case = at.session_state[ui.KEY_UPLOADED]
    assert set(case.modalities) == {"flair", "t1ce"} and case.shape == BRATS_SHAPE
    assert "taken untouched" in texts(at.success)
    assert "study_preprocess" in (app_env / "audit.log.jsonl").read_text()


def test_study_without_t1ce_is_refused_in_one_line(study_root: Path) -> None:
    at = run_page(BROWSER, timeout=60)
    at = _read(at, "no_t1ce")
    at.button(key="study_run").click().run(timeout=60)
    assert not at.exception, at.exception
    assert "expected a T1CE series" in texts(at.error)
