"""Tests of ``python -m core measure`` run in-process through core.__main__.main on a synthetic case folder."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from conftest import LPS_AFFINE, make_case_dir, write_nifti

from core.__main__ import COMMANDS, main

SHAPE = (40, 36, 6)
AFFINE = LPS_AFFINE @ np.diag([0.8, 1.0, 2.0, 1.0])  # 0.8 x 1 x 2 mm voxels, stored LPS


def _seg(et_label: int = 4) -> np.ndarray:
    """Stored-order labels: a 20 x 12 voxel ET block (16 x 12 mm) on slice 3, edema around it, a 2-voxel speck."""
    lab = np.zeros(SHAPE, np.uint8)
    lab[5:30, 5:25, 2:5] = 2
    lab[8:28, 10:22, 3] = et_label
    lab[35, 30, 1] = et_label
    return lab


def _run(capsys: pytest.CaptureFixture[str], argv: list[str]) -> tuple[int, str, str]:
    code = main(["measure", *argv])
    out = capsys.readouterr()
    return code, out.out, out.err


def test_measure_prints_lesions_and_sum(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert "measure" in COMMANDS
    case_dir = make_case_dir(tmp_path / "data", shape=SHAPE, affine=AFFINE)
    seg = write_nifti(tmp_path / "pred" / "BraTS2021_00000_seg.nii.gz", _seg(), AFFINE)
    code, out, err = _run(capsys, [str(case_dir), "--seg", str(seg)])
    assert code == 0 and err == ""
    d = json.loads(out)
    assert d["case_id"] == "BraTS2021_00000" and d["seg"] == seg.name and d["spacing_mm"] == [0.8, 1.0, 2.0]
    assert d["slice_index_base"] == 0 and "from 0" in d["slice_numbering"]
    assert d["n_lesions"] == 2 and d["n_measurable"] == 1 and d["target_indices"] == [1]
    big, speck = d["lesions"]
    # LPS -> RAS flips X and Y only: the slice number is the stored one
    assert big["slice_z"] == 3 and speck["slice_z"] == 1
    # 16 x 12 mm rectangle: the diagonal is 20 mm; the chord perpendicular to it 12 / cos(36.9 deg) = 15 mm
    assert big["d1_mm"] == pytest.approx(20.0, abs=0.8) and big["d2_mm"] == pytest.approx(15.0, abs=1.0)
    assert big["product_mm2"] == pytest.approx(big["d1_mm"] * big["d2_mm"], abs=0.3)  # each rounded to 0.01
    assert big["volume_ml"] == pytest.approx(240 * 1.6 / 1000, abs=1e-3) and big["measurable"] is True
    assert speck["measurable"] is False and speck["n_voxels"] == 1
    assert d["sum_products_mm2"] == big["product_mm2"]
    assert "not a medical device" in d["disclaimer"]


def test_measure_reads_2023_labels_and_empty_et(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    case_dir = make_case_dir(tmp_path / "data", shape=SHAPE, affine=AFFINE)
    seg = write_nifti(tmp_path / "BraTS-GLI-00000-000-seg.nii.gz", _seg(et_label=3), AFFINE)
    code, out, _ = _run(capsys, [str(case_dir), "--seg", str(seg)])
    assert code == 0 and json.loads(out)["n_lesions"] == 2
    empty = _seg()
    empty[empty == 4] = 1
    seg = write_nifti(tmp_path / "none_seg.nii.gz", empty, AFFINE)
    code, out, _ = _run(capsys, [str(case_dir), "--seg", str(seg)])
    d = json.loads(out)
    assert code == 0 and d["lesions"] == [] and d["sum_products_mm2"] == 0.0


def test_measure_refuses_a_segmentation_on_another_grid(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    case_dir = make_case_dir(tmp_path / "data", shape=SHAPE, affine=AFFINE)
    seg = write_nifti(tmp_path / "other_seg.nii.gz", _seg()[:, :, :-1], AFFINE)
    code, out, err = _run(capsys, [str(case_dir), "--seg", str(seg)])
    assert code == 2 and out == ""
    assert err.startswith("error: other_seg.nii.gz: expected the segmentation to have the shape") and err.count("\n") == 1
    code, out, err = _run(capsys, [str(tmp_path / "missing"), "--seg", str(seg)])
    assert code == 2 and err.startswith("error:")


def test_lesion_volumes_on_a_tilted_grid_come_from_the_determinant(tmp_path: Path,
                                                                    capsys: pytest.CaptureFixture[str]) -> None:
    # The same voxels, slices stepped 30 deg off the normal (a gantry tilt): 2 mm steps, 2 cos(30) mm apart.
    tilt = np.radians(30.0)
    sheared = LPS_AFFINE @ np.array([[0.8, 0, 0, 0], [0, 1.0, 2.0 * np.sin(tilt), 0], [0, 0, 2.0 * np.cos(tilt), 0],
                                     [0, 0, 0, 1.0]])
    case_dir = make_case_dir(tmp_path / "data", shape=SHAPE, affine=sheared)
    seg = write_nifti(tmp_path / "pred" / "BraTS2021_00000_seg.nii.gz", _seg(), sheared)
    code, out, _ = _run(capsys, [str(case_dir), "--seg", str(seg)])
    assert code == 0
    big = json.loads(out)["lesions"][0]
    assert big["volume_ml"] == pytest.approx(240 * 1.6 * np.cos(tilt) / 1000, abs=1e-3)  # not 240 x 1.6 mm^3
