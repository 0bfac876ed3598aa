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


# ------------------------------------------------------------------------- lesion specks, far components ---

def test_et_specks_become_core_and_core_specks_become_edema() -> None:
    from core.engine.postprocess import remove_lesion_specks

    lab = np.zeros((20, 20, 20), np.uint8)
    lab[2:18, 2:18, 2:18] = 2  # edema everywhere around
    lab[4:8, 4:8, 4:8] = 1  # core 64 voxels = 0.064 mL at 1 mm
    lab[5:7, 5:7, 5:7] = 4  # ET 8 voxels inside it
    lab[14, 14, 14] = 4  # a lone ET voxel: ET speck and TC speck
    lab[10:16, 3:7, 10:14] = 1  # a core of 96 voxels without ET
    # ET components: 8 voxels (0.008 mL, kept) and 1 voxel (0.001 mL -> NCR)
    et_only = remove_lesion_specks(lab, (1.0, 1.0, 1.0), min_et_ml=0.005, min_tc_ml=0.0)
    assert np.all(et_only[5:7, 5:7, 5:7] == 4) and et_only[14, 14, 14] == 1
    out = remove_lesion_specks(lab, (1.0, 1.0, 1.0), min_et_ml=0.005, min_tc_ml=0.07)
    # TC components: 64 voxels (0.064 mL < 0.07 -> edema, ET inside too), 96 voxels kept, the lone voxel -> edema
    assert np.all(out[4:8, 4:8, 4:8] == 2) and out[14, 14, 14] == 2
    assert np.all(out[10:16, 3:7, 10:14] == 1)
    assert np.array_equal(out > 0, lab > 0)  # the whole tumour is untouched


def test_lesion_speck_sizes_use_the_voxel_size() -> None:
    from core.engine.postprocess import remove_lesion_specks

    lab = np.zeros((8, 8, 8), np.uint8)
    lab[2:4, 2:4, 2:4] = 4  # 8 voxels
    assert remove_lesion_specks(lab, (1.0, 1.0, 1.0), 0.01, 0.0)[2, 2, 2] == 1  # 0.008 mL < 0.01
    assert remove_lesion_specks(lab, (1.0, 1.0, 2.0), 0.01, 0.0)[2, 2, 2] == 4  # 0.016 mL kept


def test_far_component_removed_only_when_far_and_unsure() -> None:
    from core.engine.postprocess import remove_far_components

    lab = np.zeros((60, 10, 10), np.uint8)
    lab[0:10, 2:8, 2:8] = 2  # main: 360 voxels
    lab[40:45, 2:8, 2:8] = 2  # 30 mm away (x 10 -> 40: 31 voxels apart, distance 31 mm)
    p = np.zeros((60, 10, 10, 4), np.float32)
    p[..., 0] = 1.0
    p[lab > 0] = (0.1, 0.0, 0.9, 0.0)
    p[40:45] = (0.4, 0.0, 0.6, 0.0)  # the far component: mean P(WT) 0.6
    sp = (1.0, 1.0, 1.0)
    assert np.all(remove_far_components(lab, p, sp, 20.0, 0.7)[40:45] == 0)  # far and P 0.6 < 0.7: removed
    assert np.all(remove_far_components(lab, p, sp, 20.0, 0.5)[40:45, 2:8, 2:8] == 2)  # sure enough: kept
    assert np.all(remove_far_components(lab, p, sp, 40.0, 0.7)[40:45, 2:8, 2:8] == 2)  # near enough: kept
    assert np.all(remove_far_components(lab, p, (2.0, 1.0, 1.0), 40.0, 0.7)[40:45] == 0)  # 62 mm at 2 mm voxels
    assert np.array_equal(remove_far_components(lab, p, sp, 0.0, 0.7), lab)  # off by default


def test_refine_applies_the_new_rules_only_when_set_and_names_them() -> None:
    from core.engine.postprocess import refine

    lab = np.zeros((10, 10, 10), np.uint8)
    lab[2:8, 2:8, 2:8] = 2
    lab[3, 3, 3] = 4
    assert np.array_equal(refine(lab, (1.0, 1.0, 1.0), PostprocessSpec()), lab)
    spec = parse_variant("decoding=regions,min_et_lesion_ml=0.01,min_tc_ml=0.01,far_mm=20,far_min_wt_prob=0.6")
    assert refine(lab, (1.0, 1.0, 1.0), spec)[3, 3, 3] == 2
    assert "ET lesions < 0.01 mL -> NCR" in spec.label and "core lesions < 0.01 mL -> edema" in spec.label
    assert "beyond 20 mm with mean P(WT) < 0.6" in spec.label
    with pytest.raises(ModelError):
        PostprocessSpec(min_tc_ml=-1.0)
