"""Tests of core/engine/volume3d.py and core/engine/training3d.py: the 3-D network's input and its way back,
region <-> class probabilities, the network, training on tiny synthetic volumes, export, loading from a model
folder and the fused 2-D + 3-D prediction."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from core.engine.volume3d import (
    VOLUME_DIR,
    VolumeGeometry,
    build_unet3d,
    classes_from_regions,
    region_targets,
    regions_from_classes,
    to_slices,
    volume_input,
)

CH = ("flair", "t1ce", "t1", "t2")


def test_volume_input_pairs_slices_resizes_and_centres() -> None:
    # 10 slices of 8 x 8, brain on slices 2..7 (6 slices -> 3 pairs), slice z holds the value z
    x = np.zeros((10, 8, 8, 2), np.float32)
    brain = np.zeros(10, bool)
    brain[2:8] = True
    for z in range(2, 8):
        x[z] = z
    vol, geom = volume_input(x, brain, side=4, depth=8)
    assert vol.shape == (1, 4, 4, 8, 2) and vol.dtype == np.float32
    assert geom == VolumeGeometry(2, 8, 2, 8)  # 3 pairs centred in 8: 2 slices of padding first
    # pairs average (2, 3) -> 2.5, (4, 5) -> 4.5, (6, 7) -> 6.5 at depth indices 2, 3, 4; padding 0
    assert np.allclose(vol[0, :, :, 2:5, 0].mean(axis=(0, 1)), [2.5, 4.5, 6.5])
    assert np.all(vol[0, :, :, :2] == 0) and np.all(vol[0, :, :, 5:] == 0)


def test_volume_input_cuts_a_brain_longer_than_the_input() -> None:
    x = np.ones((40, 8, 8, 1), np.float32)
    vol, geom = volume_input(x, np.ones(40, bool), side=4, depth=8)  # 20 pairs into 8: 6 cut on each side
    assert geom.pad0 == -6 and vol.shape == (1, 4, 4, 8, 1) and np.all(vol == 1)
    back = to_slices(vol[0], geom, 40)
    # pairs 6..13 (slices 12..27) were seen; the others are NaN: the network said nothing there
    seen = ~np.isnan(back[:, 0, 0, 0])
    assert np.flatnonzero(seen).tolist() == list(range(12, 28)) and np.allclose(back[seen], 1.0)


def test_to_slices_inverts_the_geometry_for_smooth_fields() -> None:
    x = np.zeros((12, 8, 8, 1), np.float32)
    brain = np.zeros(12, bool)
    brain[2:10] = True
    for z in range(12):
        x[z] = z  # linear along Z
    vol, geom = volume_input(x, brain, side=8, depth=8)
    back = to_slices(vol[0], geom, 12)
    assert back.shape == (12, 8, 8, 1)
    # slices 3..8 lie between pair centres: linear interpolation gives back z exactly
    assert np.allclose(back[3:9, 4, 4, 0], np.arange(3, 9), atol=1e-5)
    assert np.all(back[:2] == 0) and np.all(back[10:] == 0)  # outside the used range


def test_regions_and_classes_round_trip_and_hierarchy() -> None:
    p = np.array([[0.1, 0.2, 0.3, 0.4], [0.7, 0.1, 0.15, 0.05]], np.float32)
    r = regions_from_classes(p)
    assert np.allclose(r, [[0.9, 0.6, 0.4], [0.3, 0.15, 0.05]])
    assert np.allclose(classes_from_regions(r), p)
    # inconsistent regions are clipped to ET <= TC <= WT and still sum to one
    c = classes_from_regions(np.array([[0.4, 0.6, 0.8]], np.float32))
    assert np.allclose(c, [[0.6, 0.0, 0.0, 0.4]]) and np.allclose(c.sum(-1), 1.0)


def test_region_targets_follow_brats_regions() -> None:
    cls = np.array([0, 1, 2, 3])  # background, NCR, ED, ET classes
    assert region_targets(cls).tolist() == [[0, 0, 0], [1, 1, 0], [1, 0, 0], [1, 1, 1]]


def test_unet3d_maps_a_volume_to_three_region_probabilities() -> None:
    model = build_unet3d(4, base_filters=2, depth=2, side=8, n_slices=8, seed=1)
    out = np.asarray(model(np.zeros((1, 8, 8, 8, 4), np.float32)))
    assert out.shape == (1, 8, 8, 8, 3) and np.all((out > 0) & (out < 1))
    with pytest.raises(ValueError):
        build_unet3d(4, 2, 3, side=12, n_slices=8)


def test_region_loss_is_small_for_a_perfect_answer() -> None:
    from core.engine.volume3d import region_loss

    y = np.zeros((1, 4, 4, 4, 3), np.float32)
    y[0, :2] = 1.0
    loss = region_loss()
    assert float(loss(y, y)) < 0.01
    assert float(loss(y, 1.0 - y)) > 1.0


def _caches(tmp: Path, n: int = 3) -> list[tuple[str, Path, Path]]:
    """Tiny 2-D training caches: (Z, S, S, C) float16 slices, (Z, S, S) classes with a bright tumour block."""
    gen = np.random.default_rng(0)
    files = []
    for i in range(n):
        x = np.zeros((20, 32, 32, 4), np.float16)
        y = np.zeros((20, 32, 32), np.uint8)
        x[3:17, 4:28, 4:28] = gen.normal(0, 0.3, size=(14, 24, 24, 4))
        x[8:12, 10:18, 10:18] += 2.0
        y[8:12, 10:18, 10:18] = 2
        y[9:11, 12:16, 12:16] = 3
        xp, yp = tmp / f"c{i}_x.npy", tmp / f"c{i}_y.npy"
        np.save(xp, x)
        np.save(yp, y)
        files.append((f"c{i}", xp, yp))
    return files


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from core.engine.training3d import export_volumes, train_volume

    tmp = tmp_path_factory.mktemp("vol3d")
    npz = export_volumes(_caches(tmp), tmp / "volumes.npz")
    train_volume(npz, tmp / "net", CH, exclude=["c2"], base_filters=2, depth=2, patch=(32, 32, 16), batch_size=1,
                 steps=4, steps_per_epoch=2, max_minutes=5, workers=1)
    return tmp


def test_export_volumes_stores_inputs_and_targets(trained: Path) -> None:
    from core.engine.training3d import load_volumes

    vols = load_volumes(trained / "volumes.npz")
    assert sorted(vols) == ["c0", "c1", "c2"]
    x, y = vols["c0"]
    assert x.shape == (96, 96, 80, 4) and y.shape == (96, 96, 80, 3)
    assert 0 < y[..., 2].sum() <= y[..., 1].sum() < y[..., 0].sum()  # ET in TC (here equal) in WT
    with pytest.raises(ValueError):
        load_volumes(trained / "volumes.npz", exclude=["c0", "c1", "c2"])


def test_train_volume_records_what_it_did(trained: Path) -> None:
    rec = json.loads((trained / "net" / "volume3d.json").read_text())
    assert rec["train_cases"] == ["c0", "c1"] and rec["steps"] == 4 and rec["channels"] == list(CH)
    assert (trained / "net" / "model.keras").is_file()


def test_augment_volume_keeps_shapes_brain_and_missing_modalities() -> None:
    from core.engine.training3d import augment_volume

    x = np.zeros((16, 16, 16, 4), np.float32)
    x[2:14, 2:14, 2:14, :3] = 1.0  # T2 missing
    y = np.zeros((16, 16, 16, 3), np.float32)
    y[6:10, 6:10, 6:10] = 1.0
    for seed in range(5):
        xa, ya = augment_volume(x, y, np.random.default_rng(seed), (8, 8, 8), CH)
        assert xa.shape == (8, 8, 8, 4) and ya.shape == (8, 8, 8, 3)
        assert not np.any(xa[..., 3])  # a missing modality stays zero
        assert ya.sum() <= y.sum()


def _model_folder(tmp: Path, trained: Path, fusion: dict) -> Path:
    """A model folder: a tiny 2-D U-Net (the test_inference spec) with the trained tiny 3-D network."""
    from core.engine.model import build_unet, save_for_inference
    from core.engine.preprocess import PreprocessSpec

    spec = PreprocessSpec(channels=CH, input_size=32, normalisation="zscore_brain", crop="brain_bbox", margin_px=2)
    folder = tmp / "model"
    save_for_inference(build_unet(32, 4, 4, 2, seed=7), folder, spec)
    (folder / VOLUME_DIR).mkdir()
    shutil.copy2(trained / "net" / "model.keras", folder / VOLUME_DIR / "model.keras")
    rec = json.loads((trained / "net" / "volume3d.json").read_text())
    rec["fusion"] = fusion
    (folder / VOLUME_DIR / "volume3d.json").write_text(json.dumps(rec))
    return folder


def _case():
    import sys

    sys.path.insert(0, str(Path(__file__).parent))
    from test_inference import synthetic_case

    return synthetic_case()


def test_model_folder_with_a_volume_network_predicts_fused_regions(tmp_path: Path, trained: Path) -> None:
    from core.engine.inference import predict_case
    from core.engine.model import file_sha256, load_model

    folder = _model_folder(tmp_path, trained, {"weight": 0.5, "cascade_threshold": 0.0, "margin_slices": 2})
    loaded = load_model(folder)
    assert loaded.volume is not None and loaded.volume.runtime == "tensorflow" and loaded.volume.weight == 0.5
    assert loaded.sha256 != file_sha256(folder / "model.keras")  # the identity covers the 3-D network
    pred = predict_case(loaded, _case())
    lab, p = pred.labels, np.asarray(pred.probabilities, np.float32)
    assert lab.shape == (24, 24, 6) and set(np.unique(lab)) <= {0, 1, 2, 4}
    assert np.allclose(p.sum(-1), 1.0, atol=2e-3)
    # labels are the region decoding of the stored probabilities
    wt = p[..., 0] < 0.5
    assert np.array_equal(lab > 0, wt)
    assert "2-D + 3-D networks (3-D weight 0.5)" in pred.postprocess
    assert 0.0 <= pred.quality.measures["network_agreement"] <= 1.0
    # without its 3-D network the same folder is the 2-D model alone
    shutil.rmtree(folder / VOLUME_DIR)
    plain = load_model(folder)
    assert plain.volume is None and plain.sha256 == file_sha256(folder / "model.keras")


def test_weight_one_is_the_3d_network_alone(tmp_path: Path, trained: Path) -> None:
    from core.engine.inference import predict_case
    from core.engine.model import load_model
    from core.engine.preprocess import prepare_case
    from core.engine.volume3d import load_volume_network

    folder = _model_folder(tmp_path, trained, {"weight": 1.0, "cascade_threshold": 0.0})
    loaded = load_model(folder)
    case = _case()
    pred = predict_case(loaded, case)
    prep = prepare_case(case, loaded.spec)
    vol_in, geom = volume_input(prep.slices, prep.brain_z)
    net = load_volume_network(folder)
    r = to_slices(net.regions(vol_in), geom, prep.grid_shape[2])
    x0, x1, y0, y1 = prep.box
    z = int(np.flatnonzero(prep.brain_z)[1])
    import cv2

    want = cv2.resize(r[z], (y1 - y0, x1 - x0), interpolation=cv2.INTER_LINEAR)[..., 0]
    got = 1.0 - np.asarray(pred.probabilities[x0:x1, y0:y1, z, 0], np.float32)
    assert np.allclose(got, want, atol=5e-3)


def test_cascade_runs_the_2d_network_only_near_the_3d_tumour() -> None:
    from core.engine.inference import cascade_slices

    r = np.zeros((10, 4, 4, 3), np.float32)
    r[5, 1, 1, 0] = 0.9
    brain = np.ones(10, bool)
    brain[0] = False
    assert cascade_slices(r, brain, 0.5, 2).tolist() == [3, 4, 5, 6, 7]
    assert cascade_slices(r, brain, 0.0, 2).tolist() == list(range(1, 10))
    assert cascade_slices(np.zeros_like(r), brain, 0.5, 2).tolist() == []


def test_export_to_onnx_is_used_when_its_checksum_matches(tmp_path: Path, trained: Path) -> None:
    from core.engine.volume3d import export_volume_network, load_volume_network

    folder = _model_folder(tmp_path, trained, {"weight": 0.5})
    entry = export_volume_network(folder)
    assert entry["export_check_max_abs_diff"] <= 1e-3
    net = load_volume_network(folder)
    keras_net = load_volume_network(folder, "tensorflow")
    assert net.runtime == "onnxruntime" and keras_net.runtime == "tensorflow"
    x = np.random.default_rng(1).normal(size=(1, 96, 96, 80, 4)).astype(np.float32)
    assert np.max(np.abs(net.regions(x) - keras_net.regions(x))) < 1e-3
    (folder / VOLUME_DIR / "model.onnx").write_bytes(b"tampered")
    assert load_volume_network(folder).runtime == "tensorflow"  # a stale or tampered export is not used


def test_shipped_model_runs_both_networks_in_onnx_runtime_with_its_fusion_settings() -> None:
    from core.config import DEFAULT_MODEL_NAME, MODELS_DIR
    from core.engine.model import file_sha256, load_model
    from core.engine.postprocess import PostprocessSpec

    folder = MODELS_DIR / DEFAULT_MODEL_NAME
    if not (folder / VOLUME_DIR / "model.keras").is_file():
        pytest.skip("the shipped model has no 3-D context network")
    loaded = load_model(folder)
    assert loaded.runtime == "onnxruntime" and loaded.volume is not None
    assert loaded.volume.runtime == "onnxruntime"  # its export is valid for its weights
    rec = json.loads((folder / VOLUME_DIR / "volume3d.json").read_text())
    assert (loaded.volume.weight, loaded.volume.cascade_threshold, loaded.volume.margin_slices) == (
        rec["fusion"]["weight"], rec["fusion"]["cascade_threshold"], rec["fusion"]["margin_slices"])
    card = json.loads((folder / "model_card.json").read_text())
    assert card["volume3d"]["keras_sha256"] == file_sha256(folder / VOLUME_DIR / "model.keras")
    assert card["volume3d"]["onnx_sha256"] == file_sha256(folder / VOLUME_DIR / "model.onnx")
    # the post-processing the card describes is the one inference reads
    post = PostprocessSpec.load(folder)
    assert post.decoding == "regions" and post.min_et_lesion_ml > 0 and post.min_tc_ml > 0
    assert post.label in card["cross_validation"]["postprocess"]


def test_training_continues_from_given_weights(trained: Path) -> None:
    from core.engine.model import keras_module
    from core.engine.training3d import train_volume

    start = keras_module().models.load_model(trained / "net" / "model.keras", compile=False)
    rec = train_volume(trained / "volumes.npz", trained / "net2", CH, exclude=["c2"], base_filters=2, depth=2,
                       patch=(32, 32, 16), batch_size=1, steps=2, steps_per_epoch=2, max_minutes=5, workers=1,
                       learning_rate=0.0, init=trained / "net" / "model.keras")
    assert rec["continued_from"]["steps"] == 4 and rec["steps"] == 2
    after = keras_module().models.load_model(trained / "net2" / "model.keras", compile=False)
    # learning rate 0: the weights are the ones it started from
    assert all(np.array_equal(a, b) for a, b in zip(start.get_weights(), after.get_weights(), strict=True))


def test_a_brain_longer_than_the_3d_input_is_segmented_by_the_2d_network_where_the_3d_one_did_not_look(
        tmp_path: Path, trained: Path) -> None:
    from core.data.cases import assemble_case
    from core.data.io import volume_from_array
    from core.engine.inference import predict_case
    from core.engine.model import load_model

    gen = np.random.default_rng(3)
    shape = (24, 24, 180)  # 180 brain slices at 1 mm: 90 pairs, 80 fit in the 3-D input
    images = {}
    for key in CH:
        arr = np.zeros(shape, np.float32)
        arr[3:21, 2:20, :] = gen.uniform(10, 200, size=(18, 18, 180))
        images[key] = volume_from_array(arr, np.eye(4), f"{key}.nii.gz")
    case = assemble_case("long", images)
    folder = _model_folder(tmp_path, trained, {"weight": 1.0, "cascade_threshold": 0.0})
    pred = predict_case(load_model(folder), case)
    p = np.asarray(pred.probabilities, np.float32)
    assert not np.isnan(p).any() and np.allclose(p.sum(-1), 1.0, atol=2e-3)
    assert pred.labels.shape == shape
    # weight 1: the 3-D network alone where it looked; the 2-D network alone on the 5 slices at each end it left out
    shutil.rmtree(folder / VOLUME_DIR)
    plain = np.asarray(predict_case(load_model(folder), case).probabilities, np.float32)
    for z in (0, 4, 175, 179):
        assert np.allclose(p[:, :, z], plain[:, :, z], atol=1e-3), z
    assert not np.allclose(p[:, :, 90], plain[:, :, 90], atol=1e-3)


def test_mirror_setting_averages_the_3d_network_with_its_left_right_mirror(tmp_path: Path, trained: Path) -> None:
    from core.engine.inference import predict_case
    from core.engine.model import load_model

    case = _case()
    plain_dir = _model_folder(tmp_path / "a", trained, {"weight": 1.0})
    mirror_dir = _model_folder(tmp_path / "b", trained, {"weight": 1.0, "mirror": True})
    plain, mirrored = load_model(plain_dir), load_model(mirror_dir)
    assert not plain.volume.mirror and mirrored.volume.mirror and plain.sha256 != mirrored.sha256
    x = np.random.default_rng(2).normal(size=(1, 96, 96, 80, 4)).astype(np.float32)
    want = 0.5 * (plain.volume.regions(x) + plain.volume.regions(np.ascontiguousarray(x[:, ::-1]))[::-1])
    assert np.allclose(mirrored.volume.regions(x, flip=True), want, atol=1e-6)
    a = np.asarray(predict_case(plain, case).probabilities, np.float32)
    b = np.asarray(predict_case(mirrored, case).probabilities, np.float32)
    assert not np.allclose(a, b, atol=1e-4)  # the setting reaches the prediction
