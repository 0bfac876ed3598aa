"""Tests of core/engine/model.py: the U-Net builder, safe loading (.keras, legacy .h5), refusals, saving."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from core.engine.model import (
    ORIGINAL_METRIC_NAMES,
    build_unet,
    file_sha256,
    keras_module,
    list_models,
    load_model,
    save_for_inference,
)
from core.engine.preprocess import ORIGINAL_SPEC, PreprocessSpec
from core.errors import ModelError

TINY_SPEC = PreprocessSpec(channels=("flair", "t1ce"), input_size=32)


def tiny(n_channels: int = 2, seed: int = 1):
    return build_unet(32, n_channels, 4, 2, seed=seed)


def test_default_unet_has_the_designs_parameter_count() -> None:
    model = build_unet()  # 128 x 128 x 2, 32 filters, depth 4: the original design
    assert model.count_params() == pytest.approx(7.76e6, abs=0.01e6)
    assert tuple(model.inputs[0].shape) == (None, 128, 128, 2)
    assert tuple(model.outputs[0].shape) == (None, 128, 128, 4)


def test_tiny_unet_output_is_a_softmax_of_the_input_shape() -> None:
    model = tiny(3)
    x = np.random.default_rng(0).normal(size=(2, 32, 32, 3)).astype(np.float32)
    y = np.asarray(model(x, training=False))
    assert y.shape == (2, 32, 32, 4)
    np.testing.assert_allclose(y.sum(axis=-1), 1.0, atol=1e-5)
    assert (y >= 0).all()


def test_build_unet_refuses_a_size_the_depth_cannot_halve() -> None:
    with pytest.raises(ModelError, match="divisible"):
        build_unet(36, 2, 4, 3)  # 36 is not divisible by 8


def test_save_and_load_a_model_folder_in_safe_mode(tmp_path: Path) -> None:
    model = tiny()
    folder = tmp_path / "tiny_model"
    weights = save_for_inference(model, folder, TINY_SPEC)
    assert weights == folder / "model.keras" and (folder / "preprocess.json").is_file()
    (folder / "model_card.json").write_text(json.dumps({"name": "tiny_model", "parameters": 1}))
    loaded = load_model(folder)
    assert loaded.name == "tiny_model"
    assert loaded.spec == TINY_SPEC
    assert loaded.sha256 == file_sha256(weights) and len(loaded.sha256) == 64
    assert loaded.card["parameters"] == 1
    x = np.random.default_rng(1).normal(size=(1, 32, 32, 2)).astype(np.float32)
    np.testing.assert_allclose(np.asarray(loaded.model(x)), np.asarray(model(x)), atol=1e-6)
    # the .keras file itself loads too (same folder, so the same spec)
    assert load_model(weights).spec == TINY_SPEC


def _original_metrics():
    """Custom metric functions named as in the original design (plain functions, never registered)."""
    keras = keras_module()
    ops = keras.ops

    def make(name: str):
        def metric(y_true, y_pred):
            return ops.mean(y_true * y_pred)

        metric.__name__ = name
        return metric

    return [make(n) for n in ORIGINAL_METRIC_NAMES]


def test_legacy_h5_with_the_designs_custom_metrics_loads_without_compiling(tmp_path: Path) -> None:
    keras = keras_module()
    model = build_unet(128, 2, 2, 1, seed=3)  # original input geometry, tiny width
    model.compile(optimizer="adam", loss="categorical_crossentropy", metrics=["accuracy", *_original_metrics()])
    path = tmp_path / "model_per_class.h5"
    model.save(path)
    assert b"dice_coef_necrotic" in path.read_bytes()  # the file records the custom metrics
    loaded = load_model(path)  # no preprocess.json beside it: the original design is assumed
    assert loaded.spec == ORIGINAL_SPEC
    assert loaded.name == "model_per_class"
    x = np.random.default_rng(2).random((1, 128, 128, 2)).astype(np.float32)
    np.testing.assert_allclose(np.asarray(loaded.model(x)), np.asarray(model(x)), atol=1e-5)
    assert keras.__version__  # keras was importable


def test_model_that_does_not_fit_the_spec_is_refused(tmp_path: Path) -> None:
    four = PreprocessSpec(channels=("flair", "t1ce", "t1", "t2"), input_size=32)
    save_for_inference(tiny(2), tmp_path / "m", four)
    with pytest.raises(ModelError, match=r"expected a model input of \(batch, 32, 32, 4\).*got \(None, 32, 32, 2\)"):
        load_model(tmp_path / "m")
    bigger = PreprocessSpec(channels=("flair", "t1ce"), input_size=64)
    with pytest.raises(ModelError, match="64, 64, 2"):
        load_model(tmp_path / "m" / "model.keras", spec=bigger)


def test_random_bytes_named_model_keras_is_refused(tmp_path: Path) -> None:
    folder = tmp_path / "fake"
    folder.mkdir()
    (folder / "model.keras").write_bytes(np.random.default_rng(0).bytes(4096))
    with pytest.raises(ModelError, match="model.keras"):
        load_model(folder)


def test_text_h5_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "model.h5"
    path.write_text("this is not an HDF5 file\n")
    with pytest.raises(ModelError, match="model.h5"):
        load_model(path)


def test_missing_and_wrong_paths_are_refused(tmp_path: Path) -> None:
    with pytest.raises(ModelError, match="does not exist"):
        load_model(tmp_path / "nowhere")
    with pytest.raises(ModelError, match="neither"):
        load_model(tmp_path)  # a folder without weights
    (tmp_path / "weights.txt").write_text("x")
    with pytest.raises(ModelError, match=".keras or .h5"):
        load_model(tmp_path / "weights.txt")


def test_lambda_layer_is_refused_in_safe_mode(tmp_path: Path) -> None:
    keras = keras_module()
    inputs = keras.Input((32, 32, 2))
    x = keras.layers.Lambda(lambda t: t * 2.0)(inputs)
    outputs = keras.layers.Conv2D(4, 1, activation="softmax")(x)
    folder = tmp_path / "lambda_model"
    folder.mkdir()
    keras.Model(inputs, outputs).save(folder / "model.keras")
    TINY_SPEC.save(folder)
    with pytest.raises(ModelError, match="Lambda layer.*safe mode"):
        load_model(folder)


def test_list_models_finds_model_folders(tmp_path: Path) -> None:
    save_for_inference(tiny(), tmp_path / "b_model", TINY_SPEC)
    (tmp_path / "b_model" / "model_card.json").write_text(json.dumps({"parameters": 7}))
    (tmp_path / "a_empty").mkdir()
    found = list_models(tmp_path)
    assert [m["name"] for m in found] == ["b_model"]
    assert found[0]["card"] == {"parameters": 7}
    assert list_models(tmp_path / "missing") == []
