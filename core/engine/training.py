"""Training: the run itself (``train``), its Keras callbacks, and a progress file and history another process can
read. The split, slice cache, augmentation and batches are in ``training_data``; the distribution strategy in
``distributed``; the configuration in ``training_config``; the model card in ``training_card`` (all re-exported
here).

Run through ``python -m core train``. TensorFlow/Keras is imported lazily.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np

from core.data.cases import discover_cases
from core.data.io import atomic_write_bytes
from core.engine.distributed import choose_strategy, enable_keras_multi_worker, is_chief, strategy_name
from core.engine.preprocess import PreprocessSpec
from core.engine.training_card import build_card, evaluate_cases, render_card_markdown
from core.engine.training_config import TrainConfig
from core.engine.training_data import (
    SliceIndex,
    augment_pair,
    cache_case,
    drop_modalities,
    make_sequence,
    split_cases,
)
from core.errors import DataFolderError, ModelError

__all__ = ["HISTORY_FILE", "PROGRESS_FILE", "SliceIndex", "TrainConfig", "augment_pair", "build_card", "cache_case",
           "choose_strategy", "drop_modalities", "enable_keras_multi_worker", "evaluate_cases", "is_chief",
           "make_callbacks", "make_sequence", "read_history", "read_progress", "render_card_markdown",
           "save_inference_settings", "split_cases", "strategy_name", "train", "write_progress"]

PROGRESS_FILE = "progress.json"
HISTORY_FILE = "history.csv"


# ------------------------------------------------------------------------------------------- progress ---

def write_progress(out_dir: Path, **fields: Any) -> None:
    """Atomically merge ``fields`` into ``progress.json`` (read by the training page)."""
    path = out_dir / PROGRESS_FILE
    state: dict[str, Any] = {}
    if path.is_file():
        try:
            state = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError):
            state = {}
    state.update(fields)
    state["updated"] = time.time()
    atomic_write_bytes(path, json.dumps(state, default=float).encode())


def read_progress(out_dir: str | Path) -> dict[str, Any]:
    path = Path(out_dir) / PROGRESS_FILE
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        return {}


def make_callbacks(cfg: TrainConfig, out: Path, n_batches: int, chief: bool) -> list[Any]:
    """The design's callbacks (ReduceLROnPlateau 0.2/2/1e-6, best-val-loss checkpoint, CSV log) plus early
    stopping, a resumable last checkpoint, a wall-time limit and the progress file."""
    from core.engine.model import keras_module

    keras = keras_module()
    ckpt = out / "checkpoints"
    ckpt.mkdir(parents=True, exist_ok=True)
    started = time.time()

    class Progress(keras.callbacks.Callback):  # type: ignore[misc, name-defined]
        def __init__(self) -> None:
            super().__init__()
            self._last = 0.0

        def on_epoch_begin(self, epoch: int, logs: dict | None = None) -> None:
            if chief:
                write_progress(out, status="running", epoch=epoch + 1, epochs=cfg.epochs, batch=0, batches=n_batches)

        def on_train_batch_end(self, batch: int, logs: dict | None = None) -> None:
            now = time.time()
            if chief and now - self._last > 2.0:
                self._last = now
                write_progress(out, batch=batch + 1, batches=n_batches, loss=float((logs or {}).get("loss", 0.0)))
            if cfg.max_minutes and now - started > cfg.max_minutes * 60:
                self.model.stop_training = True

        def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
            if not chief:
                return
            self.model.save(ckpt / "last.keras")
            atomic_write_bytes(ckpt / "state.json", json.dumps({"epoch": epoch + 1}).encode())
            write_progress(out, epoch=epoch + 1, batch=n_batches, logs={k: float(v) for k, v in (logs or {}).items()},
                           elapsed_s=time.time() - started)

    cbs: list[Any] = [
        keras.callbacks.ReduceLROnPlateau(monitor="val_loss", factor=0.2, patience=2, min_lr=1e-6),
        keras.callbacks.EarlyStopping(monitor="val_loss", patience=cfg.early_stopping_patience),
        Progress(),
    ]
    if chief:
        # On resume, the best validation loss so far (from the CSV log) is the bar a new best must beat.
        best_so_far = [r["val_loss"] for r in read_history(out) if "val_loss" in r] if cfg.resume else []
        cbs += [
            keras.callbacks.ModelCheckpoint(str(ckpt / "best.keras"), monitor="val_loss", save_best_only=True,
                                            initial_value_threshold=min(best_so_far) if best_so_far else None),
            keras.callbacks.CSVLogger(str(out / HISTORY_FILE), append=cfg.resume),
        ]
    return cbs


# ----------------------------------------------------------------------------------------------- train ---

def train(cfg: TrainConfig) -> dict[str, Any]:
    """Run one training and write the model folder: model.keras, preprocess.json, config.json, split.json,
    history.csv, progress.json, model_card.json and MODEL_CARD.md.

    Returns:
        The model card as a dict.

    Raises:
        DataFolderError: no labelled cases, or a bad split.
    """
    from core.engine.model import build_unet, compile_model, get_custom_objects, keras_module, save_for_inference

    started = time.time()
    out = Path(cfg.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    chief = is_chief()
    if chief:
        write_progress(out, status="preparing", pid=os.getpid(), started=started, epoch=0, epochs=cfg.epochs)
    try:
        refs = [r for r in discover_cases(cfg.data_dir) if r.has_seg and r.case_id not in cfg.exclude_cases]
        if not refs:
            raise DataFolderError(f"expected labelled BraTS cases in {cfg.data_dir!r}, found none")
        by_id = {r.case_id: r for r in refs}
        split = split_cases(list(by_id), cfg.split, cfg.seed, cfg.val_cases, cfg.test_cases)
        spec = cfg.spec()
        keras = keras_module()
        keras.utils.set_random_seed(cfg.seed)
        if chief:
            atomic_write_bytes(out / "split.json", json.dumps(split, indent=2).encode())
            atomic_write_bytes(out / "config.json", json.dumps(asdict(cfg), indent=2).encode())
            spec.save(out)
        cache_dir = Path(cfg.cache_dir) if cfg.cache_dir else out / "cache"
        files = {cid: cache_case(by_id[cid], spec, cache_dir) for cid in split["train"] + split["val"]}
        train_index = SliceIndex([files[c] for c in split["train"]], cfg.tumour_repeat)
        val_index = SliceIndex([files[c] for c in split["val"]], 0) if split["val"] else None
        strategy = choose_strategy()
        name = strategy_name(strategy)
        if name == "MultiWorkerMirroredStrategy":
            enable_keras_multi_worker()
        if chief:
            write_progress(out, strategy=name, replicas=int(strategy.num_replicas_in_sync))
        global_batch = cfg.batch_size * strategy.num_replicas_in_sync
        train_seq = make_sequence(train_index, global_batch, cfg.augment, cfg.seed, True, steps=cfg.steps_per_epoch,
                                  bias_field=cfg.bias_field, context=cfg.context, channels=tuple(cfg.channels),
                                  modality_dropout=cfg.modality_dropout, strong=cfg.strong_augment)
        val_seq = (make_sequence(val_index, global_batch, False, cfg.seed, False, context=cfg.context)
                   if val_index else None)
        initial_epoch = 0
        last = out / "checkpoints" / "last.keras"
        with strategy.scope():
            if cfg.resume and last.is_file():
                model = keras.models.load_model(last, custom_objects=get_custom_objects(), safe_mode=True)
                state = json.loads((out / "checkpoints" / "state.json").read_text(encoding="utf-8"))
                initial_epoch = int(state.get("epoch", 0))
            else:
                model = build_unet(cfg.input_size, spec.n_inputs, cfg.base_filters, cfg.depth, cfg.dropout,
                                   seed=cfg.seed)
                compile_model(model, cfg.loss, cfg.learning_rate)
        callbacks = make_callbacks(cfg, out, len(train_seq), chief)
        if val_seq is None:
            callbacks = [c for c in callbacks if "val_loss" not in str(getattr(c, "monitor", ""))]
        fit_started = time.time()
        model.fit(train_seq, validation_data=val_seq, epochs=cfg.epochs, initial_epoch=initial_epoch,
                  callbacks=callbacks, verbose=2)
        fit_s = time.time() - fit_started
        if not chief:
            return {}
        best = out / "checkpoints" / "best.keras"
        if best.is_file():
            model = keras.models.load_model(best, custom_objects=get_custom_objects(), safe_mode=True)
        save_for_inference(model, out, spec)
        save_inference_settings(cfg, spec, out, [files[c][0] for c in split["train"]])
        history = read_history(out)
        card = build_card(cfg, split, spec, out, history, fit_s, time.time() - started, by_id)
        if cfg.export_onnx:
            from core.engine.export import export_model_folder

            try:
                card["onnx"] = export_model_folder(out)
            except ModelError as err:  # the Keras model stays usable; inference falls back to TensorFlow
                write_progress(out, export_error=str(err).splitlines()[0])
        write_progress(out, status="finished", finished=time.time())
        return card
    except BaseException as err:
        if chief:
            status = "stopped" if isinstance(err, KeyboardInterrupt) else "failed"
            write_progress(out, status=status, error=str(err).splitlines()[0] if str(err) else type(err).__name__)
        raise


def save_inference_settings(cfg: TrainConfig, spec: PreprocessSpec, out: Path, train_x: list[Path]) -> None:
    """Write ``quality.json`` (the flag's thresholds and the training cases' intensity quantiles) and, when the
    config names one, ``postprocess.json`` beside the weights."""
    from core.engine.postprocess import parse_variant
    from core.engine.quality import QualityModel, QualityThresholds, intensity_quantiles, reference_from

    per_case = [intensity_quantiles(np.load(x, mmap_mode="r", allow_pickle=False)) for x in train_x]
    QualityModel(QualityThresholds(), reference_from(per_case, spec.channels), spec.modality_dropout > 0).save(out)
    if cfg.postprocess:
        parse_variant(cfg.postprocess).save(out)


def read_history(out_dir: str | Path) -> list[dict[str, float]]:
    """Rows of ``history.csv`` as dicts of floats (empty when absent); cells that are not numbers (Keras writes
    "NA" for validation metrics when there is no validation data) are left out of their row."""
    import csv

    path = Path(out_dir) / HISTORY_FILE
    if not path.is_file():
        return []
    rows = []
    with open(path, newline="", encoding="utf-8") as fh:
        for row in csv.DictReader(fh):
            values: dict[str, float] = {}
            for k, v in row.items():
                try:
                    values[k] = float(v)
                except (TypeError, ValueError):  # "NA" (no validation data), empty or torn cells
                    continue
            if "epoch" in values:
                rows.append(values)
    return rows
