"""Tests of core/engine/preprocess.py: normalisation, brain box, label/probability placement, the saved spec."""

from __future__ import annotations

import json

import numpy as np
import pytest

from core.data.cases import assemble_case
from core.data.io import volume_from_array
from core.engine.preprocess import (
    ORIGINAL_SPEC,
    PreprocessSpec,
    brain_box,
    brain_mask,
    check_modalities,
    classes_to_labels,
    context_stack,
    labels_to_classes,
    normalise,
    prepare_case,
    prepare_labels,
    probabilities_to_grid,
    stack_channels,
)
from core.errors import CaseError, ModelError

RAS = np.eye(4)


def _zspec(clip: float = 5.0) -> PreprocessSpec:
    return PreprocessSpec(channels=("flair",), normalisation="zscore_brain", clip=clip, input_size=16)


# ------------------------------------------------------------------------------------------ normalisation ---

def test_zscore_uses_brain_voxels_only() -> None:
    # 4x4x2, one channel: brain = 4 voxels holding 2, 4, 6, 8 (mean 5, population std sqrt(5)); the rest is 0.
    vol = np.zeros((4, 4, 2, 1), dtype=np.float32)
    vol[0, 0, 0, 0], vol[1, 1, 0, 0], vol[2, 2, 1, 0], vol[3, 3, 1, 0] = 2, 4, 6, 8
    out = normalise(vol, _zspec())
    s = np.sqrt(5.0)
    np.testing.assert_allclose(out[0, 0, 0, 0], (2 - 5) / s, atol=1e-6)
    np.testing.assert_allclose(out[3, 3, 1, 0], (8 - 5) / s, atol=1e-6)
    mask = vol[..., 0] != 0
    assert np.all(out[~mask] == 0.0)  # background stays 0, not (0 - 5) / s
    np.testing.assert_allclose(out[mask, 0].mean(), 0.0, atol=1e-6)
    np.testing.assert_allclose(out[mask, 0].std(), 1.0, atol=1e-6)
    assert out.dtype == np.float32


def test_zscore_brain_is_any_channel_nonzero() -> None:
    # Channel 0 is 0 where channel 1 is not: those voxels are brain for channel 0 and count in its mean.
    vol = np.zeros((4, 4, 2, 2), dtype=np.float32)
    vol[0, 0, 0] = (3.0, 1.0)
    vol[1, 0, 0] = (0.0, 1.0)  # brain (channel 1), channel 0 value 0
    out = normalise(vol, PreprocessSpec(channels=("flair", "t1"), normalisation="zscore_brain", input_size=16))
    # channel 0 over brain = [3, 0]: mean 1.5, std 1.5 -> z = +1, -1
    np.testing.assert_allclose(out[0, 0, 0, 0], 1.0, atol=1e-6)
    np.testing.assert_allclose(out[1, 0, 0, 0], -1.0, atol=1e-6)
    # channel 1 is constant over the brain: zero std is guarded, z = 0 (no NaN)
    assert np.all(out[..., 1] == 0.0)
    assert np.isfinite(out).all()


def test_zscore_clips_outliers() -> None:
    vol = np.zeros((4, 4, 2, 1), dtype=np.float32)
    vol[..., 0] = 1.0
    vol[0, 0, 0, 0] = 1000.0
    out = normalise(vol, _zspec(clip=2.0))
    assert out.max() == pytest.approx(2.0)
    assert out.min() >= -2.0


def test_slice_max_scales_each_slice_and_channel_by_its_maximum() -> None:
    vol = np.zeros((2, 2, 3, 2), dtype=np.float32)
    vol[:, :, 0, 0] = [[1, 2], [3, 4]]
    vol[:, :, 1, 0] = [[10, 0], [0, 5]]
    vol[:, :, 0, 1] = [[2, 2], [2, 8]]
    # slice z=2 is all zero: stays zero, no division by zero
    out = normalise(vol, ORIGINAL_SPEC)
    np.testing.assert_allclose(out[:, :, 0, 0], [[0.25, 0.5], [0.75, 1.0]])
    np.testing.assert_allclose(out[:, :, 1, 0], [[1.0, 0.0], [0.0, 0.5]])
    np.testing.assert_allclose(out[:, :, 0, 1], [[0.25, 0.25], [0.25, 1.0]])
    assert np.all(out[:, :, 2] == 0.0)
    assert vol[0, 0, 1, 0] == 10  # input untouched


# ----------------------------------------------------------------------------------------------- brain box ---

def test_brain_box_is_square_with_margin() -> None:
    mask = np.zeros((20, 20, 3), dtype=bool)
    mask[5:10, 8:12, 1] = True  # 5 x 4 voxels
    x0, x1, y0, y1 = brain_box(mask, margin_px=2)
    assert (x1 - x0, y1 - y0) == (9, 9)  # max(5, 4) + 2 * 2
    assert (x0, x1, y0, y1) == (3, 12, 6, 15)
    assert x0 <= 5 and x1 >= 10 and y0 <= 8 and y1 >= 12  # holds the brain


def test_brain_box_is_clipped_to_the_grid() -> None:
    mask = np.zeros((20, 20, 2), dtype=bool)
    mask[0:4, 16:20, 0] = True  # in a corner
    x0, x1, y0, y1 = brain_box(mask, margin_px=3)
    assert (x0, x1, y0, y1) == (0, 10, 10, 20)  # side 4 + 6 = 10, shifted inside the grid
    big = brain_box(mask, margin_px=50)  # side capped at the grid
    assert big == (0, 20, 0, 20)


def test_brain_box_of_an_empty_mask_is_the_whole_grid() -> None:
    assert brain_box(np.zeros((7, 5, 2), dtype=bool), margin_px=4) == (0, 7, 0, 5)


def test_brain_mask_is_any_channel() -> None:
    vol = np.zeros((2, 1, 1, 2), dtype=np.float32)
    vol[0, 0, 0, 1] = 1.0
    assert brain_mask(vol)[:, 0, 0].tolist() == [True, False]


# ------------------------------------------------------------------------------ labels and probabilities ---

def test_labels_classes_round_trip() -> None:
    labels = np.array([[0, 1], [2, 4]], dtype=np.uint8)
    classes = labels_to_classes(labels)
    assert classes.tolist() == [[0, 1], [2, 3]]
    assert classes.dtype == np.uint8
    back = classes_to_labels(classes)
    assert back.tolist() == labels.tolist() and back.dtype == np.uint8


def test_prepare_labels_crops_and_resizes_nearest() -> None:
    labels = np.zeros((20, 14, 2), dtype=np.uint8)
    labels[4:8, 2:6, 1] = 4  # first half of the box along X and Y
    labels[8:12, 6:10, 1] = 2  # second half
    labels[0:4, :, :] = 1  # outside the box: dropped
    box = (4, 12, 2, 10)  # 8 x 8 -> 16 x 16
    out = prepare_labels(labels, box, 16)
    assert out.shape == (2, 16, 16) and out.dtype == np.uint8
    assert np.all(out[0] == 0)
    assert np.all(out[1, 0:8, 0:8] == 3)  # ET label 4 -> class 3
    assert np.all(out[1, 8:16, 8:16] == 2)
    assert np.all(out[1, 0:8, 8:16] == 0) and np.all(out[1, 8:16, 0:8] == 0)


def test_probabilities_to_grid_places_a_one_hot_map_in_the_box() -> None:
    probs = np.zeros((16, 16, 4), dtype=np.float32)
    probs[..., 0] = 1.0
    probs[0:8, 8:16] = (0.0, 0.0, 1.0, 0.0)  # class 2 (edema) in the first X half, second Y half of the input
    box = (4, 12, 2, 10)
    out = probabilities_to_grid(probs, box, (20, 14))
    assert out.shape == (20, 14, 4) and out.dtype == np.float32
    np.testing.assert_allclose(out.sum(axis=-1), 1.0, atol=1e-5)
    cls = out.argmax(axis=-1)
    expected = np.zeros((20, 14), dtype=np.int64)
    expected[4:8, 6:10] = 2  # box x 4..12 halves -> 4..8; box y 2..10, second half -> 6..10
    np.testing.assert_array_equal(cls, expected)
    assert np.all(out[:4, :, 0] == 1.0) and np.all(out[12:, :, 0] == 1.0)  # outside the box: background


def test_probabilities_to_grid_non_square_box() -> None:
    probs = np.zeros((16, 16, 4), dtype=np.float32)
    probs[..., 0] = 1.0
    probs[:, 0:8, 3] = 1.0
    probs[:, 0:8, 0] = 0.0
    out = probabilities_to_grid(probs, (0, 10, 0, 4), (10, 4))  # 10 rows x 4 columns
    assert out.shape == (10, 4, 4)
    assert np.all(out.argmax(-1)[:, :2] == 3) and np.all(out.argmax(-1)[:, 2:] == 0)


# ---------------------------------------------------------------------------------------------- prepare ---

def _case(shape: tuple[int, int, int] = (24, 20, 5)) -> object:
    gen = np.random.default_rng(0)
    images = {}
    for i, key in enumerate(("flair", "t1", "t1ce", "t2")):
        arr = np.zeros(shape, dtype=np.float32)
        arr[6:18, 4:16, 1:4] = gen.uniform(1, 100, size=(12, 12, 3)) + i
        images[key] = volume_from_array(arr, RAS, f"{key}.nii.gz")
    return assemble_case("synthetic", images)


def test_prepare_case_shapes_box_and_brain_slices() -> None:
    case = _case()
    spec = PreprocessSpec(channels=("flair", "t1ce", "t2"), input_size=32, normalisation="zscore_brain",
                          crop="brain_bbox", margin_px=2)
    prep = prepare_case(case, spec)
    assert prep.slices.shape == (5, 32, 32, 3) and prep.slices.dtype == np.float32
    assert prep.grid_shape == (24, 20, 5)
    assert prep.brain_z.tolist() == [False, True, True, True, False]
    x0, x1, y0, y1 = prep.box
    assert x1 - x0 == y1 - y0 == 16 and x0 <= 6 and x1 >= 18 and y0 <= 4 and y1 >= 16
    assert np.all(prep.slices[0] == 0) and np.all(prep.slices[4] == 0)


@pytest.mark.parametrize("normalisation", ["zscore_brain", "robust_brain"])
def test_prepare_case_equals_normalising_the_stacked_volume(normalisation: str) -> None:
    """prepare_case works per modality inside the brain's box; it must give exactly what normalising the whole
    (X, Y, Z, C) stack, cropping and resizing every slice gives (the path it replaced). A missing T2 stays 0."""
    import cv2

    from core.engine.preprocess import resize_stack

    full = _case()
    case = assemble_case("partial", {k: full.images[k] for k in ("flair", "t1", "t1ce")})
    spec = PreprocessSpec(channels=("flair", "t1ce", "t1", "t2"), input_size=32, normalisation=normalisation,
                          crop="brain_bbox", margin_px=2)
    prep = prepare_case(case, spec)
    vol = stack_channels(case, spec.channels)
    x0, x1, y0, y1 = brain_box(brain_mask(vol), spec.margin_px)
    expected = resize_stack(normalise(vol, spec)[x0:x1, y0:y1], 32, cv2.INTER_AREA)
    assert prep.box == (x0, x1, y0, y1)
    assert np.array_equal(prep.slices, expected)
    assert not np.any(prep.slices[..., 3]) and np.any(prep.slices[..., 0])
    assert prep.missing == ("t2",)


def test_prepare_case_without_crop_uses_the_whole_slice() -> None:
    prep = prepare_case(_case(), PreprocessSpec(channels=("flair",), input_size=16))
    assert prep.box == (0, 24, 0, 20)
    assert prep.slices.shape == (5, 16, 16, 1)
    assert 0.0 <= prep.slices.min() and prep.slices.max() <= 1.0 + 1e-6  # slice max scaling


def test_stack_channels_missing_modality() -> None:
    case = assemble_case("x", {"flair": volume_from_array(np.ones((4, 4, 2), np.float32), RAS)})
    with pytest.raises(CaseError, match="missing"):
        stack_channels(case, ("flair", "t1ce"))


# ------------------------------------------------------------------------------------------------- spec ---

def test_spec_save_load_round_trip(tmp_path) -> None:
    spec = PreprocessSpec(channels=("flair", "t1ce", "t1", "t2"), input_size=64, normalisation="zscore_brain",
                          crop="brain_bbox", clip=4.0, margin_px=6)
    spec.save(tmp_path)
    assert json.loads((tmp_path / "preprocess.json").read_text())["channels"] == ["flair", "t1ce", "t1", "t2"]
    assert PreprocessSpec.load(tmp_path) == spec


def test_spec_from_dict_ignores_unknown_keys() -> None:
    spec = PreprocessSpec.from_dict({"channels": ["t2"], "input_size": 32, "future_field": 1})
    assert spec.channels == ("t2",) and spec.input_size == 32


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"channels": ("flair", "dwi")}, "channels"),
        ({"channels": ()}, "channels"),
        ({"normalisation": "minmax"}, "normalisation"),
        ({"crop": "centre"}, "crop"),
        ({"input_size": 100}, "multiple of 16"),
        ({"input_size": 1024}, "multiple of 16"),
    ],
)
def test_spec_validation_errors(kwargs: dict, match: str) -> None:
    with pytest.raises(ModelError, match=match):
        PreprocessSpec(**kwargs)


def test_spec_load_errors(tmp_path) -> None:
    with pytest.raises(ModelError, match="preprocess.json"):
        PreprocessSpec.load(tmp_path)  # missing
    (tmp_path / "preprocess.json").write_text("{not json")
    with pytest.raises(ModelError, match="preprocess.json"):
        PreprocessSpec.load(tmp_path)
    (tmp_path / "preprocess.json").write_text(json.dumps({"crop": "centre"}))
    with pytest.raises(ModelError, match="crop"):
        PreprocessSpec.load(tmp_path)


def test_context_stack_is_modality_major_and_repeats_edges() -> None:
    # slices (Z=3, 1, 1, C=2): value = 10 * z + c
    slices = np.array([[[[0, 1]]], [[[10, 11]]], [[[20, 21]]]], dtype=np.float32)
    out = context_stack(slices, np.array([0, 2]), 1)
    assert out.shape == (2, 1, 1, 6)
    # modality 0 at z-1, z, z+1, then modality 1; the edge slice repeats beyond the volume
    assert out[0, 0, 0].tolist() == [0, 0, 10, 1, 1, 11]
    assert out[1, 0, 0].tolist() == [10, 20, 20, 11, 21, 21]
    np.testing.assert_array_equal(context_stack(slices, np.array([1]), 0), slices[1:2])


def test_check_modalities_rules() -> None:
    four = ("flair", "t1ce", "t1", "t2")
    assert check_modalities(four, four) == ()
    assert check_modalities(("flair", "t1ce"), four) == ("t1", "t2")
    assert check_modalities(("t1ce", "t2"), four) == ("flair", "t1")
    with pytest.raises(CaseError, match="FLAIR or T1CE"):
        check_modalities(("t1", "t2"), four)
    with pytest.raises(CaseError, match="got only FLAIR"):
        check_modalities(("flair",), four)
    with pytest.raises(CaseError, match="missing"):  # a two-channel model needs both
        check_modalities(("flair", "t1"), ("flair", "t1ce"))


def test_too_few_modalities_are_named_in_words() -> None:
    """Bug (walk of issue 19): the Case browser showed a clinician Python lists ("of ['FLAIR', 'T1', ...]")."""
    four = ("flair", "t1ce", "t1", "t2")
    with pytest.raises(CaseError) as err:
        check_modalities(("t1",), four)
    assert str(err.value) == ("expected FLAIR or T1CE plus at least one other of FLAIR, T1CE, T1, T2; got only T1 "
                              "(missing FLAIR, T1CE, T2)")
    with pytest.raises(CaseError) as err:
        check_modalities(("flair", "t1"), ("flair", "t1ce"))
    assert str(err.value) == "expected the model's modalities FLAIR, T1CE; missing T1CE"


def test_robust_normalisation_ignores_a_few_extreme_voxels() -> None:
    from core.engine.preprocess import PreprocessSpec

    rng = np.random.default_rng(0)
    vol = rng.normal(100, 10, size=(20, 20, 10, 1)).astype(np.float32)
    spiked = vol.copy()
    spiked[0, 0, :5, 0] = 1e5  # 5 of 4000 voxels
    robust = PreprocessSpec(normalisation="robust_brain")
    plain = PreprocessSpec(normalisation="zscore_brain")
    # the robust z-scores of ordinary voxels barely move; plain z-scores collapse towards 0
    r0, r1 = normalise(vol, robust), normalise(spiked, robust)
    p1 = normalise(spiked, plain)
    sel = np.ones(vol.shape, bool)
    sel[0, 0, :5] = False
    assert np.abs(r1[sel] - r0[sel]).max() < 0.1
    assert np.abs(p1[sel]).std() < 0.1
    # a zero-filled (missing) channel stays zero
    two = np.concatenate([vol, np.zeros_like(vol)], axis=-1)
    assert not np.any(normalise(two, robust)[..., 1])
