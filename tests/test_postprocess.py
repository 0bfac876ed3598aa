"""core/engine/postprocess.py: decoding, island removal, the tiny-ET rule and the saved settings."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from core.engine.postprocess import PostprocessSpec, apply, decode_labels, parse_variant, remove_islands
from core.errors import ModelError


def _probs(shape: tuple[int, int, int], cls_probs: list[tuple[tuple, tuple[float, float, float, float]]]) -> np.ndarray:
    p = np.zeros((*shape, 4), np.float32)
    p[..., 0] = 1.0
    for idx, v in cls_probs:
        p[idx] = v
    return p


def test_argmax_and_region_decoding_differ_where_tumour_mass_is_split() -> None:
    # one voxel: background 0.4, NCR 0.1, ED 0.35, ET 0.15 -> argmax says background, regions say tumour:
    # WT = 0.6 > 0.5; TC = 0.25 (not core) -> edema
    p = _probs((1, 1, 2), [((0, 0, 0), (0.4, 0.1, 0.35, 0.15)), ((0, 0, 1), (0.1, 0.2, 0.1, 0.6))])
    assert decode_labels(p, "argmax").ravel().tolist() == [0, 4]
    assert decode_labels(p, "regions").ravel().tolist() == [2, 4]


def test_region_decoding_keeps_the_hierarchy() -> None:
    rng = np.random.default_rng(0)
    p = rng.dirichlet(np.ones(4), size=(6, 6, 6)).astype(np.float32)
    lab = decode_labels(p, "regions")
    wt, tc, et = lab > 0, np.isin(lab, (1, 4)), lab == 4
    assert np.all(tc <= wt) and np.all(et <= tc)
    # ET where P(ET) > 0.5 always (then TC and WT sums exceed 0.5 too)
    assert np.array_equal(et, p[..., 3] > 0.5)


def test_islands_small_and_far_are_removed_near_ones_kept() -> None:
    lab = np.zeros((40, 10, 10), np.uint8)
    lab[0:10, 0:10, 0:10] = 2  # main lesion, 1000 voxels = 1 mL at 1 mm
    lab[12, 5, 5] = 2  # 1 voxel, 2 mm from the main lesion
    lab[35, 5, 5] = 4  # 1 voxel, 26 mm away
    out = remove_islands(lab, (1.0, 1.0, 1.0), min_island_ml=0.01, keep_within_mm=5.0)
    assert out[12, 5, 5] == 2 and out[35, 5, 5] == 0 and np.count_nonzero(out) == 1001
    # without a distance, both go; with a tiny size threshold, none
    assert np.count_nonzero(remove_islands(lab, (1.0, 1.0, 1.0), 0.01, 0.0)) == 1000
    assert np.count_nonzero(remove_islands(lab, (1.0, 1.0, 1.0), 0.0005, 0.0)) == 1002
    # the voxel size counts: at 2 x 1 x 1 mm the far voxel is 0.002 mL (removed), at 3 x 2 x 2 mm 0.012 mL (kept)
    assert remove_islands(lab, (2.0, 1.0, 1.0), 0.01, 5.0)[35, 5, 5] == 0
    assert remove_islands(lab, (3.0, 2.0, 2.0), 0.01, 0.0)[35, 5, 5] == 4


def test_tiny_et_becomes_ncr() -> None:
    p = _probs((10, 10, 10), [((slice(0, 5), slice(0, 5), slice(0, 5)), (0.0, 0.0, 1.0, 0.0)),
                              ((1, 1, 1), (0.0, 0.0, 0.0, 1.0))])
    spec = PostprocessSpec(min_et_ml=0.005)  # one voxel = 0.001 mL
    lab = apply(p, (1.0, 1.0, 1.0), spec)
    assert lab[1, 1, 1] == 1 and not np.any(lab == 4)
    assert apply(p, (1.0, 1.0, 1.0), PostprocessSpec())[1, 1, 1] == 4


def test_spec_round_trip_and_parsing(tmp_path: Path) -> None:
    spec = parse_variant("decoding=regions,min_island_ml=2,keep_within_mm=10,min_et_ml=0.5")
    assert spec == PostprocessSpec("regions", 2.0, 10.0, 0.5)
    spec.save(tmp_path)
    assert PostprocessSpec.load(tmp_path) == spec
    assert PostprocessSpec.load(tmp_path / "absent") == PostprocessSpec()
    assert parse_variant("none") == PostprocessSpec()
    assert "islands < 2 mL beyond 10 mm" in spec.label
    assert parse_variant("min_island_ml=5,keep_within_mm=0").label == "argmax, islands < 5 mL removed wherever they lie"
    with pytest.raises(ModelError, match="keys"):
        parse_variant("size=3")
    with pytest.raises(ModelError, match="decoding"):
        parse_variant("decoding=vote")
    with pytest.raises(ModelError, match="number"):
        parse_variant("min_et_ml=big")


def _islands_by_full_grid(labels: np.ndarray, spacing: tuple, min_ml: float, near_mm: float) -> np.ndarray:
    """The rule written plainly: label and measure distances on the whole grid."""
    from scipy import ndimage

    out = labels.copy()
    comps, n = ndimage.label(labels > 0, structure=np.ones((3, 3, 3), bool))
    sizes = np.bincount(comps.ravel())[1:] * float(np.prod(spacing)) / 1000.0
    main = int(np.argmax(sizes)) + 1
    dist = ndimage.distance_transform_edt(comps != main, sampling=spacing)
    for c in range(1, n + 1):
        if c != main and sizes[c - 1] < min_ml and dist[comps == c].min() > near_mm:
            out[comps == c] = 0
    return out


@pytest.mark.parametrize("seed", range(4))
def test_island_removal_in_boxes_equals_the_whole_grid_rule(seed: int) -> None:
    rng = np.random.default_rng(seed)
    lab = np.zeros((60, 50, 40), np.uint8)
    lab[20:32, 15:30, 10:22] = 2  # the main lesion
    for _ in range(25):  # islands of 1-27 voxels everywhere
        x, y, z = rng.integers(0, [58, 48, 38])
        lab[x:x + rng.integers(1, 4), y:y + rng.integers(1, 4), z:z + rng.integers(1, 4)] = rng.choice([1, 2, 4])
    spacing = (1.0, 1.5, 2.0)
    for min_ml, near in ((0.03, 0.0), (0.03, 6.0), (0.06, 15.0)):
        np.testing.assert_array_equal(remove_islands(lab, spacing, min_ml, near),
                                      _islands_by_full_grid(lab, spacing, min_ml, near))
