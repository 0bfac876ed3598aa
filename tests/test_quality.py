"""core/engine/quality.py: each measure on hand-made arrays, the flag's reasons, and the saved settings."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from core.engine.quality import (
    QualityModel,
    QualityThresholds,
    count_islands,
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
