"""core/engine/quality.py: each measure on hand-made arrays, the flag's reasons, and the saved settings."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from core.engine.quality import (
    QualityModel,
    QualityThresholds,
    count_islands,
    far_component_mm,
    flag,
    intensity_quantiles,
    intensity_shift,
    mean_entropy,
    measure,
    reference_from,
    symmetry_fraction,
)


def test_symmetry_of_a_mirrored_pair_and_of_a_one_sided_lesion() -> None:
    brain = np.zeros((20, 4, 4), bool)
    brain[2:18] = True  # midline between x = 9 and x = 10: x mirrors to 19 - x
    wt = np.zeros_like(brain)
    wt[4, 1, 1] = wt[15, 1, 1] = True  # 4 <-> 15: a symmetric pair
    assert symmetry_fraction(wt, brain) == 1.0
    wt[5, 1, 1] = True  # its mirror (14) is not tumour
    assert symmetry_fraction(wt, brain) == pytest.approx(2 / 3)
    assert symmetry_fraction(np.zeros_like(brain), brain) == 0.0


def test_islands_count_by_size() -> None:
    wt = np.zeros((30, 10, 10), bool)
    wt[0:10, 0:10, 0:10] = True  # 1 mL
    wt[20, 0, 0] = True  # 0.001 mL
    assert count_islands(wt, (1.0, 1.0, 1.0), 0.5) == 1
    assert count_islands(wt, (1.0, 1.0, 1.0), 0.001) == 2
    assert count_islands(np.zeros_like(wt), (1.0, 1.0, 1.0), 0.5) == 0


def test_mean_entropy_extremes() -> None:
    p = np.zeros((2, 1, 1, 4), np.float32)
    p[0, 0, 0] = (0, 0, 1, 0)  # certain
    p[1, 0, 0] = 0.25  # uniform: normalised entropy 1
    mask = np.ones((2, 1, 1), bool)
    assert mean_entropy(p, mask) == pytest.approx(0.5, abs=1e-4)
    assert mean_entropy(p, np.zeros_like(mask)) == 0.0


def test_intensity_reference_and_shift() -> None:
    rng = np.random.default_rng(1)
    a = rng.normal(0, 1, (4, 8, 8, 2)).astype(np.float32)
    a[..., 1] = 0.0  # a missing modality
    qa = intensity_quantiles(a)
    assert qa[1] is None and len(qa[0]) == 7
    ref = reference_from([qa], ("flair", "t1"))
    assert set(ref) == {"flair"}
    shifted = intensity_quantiles(a + np.array([0.5, 0.0], np.float32))  # brain voxels +0.5 in channel 0
    d, key = intensity_shift(shifted, ref, ("flair", "t1"))
    assert key == "flair" and d == pytest.approx(0.5, abs=1e-3)


def _measures(**over: float) -> dict:
    base = {"max_spacing_deviation": 0.0, "brain_ml": 1400.0, "intensity_shift": 0.1, "intensity_shift_modality": "flair",
            "wt_ml": 50.0, "symmetry": 0.05, "islands": 1, "mean_entropy": 0.1}
    return {**base, **over}


def test_flag_ok_and_each_reason() -> None:
    model = QualityModel(QualityThresholds())
    assert flag(_measures(), model).status == "ok"
    cases = {"voxel size": _measures(max_spacing_deviation=4.5), "brain volume": _measures(brain_ml=3000.0),
             "intensities differ": _measures(intensity_shift=3.0), "mirrored": _measures(symmetry=0.8),
             "separate tumour regions": _measures(islands=9), "whole-tumour volume": _measures(wt_ml=500.0),
             "uncertainty": _measures(mean_entropy=0.9)}
    for words, m in cases.items():
        f = flag(m, model)
        assert f.status == "review" and len(f.reasons) == 1 and words in f.reasons[0], words
    missing = flag(_measures(), model, ("t1", "t2"))
    assert missing.status == "review" and "T1, T2 missing" in missing.reasons[0]
    trained = flag(_measures(), QualityModel(trained_for_missing=True), ("t1", "t2"))
    assert trained.status == "ok" and trained.to_dict()["missing_modalities"] == ["t1", "t2"]


def test_measure_on_a_bilateral_prediction() -> None:
    labels = np.zeros((20, 20, 10), np.uint8)
    labels[3:6, 5:15, 2:8] = 2
    labels[14:17, 5:15, 2:8] = 2  # mirror image across the middle of the brain's X extent
    brain = np.zeros(labels.shape, bool)
    brain[1:19, 1:19, 1:9] = True
    probs = np.zeros((*labels.shape, 4), np.float32)
    probs[..., 0] = 1.0
    m = measure(labels, probs, brain, (1.0, 1.0, 1.0), [None] * 4, {}, ("flair", "t1", "t1ce", "t2"))
    assert m["symmetry"] == 1.0 and m["islands"] == 0  # two components of 0.18 mL < 0.5 mL
    assert m["wt_ml"] == pytest.approx(0.36) and m["intensity_shift"] == 0.0
    assert "mirrored" in " ".join(flag(m, QualityModel()).reasons)


def test_quality_model_round_trip(tmp_path: Path) -> None:
    qm = QualityModel(QualityThresholds(max_symmetry=0.2), {"flair": [0.0] * 7}, True)
    qm.save(tmp_path)
    assert QualityModel.load(tmp_path) == qm
    assert QualityModel.load(tmp_path / "none") == QualityModel()


# ------------------------------------------------------------------ far components, lesions, agreement ---

def _probs(shape: tuple[int, ...]) -> np.ndarray:
    p = np.zeros((*shape, 4), np.float32)
    p[..., 0] = 1.0
    return p


def test_far_component_distance_with_anisotropic_spacing() -> None:
    wt = np.zeros((6, 6, 40), bool)
    wt[1:4, 1:4, 0:5] = True  # main: 45 voxels, z 0-4
    wt[2, 2, 25:27] = True  # a second region: 2 voxels, z 25-26, 20 voxels beyond the main one's last slice
    # nearest voxels (2, 2, 4) and (2, 2, 25): 21 voxels of 2 mm along Z
    assert far_component_mm(wt, (1.0, 1.0, 2.0), 0.0) == pytest.approx(42.0)
    assert far_component_mm(wt, (1.0, 1.0, 2.0), 0.005) == 0.0  # the second region is 0.004 mL: too small
    wt[5, 5, 39] = True  # a third, farther one: nearest main voxel (3, 3, 4): sqrt(2^2 + 2^2 + 70^2)
    assert far_component_mm(wt, (1.0, 1.0, 2.0), 0.0) == pytest.approx(np.sqrt(8 + 70 ** 2))
    one = np.zeros_like(wt)
    one[1:4, 1:4, 0:5] = True
    assert far_component_mm(one, (1.0, 1.0, 2.0), 0.0) == 0.0
    assert far_component_mm(np.zeros_like(wt), (1.0, 1.0, 2.0), 0.0) == 0.0


def test_measure_counts_core_and_enhancing_lesions() -> None:
    labels = np.zeros((30, 10, 10), np.uint8)
    labels[0:30, 0:10, 0:10] = 2  # edema everywhere: one whole-tumour component
    labels[2:7, 2:7, 2:7] = 1  # core lesion of 125 voxels = 0.125 mL
    labels[12:17, 2:7, 2:7] = 1  # a second one
    labels[22:24, 5, 5] = 1  # a third, tiny core lesion (2 voxels)
    for x in (3, 13, 23):
        labels[x, 5, 5] = 4  # ET specks, one in each core lesion: 3 components of 1 voxel
    brain = np.ones(labels.shape, bool)
    m = measure(labels, _probs(labels.shape), brain, (1.0, 1.0, 1.0), [None] * 4, {}, ("flair", "t1", "t1ce", "t2"),
                lesion_ml=0.001)
    assert m["et_components"] == 3 and m["tc_components"] == 3
    assert m["et_ml"] == pytest.approx(0.003) and m["tc_ml"] == pytest.approx(0.252)
    m = measure(labels, _probs(labels.shape), brain, (1.0, 1.0, 1.0), [None] * 4, {}, ("flair", "t1", "t1ce", "t2"))
    assert m["et_components"] == 0 and m["tc_components"] == 2  # default lesion_ml 0.1: only the 125-voxel cores
    assert m["network_agreement"] is None and m["far_component_mm"] == 0.0
    m = measure(labels, _probs(labels.shape), brain, (1.0, 1.0, 1.0), [None] * 4, {}, ("flair", "t1", "t1ce", "t2"),
                network_agreement=0.42)
    assert m["network_agreement"] == 0.42


def test_measure_far_component_uses_island_ml() -> None:
    labels = np.zeros((40, 12, 12), np.uint8)
    labels[0:10, 0:10, 0:10] = 2  # 1 mL
    labels[30:38, 0:10, 0:10] = 2  # 0.8 mL, nearest voxels x = 9 and x = 30: 21 mm
    brain = np.ones(labels.shape, bool)
    args = (labels, _probs(labels.shape), brain, (1.0, 1.0, 1.0), [None] * 4, {}, ("flair", "t1", "t1ce", "t2"))
    assert measure(*args)["far_component_mm"] == pytest.approx(21.0)
    assert measure(*args, island_ml=0.9)["far_component_mm"] == 0.0


def _new(**over: float | None) -> dict:
    new = {"far_component_mm": 0.0, "tc_ml": 10.0, "et_ml": 3.0, "tc_components": 1, "et_components": 1,
           "network_agreement": 0.9}
    return _measures(**{**new, **over})


def test_new_measures_never_fire_with_default_thresholds() -> None:
    extreme = _new(far_component_mm=150.0, tc_components=40, et_components=60, network_agreement=0.0, tc_ml=999.0)
    assert flag(extreme, QualityModel()).status == "ok"


def test_each_new_reason_fires_past_its_threshold_and_not_below() -> None:
    model = QualityModel(QualityThresholds(max_far_component_mm=30.0, max_tc_components=2, max_et_components=3,
                                           min_network_agreement=0.7, tc_ml_range=(1.0, 80.0)))
    assert flag(_new(far_component_mm=30.0, tc_components=2, et_components=3, network_agreement=0.7, tc_ml=80.0),
                model).status == "ok"  # at the thresholds: not past them
    cases = {"second tumour region 48 mm": _new(far_component_mm=48.0),
             "tumour core is split into 3": _new(tc_components=3),
             "enhancing tumour is split into 4": _new(et_components=4),
             "networks disagree": _new(network_agreement=0.5),
             "tumour-core volume 95.0 mL is above 80": _new(tc_ml=95.0),
             "tumour-core volume 0.5 mL is below 1": _new(tc_ml=0.5)}
    for words, m in cases.items():
        f = flag(m, model)
        assert f.status == "review" and len(f.reasons) == 1 and words in f.reasons[0], (words, f.reasons)
    # unknown (no ensemble) or absent (measures saved before these existed): skipped
    assert flag(_new(network_agreement=None), model).status == "ok"
    assert flag(_measures(), model).status == "ok"


def test_an_old_quality_file_loads_with_the_new_thresholds_off(tmp_path: Path) -> None:
    old = {"thresholds": {"spacing_tolerance": 0.25, "brain_ml_range": [900.0, 2100.0], "max_intensity_shift": 2.0,
                          "max_symmetry": 0.5, "max_islands": 4, "island_ml": 0.5, "wt_ml_range": [0.5, 300.0],
                          "max_mean_entropy": 0.2},
           "reference_quantiles": {"flair": [0.0] * 7}, "quantiles": [1, 5, 25, 50, 75, 95, 99],
           "trained_for_missing": True}
    (tmp_path / "quality.json").write_text(json.dumps(old))
    qm = QualityModel.load(tmp_path)
    assert qm.thresholds == QualityThresholds(max_mean_entropy=0.2)
    assert qm.thresholds.tc_ml_range is None and qm.thresholds.max_far_component_mm is None
    assert qm.reference_quantiles == {"flair": [0.0] * 7} and qm.trained_for_missing


def test_new_thresholds_round_trip(tmp_path: Path) -> None:
    qm = QualityModel(QualityThresholds(max_far_component_mm=25.5, max_tc_components=2, max_et_components=4,
                                        min_network_agreement=0.65, tc_ml_range=(2.0, 90.0)))
    qm.save(tmp_path)
    assert QualityModel.load(tmp_path) == qm
