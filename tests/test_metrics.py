"""Tests of core/analysis/metrics.py: hand-computed tiny arrays, the BraTS empty rules, anisotropic spacing and a
brute-force HD95 reference. Tolerance: 1e-12 relative for exact ratios, 1e-9 mm for distances."""

from __future__ import annotations

import json

import numpy as np
import pytest

from core.analysis.metrics import (
    CaseScore,
    Counts,
    RegionScore,
    hd95_mm,
    label_volumes_ml,
    region_mask,
    score_case,
    score_masks,
    score_region,
)
from core.config import HD95_EMPTY_MM
from core.errors import BratsViewerError, CaseError, ImageContentError

TOL = 1e-12


def _line(shape: tuple[int, int, int], xs: list[int], label: int = 1) -> np.ndarray:
    """Labels `label` at (x, 1, 1) for each x in xs, else 0."""
    arr = np.zeros(shape, dtype=np.uint8)
    for x in xs:
        arr[x, 1, 1] = label
    return arr


def _brute_hd95(pred: np.ndarray, gt: np.ndarray, spacing: tuple[float, float, float]) -> float:
    """HD95 from all pairwise distances between surface voxels (6-neighbourhood surface, border = background)."""

    def surface(mask: np.ndarray) -> np.ndarray:
        padded = np.pad(mask, 1)
        interior = padded[1:-1, 1:-1, 1:-1].copy()
        for axis in range(3):
            for step in (-1, 1):
                interior &= np.roll(padded, step, axis=axis)[1:-1, 1:-1, 1:-1]
        return np.argwhere(mask & ~interior) * np.asarray(spacing)

    ps, gs = surface(pred), surface(gt)
    d = np.sqrt(((ps[:, None, :] - gs[None, :, :]) ** 2).sum(axis=-1))
    return float(np.percentile(np.concatenate([d.min(axis=1), d.min(axis=0)]), 95))


# ---------------------------------------------------------------------------------------- hand values ---

def test_dice_two_of_three_overlap() -> None:
    pred = _line((6, 3, 3), [0, 1, 2])
    gt = _line((6, 3, 3), [1, 2, 3])
    s = score_region(pred, gt, "WT", (1.0, 1.0, 1.0))
    # TP = 2, FP = 1, FN = 1, TN = 54 - 4 = 50
    assert s.dice == pytest.approx(2 * 2 / (3 + 3), rel=TOL)
    assert s.iou == pytest.approx(2 / 4, rel=TOL)
    assert s.sensitivity == pytest.approx(2 / 3, rel=TOL)
    assert s.precision == pytest.approx(2 / 3, rel=TOL)
    assert s.specificity == pytest.approx(50 / 51, rel=TOL)
    # every voxel is surface; directed distances pred->gt [1, 0, 0], gt->pred [0, 0, 1];
    # sorted [0, 0, 0, 0, 1, 1], 95th percentile at rank 0.95 * 5 = 4.75 -> 1.0 mm
    assert s.hd95_mm == pytest.approx(1.0, abs=1e-9)
    assert s.pred_volume_ml == pytest.approx(0.003, rel=TOL)
    assert s.gt_volume_ml == pytest.approx(0.003, rel=TOL)


def test_counts_from_masks() -> None:
    pred = np.array([1, 1, 0, 0], bool).reshape(4, 1, 1)
    gt = np.array([1, 0, 1, 0], bool).reshape(4, 1, 1)
    assert Counts.from_masks(pred, gt) == Counts(tp=1, fp=1, fn=1, tn=1)


def test_identical_masks_perfect() -> None:
    rng = np.random.default_rng(0)
    labels = rng.choice(np.array([0, 1, 2, 4], np.uint8), size=(8, 7, 6))
    cs = score_case(labels, labels, (1.0, 1.0, 1.0))
    for r in cs.regions.values():
        assert (r.dice, r.iou, r.sensitivity, r.specificity, r.precision, r.hd95_mm) == (1, 1, 1, 1, 1, 0)
    assert cs.per_label_dice == {"NCR": 1.0, "ED": 1.0, "ET": 1.0}


def test_all_ones_reference_specificity_defined() -> None:
    gt = np.ones((3, 3, 3), np.uint8)
    s = score_region(gt, gt, "WT", (1, 1, 1))
    assert s.specificity == 1.0 and s.dice == 1.0 and s.hd95_mm == 0.0


# ------------------------------------------------------------------------------------------ empty rules ---

def test_both_empty() -> None:
    z = np.zeros((4, 4, 4), np.uint8)
    s = score_region(z, z, "ET", (1.0, 1.0, 1.0))
    assert s == RegionScore(1.0, 1.0, 1.0, 1.0, 1.0, 0.0, 0.0, 0.0)


def test_empty_prediction() -> None:
    z = np.zeros((4, 4, 4), np.uint8)
    gt = z.copy()
    gt[1, 1, 1] = 4
    s = score_region(z, gt, "ET", (1.0, 1.0, 1.0))
    assert s.dice == 0.0 and s.iou == 0.0
    assert s.hd95_mm == pytest.approx(HD95_EMPTY_MM)
    assert s.sensitivity == 0.0 and s.precision == 0.0
    assert s.specificity == 1.0


def test_empty_reference() -> None:
    z = np.zeros((4, 4, 4), np.uint8)
    pred = z.copy()
    pred[1, 1, 1] = 4
    s = score_region(pred, z, "ET", (1.0, 1.0, 1.0))
    assert s.dice == 0.0 and s.hd95_mm == pytest.approx(373.13)
    assert s.sensitivity == 0.0 and s.precision == 0.0
    assert s.specificity == pytest.approx(63 / 64, rel=TOL)


def test_per_label_dice_empty_rules() -> None:
    gt = _line((5, 3, 3), [1, 2], label=2)
    pred = gt.copy()
    pred[4, 1, 1] = 1  # NCR only in the prediction
    cs = score_case(pred, gt, (1, 1, 1))
    assert cs.per_label_dice["ED"] == 1.0
    assert cs.per_label_dice["NCR"] == 0.0  # one empty
    assert cs.per_label_dice["ET"] == 1.0  # both empty
    assert cs.regions["ET"].hd95_mm == 0.0
    assert cs.regions["TC"].hd95_mm == pytest.approx(HD95_EMPTY_MM)


# ------------------------------------------------------------------------------------------------ HD95 ---

@pytest.mark.parametrize("axis", [0, 1, 2])
def test_hd95_anisotropic_single_voxels(axis: int) -> None:
    pred = np.zeros((6, 6, 6), bool)
    gt = np.zeros((6, 6, 6), bool)
    idx = [1, 1, 1]
    pred[tuple(idx)] = True
    idx[axis] = 4
    gt[tuple(idx)] = True
    spacing = [1.0, 1.0, 1.0]
    spacing[axis] = 2.5
    assert hd95_mm(pred, gt, spacing) == pytest.approx(7.5, abs=1e-9)
    # the other axes' spacing does not matter
    spacing = [3.0, 3.0, 3.0]
    spacing[axis] = 2.5
    assert hd95_mm(pred, gt, spacing) == pytest.approx(7.5, abs=1e-9)


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("spacing", [(1.0, 1.0, 1.0), (0.9, 1.7, 3.0)])
def test_hd95_matches_brute_force(seed: int, spacing: tuple[float, float, float]) -> None:
    rng = np.random.default_rng(seed)
    shape = (9, 8, 7)
    pred = rng.random(shape) < 0.25
    gt = rng.random(shape) < 0.25
    if seed % 2:  # blobs away from the border, so the bounding box crop really crops
        pred = np.zeros(shape, bool)
        gt = np.zeros(shape, bool)
        pred[2:5, 3:6, 2:4] = True
        gt[3:7, 2:5, 3:5] = rng.random((4, 3, 2)) < 0.7
        gt[3, 2, 3] = True
    expected = _brute_hd95(pred, gt, spacing)
    assert hd95_mm(pred, gt, spacing) == pytest.approx(expected, abs=1e-9)
    assert hd95_mm(gt, pred, spacing) == pytest.approx(expected, abs=1e-9)  # symmetric


def test_hd95_crop_equals_full_grid() -> None:
    """Embedding the same masks in a larger grid (away from the border) does not change HD95."""
    rng = np.random.default_rng(7)
    small_p = rng.random((5, 5, 5)) < 0.4
    small_g = rng.random((5, 5, 5)) < 0.4
    big_p = np.zeros((20, 21, 22), bool)
    big_g = np.zeros((20, 21, 22), bool)
    big_p[7:12, 8:13, 9:14] = small_p
    big_g[7:12, 8:13, 9:14] = small_g
    spacing = (1.2, 0.8, 2.0)
    assert hd95_mm(big_p, big_g, spacing) == pytest.approx(_brute_hd95(big_p, big_g, spacing), abs=1e-9)


# ---------------------------------------------------------------------------------------------- volumes ---

def test_label_volumes_ml_anisotropic() -> None:
    labels = np.zeros((4, 4, 4), np.uint8)
    labels[0, 0, :3] = 1  # 3 NCR
    labels[1, :2, 0] = 2  # 2 ED
    labels[3, 3, 3] = 4  # 1 ET
    spacing = (0.5, 2.0, 3.0)  # 3 mm^3 = 0.003 mL per voxel
    v = label_volumes_ml(labels, spacing)
    assert v["NCR"] == pytest.approx(0.009, rel=TOL)
    assert v["ED"] == pytest.approx(0.006, rel=TOL)
    assert v["ET"] == pytest.approx(0.003, rel=TOL)
    assert v["TC"] == pytest.approx(0.012, rel=TOL)
    assert v["WT"] == pytest.approx(0.018, rel=TOL)
    s = score_region(labels, labels, "TC", spacing)
    assert s.pred_volume_ml == pytest.approx(0.012, rel=TOL) and s.gt_volume_ml == pytest.approx(0.012, rel=TOL)


# ---------------------------------------------------------------------------------------------- regions ---

def test_region_membership() -> None:
    labels = np.array([0, 1, 2, 4], np.uint8).reshape(4, 1, 1)
    assert region_mask(labels, "WT").ravel().tolist() == [False, True, True, True]
    assert region_mask(labels, "TC").ravel().tolist() == [False, True, False, True]
    assert region_mask(labels, "ET").ravel().tolist() == [False, False, False, True]
    assert region_mask(labels, (2,)).ravel().tolist() == [False, False, True, False]


def test_label_2_only_counts_for_wt() -> None:
    gt = _line((4, 3, 3), [1], label=2)
    pred = _line((4, 3, 3), [1], label=4)
    cs = score_case(pred, gt, (1, 1, 1))
    assert cs.regions["WT"].dice == 1.0  # ED vs ET: both whole tumour
    assert cs.regions["TC"].dice == 0.0
    assert cs.regions["ET"].dice == 0.0
    assert cs.per_label_dice == {"NCR": 1.0, "ED": 0.0, "ET": 0.0}


def test_case_to_dict_flat_json() -> None:
    gt = _line((6, 3, 3), [1, 2, 3], label=4)
    pred = _line((6, 3, 3), [0, 1, 2], label=4)
    cs = score_case(pred, gt, (1, 1, 1))
    assert isinstance(cs, CaseScore)
    d = cs.to_dict()
    json.dumps(d)
    assert d["ET_dice"] == pytest.approx(2 / 3) and d["TC_dice"] == pytest.approx(2 / 3)
    assert d["label_ET_dice"] == pytest.approx(2 / 3)
    assert d["label_NCR_dice"] == 1.0
    assert all(not isinstance(v, dict) for v in d.values())
    assert {"WT_hd95_mm", "TC_sensitivity", "ET_specificity", "WT_precision", "ET_iou", "WT_gt_volume_ml"} <= set(d)


# ------------------------------------------------------------------------------------------- validation ---

def test_shape_mismatch_raises() -> None:
    with pytest.raises(CaseError, match=r"same shape.*\(3, 3, 3\).*\(3, 3, 4\)"):
        score_case(np.zeros((3, 3, 3), np.uint8), np.zeros((3, 3, 4), np.uint8), (1, 1, 1))


def test_bad_labels_raise() -> None:
    bad = np.zeros((3, 3, 3), np.uint8)
    bad[0, 0, 0] = 3
    with pytest.raises(CaseError, match=r"\{0, 1, 2, 4\}.*\[0, 3\]"):
        score_case(bad, np.zeros((3, 3, 3), np.uint8), (1, 1, 1))
    with pytest.raises(CaseError):
        label_volumes_ml(bad.astype(np.int16), (1, 1, 1))
    with pytest.raises(CaseError, match="integer"):
        score_case(np.zeros((3, 3, 3), np.float32), np.zeros((3, 3, 3), np.uint8), (1, 1, 1))


def test_bad_spacing_and_region_raise() -> None:
    z = np.zeros((3, 3, 3), np.uint8)
    with pytest.raises(ImageContentError):
        score_case(z, z, (1, 0, 1))
    with pytest.raises(ImageContentError):
        score_case(z, z, (1, 1))
    with pytest.raises(CaseError, match="region"):
        region_mask(z, "XX")
    assert issubclass(CaseError, BratsViewerError) and issubclass(CaseError, ValueError)


def test_score_masks_bool_input() -> None:
    a = np.zeros((3, 3, 3), bool)
    a[1, 1, 1] = True
    s = score_masks(a, a, (2, 2, 2))
    assert s.dice == 1.0 and s.pred_volume_ml == pytest.approx(0.008)


def test_bounding_box_pads_and_clips_at_the_border() -> None:
    from core.analysis.metrics import bounding_box

    m = np.zeros((5, 6, 4), dtype=bool)
    m[1, 2, 0] = m[3, 4, 1] = True
    assert bounding_box(m) == (slice(1, 4), slice(2, 5), slice(0, 2))
    assert bounding_box(m, pad=1) == (slice(0, 5), slice(1, 6), slice(0, 3))  # z clipped at 0
    assert bounding_box(m, pad=9) == (slice(0, 5), slice(0, 6), slice(0, 4))
    assert np.count_nonzero(m[bounding_box(m)]) == 2
    assert bounding_box(np.zeros((3, 3), dtype=bool)) == (slice(0, 0), slice(0, 0))


@pytest.mark.parametrize("density", [0.0, 0.05, 0.3, 0.6])
def test_label_components_numbers_as_scipy_does(density: float) -> None:
    """cc3d's 26-connected labelling (the segmentation path's) gives scipy.ndimage.label's partition and
    numbering, so the "largest component" chosen by post-processing is the same."""
    from scipy import ndimage

    from core.analysis.metrics import label_components

    rng = np.random.default_rng(int(density * 100))
    mask = rng.random((17, 13, 9)) < density
    ref, n_ref = ndimage.label(mask, structure=np.ones((3, 3, 3), dtype=bool))
    got, n = label_components(mask)
    assert n == n_ref and got.shape == mask.shape
    np.testing.assert_array_equal(got, ref)


def test_label_components_hand_checked() -> None:
    from core.analysis.metrics import label_components

    m = np.zeros((3, 3, 3), dtype=bool)
    m[0, 0, 0] = m[1, 1, 1] = True  # corner-touching: one 26-connected component
    m[0, 2, 2] = True  # touches (1, 1, 1) by a corner too
    m[2, 0, 2] = True  # corner-adjacent to (1, 1, 1) as well
    assert label_components(m)[1] == 1
    m[1, 1, 1] = False
    labels, n = label_components(m)
    assert n == 3 and labels[0, 0, 0] == 1 and labels[0, 2, 2] == 2 and labels[2, 0, 2] == 3


def test_score_case_on_the_tumour_box_equals_the_whole_grid() -> None:
    """score_case scores on the box of the tumour voxels (padded by one voxel); every value, true negatives and
    HD95 included, must equal scoring each region on the whole grid, a tumour at the grid's border included."""
    rng = np.random.default_rng(3)
    gt = np.zeros((20, 18, 12), dtype=np.uint8)
    gt[4:11, 5:12, 3:8] = 2
    gt[6:9, 7:10, 4:7] = 1
    gt[7:8, 8:9, 5:6] = 4
    pred = gt.copy()
    pred[rng.random(gt.shape) < 0.03] = 2  # speckle everywhere, the border included
    pred[0:3, 0:2, 10:12] = 4
    spacing = (1.0, 1.2, 2.0)
    case = score_case(pred, gt, spacing)
    for region in ("WT", "TC", "ET"):
        assert case.regions[region] == score_region(pred, gt, region, spacing)
