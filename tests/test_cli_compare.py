"""Tests of ``python -m core compare`` run in-process through core.__main__.main on the synthetic patient of
tests/followup_phantom.py written as two BraTS-named case folders (stored LPS, 2 mm voxels)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from conftest import write_nifti
from followup_phantom import (
    FOLLOWUP_HALVES,
    LPS_AFFINE_2MM,
    SHIFT_MM,
    SHIFT_VOXELS,
    SPACING_MM,
    phantom,
    to_stored,
    write_pair,
)

from core.__main__ import main
from core.analysis.compare import CAVEAT
from core.config import DISCLAIMER


def _run(capsys: pytest.CaptureFixture[str], argv: list[str]) -> tuple[int, str, str]:
    code = main(["compare", *argv])
    out = capsys.readouterr()
    return code, out.out, out.err


@pytest.fixture(scope="module")
def pair(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    return write_pair(tmp_path_factory.mktemp("followup"))


def test_compare_prints_the_comparison_as_json(pair: tuple[Path, Path], capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = _run(capsys, [str(pair[0]), str(pair[1])])
    assert code == 0, err
    data = json.loads(out)
    assert data["baseline"]["case_id"] == "FU_Baseline" and data["followup"]["case_id"] == "FU_Followup"
    matrix = np.array(data["registration"]["matrix_baseline_to_followup"])
    np.testing.assert_allclose(matrix[:3, 3], SHIFT_MM, atol=SPACING_MM)  # within one voxel
    assert data["volumes_ml"]["WT"]["baseline"] == pytest.approx(13.824)
    assert data["volumes_ml"]["WT"]["followup"] == pytest.approx(4.096)
    assert data["volumes_ml"]["WT"]["change_pct"] == pytest.approx(-70.37)
    assert data["sum_of_products_mm2"]["baseline"] == pytest.approx(724.0)
    assert data["response"]["category"] == "PR" and data["response"]["caveat"] == CAVEAT
    assert data["disclaimer"] == DISCLAIMER
    assert data["rano"]["followup"]["sum_products_mm2"] == pytest.approx(244.0)


def test_compare_takes_segmentation_files(pair: tuple[Path, Path], tmp_path: Path,
                                          capsys: pytest.CaptureFixture[str]) -> None:
    # the follow-up's segmentation given as a file with no enhancing tumour: complete response suggested
    labels = phantom(FOLLOWUP_HALVES, SHIFT_VOXELS)["seg"]
    labels[labels == 4] = 1
    seg_b = write_nifti(tmp_path / "followup_labels.nii.gz", to_stored(labels), LPS_AFFINE_2MM)
    seg_a = pair[0] / "FU_Baseline_seg.nii.gz"
    code, out, err = _run(capsys, [str(pair[0]), str(pair[1]), "--seg-a", str(seg_a), "--seg-b", str(seg_b)])
    assert code == 0, err
    data = json.loads(out)
    assert data["followup"]["labels"] == "file followup_labels.nii.gz"
    assert data["volumes_ml"]["ET"]["followup"] == 0
    assert data["response"]["category"] == "CR"


def test_compare_writes_the_pdf(pair: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = _run(capsys, [str(pair[0]), str(pair[1]), "--pdf", str(tmp_path / "fu.pdf")])
    assert code == 0
    assert json.loads(out)["pdf"] == str(tmp_path / "fu.pdf")
    assert (tmp_path / "fu.pdf").read_bytes().startswith(b"%PDF")


def test_bad_input_exits_2_with_one_line(pair: tuple[Path, Path], tmp_path: Path,
                                         capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = _run(capsys, [str(pair[0]), str(tmp_path / "missing")])
    assert code == 2 and out == ""
    assert err.startswith("error: ") and err.count("\n") == 1
    wrong = write_nifti(tmp_path / "small.nii.gz", np.zeros((4, 4, 4), np.uint8))
    code, _, err = _run(capsys, [str(pair[0]), str(pair[1]), "--seg-b", str(wrong)])
    assert code == 2 and "small.nii.gz" in err and err.count("\n") == 1


def test_poor_alignment_exits_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    base, _ = write_pair(tmp_path)
    code, _, err = _run(capsys, [str(base), str(base), "--min-ncc", "1.5"])
    assert code == 2 and "expected the follow-up to align" in err


def test_without_segmentation_exits_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    base, follow = write_pair(tmp_path, with_seg=False)
    code, _, err = _run(capsys, [str(base), str(follow)])
    assert code == 2 and "expected a segmentation of the baseline" in err
