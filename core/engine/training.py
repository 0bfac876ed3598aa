"""Training: split by case, a slice pipeline that streams from an on-disk cache, augmentation, callbacks,
the distribution strategy, a progress file another process can read, and the model card at the end.

Run through ``python -m core train``. TensorFlow/Keras is imported lazily.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import platform
import random
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from core.data.cases import CaseRef, discover_cases, load_case
from core.data.io import atomic_write_bytes
from core.engine.preprocess import ORIGINAL_SPEC, PreprocessSpec, prepare_case, prepare_labels
from core.errors import DataFolderError, ModelError

PROGRESS_FILE = "progress.json"
HISTORY_FILE = "history.csv"


@dataclass
class TrainConfig:
    """Everything that defines a training run (saved as ``config.json`` in the output folder)."""

    data_dir: str
    out_dir: str
    channels: tuple[str, ...] = ORIGINAL_SPEC.channels  # preprocessing defaults: the original design's spec
    input_size: int = ORIGINAL_SPEC.input_size
    normalisation: str = ORIGINAL_SPEC.normalisation
    crop: str = ORIGINAL_SPEC.crop
    base_filters: int = 32
    depth: int = 4
    dropout: float = 0.2
    epochs: int = 25
    batch_size: int = 2
    learning_rate: float = 1e-3
    loss: str = "ce"
    split: tuple[float, float, float] = (0.7, 0.15, 0.15)
    val_cases: tuple[str, ...] = ()
    test_cases: tuple[str, ...] = ()
    exclude_cases: tuple[str, ...] = ()
    seed: int = 42
    augment: bool = True
    tumour_repeat: int = 1
    bias_field: float = 0.0
    early_stopping_patience: int = 6
    max_minutes: float = 0.0
    resume: bool = False
    steps_per_epoch: int = 0
    cache_dir: str = ""  # slice cache folder (default: <out_dir>/cache); several runs may share one
    context: int = 0  # neighbouring slices on each side as extra channels (2.5-D)
    modality_dropout: float = 0.0  # per-sample probability of zero-filling some modalities
    strong_augment: bool = False  # gamma, contrast, noise, blur and low-resolution augmentation
    postprocess: str = ""  # post-processing saved with the model (core.engine.postprocess.parse_variant), "" for none
    export_onnx: bool = True  # write model.onnx at the end (core.engine.runtime): inference without TensorFlow

    def spec(self) -> PreprocessSpec:
        return PreprocessSpec(channels=tuple(self.channels), input_size=self.input_size,
                              normalisation=self.normalisation, crop=self.crop, context=self.context,
                              modality_dropout=self.modality_dropout)


# ---------------------------------------------------------------------------------------------- split ---

def split_cases(case_ids: list[str], fractions: tuple[float, float, float] = (0.7, 0.15, 0.15), seed: int = 42,
                val_cases: tuple[str, ...] = (), test_cases: tuple[str, ...] = ()) -> dict[str, list[str]]:
    """Split case ids into train/val/test by case (never by slice), reproducibly.

    Explicit ``val_cases``/``test_cases`` win; otherwise fractions are applied to a seeded shuffle, with at
    least one validation case when there are two or more cases.

    Raises:
        DataFolderError: an explicit case is unknown, or nothing is left to train on.
    """
    ids = sorted(set(case_ids))
    unknown = [c for c in (*val_cases, *test_cases) if c not in ids]
    if unknown:
        raise DataFolderError(f"expected validation/test cases among the data folder's cases, got unknown {unknown}")
    if val_cases or test_cases:
        val, test = sorted(val_cases), sorted(test_cases)
        train = [c for c in ids if c not in val and c not in test]
    else:
        if abs(sum(fractions) - 1.0) > 1e-6 or any(f < 0 for f in fractions):
            raise DataFolderError(f"expected split fractions that sum to 1, got {fractions}")
        order = ids[:]
        random.Random(seed).shuffle(order)
        n = len(order)
        n_val = max(1 if n >= 2 and fractions[1] > 0 else 0, int(round(fractions[1] * n)))
        n_test = int(round(fractions[2] * n)) if n - n_val > 1 else 0
        val, test = sorted(order[:n_val]), sorted(order[n_val : n_val + n_test])
        train = sorted(order[n_val + n_test :])
    if not train:
        raise DataFolderError(f"expected at least one training case, got none of {len(ids)}")
    return {"train": train, "val": val, "test": test}


# ------------------------------------------------------------------------------------------ slice cache ---

def cache_case(ref: CaseRef, spec: PreprocessSpec, cache_dir: Path) -> tuple[Path, Path]:
    """Preprocess one case once and store (Z, S, S, C) float16 inputs (one slice per modality; context slices
    are stacked per batch) and (Z, S, S) uint8 classes as .npy. The key ignores what only training uses."""
    from dataclasses import replace

    slice_spec = replace(spec, context=0, modality_dropout=0.0)
    key = f"{ref.case_id}-{hashlib.sha256(slice_spec.to_json().encode()).hexdigest()[:10]}"
    x_path, y_path = cache_dir / f"{key}_x.npy", cache_dir / f"{key}_y.npy"
    if x_path.is_file() and y_path.is_file():
        return x_path, y_path
    case = load_case(ref)
    if case.seg is None:
        raise DataFolderError(f"expected a segmentation for training case {ref.case_id}, found none")
    prep = prepare_case(case, spec)
    y = prepare_labels(np.asarray(case.seg.data), prep.box, spec.input_size)
    cache_dir.mkdir(parents=True, exist_ok=True)
    for path, arr in ((x_path, prep.slices.astype(np.float16)), (y_path, y)):
        tmp = path.with_name(f".{path.stem}.{os.getpid()}.tmp.npy")  # unique: workers may cache at once
        np.save(tmp, arr, allow_pickle=False)
        os.replace(tmp, path)
    return x_path, y_path


class SliceIndex:
    """(case, z) pairs over memory-mapped per-case caches: only the batches in use are read into memory."""

    def __init__(self, files: list[tuple[Path, Path]], tumour_repeat: int = 1, brain_only: bool = True) -> None:
        self.xs = [np.load(x, mmap_mode="r", allow_pickle=False) for x, _ in files]
        self.ys = [np.load(y, mmap_mode="r", allow_pickle=False) for _, y in files]
        # Which modalities each case holds (a zero-filled channel is a missing modality).
        self.present = [tuple(bool(np.any(x[..., c])) for c in range(x.shape[-1])) for x in self.xs]
        pairs: list[tuple[int, int]] = []
        for ci, (x, y) in enumerate(zip(self.xs, self.ys, strict=True)):
            for z in range(x.shape[0]):
                has_brain = bool(np.any(x[z] != 0))
                has_tumour = bool(np.any(y[z] > 0))
                if brain_only and not has_brain:
                    continue
                pairs.extend([(ci, z)] * (1 + (tumour_repeat if has_tumour else 0)))
        self.pairs = pairs

    def __len__(self) -> int:
        return len(self.pairs)


def augment_pair(x: np.ndarray, y: np.ndarray, rng: np.random.Generator, bias_field: float = 0.0,
                 strong: bool = False, group: int = 1) -> tuple[np.ndarray, np.ndarray]:
    """Random flips, rotation (+-10 degrees), scaling (0.9-1.1) and per-modality intensity jitter; with
    ``bias_field`` > 0, also (half the time) a smooth multiplicative field per modality of up to about
    +-``bias_field``, as raw scanner intensities carry (applied in z-score space, see ``_bias_field``); with
    ``strong``, also gamma, contrast, Gaussian noise, blur and low-resolution simulation (``_strong_intensity``).

    Args:
        x: (S, S, C) float32 input; y: (S, S) uint8 classes. Returns new arrays of the same shapes.
        group: consecutive channels that are one modality (the 2.5-D context slices, 2k + 1): they share
            every intensity change.
    """
    if rng.random() < 0.5:
        x, y = x[::-1], y[::-1]
    if rng.random() < 0.5:
        x, y = x[:, ::-1], y[:, ::-1]
    size = x.shape[0]
    angle = float(rng.uniform(-10, 10))
    scale = float(rng.uniform(0.9, 1.1))
    m = cv2.getRotationMatrix2D((size / 2 - 0.5, size / 2 - 0.5), angle, scale)
    x = np.ascontiguousarray(x, dtype=np.float32)
    xa = cv2.warpAffine(x, m, (size, size), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT, borderValue=0)
    xa = xa.reshape(size, size, -1)
    ya = cv2.warpAffine(np.ascontiguousarray(y), m, (size, size), flags=cv2.INTER_NEAREST,
                        borderMode=cv2.BORDER_CONSTANT, borderValue=0)
    n_mod = xa.shape[-1] // group
    # a missing (all-zero) modality stays zero whatever the intensity changes do
    present = np.repeat([bool(np.any(xa[..., m * group:(m + 1) * group])) for m in range(n_mod)], group)
    gain = np.repeat(rng.uniform(0.9, 1.1, size=n_mod), group).astype(np.float32)
    shift = np.repeat(rng.uniform(-0.1, 0.1, size=n_mod), group).astype(np.float32)
    brain = np.any(xa != 0, axis=-1, keepdims=True)
    xa = xa * gain + shift
    if bias_field > 0 and rng.random() < 0.5:
        xa = _bias_field(xa, rng, bias_field, group)
    if strong:
        xa = _strong_intensity(xa, rng, group)
    xa = np.where(brain & present, xa, 0.0).astype(np.float32)
    return xa, ya


def _bias_field(x: np.ndarray, rng: np.random.Generator, strength: float, group: int = 1) -> np.ndarray:
    """Apply a random second-order polynomial multiplicative field b(u, v) = exp(p(u, v)) per modality (its
    constant term is a slice-wide gain, as a bias field varying along the through-plane axis gives).

    Intensities I = mu + sigma * z scaled by b give z' = z * b + (mu / sigma) * (b - 1); mu / sigma of brain
    MRI is drawn from U(1, 4).
    """
    size = x.shape[0]
    u, v = np.meshgrid(np.linspace(-1, 1, size, dtype=np.float32), np.linspace(-1, 1, size, dtype=np.float32),
                       indexing="ij")
    basis = np.stack([np.ones_like(u), u, v, u * u, v * v, u * v])  # the constant term: through-plane bias
    out = np.empty_like(x)
    for m in range(x.shape[-1] // group):
        coef = rng.normal(0.0, strength / 2, size=basis.shape[0]).astype(np.float32)
        b = np.exp(np.clip(np.tensordot(coef, basis, axes=1), -2 * strength, 2 * strength))
        ratio = float(rng.uniform(1.0, 4.0))
        sl = slice(m * group, (m + 1) * group)
        out[..., sl] = x[..., sl] * b[..., None] + ratio * (b[..., None] - 1.0)
    return out


def _strong_intensity(x: np.ndarray, rng: np.random.Generator, group: int = 1) -> np.ndarray:
    """Intensity changes that another scanner or pipeline brings, each with its own probability:
    gamma in [0.7, 1.5] on the brain's range (p 0.3, per modality), contrast x[0.75, 1.25] about the mean
    (p 0.3, per modality), Gaussian blur sigma [0.5, 1.0] px (p 0.2), low resolution (down by 1.5-2x and up
    again, p 0.2), Gaussian noise sigma [0, 0.1] (p 0.3). Works in z-score space on (S, S, C)."""
    x = x.copy()
    size = x.shape[0]
    for m in range(x.shape[-1] // group):
        sl = slice(m * group, (m + 1) * group)
        ch = x[..., sl]
        if not np.any(ch):
            continue  # a missing modality stays zero
        if rng.random() < 0.3:
            lo, hi = float(ch.min()), float(ch.max())
            if hi - lo > 1e-6:
                gamma = float(np.exp(rng.uniform(np.log(0.7), np.log(1.5))))
                x[..., sl] = lo + (hi - lo) * ((ch - lo) / (hi - lo)) ** gamma
        if rng.random() < 0.3:
            mean = float(x[..., sl].mean())
            x[..., sl] = (x[..., sl] - mean) * float(rng.uniform(0.75, 1.25)) + mean
    if rng.random() < 0.2:
        x = cv2.GaussianBlur(x, (0, 0), float(rng.uniform(0.5, 1.0))).reshape(x.shape)
    if rng.random() < 0.2:
        small = max(8, int(round(size / rng.uniform(1.5, 2.0))))
        low = cv2.resize(x, (small, small), interpolation=cv2.INTER_LINEAR)  # INTER_AREA takes <= 4 channels
        x = cv2.resize(low, (size, size), interpolation=cv2.INTER_LINEAR).reshape(x.shape)
    if rng.random() < 0.3:
        x = x + rng.normal(0.0, float(rng.uniform(0.0, 0.1)), size=x.shape).astype(np.float32)
    return x.astype(np.float32)


def drop_modalities(x: np.ndarray, channels: tuple[str, ...], present: tuple[bool, ...], rng: np.random.Generator,
                    group: int = 1) -> np.ndarray:
    """Zero-fill a random subset of the present modalities, keeping at least two, FLAIR or T1CE among them
    (what inference accepts, ``core.engine.preprocess.check_modalities``). Returns ``x`` unchanged when no such
    subset exists.

    Args:
        x: (S, S, C * group) input, modality-major; channels: the modality of each group; present: whether the
            case holds each modality.
    """
    from itertools import combinations

    from core.engine.preprocess import ANCHOR_MODALITIES, MIN_PRESENT_MODALITIES

    have = [i for i, p in enumerate(present) if p]
    keeps = [k for n in range(MIN_PRESENT_MODALITIES, len(have)) for k in combinations(have, n)
             if any(channels[i] in ANCHOR_MODALITIES for i in k)]
    if not keeps:
        return x
    keep = keeps[int(rng.integers(len(keeps)))]
    out = x.copy()
    for i in have:
        if i not in keep:
            out[..., i * group:(i + 1) * group] = 0.0
    return out


def make_sequence(index: SliceIndex, batch_size: int, augment: bool, seed: int, shuffle: bool,
                  n_classes: int = 4, steps: int = 0, bias_field: float = 0.0, context: int = 0,
                  channels: tuple[str, ...] = (), modality_dropout: float = 0.0, strong: bool = False) -> Any:
    """A ``keras.utils.PyDataset`` yielding (x, one-hot y) batches from a SliceIndex: x (N, S, S, C * (2k+1))
    with ``context`` = k slices each side (modality-major), augmented when ``augment``, modalities dropped
    with probability ``modality_dropout`` per sample (needs ``channels``)."""
    from core.engine.preprocess import context_stack

    group = 2 * context + 1
    from core.engine.model import keras_module

    keras = keras_module()

    class SliceDataset(keras.utils.PyDataset):  # type: ignore[misc, name-defined]
        def __init__(self) -> None:
            super().__init__(workers=1, use_multiprocessing=False)
            self.epoch = 0
            self.order = np.arange(len(index))
            self._reshuffle()

        def _reshuffle(self) -> None:
            if shuffle:
                np.random.default_rng(seed + self.epoch).shuffle(self.order)

        def __len__(self) -> int:
            n = math.ceil(len(index) / batch_size)
            return min(n, steps) if steps else n

        def __getitem__(self, i: int) -> tuple[np.ndarray, np.ndarray]:
            rng = np.random.default_rng((seed, self.epoch, i))
            sel = self.order[i * batch_size : (i + 1) * batch_size]
            xb, yb = [], []
            for j in sel:
                ci, z = index.pairs[int(j)]
                x = context_stack(index.xs[ci], np.array([z]), context)[0]
                y = np.asarray(index.ys[ci][z])
                if augment:
                    x, y = augment_pair(x, y, rng, bias_field, strong, group)
                if modality_dropout > 0 and rng.random() < modality_dropout:
                    x = drop_modalities(x, channels, index.present[ci], rng, group)
                xb.append(x)
                yb.append(y)
            x_arr = np.stack(xb)
            y_arr = np.eye(n_classes, dtype=np.float32)[np.stack(yb)]
            return x_arr, y_arr

        def on_epoch_end(self) -> None:
            self.epoch += 1
            self._reshuffle()

    return SliceDataset()


# ------------------------------------------------------------------------------------------- strategy ---

def choose_strategy() -> Any:
    """MultiWorkerMirroredStrategy when ``TF_CONFIG`` names a cluster, MirroredStrategy on several GPUs,
    else the default (single device) strategy."""
    import tensorflow as tf

    tf_config = os.environ.get("TF_CONFIG", "")
    if tf_config:
        try:
            cluster = json.loads(tf_config).get("cluster", {})
        except json.JSONDecodeError as err:
            raise DataFolderError(f"expected TF_CONFIG to be JSON, got {tf_config[:60]!r}") from err
        if sum(len(v) for v in cluster.values()) > 1:
            return tf.distribute.MultiWorkerMirroredStrategy()
    if len(tf.config.list_physical_devices("GPU")) > 1:
        return tf.distribute.MirroredStrategy()
    return tf.distribute.get_strategy()


def strategy_name(strategy: Any) -> str:
    """A readable name of a tf.distribute strategy (MultiWorkerMirroredStrategy's class is named
    CollectiveAllReduceStrategy)."""
    import tensorflow as tf

    if isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy):
        return "MultiWorkerMirroredStrategy"
    return type(strategy).__name__


_MULTI_WORKER_PATCHED = False


def enable_keras_multi_worker() -> None:
    """Work around two Keras 3 (3.15) bugs that stop ``model.fit`` under MultiWorkerMirroredStrategy
    (keras-team/keras#20585): the symbolic build reduces the first input batch with ``strategy.reduce`` (which
    fails on per-replica inputs), and metric logs are reduced along axis 0 although they are scalars. The
    build now uses this worker's own batch (only its shape and dtype matter) and logs are averaged over replicas.
    Applied once per process, only when a multi-worker strategy is in use.

    Raises:
        DataFolderError: this Keras version lacks the patched internals (multi-worker training unsupported).
    """
    global _MULTI_WORKER_PATCHED
    if _MULTI_WORKER_PATCHED:
        return
    import tensorflow as tf

    try:
        from keras.src import tree
        from keras.src.backend.tensorflow import trainer as tf_trainer

        orig_build = tf_trainer.TensorFlowTrainer._maybe_symbolic_build
        orig_reduce = tf_trainer.reduce_per_replica
        is_multi_worker = tf_trainer._collective_all_reduce_multi_worker
    except (ImportError, AttributeError) as err:
        raise DataFolderError(f"expected Keras 3.x internals for multi-worker training, got {err}") from err

    def local_value(strategy: Any, value: Any) -> Any:
        if isinstance(value, tf.distribute.DistributedValues):
            return strategy.experimental_local_results(value)[0]
        return value

    def maybe_symbolic_build(self: Any, iterator: Any = None, data_batch: Any = None) -> Any:
        if self._distribute_strategy is None or iterator is None or not is_multi_worker(self.distribute_strategy):
            return orig_build(self, iterator=iterator, data_batch=data_batch)
        for _, _, it in iterator:
            batch = next(it)
            break
        local = tree.map_structure(lambda v: local_value(self.distribute_strategy, v), batch)
        with self.distribute_strategy.scope():
            self._symbolic_build(data_batch=local)

    def reduce_per_replica(values: Any, strategy: Any, reduction: str) -> Any:
        if is_multi_worker(strategy) and reduction in ("auto", "mean"):
            return tree.map_structure(lambda v: strategy.reduce("MEAN", v, axis=None), values)
        return orig_reduce(values, strategy, reduction)

    tf_trainer.TensorFlowTrainer._maybe_symbolic_build = maybe_symbolic_build
    tf_trainer.reduce_per_replica = reduce_per_replica
    _MULTI_WORKER_PATCHED = True


def is_chief() -> bool:
    """True unless ``TF_CONFIG`` names this process as a non-chief worker."""
    tf_config = os.environ.get("TF_CONFIG", "")
    if not tf_config:
        return True
    task = json.loads(tf_config).get("task", {})
    cluster = json.loads(tf_config).get("cluster", {})
    if "chief" in cluster:
        return task.get("type") == "chief"
    return task.get("type", "worker") == "worker" and int(task.get("index", 0)) == 0


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
            from core.engine.runtime import export_model_folder

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


def evaluate_cases(model_dir: Path, refs: list[CaseRef]) -> list[dict[str, Any]]:
    """Per-case BraTS region scores of the saved model on labelled cases (full grid, native resolution)."""
    from core.analysis.metrics import score_case
    from core.engine.inference import predict_case
    from core.engine.model import load_model

    loaded = load_model(model_dir)
    rows = []
    for ref in refs:
        case = load_case(ref)
        if case.seg is None:
            continue
        pred = predict_case(loaded, case)
        score = score_case(pred.labels, np.asarray(case.seg.data), case.spacing_mm,
                           voxel_volume_ml=case.voxel_volume_ml)
        rows.append({"case_id": ref.case_id, **{f"dice_{r}": round(s.dice, 4) for r, s in score.regions.items()},
                     **{f"hd95_{r}_mm": round(s.hd95_mm, 2) for r, s in score.regions.items()}})
    return rows


def build_card(cfg: TrainConfig, split: dict[str, list[str]], spec: PreprocessSpec, out: Path,
               history: list[dict[str, float]], fit_s: float, total_s: float, by_id: dict[str, CaseRef]) -> dict:
    """Write model_card.json and MODEL_CARD.md with measured figures only."""
    import tensorflow as tf

    from core.engine.model import WEIGHTS_NAME, file_sha256, keras_module

    val_rows = evaluate_cases(out, [by_id[c] for c in split["val"]])
    test_rows = evaluate_cases(out, [by_id[c] for c in split["test"]])
    keras = keras_module()
    model = keras.models.load_model(out / WEIGHTS_NAME, compile=False, safe_mode=True)

    def mean(rows: list[dict[str, Any]], key: str) -> float | None:
        vals = [r[key] for r in rows if key in r]
        return round(float(np.mean(vals)), 4) if vals else None

    card = {
        "name": out.name,
        "architecture": f"2D U-Net, base filters {cfg.base_filters}, depth {cfg.depth}, dropout {cfg.dropout}, "
                        f"4-class softmax, he-normal",
        "parameters": int(model.count_params()),
        "preprocess": json.loads(spec.to_json()),
        "loss": cfg.loss,
        "optimizer": f"Adam lr {cfg.learning_rate}",
        "batch_size": cfg.batch_size,
        "epochs_requested": cfg.epochs,
        "epochs_run": len(history),
        "fit_wall_time_s": round(fit_s, 1),
        "total_wall_time_s": round(total_s, 1),
        "split": split,
        "validation_per_case": val_rows,
        "validation_mean_dice": {r: mean(val_rows, f"dice_{r}") for r in ("WT", "TC", "ET")},
        "test_per_case": test_rows,
        "test_mean_dice": {r: mean(test_rows, f"dice_{r}") for r in ("WT", "TC", "ET")},
        "weights_file": WEIGHTS_NAME,
        "weights_sha256": file_sha256(out / WEIGHTS_NAME),
        "tensorflow_version": tf.__version__,
        "keras_version": keras.__version__,
        "python_version": platform.python_version(),
        "machine": f"{platform.machine()}, {os.cpu_count()} CPU cores",
        "command": "python -m core " + " ".join(sys.argv[1:]) if sys.argv and "core" in " ".join(sys.argv) else "",
        "small_data_warning": (
            f"Trained on {len(split['train'])} cases only: a small-data model. Its scores on a few held-out cases "
            "are a rough indication, not a reliable estimate of performance on new data."
        ),
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    atomic_write_bytes(out / "model_card.json", json.dumps(card, indent=2).encode())
    atomic_write_bytes(out / "MODEL_CARD.md", render_card_markdown(card).encode())
    return card


def render_card_markdown(card: dict) -> str:
    """A readable model card from the card dict."""
    lines = [f"# Model card: {card['name']}", "",
             "Research software only - not a medical device and not for clinical diagnosis.", "",
             f"**{card['small_data_warning']}**", "",
             "## Model", f"- Architecture: {card['architecture']} ({card['parameters']:,} parameters)",
             f"- Inputs: {', '.join(card['preprocess']['channels'])}; {card['preprocess']['input_size']}x"
             f"{card['preprocess']['input_size']} axial slices"
             + (f" with {card['preprocess']['context']} neighbouring slice(s) on each side as channels (2.5-D)"
                if card['preprocess'].get('context') else "")
             + f"; normalisation {card['preprocess']['normalisation']}; crop {card['preprocess']['crop']}"
             + (f"; modality dropout {card['preprocess']['modality_dropout']} (segments cases lacking T1 or T2)"
                if card['preprocess'].get('modality_dropout') else ""),
             f"- Loss {card['loss']}, {card['optimizer']}, batch {card['batch_size']}, "
             f"epochs run {card['epochs_run']} of {card['epochs_requested']}",
             f"- Wall time: fit {card['fit_wall_time_s']} s, total {card['total_wall_time_s']} s on {card['machine']}",
             f"- TensorFlow {card['tensorflow_version']}, Keras {card['keras_version']}, Python {card['python_version']}",
             f"- Weights: `{card['weights_file']}` SHA-256 `{card['weights_sha256']}`", "",
             "## Data", f"- Training cases: {', '.join(card['split']['train'])}",
             f"- Validation cases: {', '.join(card['split']['val']) or 'none'}",
             f"- Test cases: {', '.join(card['split']['test']) or 'none'}", "",
             "## Per-case BraTS region Dice (full 240x240x155 grid, native resolution)", ""]
    held_out = [("validation", r) for r in card["validation_per_case"]] + [("test", r) for r in card["test_per_case"]]
    if held_out:
        lines += ["| set | case | WT | TC | ET |", "|---|---|---|---|---|"]
        lines += [f"| {set_name} | {r['case_id']} | {r.get('dice_WT')} | {r.get('dice_TC')} | {r.get('dice_ET')} |"
                  for set_name, r in held_out]
    else:
        lines.append("No case was held out of this training run (see a cross-validation of the recipe instead).")
    lines += ["", f"Reproduce: `{card['command']}`", ""]
    return "\n".join(lines)
