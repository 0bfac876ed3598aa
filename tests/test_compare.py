"""Tests of core.analysis.compare on a synthetic patient (tests/followup_phantom.py): the follow-up is the baseline
shifted by (3, -2, 1) voxels of 2 mm with its tumour shrunk; volumes are worked out by hand in the phantom's
docstring. Each registration takes about a second on 48^3 voxels."""

from __future__ import annotations

import numpy as np
import pytest
from followup_phantom import (
    BASELINE_VOXELS,
    FOLLOWUP_HALVES,
    FOLLOWUP_VOXELS,
    SHAPE,
    SHIFT_MM,
    SPACING_MM,
    VOXEL_ML,
    baseline_case,
    followup_case,
    make_case,
    phantom,
)

from core.analysis import compare
from core.analysis.compare import CAVEAT, Change, change, compare_studies, suggest_response, volume_changes
from core.analysis.measure import measure_rano
from core.data.io import volume_from_array
from core.errors import CaseError, RegistrationError


@pytest.fixture(scope="module")
def result() -> compare.Comparison:
    return compare_studies(baseline_case(), followup_case())


# ---- registration --------------------------------------------------------------------------------------------

def test_registration_recovers_the_known_shift_within_one_voxel(result: compare.Comparison) -> None:
    reg = result.registration
    matrix = np.array(reg.matrix)
    # baseline world point p shows the same anatomy as follow-up point p + shift
    np.testing.assert_allclose(matrix[:3, 3], SHIFT_MM, atol=SPACING_MM)
    np.testing.assert_allclose(matrix[:3, :3], np.eye(3), atol=np.sin(np.radians(1.0)))
    assert reg.modality == "t1ce"
    assert reg.ncc >= compare.MIN_NCC and reg.brain_dice >= compare.MIN_BRAIN_DICE
    assert reg.final_metric < 0  # Mattes MI is reported negated


def test_follow_up_is_resampled_onto_the_baseline_grid(result: compare.Comparison) -> None:
    assert set(result.followup_images) == {"flair", "t1ce"}
    assert all(a.shape == SHAPE and a.dtype == np.float32 for a in result.followup_images.values())
    labels = result.followup_labels_on_baseline
    assert labels.shape == SHAPE and labels.dtype == np.uint8
    assert set(np.unique(labels)) <= {0, 1, 2, 4}
    # the registered follow-up tumour sits where the unshifted follow-up tumour would be
    unshifted = phantom(FOLLOWUP_HALVES)["seg"]
    wt_moved, wt_true = labels > 0, unshifted > 0
    assert 2 * (wt_moved & wt_true).sum() / (wt_moved.sum() + wt_true.sum()) > 0.8


def test_identical_studies_overlap_fully() -> None:
    """Bug: identical images reported a brain-overlap Dice of 0.94-0.98: the follow-up's brain was the linearly
    resampled image thresholded at != 0, which adds a shell of faint interpolated voxels round the brain."""
    reg = compare_studies(baseline_case(), make_case("same", phantom())).registration
    np.testing.assert_allclose(np.array(reg.matrix)[:3, 3], 0.0, atol=0.5)  # near the identity (2 mm voxels)
    assert reg.brain_dice == pytest.approx(1.0, abs=1e-9)
    assert reg.ncc > 0.999


def test_poor_alignment_is_refused_with_a_project_error() -> None:
    unrelated = make_case("other", phantom(pattern=True, shift=(3, -2, 1)))
    with pytest.raises(RegistrationError, match="expected the follow-up to align"):
        compare_studies(baseline_case(), unrelated)


def test_the_alignment_threshold_is_applied() -> None:
    with pytest.raises(RegistrationError, match=r"NCC inside the brain >= 0\.999"):
        compare_studies(baseline_case(), followup_case(), min_ncc=0.999)


def test_registers_on_flair_when_t1ce_is_missing_from_one_study() -> None:
    base = make_case("b", phantom(), modalities=("flair",))
    out = compare_studies(base, followup_case())
    assert out.registration.modality == "flair"
    np.testing.assert_allclose(np.array(out.registration.matrix)[:3, 3], SHIFT_MM, atol=SPACING_MM)
    assert set(out.followup_images) == {"flair", "t1ce"}


def test_modality_choice_and_refusals() -> None:
    base, follow = baseline_case(), followup_case()
    assert compare.choose_modality(base, follow) == "t1ce"
    assert compare.choose_modality(base, follow, "flair") == "flair"
    with pytest.raises(CaseError, match="expected a modality both studies hold"):
        compare.choose_modality(base, follow, "t2")
    only_t1ce = make_case("t", phantom(), modalities=("t1ce",))
    only_flair = make_case("f", phantom(), modalities=("flair",))
    with pytest.raises(CaseError, match="share a modality"):
        compare.choose_modality(only_t1ce, only_flair)


def test_a_study_without_segmentation_is_refused() -> None:
    unlabelled = make_case("u", phantom(), with_seg=False)
    with pytest.raises(CaseError, match="expected a segmentation of the baseline study 'u'"):
        compare_studies(unlabelled, followup_case())


def test_a_segmentation_on_another_grid_is_refused() -> None:
    seg = volume_from_array(np.zeros((10, 10, 10), np.uint8), np.diag([2.0, 2.0, 2.0, 1.0]), "small_seg.nii.gz")
    with pytest.raises(CaseError, match="small_seg.nii.gz"):
        compare_studies(baseline_case(), followup_case(), followup_seg=seg)


# ---- volumes, products, category -----------------------------------------------------------------------------

def test_volumes_and_percent_change_by_hand(result: compare.Comparison) -> None:
    vols = {c.name: c for c in result.volumes}
    assert list(vols) == ["NCR", "ED", "ET", "WT", "TC"]
    for name in vols:
        assert vols[name].baseline == pytest.approx(BASELINE_VOXELS[name] * VOXEL_ML)
        assert vols[name].followup == pytest.approx(FOLLOWUP_VOXELS[name] * VOXEL_ML)
    # WT: 1728 -> 512 voxels of 0.008 mL: 13.824 -> 4.096 mL, -9.728 mL, -70.37 %
    assert vols["WT"].baseline == pytest.approx(13.824)
    assert vols["WT"].change == pytest.approx(-9.728)
    assert vols["WT"].change_pct == pytest.approx(-70.370370, abs=1e-4)
    # ET: 936 -> 208 voxels: -77.78 %; NCR 64 -> 8: -87.5 %
    assert vols["ET"].change_pct == pytest.approx(-77.777778, abs=1e-4)
    assert vols["NCR"].change_pct == pytest.approx(-87.5)


def test_products_come_from_measure_rano_on_each_own_grid(result: compare.Comparison) -> None:
    base, follow = baseline_case(), followup_case()
    b = measure_rano(np.asarray(base.seg.data), base.spacing_mm).sum_products_mm2
    f = measure_rano(np.asarray(follow.seg.data), follow.spacing_mm).sum_products_mm2
    # by hand: a square cross-section n voxels wide measures sqrt(n^2 + (n - 1)^2) voxels along both diagonals
    # (outline points half a voxel outside the centres): n = 10 -> 181 x 4 mm^2, n = 6 -> 61 x 4 mm^2
    assert b == pytest.approx(724.0) and f == pytest.approx(244.0)
    assert result.products.baseline == pytest.approx(b)
    assert result.products.followup == pytest.approx(f)
    assert result.products.change_pct == pytest.approx((f - b) / b * 100)


def test_the_shrunk_tumour_suggests_partial_response_with_the_caveat(result: compare.Comparison) -> None:
    # square cross-sections 20 mm -> 12 mm wide: the products fall by about (12/20)^2, far beyond 50 %
    assert result.products.change_pct < -50
    assert result.response.category == "PR"
    assert result.response.caveat == CAVEAT
    assert "RANO also needs clinical data" in CAVEAT and "suggestion from the images only" in CAVEAT
    assert result.new_lesions == 0


def test_a_new_measurable_lesion_means_progression() -> None:
    out = compare_studies(baseline_case(), followup_case(extra_lesion=(14, 30, 18)))
    assert out.new_lesions == 1
    assert out.response.category == "PD"
    assert any("new measurable" in r for r in out.response.reasons)


def test_volumes_use_each_studys_own_voxel_size() -> None:
    base = np.zeros((4, 4, 4), np.uint8)
    base[0, 0, :2] = 4  # 2 voxels of 1 mm^3
    follow = np.zeros((4, 4, 4), np.uint8)
    follow[0, 0, :2] = 4  # 2 voxels of 2 x 2 x 2 mm = 8 mm^3
    vols = {c.name: c for c in volume_changes(base, (1.0, 1.0, 1.0), follow, (2.0, 2.0, 2.0))}
    assert vols["ET"].baseline == pytest.approx(0.002)
    assert vols["ET"].followup == pytest.approx(0.016)
    assert vols["ET"].change_pct == pytest.approx(700.0)
    assert vols["ED"].change_pct is None and vols["ED"].note == compare.PERCENT_UNDEFINED


def test_percent_change_is_undefined_when_the_baseline_is_zero() -> None:
    c = change("ED", "mL", 0.0, 1.5)
    assert c.change == 1.5 and c.change_pct is None and "baseline value is 0" in c.note
    assert c.to_dict()["change_pct"] is None and c.to_dict()["note"] == compare.PERCENT_UNDEFINED
    assert change("ED", "mL", 0.0, 0.0).change_pct is None
    assert change("ED", "mL", 2.0, 1.0).change_pct == pytest.approx(-50.0)


def _products(b: float, f: float) -> Change:
    return change("sum_of_products", "mm2", b, f)


@pytest.mark.parametrize(("b", "f", "et_b", "et_f", "new", "category"), [
    (400, 300, 1.0, 0.0, 0, "CR"),  # no enhancing tumour at follow-up
    (0, 0, 0.0, 0.0, 0, "CR"),  # none at either time
    (400, 200, 1.0, 0.5, 0, "PR"),  # -50 %: exactly the PR limit
    (400, 201, 1.0, 0.5, 0, "SD"),  # -49.75 %
    (400, 500, 1.0, 1.5, 0, "PD"),  # +25 %: exactly the PD limit
    (400, 499, 1.0, 1.5, 0, "SD"),  # +24.75 %
    (400, 100, 1.0, 0.5, 1, "PD"),  # a new measurable lesion outweighs a decrease
    (0, 150, 0.3, 1.0, 0, "PD"),  # measurable disease where there was none
    (0, 0, 0.3, 0.2, 0, "SD"),  # enhancing but never measurable
])
def test_category_rules_by_hand(b: float, f: float, et_b: float, et_f: float, new: int, category: str) -> None:
    response = suggest_response(_products(b, f), et_f, et_b, new)
    assert response.category == category
    assert response.reasons and response.caveat == CAVEAT
    assert response.to_dict()["caveat"] == CAVEAT


def test_json_summary_is_plain(result: compare.Comparison) -> None:
    import json

    out = json.loads(json.dumps(result.to_dict()))
    assert out["baseline"]["case_id"] == "FU_Baseline" and out["followup"]["case_id"] == "FU_Followup"
    assert out["volumes_ml"]["WT"]["change_pct"] == pytest.approx(-70.37)
    assert out["response"]["category"] == "PR" and out["response"]["caveat"] == CAVEAT
    assert out["registration"]["ncc_in_brain"] >= compare.MIN_NCC
    assert out["sum_of_products_mm2"]["unit"] == "mm2"


def test_focus_voxel_is_the_centre_of_the_baseline_tumour_core(result: compare.Comparison) -> None:
    # the TC cube spans voxels 25..34, 17..26, 21..30: centre (29.5, 21.5, 25.5), rounded half to even
    assert compare.focus_voxel(result) == (30, 22, 26)
    assert result.baseline_labels[30, 22, 26] == 1  # inside the necrotic core


def test_follow_up_volumes_use_each_study_s_own_voxel_volume() -> None:
    lab = np.zeros((4, 4, 4), np.uint8)
    lab[:2, :2, :2] = 2  # 8 voxels of edema in both studies
    # Same spacing, but the follow-up's slices are tilted 60 deg: its voxels hold half the volume (|det|).
    changes = {c.name: c for c in volume_changes(lab, (1.0, 1.0, 2.0), lab, (1.0, 1.0, 2.0),
                                                 baseline_voxel_ml=2e-3, followup_voxel_ml=1e-3)}
    assert changes["ED"].baseline == pytest.approx(0.016) and changes["ED"].followup == pytest.approx(0.008)
