"""benchmarks/cv_analysis.py --loo: the threshold rule on hand-made measure rows (no predictions needed)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "benchmarks"))
cva = pytest.importorskip("cv_analysis")

from core.engine.quality import QualityModel, QualityThresholds, flag  # noqa: E402


def _row(case: str, dice: float, **over: float | None) -> dict:
    m = {"max_spacing_deviation": 0.0, "brain_ml": 1400.0, "intensity_shift": 1.0, "intensity_shift_modality": "flair",
         "wt_ml": 50.0, "symmetry": 0.1, "islands": 1, "mean_entropy": 0.2, "far_component_mm": 0.0, "tc_ml": 20.0,
         "et_ml": 5.0, "tc_components": 1, "et_components": 1, "network_agreement": None}
    return {"case": case, "fold": 0, "wt_dice": dice, "measures": {**m, **over}, "missing": (),
            "quality": QualityModel()}


def test_thresholds_sit_between_good_and_bad_and_make_no_in_sample_false_alarm() -> None:
    rows = [_row("a", 0.9, mean_entropy=0.15, et_components=2, wt_ml=40.0, network_agreement=0.9),
            _row("b", 0.85, mean_entropy=0.2, far_component_mm=10.0, wt_ml=80.0, network_agreement=0.8),
            _row("c", 0.5, mean_entropy=0.3, et_components=5, wt_ml=5.0, network_agreement=0.4),
            _row("d", 0.7, mean_entropy=0.18, far_component_mm=60.0, wt_ml=400.0, tc_components=0)]
    t = cva.choose_thresholds(rows)
    assert t.max_mean_entropy == pytest.approx(0.25)  # midway between 0.2 (good) and 0.3 (bad)
    assert t.max_far_component_mm == pytest.approx(35.0)
    assert t.max_et_components == 3  # floor((2 + 5) / 2)
    assert t.min_network_agreement == pytest.approx(0.6)
    assert t.wt_ml_range == pytest.approx((22.5, 240.0))  # inside the a-priori (0.5, 300)
    assert t.max_tc_components is None  # the bad 0 lies below the good 1s: a "max" rule cannot use it
    assert t.tc_ml_range is None and t.max_symmetry == 1.0  # nothing separates: off
    assert t.max_intensity_shift == QualityThresholds().max_intensity_shift  # prior kept
    assert [flag(r["measures"], QualityModel(t)).status for r in rows] == ["ok", "ok", "review", "review"]


def test_a_count_threshold_of_zero_is_on() -> None:
    t = cva.choose_thresholds([_row("a", 0.9, tc_components=0), _row("b", 0.5, tc_components=1)])
    assert t.max_tc_components == 0
    assert flag(_row("x", 0.5, tc_components=1)["measures"], QualityModel(t)).status == "review"


def test_tcia_counts_as_bad_whatever_its_dice() -> None:
    assert cva.is_bad(_row(cva.TCIA, 0.95)) and not cva.is_bad(_row("a", 0.95)) and cva.is_bad(_row("a", 0.79))
