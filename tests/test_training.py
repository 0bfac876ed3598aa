"""Tests of core/engine/training.py: the split, augmentation, a tiny end-to-end run, resume, an interrupted run,
and a two-worker MultiWorkerMirroredStrategy run on localhost."""

from __future__ import annotations

import csv
import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import make_case_dir

import core.engine.training as training
from core.engine.training import (
    TrainConfig,
    augment_pair,
    drop_modalities,
    read_history,
    read_progress,
    split_cases,
    train,
)
from core.errors import DataFolderError

PROJECT = Path(__file__).resolve().parent.parent
CASE_SHAPE = (24, 24, 6)


def tiny_config(data: Path, out: Path, **kw: object) -> TrainConfig:
    base: dict = dict(data_dir=str(data), out_dir=str(out), channels=("flair", "t1ce"), input_size=32,
                      base_filters=4, depth=2, epochs=2, batch_size=2, steps_per_epoch=2, seed=3)
    base.update(kw)
    return TrainConfig(**base)


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("train_data")
    for i in range(2):
        make_case_dir(root, f"BraTS2021_0000{i}", shape=CASE_SHAPE, seed=200 + i)
    return root


# ---------------------------------------------------------------------------------------------- split ---

def test_split_is_by_case_reproducible_and_complete() -> None:
    ids = [f"case{i:02d}" for i in range(20)]
    a = split_cases(ids, (0.7, 0.15, 0.15), seed=1)
    b = split_cases(list(reversed(ids)), (0.7, 0.15, 0.15), seed=1)
    assert a == b  # order of input does not matter, the seed decides
    assert (len(a["train"]), len(a["val"]), len(a["test"])) == (14, 3, 3)
    assert sorted(a["train"] + a["val"] + a["test"]) == ids  # each case exactly once
    assert not set(a["train"]) & set(a["val"]) and not set(a["val"]) & set(a["test"])
    assert split_cases(ids, seed=2) != a


def test_split_explicit_cases_win() -> None:
    ids = ["a", "b", "c", "d"]
    s = split_cases(ids, val_cases=("b",), test_cases=("d",))
    assert s == {"train": ["a", "c"], "val": ["b"], "test": ["d"]}


def test_split_two_cases_keeps_one_for_validation() -> None:
    s = split_cases(["x", "y"], seed=0)
    assert len(s["train"]) == 1 and len(s["val"]) == 1 and s["test"] == []


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"val_cases": ("nope",)}, "unknown"),
        ({"fractions": (0.5, 0.2, 0.2)}, "sum to 1"),
        ({"val_cases": ("a",), "test_cases": ("b",)}, "at least one training case"),
    ],
)
def test_split_errors(kwargs: dict, match: str) -> None:
    with pytest.raises(DataFolderError, match=match):
        split_cases(["a", "b"], **kwargs)


# -------------------------------------------------------------------------------------------- augment ---

def test_augment_pair_keeps_shapes_dtypes_and_labels() -> None:
    gen = np.random.default_rng(0)
    x = np.zeros((32, 32, 3), dtype=np.float32)
    x[6:26, 6:26] = gen.uniform(0.1, 1.0, size=(20, 20, 3))
    y = np.zeros((32, 32), dtype=np.uint8)
    y[10:14, 10:14], y[16:22, 12:18], y[18:20, 20:24] = 1, 2, 3
    for seed in range(5):
        xa, ya = augment_pair(x, y, np.random.default_rng(seed))
        assert xa.shape == x.shape and xa.dtype == np.float32
        assert ya.shape == y.shape and ya.dtype == np.uint8
        assert set(np.unique(ya).tolist()) <= {0, 1, 2, 3}  # nearest-neighbour: no invented classes
        assert np.all(xa[ya > 0].any(axis=-1))  # tumour stays on brain
    # same rng seed -> same result
    a1, b1 = augment_pair(x, y, np.random.default_rng(9))
    a2, b2 = augment_pair(x, y, np.random.default_rng(9))
    np.testing.assert_array_equal(a1, a2)
    np.testing.assert_array_equal(b1, b2)


def test_strong_augment_and_context_groups_keep_missing_modalities_at_zero() -> None:
    gen = np.random.default_rng(1)
    x = np.zeros((32, 32, 6), dtype=np.float32)  # 2 modalities x 3 context slices, modality-major
    x[6:26, 6:26, :3] = gen.normal(0, 1, size=(20, 20, 3))
    y = np.zeros((32, 32), dtype=np.uint8)
    changed = 0
    for seed in range(20):
        xa, _ = augment_pair(x, y, np.random.default_rng(seed), bias_field=0.3, strong=True, group=3)
        assert xa.shape == x.shape and np.isfinite(xa).all()
        assert not np.any(xa[..., 3:])  # the missing modality stays zero through every intensity change
        assert not np.any(xa[:3, :3])  # outside the brain stays zero
        changed += not np.allclose(xa, augment_pair(x, y, np.random.default_rng(seed), group=3)[0])
    assert changed > 10  # the strong intensity changes do change most samples


def test_drop_modalities_keeps_flair_or_t1ce_and_two_modalities() -> None:
    channels = ("flair", "t1ce", "t1", "t2")
    x = np.ones((4, 4, 8), dtype=np.float32)  # 4 modalities x 2 channels each
    seen = set()
    for seed in range(60):
        out = drop_modalities(x, channels, (True, True, True, True), np.random.default_rng(seed), group=2)
        kept = tuple(bool(out[..., 2 * i:2 * i + 2].any()) for i in range(4))
        assert all(out[..., 2 * i:2 * i + 2].all() or not out[..., 2 * i:2 * i + 2].any() for i in range(4))
        assert sum(kept) >= 2 and (kept[0] or kept[1]) and sum(kept) < 4
        seen.add(kept)
    assert len(seen) >= 6  # many different subsets
    # a case with FLAIR + T1CE only has nothing left to drop
    np.testing.assert_array_equal(drop_modalities(x, channels, (True, True, False, False),
                                                  np.random.default_rng(0), group=2), x)


def test_read_history_keeps_rows_whose_validation_cells_are_na(tmp_path: Path) -> None:
    """Without validation cases Keras' CSV log writes "NA" in the val_ columns: the epoch still counts."""
    (tmp_path / "history.csv").write_text("epoch,loss,val_loss\n0,1.5,NA\n1,1.2,NA\n2,1.1,0.9\nbroken\n")
    rows = read_history(tmp_path)
    assert [r["epoch"] for r in rows] == [0.0, 1.0, 2.0]
    assert rows[0] == {"epoch": 0.0, "loss": 1.5} and rows[2]["val_loss"] == 0.9


# ------------------------------------------------------------------------------------------ end to end ---

def test_tiny_training_writes_the_model_folder(data_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "tiny"
    card = train(tiny_config(data_dir, out))
    for name in ("model.keras", "preprocess.json", "split.json", "config.json", "history.csv", "progress.json",
                 "model_card.json", "MODEL_CARD.md"):
        assert (out / name).is_file(), name
    progress = read_progress(out)
    assert progress["status"] == "finished" and progress["epoch"] == 2
    assert progress["strategy"] == "_DefaultDistributionStrategy" and progress["replicas"] == 1
    history = read_history(out)
    assert [int(r["epoch"]) for r in history] == [0, 1]
    assert "loss" in history[0] and "val_loss" in history[0]
    split = json.loads((out / "split.json").read_text())
    assert sorted(split["train"] + split["val"]) == ["BraTS2021_00000", "BraTS2021_00001"]
    assert card["epochs_run"] == 2 and card["parameters"] > 0
    assert [r["case_id"] for r in card["validation_per_case"]] == split["val"]
    saved = json.loads((out / "model_card.json").read_text())
    assert saved["weights_sha256"] == card["weights_sha256"]
    from core.engine.model import load_model

    loaded = load_model(out)
    assert loaded.spec.channels == ("flair", "t1ce") and loaded.spec.input_size == 32
    assert loaded.sha256 == card["weights_sha256"]
    # the quality flag's reference: the training cases' intensity quantiles per modality
    assert set(loaded.quality.reference_quantiles) == {"flair", "t1ce"}
    assert not loaded.quality.trained_for_missing


def test_training_with_context_dropout_and_postprocess(data_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "ctx"
    card = train(tiny_config(data_dir, out, channels=("flair", "t1ce", "t1", "t2"), context=1, modality_dropout=0.5,
                             strong_augment=True, normalisation="robust_brain", epochs=1, split=(1.0, 0.0, 0.0),
                             postprocess="decoding=regions,min_island_ml=0.1"))
    from core.engine.inference import predict_case
    from core.engine.model import load_model
    from core.engine.postprocess import PostprocessSpec

    assert card["epochs_run"] == 1 and card["split"]["val"] == []  # no validation: the "NA" log still counts
    loaded = load_model(out)
    assert loaded.spec.context == 1 and loaded.spec.n_inputs == 12
    # training ends with the ONNX export (core.engine.runtime): inference runs it, its checksum is in the card
    assert loaded.runtime == "onnxruntime" and card["onnx"]["keras_sha256"] == card["weights_sha256"]
    assert tuple(loaded.model.input_shape[1:]) == (32, 32, 12)
    assert tuple(load_model(out, runtime="tensorflow").model.inputs[0].shape[1:]) == (32, 32, 12)
    assert loaded.postprocess == PostprocessSpec("regions", 0.1)
    assert loaded.quality.trained_for_missing
    from core.data.cases import discover_cases, load_case

    case = load_case(discover_cases(data_dir)[0])
    partial = type(case)(case.case_id, {k: case.images[k] for k in ("flair", "t1ce")})
    pred = predict_case(loaded, partial)
    assert pred.missing == ("t1", "t2") and pred.postprocess.startswith("regions")
    assert pred.labels.shape == case.shape
    assert not any("missing" in r for r in pred.quality.reasons)  # trained for it: not a reason to review


def test_resume_continues_at_the_next_epoch(data_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "resumed"
    train(tiny_config(data_dir, out, epochs=1))
    assert [int(r["epoch"]) for r in read_history(out)] == [0]
    assert json.loads((out / "checkpoints" / "state.json").read_text()) == {"epoch": 1}
    train(tiny_config(data_dir, out, epochs=3, resume=True))
    assert [int(r["epoch"]) for r in read_history(out)] == [0, 1, 2]  # appended, not restarted
    assert json.loads((out / "checkpoints" / "state.json").read_text()) == {"epoch": 3}
    assert read_progress(out)["status"] == "finished"


def test_interrupted_run_is_marked_stopped_with_a_readable_checkpoint(data_dir: Path, tmp_path: Path,
                                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    from core.engine.model import get_custom_objects, keras_module

    keras = keras_module()
    original = training.make_callbacks

    class Interrupt(keras.callbacks.Callback):
        def on_epoch_begin(self, epoch: int, logs: dict | None = None) -> None:
            if epoch == 1:
                raise KeyboardInterrupt

    monkeypatch.setattr(training, "make_callbacks", lambda *a, **k: [*original(*a, **k), Interrupt()])
    out = tmp_path / "killed"
    with pytest.raises(KeyboardInterrupt):
        train(tiny_config(data_dir, out, epochs=4))
    progress = read_progress(out)
    assert progress["status"] == "stopped"
    assert not (out / "model.keras").exists()  # nothing pretends to be a finished model
    last = out / "checkpoints" / "last.keras"
    model = keras.models.load_model(last, custom_objects=get_custom_objects(), safe_mode=True)
    assert tuple(model.inputs[0].shape) == (None, 32, 32, 2)
    with open(out / "history.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert [int(r["epoch"]) for r in rows] == [0]


def test_failed_run_is_marked_failed(tmp_path: Path) -> None:
    empty = tmp_path / "no_cases"
    empty.mkdir()
    with pytest.raises(DataFolderError, match="labelled"):
        train(tiny_config(empty, tmp_path / "out"))
    progress = read_progress(tmp_path / "out")
    assert progress["status"] == "failed" and "labelled" in progress["error"]


# ------------------------------------------------------------------------------------- multi-worker ---

def _free_ports(n: int) -> list[int]:
    socks = [socket.socket() for _ in range(n)]
    try:
        for s in socks:
            s.bind(("localhost", 0))
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


@pytest.mark.slow
@pytest.mark.timeout(240)
def test_two_workers_train_with_multi_worker_mirrored_strategy(data_dir: Path, tmp_path: Path) -> None:
    """Two local processes form a MultiWorkerMirroredStrategy cluster; the chief (worker 0) writes the model."""
    out = tmp_path / "mw_model"
    ports = _free_ports(2)
    cluster = {"worker": [f"localhost:{p}" for p in ports]}
    procs = []
    logs = []
    for index in range(2):
        env = dict(os.environ, TF_CONFIG=json.dumps({"cluster": cluster, "task": {"type": "worker", "index": index}}),
                   TF_CPP_MIN_LOG_LEVEL="2", CUDA_VISIBLE_DEVICES="")
        log = open(tmp_path / f"worker{index}.log", "w")  # closed below
        logs.append(log)
        procs.append(subprocess.Popen(
            [sys.executable, "-m", "core", "train", "--data", str(data_dir), "--out", str(out), "--channels",
             "flair,t1ce", "--input-size", "32", "--base-filters", "4", "--depth", "2", "--epochs", "2",
             "--steps-per-epoch", "2", "--batch-size", "1"],
            cwd=PROJECT, env=env, stdout=log, stderr=subprocess.STDOUT))
    try:
        codes = [p.wait(timeout=180) for p in procs]
    except subprocess.TimeoutExpired:
        codes = []
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
        for log in logs:
            log.close()
    tails = "\n".join((tmp_path / f"worker{i}.log").read_text()[-1500:] for i in range(2))
    assert codes == [0, 0], tails
    progress = read_progress(out)
    assert progress["status"] == "finished", progress
    assert progress["strategy"] == "MultiWorkerMirroredStrategy" and progress["replicas"] == 2
    assert (out / "model.keras").is_file() and (out / "model_card.json").is_file()
    assert [int(r["epoch"]) for r in read_history(out)] == [0, 1]


def test_resumed_checkpoint_must_beat_the_best_validation_loss_so_far(tmp_path: Path) -> None:
    from core.engine.model import keras_module

    keras = keras_module()
    out = tmp_path / "run"
    out.mkdir()
    (out / "history.csv").write_text("epoch,loss,val_loss\n0,1.0,0.7\n1,0.8,0.4\n2,0.7,0.5\n")
    for resume, expected in ((True, 0.4), (False, None)):
        cfg = training.TrainConfig(data_dir=str(tmp_path), out_dir=str(out), resume=resume)
        ckpts = [c for c in training.make_callbacks(cfg, out, 2, True)
                 if isinstance(c, keras.callbacks.ModelCheckpoint)]
        assert len(ckpts) == 1
        if expected is None:
            assert ckpts[0].best in (None, float("inf"))  # no bar: the first epoch sets it
        else:
            assert ckpts[0].best == pytest.approx(expected)
