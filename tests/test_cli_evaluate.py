"""Tests of ``python -m core evaluate`` run in-process through core.__main__.main on synthetic NIfTI files
(LPS affines as BraTS stores them). Tolerance: 1e-9 absolute unless stated."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from core.__main__ import main
from core.config import HD95_EMPTY_MM

LPS = np.diag([-1.0, -1.0, 1.0, 1.0])
SHAPE = (8, 6, 5)


def _write(path: Path, labels: np.ndarray, affine: np.ndarray = LPS) -> Path:
    nib.save(nib.Nifti1Image(np.asarray(labels, dtype=np.uint8), affine), str(path))
    return path


def _line(xs: list[int], label: int, shape: tuple[int, int, int] = SHAPE) -> np.ndarray:
    arr = np.zeros(shape, np.uint8)
    for x in xs:
        arr[x, 2, 2] = label
    return arr


def _run(capsys: pytest.CaptureFixture[str], argv: list[str]) -> tuple[int, str, str]:
    code = main(["evaluate", *argv])
    out = capsys.readouterr()
    return code, out.out, out.err


def test_single_pair_hand_values(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    gt = _line([2, 3, 4], 4)
    gt[6, 2, 2] = 2  # one ED voxel, predicted as ED too
    pred = _line([1, 2, 3], 4)
    pred[6, 2, 2] = 2
    code, out, err = _run(capsys, ["--pred", str(_write(tmp_path / "p.nii.gz", pred)),
                                   "--gt", str(_write(tmp_path / "g.nii.gz", gt))])
    assert code == 0 and err == ""
    res = json.loads(out)
    et = res["regions"]["ET"]
    assert et["dice"] == pytest.approx(2 * 2 / (3 + 3))
    assert et["iou"] == pytest.approx(0.5)
    assert et["sensitivity"] == pytest.approx(2 / 3)
    assert et["precision"] == pytest.approx(2 / 3)
    assert et["specificity"] == pytest.approx((240 - 4) / (240 - 3))
    assert et["hd95_mm"] == pytest.approx(1.0)
    assert et["gt_volume_ml"] == pytest.approx(0.003)
    wt = res["regions"]["WT"]
    assert wt["dice"] == pytest.approx(2 * 3 / (4 + 4))
    assert res["regions"]["TC"]["dice"] == pytest.approx(2 / 3)
    assert res["per_label_dice"] == {"NCR": 1.0, "ED": 1.0, "ET": pytest.approx(2 / 3)}
    assert res["spacing_mm"] == [1.0, 1.0, 1.0]


def test_single_pair_anisotropic_spacing_follows_axes(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Spacing 2.5 mm along the stored first axis (L->R flipped at load) still scales that axis."""
    affine = np.diag([-2.5, -1.0, 1.0, 1.0])
    gt = _line([1], 1)
    pred = _line([4], 1)
    code, out, _ = _run(capsys, ["--pred", str(_write(tmp_path / "p.nii", pred, affine)),
                                 "--gt", str(_write(tmp_path / "g.nii", gt, affine))])
    assert code == 0
    res = json.loads(out)
    assert res["regions"]["TC"]["hd95_mm"] == pytest.approx(7.5)
    assert res["regions"]["ET"]["hd95_mm"] == 0.0  # both empty
    assert res["regions"]["WT"]["pred_volume_ml"] == pytest.approx(0.0025)


def test_brats2023_labels_are_mapped(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    gt = _line([2, 3], 4)
    pred = _line([2, 3], 3)  # 2023 convention: ET = 3
    code, out, _ = _run(capsys, ["--pred", str(_write(tmp_path / "p.nii.gz", pred)),
                                 "--gt", str(_write(tmp_path / "g.nii.gz", gt))])
    assert code == 0
    assert json.loads(out)["regions"]["ET"]["dice"] == 1.0


def test_shape_mismatch_exit_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    p = _write(tmp_path / "p.nii.gz", np.zeros((8, 6, 4), np.uint8))
    g = _write(tmp_path / "g.nii.gz", np.zeros(SHAPE, np.uint8))
    code, out, err = _run(capsys, ["--pred", str(p), "--gt", str(g)])
    assert code == 2 and out == ""
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and "shape" in lines[0]


def test_affine_mismatch_exit_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    shifted = LPS.copy()
    shifted[0, 3] = 0.5
    p = _write(tmp_path / "p.nii.gz", np.zeros(SHAPE, np.uint8), shifted)
    g = _write(tmp_path / "g.nii.gz", np.zeros(SHAPE, np.uint8))
    code, _, err = _run(capsys, ["--pred", str(p), "--gt", str(g)])
    assert code == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "affine" in lines[0]


def test_missing_file_exit_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    g = _write(tmp_path / "g.nii.gz", np.zeros(SHAPE, np.uint8))
    code, out, err = _run(capsys, ["--pred", str(tmp_path / "nope.nii.gz"), "--gt", str(g)])
    assert code == 2 and out == ""
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and "nope.nii.gz" in lines[0]


def test_bad_arguments_exit_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = _run(capsys, ["--pred", str(tmp_path / "p.nii.gz")])
    assert code == 2 and len(err.strip().splitlines()) == 1
    code, _, err = _run(capsys, ["--pred-dir", str(tmp_path), "--gt", str(tmp_path / "g.nii.gz")])
    assert code == 2 and len(err.strip().splitlines()) == 1


def test_folder_mode(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    gt_dir = tmp_path / "gt"
    pred_dir = tmp_path / "pred"
    gt_dir.mkdir()
    pred_dir.mkdir()
    # case A: perfect; case B: ET Dice 2/3; case C: prediction missing -> empty prediction
    a = _line([2, 3], 4)
    _write(gt_dir / "BraTS2021_00001_seg.nii.gz", a)
    _write(pred_dir / "BraTS2021_00001_seg.nii.gz", a)
    _write(gt_dir / "BraTS2021_00002_seg.nii.gz", _line([2, 3, 4], 4))
    _write(pred_dir / "BraTS2021_00002.nii.gz", _line([1, 2, 3], 4))
    _write(gt_dir / "BraTS2021_00003_seg.nii.gz", _line([2], 2))
    _write(pred_dir / "BraTS2021_00009.nii.gz", a)  # no ground truth: listed, not scored
    (pred_dir / "notes.txt").write_text("ignored")
    out_csv = tmp_path / "scores.csv"
    code, out, err = _run(capsys, ["--pred-dir", str(pred_dir), "--gt-dir", str(gt_dir), "--csv", str(out_csv)])
    assert code == 1
    res = json.loads(out)
    assert res["n_cases"] == 3 and res["n_scored"] == 3 and res["n_errors"] == 1
    assert len(res["errors"]) == 1 and "BraTS2021_00003" in res["errors"][0] and "empty prediction" in res["errors"][0]
    assert err.strip().splitlines() == [f"error: {res['errors'][0]}"]
    assert res["unmatched_predictions"] == ["BraTS2021_00009.nii.gz"]
    rows = {r["case_id"]: r for r in res["cases"]}
    assert [r["status"] for r in res["cases"]] == ["ok", "ok", "missing_prediction"]
    assert rows["BraTS2021_00001"]["ET_dice"] == 1.0
    assert rows["BraTS2021_00002"]["ET_dice"] == pytest.approx(2 / 3)
    c = rows["BraTS2021_00003"]
    assert c["WT_dice"] == 0.0 and c["WT_hd95_mm"] == pytest.approx(HD95_EMPTY_MM)
    assert c["ET_dice"] == 1.0 and c["ET_hd95_mm"] == 0.0  # both empty: BraTS rule
    mean, median = res["summary"]["mean"], res["summary"]["median"]
    assert mean["ET_dice"] == pytest.approx((1 + 2 / 3 + 1) / 3)
    assert median["ET_dice"] == pytest.approx(1.0)
    assert mean["WT_hd95_mm"] == pytest.approx((0 + 1 + HD95_EMPTY_MM) / 3)
    assert median["WT_hd95_mm"] == pytest.approx(1.0)
    assert mean["label_ED_dice"] == pytest.approx((1 + 1 + 0) / 3)
    with open(out_csv, newline="", encoding="utf-8") as fh:
        csv_rows = list(csv.DictReader(fh))
    assert [r["case_id"] for r in csv_rows] == ["BraTS2021_00001", "BraTS2021_00002", "BraTS2021_00003"]
    assert float(csv_rows[1]["ET_dice"]) == pytest.approx(2 / 3)
    assert csv_rows[2]["status"] == "missing_prediction"


def test_folder_mode_invalid_prediction_scored_empty(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    gt_dir = tmp_path / "gt"
    pred_dir = tmp_path / "pred"
    gt_dir.mkdir()
    pred_dir.mkdir()
    _write(gt_dir / "BraTS-GLI-00001-000-seg.nii.gz", _line([2], 3))  # 2023 naming and labels
    _write(pred_dir / "BraTS-GLI-00001-000-seg.nii.gz", np.zeros((4, 4, 4), np.uint8))
    code, out, _ = _run(capsys, ["--pred-dir", str(pred_dir), "--gt-dir", str(gt_dir)])
    assert code == 1
    row = json.loads(out)["cases"][0]
    assert row["status"] == "invalid_prediction" and "shape" in row["error"]
    assert row["ET_dice"] == 0.0 and row["ET_hd95_mm"] == pytest.approx(HD95_EMPTY_MM)


def test_folder_mode_all_ok_exit_0_and_no_gt_exit_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    gt_dir = tmp_path / "gt"
    gt_dir.mkdir()
    _write(gt_dir / "X_seg.nii.gz", _line([1], 1))
    code, out, err = _run(capsys, ["--pred-dir", str(gt_dir), "--gt-dir", str(gt_dir)])
    assert code == 0 and err == "" and json.loads(out)["n_errors"] == 0
    empty = tmp_path / "empty"
    empty.mkdir()
    code, _, err = _run(capsys, ["--pred-dir", str(gt_dir), "--gt-dir", str(empty)])
    assert code == 2 and len(err.strip().splitlines()) == 1


# ------------------------------------------------------------------------------------------- --lesionwise ---

def test_lesionwise_single_pair_hand_values(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Reference: an ET line (x = 2..4) and an ED voxel (x = 7); prediction: the ET line shifted to x = 1..3 and
    an ED speck away from both. WT: the lines match (Dice 2 x 2 / 6, HD95 1 mm: pooled distances 0, 0, 0, 0,
    1, 1), the ED voxel is missed and the speck is spurious; TC and ET: the lines only."""
    gt = _line([2, 3, 4], 4)
    gt[7, 2, 2] = 2
    pred = _line([1, 2, 3], 4)
    pred[0, 5, 4] = 2
    argv = ["--pred", str(_write(tmp_path / "p.nii.gz", pred)), "--gt", str(_write(tmp_path / "g.nii.gz", gt))]
    code, out, err = _run(capsys, [*argv, "--lesionwise"])
    assert code == 0 and err == ""
    res = json.loads(out)
    wt = res["lesionwise"]["WT"]
    assert (wt["n_ref"], wt["n_pred"], wt["tp"], wt["fp"], wt["fn"]) == (2, 2, 1, 1, 1)
    assert wt["dice"] == pytest.approx((2 / 3 + 0 + 0) / 3)
    assert wt["hd95_mm"] == pytest.approx((1.0 + 374.0 + 374.0) / 3)
    assert wt["matched_dice"] == pytest.approx(2 / 3) and wt["matched_hd95_mm"] == pytest.approx(1.0)
    assert wt["global_dice"] == pytest.approx(2 * 2 / (4 + 4))
    for region in ("TC", "ET"):
        r = res["lesionwise"][region]
        assert (r["tp"], r["fp"], r["fn"]) == (1, 0, 0)
        assert r["dice"] == pytest.approx(2 / 3) and r["hd95_mm"] == pytest.approx(1.0)
    assert "374" in res["lesionwise_note"]
    assert res["regions"]["ET"]["dice"] == pytest.approx(2 / 3)  # the usual figures are still there
    code, out, _ = _run(capsys, argv)
    assert code == 0 and "lesionwise" not in json.loads(out)


def test_lesionwise_folder_mode(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    gt_dir, pred_dir = tmp_path / "gt", tmp_path / "pred"
    gt_dir.mkdir()
    pred_dir.mkdir()
    a = _line([2, 3], 4)
    _write(gt_dir / "BraTS2021_00001_seg.nii.gz", a)
    _write(pred_dir / "BraTS2021_00001_seg.nii.gz", a)  # perfect
    _write(gt_dir / "BraTS2021_00003_seg.nii.gz", _line([2], 2))  # prediction missing: scored empty
    out_csv = tmp_path / "scores.csv"
    code, out, _ = _run(capsys, ["--pred-dir", str(pred_dir), "--gt-dir", str(gt_dir), "--csv", str(out_csv),
                                 "--lesionwise"])
    assert code == 1
    res = json.loads(out)
    rows = {r["case_id"]: r for r in res["cases"]}
    ok, missing = rows["BraTS2021_00001"], rows["BraTS2021_00003"]
    assert ok["WT_lw_dice"] == 1.0 and ok["ET_lw_hd95_mm"] == 0.0 and ok["ET_lw_tp"] == 1
    assert missing["WT_lw_dice"] == 0.0 and missing["WT_lw_hd95_mm"] == 374.0 and missing["WT_lw_fn"] == 1
    assert missing["WT_lw_matched_hd95_mm"] is None  # inf in brats-evaluation: no lesion matched
    assert missing["ET_lw_dice"] == 1.0 and missing["ET_lw_matched_dice"] is None  # no ET on either side
    mean = res["summary"]["mean"]
    assert mean["WT_lw_dice"] == pytest.approx(0.5) and mean["WT_lw_hd95_mm"] == pytest.approx(187.0)
    assert mean["ET_lw_matched_dice"] == 1.0  # over the case where it is defined
    assert mean["WT_lw_matched_hd95_mm"] == 0.0
    assert mean["WT_dice"] == pytest.approx(0.5)  # the usual figures keep their summary
    with open(out_csv, newline="", encoding="utf-8") as fh:
        csv_rows = list(csv.DictReader(fh))
    assert float(csv_rows[1]["WT_lw_hd95_mm"]) == 374.0 and csv_rows[1]["WT_lw_matched_hd95_mm"] == ""


def test_lesion_rule_brats2023(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Reference: a 64-voxel ET cube and a one-voxel ET speck; prediction: the cube. panoptica-gli (the default)
    counts the speck as a missed lesion, brats2023 leaves it out (at most 50 mm^3)."""
    shape = (14, 8, 8)
    pred = np.zeros(shape, np.uint8)
    pred[1:5, 1:5, 1:5] = 4
    gt = pred.copy()
    gt[12, 6, 6] = 4
    argv = ["--pred", str(_write(tmp_path / "p.nii.gz", pred)), "--gt", str(_write(tmp_path / "g.nii.gz", gt)),
            "--lesionwise"]
    code, out, err = _run(capsys, [*argv, "--lesion-rule", "brats2023"])
    assert code == 0 and err == ""
    res = json.loads(out)
    et = res["lesionwise"]["ET"]
    assert res["lesion_rule"] == "brats2023" and "50 mm^3" in res["lesionwise_note"]
    assert (et["dice"], et["hd95_mm"], et["n_ref"], et["tp"], et["fp"], et["fn"]) == (1.0, 0.0, 1, 1, 0, 0)
    code, out, _ = _run(capsys, argv)
    res = json.loads(out)
    assert code == 0 and res["lesion_rule"] == "panoptica-gli"
    assert (res["lesionwise"]["ET"]["dice"], res["lesionwise"]["ET"]["fn"]) == (0.5, 1)
    # folder mode
    gt_dir, pred_dir = tmp_path / "gt", tmp_path / "pred"
    gt_dir.mkdir()
    pred_dir.mkdir()
    _write(gt_dir / "BraTS2021_00001_seg.nii.gz", gt)
    _write(pred_dir / "BraTS2021_00001_seg.nii.gz", pred)
    code, out, _ = _run(capsys, ["--pred-dir", str(pred_dir), "--gt-dir", str(gt_dir), "--lesionwise",
                                 "--lesion-rule", "brats2023"])
    res = json.loads(out)
    assert code == 0 and res["lesion_rule"] == "brats2023"
    assert res["cases"][0]["ET_lw_dice"] == 1.0 and res["cases"][0]["ET_lw_n_ref"] == 1
    # the rule needs --lesionwise, and one of the two names
    code, _, err = _run(capsys, argv[:-1] + ["--lesion-rule", "brats2023"])
    assert code == 2 and "--lesionwise" in err
    with pytest.raises(SystemExit):
        main(["evaluate", *argv, "--lesion-rule", "brats2024"])
