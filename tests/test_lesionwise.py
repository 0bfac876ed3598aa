"""Tests of core/analysis/lesionwise.py on tiny label arrays whose lesion-wise figures are worked out by hand.

Tolerance: 1e-12 relative (``pytest.approx(rel=1e-12)``) unless stated. The reference lesions are 3 x 3 x 3
cubes (27 voxels, 26 of them on the surface: a 6-connected erosion keeps only the centre); a prediction that
covers the lower two z-slices of a cube (18 voxels, all surface) has Dice 2 x 18 / (27 + 18) = 0.8 and HD95 1 mm
on a 1 mm grid: of the 44 pooled surface distances, 34 are 0, the prediction's centre voxel is 1 mm from the
reference surface and the 9 top-face reference voxels are 1 mm from the prediction (2 mm with 2 mm slices);
the 95th percentile (linear, position 0.95 x 43 = 40.85) falls among the 1s (the 2s).
"""

from __future__ import annotations

import math
import subprocess
import sys

import numpy as np
import pytest

from core.analysis import lesionwise
from core.analysis.lesionwise import (
    LESION_MISS_HD95_MM,
    LesionScore,
    count_lesions,
    flat_lesionwise,
    lesionwise_scores,
    surfel_hd95_mm,
)
from core.config import PROJECT_ROOT
from core.errors import BratsViewerError, CaseError, ImageContentError

SHAPE = (12, 8, 8)
ISO = (1.0, 1.0, 1.0)


def _two_lesions() -> tuple[np.ndarray, np.ndarray]:
    """Reference: an enhancing cube A (label 4) and an edema cube B (label 2). Prediction: the lower two slices
    of A (label 4), nothing of B, and a one-voxel edema speck away from both."""
    gt = np.zeros(SHAPE, np.uint8)
    gt[1:4, 1:4, 1:4] = 4  # A
    gt[7:10, 1:4, 1:4] = 2  # B
    pred = np.zeros(SHAPE, np.uint8)
    pred[1:4, 1:4, 1:3] = 4  # 18 voxels of A
    pred[10, 6, 6] = 2  # speck: 3 voxels from B in y and z, so not 26-connected to it
    return pred, gt


def test_hits_one_misses_one_adds_a_speck() -> None:
    pred, gt = _two_lesions()
    wt = lesionwise_scores(pred, gt, ISO)["WT"]
    # WT: A matched (Dice 0.8, HD95 1 mm), B missed (FN), the speck spurious (FP)
    assert (wt.n_ref, wt.n_pred, wt.tp, wt.fp, wt.fn) == (2, 2, 1, 1, 1)
    assert wt.dice == pytest.approx((0.8 + 0 + 0) / 3, rel=1e-12)
    assert wt.hd95_mm == pytest.approx((1.0 + 374.0 + 374.0) / 3, rel=1e-12)
    assert LESION_MISS_HD95_MM == 374.0
    assert wt.matched_dice == pytest.approx(0.8, rel=1e-12) and wt.matched_hd95_mm == pytest.approx(1.0)
    assert wt.lesion_dice == pytest.approx((0.8,)) and wt.lesion_hd95_mm == pytest.approx((1.0,))
    assert wt.global_dice == pytest.approx(2 * 18 / (54 + 19), rel=1e-12)  # 18 shared; 54 and 19 voxels


def test_core_regions_see_only_the_enhancing_lesion() -> None:
    pred, gt = _two_lesions()
    scores = lesionwise_scores(pred, gt, ISO)
    assert list(scores) == ["WT", "TC", "ET"]
    for region in ("TC", "ET"):  # both are label 4 only here: A against its lower two slices
        s = scores[region]
        assert (s.n_ref, s.n_pred, s.tp, s.fp, s.fn) == (1, 1, 1, 0, 0)
        assert s.dice == pytest.approx(0.8) and s.hd95_mm == pytest.approx(1.0)
        assert s.global_dice == pytest.approx(0.8)


def test_spacing_scales_the_distances() -> None:
    pred, gt = _two_lesions()
    wt = lesionwise_scores(pred, gt, (1.0, 1.0, 2.0))["WT"]
    assert wt.matched_hd95_mm == pytest.approx(2.0)  # the top face is one 2 mm slice away
    assert wt.hd95_mm == pytest.approx((2.0 + 374.0 + 374.0) / 3)
    assert wt.dice == pytest.approx(0.8 / 3)  # overlap does not depend on the spacing


def test_matching_is_one_to_one_by_dice() -> None:
    """A reference line of 4 voxels split in the prediction into 2 + 1 voxels: the larger fragment is matched
    (Dice 2 x 2 / 6 against 2 x 1 / 5); the smaller one, though it overlaps, is a false positive."""
    gt = np.zeros((6, 5, 5), np.uint8)
    gt[0:4, 2, 2] = 2
    pred = np.zeros_like(gt)
    pred[0:2, 2, 2] = 2
    pred[3, 2, 2] = 2
    wt = lesionwise_scores(pred, gt, ISO)["WT"]
    assert (wt.n_ref, wt.n_pred, wt.tp, wt.fp, wt.fn) == (1, 2, 1, 1, 0)
    assert wt.matched_dice == pytest.approx(2 / 3)
    # pooled distances: fragment -> line 0, 0; line -> fragment 0, 0, 1, 2: 95th percentile 1 + 0.75 x (2 - 1)
    assert wt.matched_hd95_mm == pytest.approx(1.75)
    assert wt.dice == pytest.approx((2 / 3) / 2) and wt.hd95_mm == pytest.approx((1.75 + 374.0) / 2)
    assert wt.global_dice == pytest.approx(2 * 3 / (4 + 3))
    # any overlap may match (threshold 1e-6): the 1-voxel fragment alone is a hit of Dice 2 x 1 / 5; distances
    # 0 (fragment -> line) and 3, 2, 1, 0 (line -> fragment): 95th percentile 2 + 0.8 x (3 - 2)
    alone = np.zeros_like(gt)
    alone[3, 2, 2] = 2
    wt = lesionwise_scores(alone, gt, ISO)["WT"]
    assert (wt.tp, wt.fp, wt.fn) == (1, 0, 0)
    assert wt.dice == pytest.approx(0.4) and wt.hd95_mm == pytest.approx(2.8)


def test_no_lesion_anywhere() -> None:
    empty = np.zeros(SHAPE, np.uint8)
    for s in lesionwise_scores(empty, empty, ISO).values():
        assert (s.dice, s.hd95_mm, s.global_dice) == (1.0, 0.0, 1.0)
        assert (s.n_ref, s.n_pred, s.tp, s.fp, s.fn) == (0, 0, 0, 0, 0)
        assert math.isnan(s.matched_dice) and math.isnan(s.matched_hd95_mm)  # as brats-evaluation: NaN
        d = s.to_dict()
        assert d["matched_dice"] is None and d["matched_hd95_mm"] is None and d["dice"] == 1.0


def test_empty_prediction_misses_every_lesion() -> None:
    _, gt = _two_lesions()
    wt = lesionwise_scores(np.zeros(SHAPE, np.uint8), gt, ISO)["WT"]
    assert (wt.n_ref, wt.n_pred, wt.tp, wt.fp, wt.fn) == (2, 0, 0, 0, 2)
    assert (wt.dice, wt.hd95_mm, wt.global_dice) == (0.0, 374.0, 0.0)
    assert wt.matched_dice == 0.0 and wt.matched_hd95_mm == math.inf  # brats-evaluation's zero-TP values
    assert wt.to_dict()["matched_hd95_mm"] is None


def test_flat_dict_names_and_types() -> None:
    pred, gt = _two_lesions()
    flat = flat_lesionwise(lesionwise_scores(pred, gt, ISO))
    assert list(flat)[:3] == ["WT_lw_dice", "WT_lw_hd95_mm", "WT_lw_matched_dice"]
    assert flat["WT_lw_n_ref"] == 2 and isinstance(flat["WT_lw_n_ref"], int)
    assert flat["ET_lw_dice"] == pytest.approx(0.8) and len(flat) == 3 * 10
    assert isinstance(next(iter(lesionwise_scores(pred, gt, ISO).values())), LesionScore)


def test_integer_dtypes_and_bad_input() -> None:
    pred, gt = _two_lesions()
    ref = lesionwise_scores(pred, gt, ISO)["WT"]
    assert lesionwise_scores(pred.astype(np.int64), gt.astype(np.int32), ISO)["WT"] == ref
    with pytest.raises(CaseError, match="same shape"):
        lesionwise_scores(pred[:-1], gt, ISO)
    bad = gt.copy()
    bad[0, 0, 0] = 3  # labels are internal 0/1/2/4 here (files are mapped when loaded)
    with pytest.raises(CaseError, match="labels within"):
        lesionwise_scores(pred, bad, ISO)
    with pytest.raises(CaseError, match="integer labels"):
        lesionwise_scores(pred.astype(np.float32), gt, ISO)
    with pytest.raises(ImageContentError, match="positive finite voxel sizes"):
        lesionwise_scores(pred, gt, (1.0, 0.0, 1.0))
    assert issubclass(CaseError, ValueError) and issubclass(ImageContentError, ValueError)


def test_nothing_written_to_stdout(capsys: pytest.CaptureFixture[str]) -> None:
    """panoptica prints a citation notice and a shared-labels notice to stdout, where ``evaluate`` writes JSON."""
    from panoptica.utils import citation_reminder

    citation_reminder._citation_reminder_enabled = True
    lesionwise._evaluator.cache_clear()
    pred, gt = _two_lesions()
    lesionwise_scores(pred, gt, ISO)
    out = capsys.readouterr()
    assert out.out == "" and out.err == ""


def test_panoptica_imported_only_when_scoring() -> None:
    code = ("import sys, core.cli.evaluate, core.analysis.report, core.analysis.lesionwise; "
            "print('panoptica' in sys.modules)")
    done = subprocess.run([sys.executable, "-c", code], cwd=PROJECT_ROOT, capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "False"


# ---------------------------------------------------------------------------------------- rule="brats2023" ---
# Every figure below was also reproduced by the BraTS 2023 script itself (run outside the project, on the same
# arrays written as NIfTI with ET = 3): equal to the last digit.

BIG = (20, 12, 12)


def _cube(labels: np.ndarray, x0: int, label: int = 4) -> np.ndarray:
    """A 4 x 4 x 4 cube (64 voxels) at x = x0..x0 + 3, y and z = 2..5."""
    labels[x0:x0 + 4, 2:6, 2:6] = label
    return labels


def test_brats2023_reference_speck_is_left_out() -> None:
    """Reference: a 64-voxel lesion and a 10-voxel speck 9 voxels away; prediction: the lesion only. The speck
    (10 mm^3, at most 50) does not count under brats2023; panoptica-gli counts it as a missed lesion."""
    gt = _cube(np.zeros(BIG, np.uint8), 2)
    pred = gt.copy()
    gt[14, 1:6, 1:3] = 4  # 5 x 2 voxels
    new = lesionwise_scores(pred, gt, ISO, rule="brats2023")["ET"]
    assert (new.dice, new.hd95_mm) == (1.0, 0.0)
    assert (new.n_ref, new.n_pred, new.tp, new.fp, new.fn) == (1, 1, 1, 0, 0)
    old = lesionwise_scores(pred, gt, ISO)["ET"]
    assert lesionwise_scores(pred, gt, ISO, rule="panoptica-gli")["ET"] == old  # the default is unchanged
    assert (old.dice, old.hd95_mm) == (0.5, 187.0) and (old.tp, old.fn) == (1, 1)


def test_brats2023_merges_reference_lesions_within_the_dilation() -> None:
    """Two 64-voxel reference cubes with 2 background voxels between them (x = 6, 7) are one lesion after the
    3-fold dilation. Prediction = the first cube: one lesion of Dice 2 x 64 / (128 + 64) = 2/3 and HD95 6 mm
    (the farthest 11 % of the reference surface, the far face of the second cube at x = 12 on the voxel-corner
    grid, is 6 voxels from the first cube's face at x = 6; the prediction's surface lies on the reference's),
    12 mm with 2 mm voxels along x. panoptica-gli sees two lesions, one missed."""
    gt = _cube(_cube(np.zeros(BIG, np.uint8), 2), 8)
    pred = _cube(np.zeros(BIG, np.uint8), 2)
    new = lesionwise_scores(pred, gt, ISO, rule="brats2023")["ET"]
    assert (new.n_ref, new.tp, new.fp, new.fn) == (1, 1, 0, 0)
    assert new.dice == pytest.approx(2 / 3, rel=1e-12) and new.hd95_mm == pytest.approx(6.0, rel=1e-12)
    assert new.matched_dice == pytest.approx(2 / 3) and new.lesion_hd95_mm == pytest.approx((6.0,))
    assert lesionwise_scores(pred, gt, (2.0, 1.0, 1.0), rule="brats2023")["ET"].hd95_mm == pytest.approx(12.0)
    old = lesionwise_scores(pred, gt, ISO)["ET"]
    assert (old.n_ref, old.tp, old.fn) == (2, 1, 1) and (old.dice, old.hd95_mm) == (0.5, 187.0)
    both = lesionwise_scores(gt, gt, ISO, rule="brats2023")["ET"]  # a perfect prediction: one lesion, two here
    assert (both.n_ref, both.n_pred, both.tp, both.dice, both.hd95_mm) == (1, 2, 1, 1.0, 0.0)
    assert lesionwise_scores(gt, gt, ISO)["ET"].tp == 2


def test_brats2023_false_positive_specks_count_whatever_their_size() -> None:
    """The script thresholds reference lesions only: a 20-voxel predicted speck far from every reference lesion is
    a false positive (Dice 0, HD95 374 mm): (1 + 0) / 2 and (0 + 374) / 2."""
    gt = _cube(np.zeros(BIG, np.uint8), 2)
    pred = gt.copy()
    pred[13:18, 8:10, 8:10] = 4  # 5 x 2 x 2 voxels
    s = lesionwise_scores(pred, gt, ISO, rule="brats2023")["ET"]
    assert (s.n_ref, s.n_pred, s.tp, s.fp, s.fn) == (1, 2, 1, 1, 0)
    assert (s.dice, s.hd95_mm) == (0.5, 187.0)
    assert s.matched_dice == 1.0 and s.matched_hd95_mm == 0.0


def test_brats2023_prediction_within_reach_joins_the_lesion() -> None:
    """A one-voxel predicted speck 2 voxels from the reference cube lies within its dilation: it belongs to the
    lesion (no false positive), Dice 2 x 64 / (64 + 65) = 128/129; its 8 surface elements hold 2 % of the
    predicted surface area, so HD95 stays 0. panoptica-gli: a false positive. A predicted speck near a left-out
    small reference speck is no false positive either."""
    gt = _cube(np.zeros(BIG, np.uint8), 2)
    pred = gt.copy()
    pred[8, 3, 3] = 4
    s = lesionwise_scores(pred, gt, ISO, rule="brats2023")["ET"]
    assert (s.tp, s.fp, s.fn) == (1, 0, 0)
    assert s.dice == pytest.approx(128 / 129, rel=1e-12) and s.hd95_mm == 0.0
    old = lesionwise_scores(pred, gt, ISO)["ET"]
    assert (old.fp, old.dice, old.hd95_mm) == (1, 0.5, 187.0)
    gt[14, 1:6, 1:3] = 4  # a 10-voxel reference speck, missed; a predicted voxel 2 voxels from it
    pred = _cube(np.zeros(BIG, np.uint8), 2)
    pred[16, 3, 1] = 4
    s = lesionwise_scores(pred, gt, ISO, rule="brats2023")["ET"]
    assert (s.n_ref, s.n_pred, s.tp, s.fp, s.fn, s.dice, s.hd95_mm) == (1, 2, 1, 0, 0, 1.0, 0.0)


def test_brats2023_threshold_is_in_cubic_mm() -> None:
    """A missed 50-voxel lesion: 50 mm^3 at 1 mm is left out (nothing to score: Dice 1, HD95 0 mm); with 1.1 mm
    slices it holds 55 mm^3 and is a miss (Dice 0, HD95 374 mm)."""
    gt = np.zeros(BIG, np.uint8)
    gt[2:7, 2:7, 2:4] = 2  # 5 x 5 x 2 voxels of edema: WT only
    empty = np.zeros(BIG, np.uint8)
    s = lesionwise_scores(empty, gt, ISO, rule="brats2023")["WT"]
    assert (s.dice, s.hd95_mm, s.n_ref, s.tp, s.fp, s.fn) == (1.0, 0.0, 0, 0, 0, 0)
    assert math.isnan(s.matched_dice) and s.global_dice == 0.0
    s = lesionwise_scores(empty, gt, (1.0, 1.0, 1.1), rule="brats2023")["WT"]
    assert (s.dice, s.hd95_mm, s.n_ref, s.fn) == (0.0, 374.0, 1, 1)
    assert s.matched_dice == 0.0 and s.matched_hd95_mm == math.inf


def test_brats2023_empty_cases() -> None:
    empty = np.zeros(BIG, np.uint8)
    for s in lesionwise_scores(empty, empty, ISO, rule="brats2023").values():
        assert (s.dice, s.hd95_mm, s.global_dice, s.n_ref, s.n_pred) == (1.0, 0.0, 1.0, 0, 0)
        assert math.isnan(s.matched_dice) and math.isnan(s.matched_hd95_mm)
    pred = _cube(np.zeros(BIG, np.uint8), 2, label=2)  # edema where the reference is empty: a false positive
    scores = lesionwise_scores(pred, empty, ISO, rule="brats2023")
    assert (scores["WT"].dice, scores["WT"].hd95_mm, scores["WT"].fp) == (0.0, 374.0, 1)
    assert (scores["ET"].dice, scores["ET"].hd95_mm, scores["ET"].fp) == (1.0, 0.0, 0)
    assert flat_lesionwise(scores)["WT_lw_matched_hd95_mm"] is None


def test_brats2023_unknown_rule_and_no_panoptica() -> None:
    pred, gt = _two_lesions()
    with pytest.raises(BratsViewerError, match="lesion rule"):
        lesionwise_scores(pred, gt, ISO, rule="brats2024")
    code = ("import sys, numpy as np; from core.analysis.lesionwise import lesionwise_scores; "
            "a = np.zeros((6, 6, 6), np.uint8); a[1:3, 1:3, 1:3] = 4; lesionwise_scores(a, a, (1, 1, 1), 'brats2023'); "
            "print('panoptica' in sys.modules)")
    done = subprocess.run([sys.executable, "-c", code], cwd=PROJECT_ROOT, capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "False"


def test_surfel_hd95_hand_values() -> None:
    """Two single voxels 3 apart along x: each has 8 corner surface elements of equal area, 4 at 2 and 4 at 3
    voxels from the other: the 95th percentile is 3 voxels, 6 mm with 2 mm voxels along x. An empty mask: inf."""
    g = np.zeros((8, 3, 3), bool)
    g[0, 1, 1] = True
    p = np.zeros_like(g)
    p[3, 1, 1] = True
    assert surfel_hd95_mm(g, p, ISO) == 3.0 and surfel_hd95_mm(g, p, (2.0, 1.0, 1.0)) == 6.0
    assert surfel_hd95_mm(g, np.zeros_like(g), ISO) == math.inf
    assert surfel_hd95_mm(np.zeros_like(g), np.zeros_like(g), ISO) == math.inf


def test_surfel_area_table() -> None:
    """One corner inside: a triangle of area vector (1, 1, 1)/8 voxel^2, (15, 10, 6)/8 mm^2 with 2 x 3 x 5 mm
    voxels, |.| = 19/8; one face of the neighbourhood (code 15, x = 1): a 3 x 5 mm^2 square; complements alike."""
    areas = lesionwise._surfel_areas_mm2((2.0, 3.0, 5.0))
    assert areas[1] == pytest.approx(19 / 8, rel=1e-12) and areas[15] == pytest.approx(15.0, rel=1e-12)
    assert areas[0] == 0.0 and areas[255] == 0.0
    np.testing.assert_allclose(areas, areas[::-1], rtol=1e-12)  # code c and 255 - c
    assert lesionwise._surfel_areas_mm2(ISO)[1] == pytest.approx(math.sqrt(3) / 8, rel=1e-12)


# --------------------------------------------------------------------------------------------- count_lesions ---

def test_count_lesions_by_region() -> None:
    lab = np.zeros((10, 10, 10), np.uint8)
    lab[0:3, 0:3, 0:3] = 2
    lab[1, 1, 1] = 4  # inside the first WT lesion: an ET lesion
    lab[5, 5, 5] = 1
    lab[6, 6, 6] = 4  # touches (5, 5, 5) only at a corner: one WT and one TC lesion (26-connected), ET alone
    lab[9, 9, 9] = 2  # a one-voxel WT lesion
    assert count_lesions(lab, ISO) == {"WT": 3, "TC": 2, "ET": 2}
    # at least 2 voxels of 1 x 1 x 2 mm = 4 mm^3: the single voxels go, the 2-voxel pair stays
    assert count_lesions(lab, (1.0, 1.0, 2.0), min_ml=0.004) == {"WT": 2, "TC": 1, "ET": 0}
    assert count_lesions(lab, ISO, min_ml=0.027) == {"WT": 1, "TC": 0, "ET": 0}  # only the 27-voxel cube
    assert count_lesions(np.zeros((4, 4, 4), np.uint8), ISO) == {"WT": 0, "TC": 0, "ET": 0}


def test_count_lesions_rejects_bad_input() -> None:
    with pytest.raises(CaseError, match=r"\(X, Y, Z\)"):
        count_lesions(np.zeros((4, 4), np.uint8), ISO)
    with pytest.raises(CaseError, match="labels within"):
        count_lesions(np.full((2, 2, 2), 3, np.uint8), ISO)
    with pytest.raises(ImageContentError, match="minimum lesion volume"):
        count_lesions(np.zeros((2, 2, 2), np.uint8), ISO, min_ml=-1.0)
    with pytest.raises(ImageContentError):
        count_lesions(np.zeros((2, 2, 2), np.uint8), (1.0, 1.0))
