"""Tests of core/engine/inference.py: whole-case prediction, placement through crop/resize and write-back, TTA,
progress, determinism and concurrent use of one model."""

from __future__ import annotations

import threading
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from conftest import LPS_AFFINE, write_nifti

from core.data.cases import Case, assemble_case, load_case_folder
from core.data.io import save_like, volume_from_array
from core.engine.inference import predict_case, predict_slice
from core.engine.model import LoadedModel, build_unet, keras_module
from core.engine.preprocess import PreprocessSpec, prepare_case
from core.errors import CaseError

SHAPE = (24, 24, 6)
ALL4 = ("flair", "t1", "t1ce", "t2")
SPEC = PreprocessSpec(channels=ALL4, input_size=32, normalisation="zscore_brain", crop="brain_bbox", margin_px=2)


def synthetic_case(seed: int = 0, case_id: str = "synthetic", shape: tuple[int, int, int] = SHAPE) -> Case:
    """Four modalities (RAS grid) with brain in slices 1..4 only; slices 0 and 5 are empty."""
    gen = np.random.default_rng(seed)
    images = {}
    for key in ALL4:
        arr = np.zeros(shape, dtype=np.float32)
        arr[3:21, 2:20, 1:5] = gen.uniform(10, 200, size=(18, 18, 4))
        images[key] = volume_from_array(arr, np.eye(4), f"{key}.nii.gz")
    return assemble_case(case_id, images)


@pytest.fixture(scope="module")
def tiny_loaded() -> LoadedModel:
    model = build_unet(32, 4, 4, 2, seed=7)
    return LoadedModel(model, SPEC, "tiny", "0" * 64, "", {})


# ------------------------------------------------------------------------------------------ tiny U-Net ---

def test_predict_case_labels_probabilities_and_empty_slices(tiny_loaded: LoadedModel) -> None:
    case = synthetic_case()
    pred = predict_case(tiny_loaded, case, batch_size=3)
    assert pred.labels.shape == SHAPE and pred.labels.dtype == np.uint8
    assert set(np.unique(pred.labels).tolist()) <= {0, 1, 2, 4}
    assert pred.probabilities.shape == (*SHAPE, 4)
    np.testing.assert_allclose(pred.probabilities.astype(np.float32).sum(axis=-1), 1.0, atol=5e-3)
    for z in (0, 5):  # no brain: background without running the network
        assert np.all(pred.labels[:, :, z] == 0)
        assert np.all(pred.probabilities[:, :, z, 0] == 1.0)
    assert pred.uncertainty is None and not pred.tta
    assert pred.model_name == "tiny" and pred.elapsed_s >= 0
    assert not pred.labels.flags.writeable  # shared results are read-only


def test_predict_case_without_a_needed_modality(tiny_loaded: LoadedModel) -> None:
    case = synthetic_case()
    too_little = assemble_case("p", {k: v for k, v in case.images.items() if k not in ("flair", "t1ce")})
    with pytest.raises(CaseError, match="FLAIR or T1CE"):
        predict_case(tiny_loaded, too_little)
    only_one = assemble_case("p", {"flair": case.images["flair"]})
    with pytest.raises(CaseError, match="missing"):
        predict_case(tiny_loaded, only_one)


def test_predict_case_with_missing_modalities_says_which(tiny_loaded: LoadedModel) -> None:
    case = synthetic_case()
    partial = assemble_case("p", {k: v for k, v in case.images.items() if k in ("flair", "t1ce")})
    pred = predict_case(tiny_loaded, partial)
    assert pred.missing == tuple(c for c in tiny_loaded.spec.channels if c not in ("flair", "t1ce"))
    assert pred.quality is not None and pred.quality.missing == pred.missing
    if not tiny_loaded.spec.modality_dropout:  # a model not trained for it is flagged
        assert pred.quality.status == "review"
        assert any("not trained for missing" in r for r in pred.quality.reasons)


def test_tta_uncertainty_in_unit_range(tiny_loaded: LoadedModel) -> None:
    pred = predict_case(tiny_loaded, synthetic_case(), tta=True)
    assert pred.tta and pred.uncertainty is not None
    unc = pred.uncertainty.astype(np.float32)
    assert unc.shape == SHAPE
    assert unc.min() >= 0.0 and unc.max() <= 1.0
    assert unc.max() > 0.0  # an untrained network is unsure somewhere
    assert np.all(unc[:, :, 0] == 0) and np.all(unc[:, :, 5] == 0)


def test_progress_fractions_increase_to_one(tiny_loaded: LoadedModel) -> None:
    calls: list[tuple[float, str]] = []
    predict_case(tiny_loaded, synthetic_case(), progress=lambda f, m: calls.append((f, m)), batch_size=1)
    fracs = [f for f, _ in calls]
    assert len(fracs) == 4  # four brain slices, one per batch
    assert all(b > a for a, b in zip(fracs, fracs[1:], strict=False))
    assert fracs[-1] == 1.0 and all(0.0 < f <= 1.0 for f in fracs)
    assert all(isinstance(m, str) and m for _, m in calls)


def test_progress_reaches_one_without_brain(tiny_loaded: LoadedModel) -> None:
    empty = assemble_case("empty", {k: volume_from_array(np.zeros(SHAPE, np.float32), np.eye(4)) for k in ALL4})
    calls: list[float] = []
    pred = predict_case(tiny_loaded, empty, progress=lambda f, m: calls.append(f))
    assert calls and calls[-1] == 1.0
    assert not pred.labels.any()


def test_prediction_is_deterministic(tiny_loaded: LoadedModel) -> None:
    case = synthetic_case(3)
    a = predict_case(tiny_loaded, case, tta=True)
    b = predict_case(tiny_loaded, case, tta=True)
    np.testing.assert_array_equal(a.labels, b.labels)
    np.testing.assert_array_equal(a.probabilities, b.probabilities)
    np.testing.assert_array_equal(a.uncertainty, b.uncertainty)


def test_two_threads_share_one_model(tiny_loaded: LoadedModel) -> None:
    cases = [synthetic_case(11, "a"), synthetic_case(12, "b")]
    alone = [predict_case(tiny_loaded, c, batch_size=2) for c in cases]
    results: dict[int, object] = {}
    errors: list[BaseException] = []

    def work(i: int) -> None:
        try:
            results[i] = predict_case(tiny_loaded, cases[i], batch_size=2)
        except BaseException as err:  # pragma: no cover - reported below
            errors.append(err)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert not errors and len(results) == 2
    for i in range(2):
        np.testing.assert_array_equal(results[i].labels, alone[i].labels)  # type: ignore[attr-defined]
        np.testing.assert_array_equal(results[i].probabilities, alone[i].probabilities)  # type: ignore[attr-defined]
    assert not np.array_equal(alone[0].probabilities, alone[1].probabilities)  # really different inputs


def test_predict_slice_matches_predict_case(tiny_loaded: LoadedModel) -> None:
    case = synthetic_case(5)
    prep = prepare_case(case, SPEC)
    whole = predict_case(tiny_loaded, case, prepared=prep)
    labels, probs, unc = predict_slice(tiny_loaded, prep, 2)
    np.testing.assert_array_equal(labels, whole.labels[:, :, 2])
    np.testing.assert_allclose(probs, whole.probabilities[:, :, 2].astype(np.float32), atol=2e-3)
    assert unc is None
    labels0, probs0, unc0 = predict_slice(tiny_loaded, prep, 0, tta=True)
    assert not labels0.any() and np.all(probs0[..., 0] == 1.0) and unc0 is not None and not unc0.any()


# ------------------------------------------------------------------------- a hand-made, known "network" ---

MARKERS = {  # stored (LPS) voxel order: label -> (x slice, y slice, z slice), placed off-centre
    1: (slice(5, 10), slice(4, 9), slice(1, 4)),
    2: (slice(12, 18), slice(10, 16), slice(1, 5)),
    4: (slice(5, 10), slice(12, 17), slice(2, 5)),
}
CHANNEL_OF = {1: "flair", 2: "t1", 4: "t1ce"}  # the bright channel that means each label


def bright_channel_model():
    """A 1x1 convolution: class 1/2/3 logit = 20 x FLAIR/T1/T1CE, background logit 5 (so class = bright channel)."""
    keras = keras_module()
    inputs = keras.Input((32, 32, 4))
    conv = keras.layers.Conv2D(4, 1, activation="softmax", name="bright")
    model = keras.Model(inputs, conv(inputs))
    w = np.zeros((1, 1, 4, 4), dtype=np.float32)
    w[0, 0, 0, 1] = w[0, 0, 1, 2] = w[0, 0, 2, 3] = 20.0  # channels flair, t1, t1ce -> classes 1, 2, 3
    conv.set_weights([w, np.array([5.0, 0.0, 0.0, 0.0], dtype=np.float32)])
    return model


def expected_stored_labels() -> np.ndarray:
    exp = np.zeros(SHAPE, dtype=np.uint8)
    for label, idx in MARKERS.items():
        exp[idx] = label
    return exp


def write_marker_case(folder: Path) -> Path:
    """An LPS case whose FLAIR/T1/T1CE are 1 inside the NCR/ED/ET blocks and T2 is 1 over the brain."""
    brain = np.zeros(SHAPE, dtype=np.float32)
    brain[3:21, 2:19, 1:5] = 1.0
    arrays = {"t2": brain, "flair": np.zeros(SHAPE, np.float32), "t1": np.zeros(SHAPE, np.float32),
              "t1ce": np.zeros(SHAPE, np.float32)}
    for label, idx in MARKERS.items():
        arrays[CHANNEL_OF[label]][idx] = 1.0
    for key, arr in arrays.items():
        write_nifti(folder / f"Marker_001_{key}.nii.gz", arr, LPS_AFFINE)
    return folder


def assert_labels_at(labels: np.ndarray, expected: np.ndarray) -> None:
    """Every voxel at least one voxel inside a block (in-plane) has the block's label; background away from
    blocks is 0 (only the one-voxel rims may blur through the two resizes)."""
    from scipy import ndimage  # here, not at the top: other tests import this module in a fresh process

    inner_struct = np.zeros((3, 3, 1), dtype=bool)
    inner_struct[:, :, 0] = ndimage.generate_binary_structure(2, 1)
    for label in (1, 2, 4):
        inner = ndimage.binary_erosion(expected == label, inner_struct)
        assert inner.sum() > 0
        assert np.all(labels[inner] == label), f"label {label} misplaced"
    far = ~ndimage.binary_dilation(expected > 0, inner_struct)
    assert np.all(labels[far] == 0)


@pytest.mark.parametrize("crop", ["brain_bbox", "none"])
def test_labels_land_on_the_right_voxels_and_survive_write_back(tmp_path: Path, crop: str) -> None:
    folder = write_marker_case(tmp_path / "case")
    case = load_case_folder(folder)
    assert case.reference.original_axcodes == ("L", "P", "S")
    spec = PreprocessSpec(channels=ALL4, input_size=32, normalisation="slice_max", crop=crop, margin_px=1)
    loaded = LoadedModel(bright_channel_model(), spec, "bright", "1" * 64, "", {})
    pred = predict_case(loaded, case)
    # on the RAS grid: the expected labels are the stored ones mirrored in x and y (LPS -> RAS)
    expected_ras = expected_stored_labels()[::-1, ::-1, :]
    assert_labels_at(pred.labels, expected_ras)
    # written back in the input's geometry and read with nibabel alone: the stored order matches the input
    out = save_like(case.reference, pred.labels, tmp_path / "out" / "Marker_001_seg.nii.gz", np.uint8)
    img = nib.load(str(out))
    src = nib.load(str(folder / "Marker_001_flair.nii.gz"))
    np.testing.assert_array_equal(img.affine, src.affine)
    assert img.shape == src.shape and img.get_data_dtype() == np.uint8
    assert nib.aff2axcodes(img.affine) == ("L", "P", "S")
    assert_labels_at(np.asarray(img.dataobj), expected_stored_labels())


def test_bright_channel_model_tta_is_certain_inside_blocks(tmp_path: Path) -> None:
    case = load_case_folder(write_marker_case(tmp_path / "case"))
    spec = PreprocessSpec(channels=ALL4, input_size=32, normalisation="slice_max", crop="none")
    pred = predict_case(LoadedModel(bright_channel_model(), spec, "bright", "1" * 64, "", {}), case, tta=True)
    assert pred.uncertainty is not None
    exp = expected_stored_labels()[::-1, ::-1, :]
    from scipy import ndimage

    inner = ndimage.binary_erosion(exp == 2, np.ones((5, 5, 1), bool))
    assert float(pred.uncertainty[inner].max()) < 0.05  # a 1x1 conv is flip-invariant: no disagreement
    assert_labels_at(pred.labels, exp)


def test_the_shipped_post_processing_removes_a_small_island(tmp_path: Path) -> None:
    """The shipped model's own settings (models/unet2d_default/postprocess.json) reach the labels through
    predict_case: a small edema island far from the main one is gone, which the inference defaults would keep."""
    from core.config import DEFAULT_MODEL_NAME, MODELS_DIR
    from core.engine.postprocess import PostprocessSpec

    shipped = PostprocessSpec.load(MODELS_DIR / DEFAULT_MODEL_NAME)
    brain = np.zeros(SHAPE, dtype=np.float32)
    brain[3:21, 2:22, 1:5] = 1.0
    t1 = np.zeros(SHAPE, dtype=np.float32)  # the bright channel of edema (label 2)
    main, island = np.s_[4:12, 4:12, 1:5], np.s_[16:20, 16:20, 2:4]  # 256 and 32 voxels of 1 mm^3, 5 voxels apart
    t1[main] = t1[island] = 1.0
    arrays = {"flair": np.zeros(SHAPE, np.float32), "t1": t1, "t1ce": np.zeros(SHAPE, np.float32), "t2": brain}
    case = assemble_case("island", {k: volume_from_array(a, np.eye(4), f"{k}.nii.gz") for k, a in arrays.items()})
    spec = PreprocessSpec(channels=ALL4, input_size=32, normalisation="slice_max", crop="none")
    network = bright_channel_model()

    def run(post: PostprocessSpec | None) -> np.ndarray:
        return predict_case(LoadedModel(network, spec, "bright", "1" * 64, "", {}, post), case).labels

    inner_main, inner_island = np.s_[5:11, 5:11, 1:5], np.s_[17:19, 17:19, 2:4]
    default = run(None)  # the inference defaults: argmax, no rule
    assert np.all(default[inner_main] == 2) and np.all(default[inner_island] == 2)
    labels = run(shipped)
    assert np.all(labels[inner_main] == 2)
    assert not np.any(labels[14:22, 14:22, :]), "the 0.03 mL island survived the shipped post-processing"
