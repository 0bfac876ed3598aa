"""Training of the 3-D context network (``core.engine.volume3d``) on whole brain boxes at about 2 mm.

Two steps, so that training can run where the data is not (a GPU machine with Keras on JAX, say):

1. ``export_volumes``: from the 2-D training caches (``core.engine.training_data.cache_case``: (Z, S, S, C) float16
   prepared slices and (Z, S, S) classes, the very preparation inference uses) to one ``.npz`` of 3-D inputs
   (int8, z-scores x 25) and region targets (uint8, fractions x 255) per case;
2. ``train_volume``: random patches of those volumes, augmented (mirroring, intensity, bias field, modality
   dropout), region loss (binary cross-entropy + soft Dice per region), Adam with a learning rate that decays
   with the elapsed fraction of the step or time budget; writes ``model.keras`` and ``volume3d.json``.

Backend-agnostic Keras 3: TensorFlow on the CPU (tests), JAX or TensorFlow on a GPU. Arrays are (X, Y, Z, C),
X the rows of the prepared slices (left-right on the RAS grid).
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from core.engine.volume3d import VOLUME_DEPTH, VOLUME_SIDE, build_unet3d, region_loss, volume_input, volume_targets
from core.errors import ModelError

X_SCALE = 25.0  # int8 storage of z-scores clipped to +-5
SPEC_FILE = "volume3d.json"


def export_volumes(files: Sequence[tuple[str, Path, Path]], out: Path) -> Path:
    """Write the 3-D inputs and targets of cached cases to one compressed ``.npz``.

    Args:
        files: (case id, (Z, S, S, C) x cache, (Z, S, S) y cache) per case.
        out: the ``.npz`` to write; keys ``<case>__x`` (int8, X_SCALE) and ``<case>__y`` (uint8, 1/255).
    """
    arrays: dict[str, np.ndarray] = {}
    for case_id, x_path, y_path in files:
        x = np.load(x_path, allow_pickle=False)
        y = np.load(y_path, allow_pickle=False)
        brain_z = np.any(x != 0, axis=(1, 2, 3))
        vol, _ = volume_input(x, brain_z)
        arrays[f"{case_id}__x"] = np.clip(np.rint(vol[0] * X_SCALE), -127, 127).astype(np.int8)
        arrays[f"{case_id}__y"] = np.rint(volume_targets(y, brain_z) * 255).astype(np.uint8)
    out.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(out, **arrays)  # type: ignore[arg-type]  # numpy's stub types only the first keyword
    return out


def load_volumes(path: Path, exclude: Sequence[str] = ()) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """{case id: ((X, Y, Z, C) float32 input, (X, Y, Z, 3) float32 targets)} from ``export_volumes``' file."""
    out: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    with np.load(path, allow_pickle=False) as f:
        for key in f.files:
            if not key.endswith("__x"):
                continue
            case_id = key[:-3]
            if case_id in exclude:
                continue
            out[case_id] = (f[key].astype(np.float32) / X_SCALE, f[f"{case_id}__y"].astype(np.float32) / 255.0)
    if not out:
        raise ModelError(f"expected training volumes in {path.name}, found none after excluding {list(exclude)}")
    return out


def _bias_field_3d(shape: tuple[int, int, int], rng: np.random.Generator, strength: float) -> np.ndarray:
    """A smooth multiplicative field exp(p(u, v, w)), p a random second-order polynomial: (X, Y, Z) float32."""
    axes = [np.linspace(-1, 1, n, dtype=np.float32) for n in shape]
    u, v, w = np.meshgrid(*axes, indexing="ij", sparse=True)
    coef = rng.normal(0.0, strength / 2, size=9).astype(np.float32)
    p = coef[0] * u + coef[1] * v + coef[2] * w + coef[3] * u * u + coef[4] * v * v + coef[5] * w * w
    p = p + coef[6] * u * v + coef[7] * u * w + coef[8] * v * w
    return np.exp(np.clip(p, -2 * strength, 2 * strength)).astype(np.float32)


def augment_volume(x: np.ndarray, y: np.ndarray, rng: np.random.Generator, patch: tuple[int, int, int],
                   channels: tuple[str, ...], modality_dropout: float = 0.3) -> tuple[np.ndarray, np.ndarray]:
    """One augmented training patch.

    Args:
        x: (X, Y, Z, C) float32 input; y: (X, Y, Z, 3) float32 region targets; patch: (px, py, pz) size.

    Returns:
        (px, py, pz, C) and (px, py, pz, 3) float32: a random crop, mirrored along X (p 0.5) and along Y and Z
        (p 0.2 each); per modality gain, shift, gamma, contrast, a bias field (p 0.5), noise; modalities
        dropped with probability ``modality_dropout`` (at least two kept, FLAIR or T1CE among them).
    """
    from core.engine.training_data import drop_modalities

    sl = tuple(slice(int(o), int(o) + p) for o, p in
               zip((rng.integers(0, n - p + 1) for n, p in zip(x.shape[:3], patch, strict=True)), patch, strict=True))
    xa, ya = x[sl], y[sl]
    for axis, prob in ((0, 0.5), (1, 0.2), (2, 0.2)):
        if rng.random() < prob:
            xa, ya = np.flip(xa, axis), np.flip(ya, axis)
    xa = np.array(xa, dtype=np.float32)
    ya = np.array(ya, dtype=np.float32)
    brain = np.any(xa != 0, axis=-1)
    present = tuple(bool(np.any(xa[..., c])) for c in range(xa.shape[-1]))
    for c in range(xa.shape[-1]):
        if not present[c]:
            continue
        ch = xa[..., c]
        if rng.random() < 0.3:
            lo, hi = float(ch.min()), float(ch.max())
            if hi - lo > 1e-6:
                gamma = float(np.exp(rng.uniform(np.log(0.7), np.log(1.5))))
                ch = lo + (hi - lo) * ((ch - lo) / (hi - lo)) ** gamma
        if rng.random() < 0.3:
            mean = float(ch[brain].mean()) if brain.any() else 0.0
            ch = (ch - mean) * float(rng.uniform(0.75, 1.25)) + mean
        if rng.random() < 0.5:
            b = _bias_field_3d(ch.shape, rng, 0.3)
            ch = ch * b + float(rng.uniform(1.0, 4.0)) * (b - 1.0)
        ch = ch * float(rng.uniform(0.9, 1.1)) + float(rng.uniform(-0.1, 0.1))
        if rng.random() < 0.3:
            ch = ch + rng.normal(0.0, float(rng.uniform(0.0, 0.1)), size=ch.shape).astype(np.float32)
        xa[..., c] = np.where(brain, ch, 0.0)
    if modality_dropout > 0 and rng.random() < modality_dropout:
        xa = drop_modalities(xa, channels, present, rng)
    return xa, ya


def train_volume(volumes_npz: Path, out: Path, channels: tuple[str, ...], exclude: Sequence[str] = (),
                 base_filters: int = 8, depth: int = 4, patch: tuple[int, int, int] = (80, 80, 64),
                 batch_size: int = 2, steps: int = 2000, max_minutes: float = 10.0, learning_rate: float = 1e-3,
                 seed: int = 42, workers: int = 4, steps_per_epoch: int = 50, init: Path | None = None
                 ) -> dict[str, Any]:
    """Train the 3-D network on the volumes of ``volumes_npz`` except ``exclude`` and write ``out/model.keras``
    and ``out/volume3d.json`` (what was trained, on which cases, for how long, on which Keras backend).

    Stops after ``steps`` steps or ``max_minutes`` minutes, whichever comes first; the learning rate decays as
    lr * (1 - f) ** 0.9 with f the larger of the step and time fractions used. ``init``: a ``model.keras`` of the
    same architecture whose weights training continues from (its ``volume3d.json`` beside it, when present, is
    carried into the new record as "continued_from").
    """
    from core.engine.model import keras_module

    keras = keras_module()
    keras.utils.set_random_seed(seed)
    data = load_volumes(volumes_npz, exclude)
    ids = sorted(data)
    model = build_unet3d(len(channels), base_filters, depth, seed=seed)
    previous: dict | None = None
    if init is not None:
        model.set_weights(keras.models.load_model(init, compile=False, safe_mode=True).get_weights())
        if (Path(init).parent / SPEC_FILE).is_file():
            previous = json.loads((Path(init).parent / SPEC_FILE).read_text(encoding="utf-8"))
    model.compile(optimizer=keras.optimizers.Adam(learning_rate), loss=region_loss())
    started = time.time()
    budget_s = max_minutes * 60.0

    class Patches(keras.utils.PyDataset):  # type: ignore[misc, name-defined]
        def __init__(self) -> None:
            super().__init__(workers=workers, use_multiprocessing=False)
            self.epoch = 0

        def __len__(self) -> int:
            return steps_per_epoch

        def __getitem__(self, i: int) -> tuple[np.ndarray, np.ndarray]:
            rng = np.random.default_rng((seed, self.epoch, i))
            xb, yb = [], []
            for _ in range(batch_size):
                x, y = data[ids[int(rng.integers(len(ids)))]]
                xa, ya = augment_volume(x, y, rng, patch, channels)
                xb.append(xa)
                yb.append(ya)
            return np.stack(xb), np.stack(yb)

        def on_epoch_end(self) -> None:
            self.epoch += 1

    done = {"steps": 0}

    class Budget(keras.callbacks.Callback):  # type: ignore[misc, name-defined]
        """Learning rate and stopping per epoch: batch-level callbacks may run asynchronously on some backends,
        while every backend reads variables afresh at an epoch's start (JAX syncs its state per epoch)."""

        def on_epoch_begin(self, epoch: int, logs: Any = None) -> None:
            f = max(done["steps"] / steps, (time.time() - started) / budget_s)
            self.model.optimizer.learning_rate.assign(learning_rate * max(1.0 - f, 0.0) ** 0.9)

        def on_epoch_end(self, epoch: int, logs: Any = None) -> None:
            done["steps"] += steps_per_epoch
            if done["steps"] >= steps or time.time() - started >= budget_s:
                self.model.stop_training = True

    history = model.fit(Patches(), epochs=math.ceil(steps / steps_per_epoch), callbacks=[Budget()], verbose=2)
    out.mkdir(parents=True, exist_ok=True)
    clean = build_unet3d(len(channels), base_filters, depth, seed=seed)
    clean.set_weights(model.get_weights())
    clean.save(out / "model.keras")
    record = {
        "kind": "unet3d_regions", "channels": list(channels), "side": VOLUME_SIDE, "depth_slices": VOLUME_DEPTH,
        "base_filters": base_filters, "levels": depth, "patch": list(patch), "batch_size": batch_size,
        "steps": done["steps"], "minutes": round((time.time() - started) / 60.0, 2), "learning_rate": learning_rate,
        "seed": seed, "train_cases": ids, "parameters": int(model.count_params()),
        "keras_backend": keras.backend.backend(), "keras_version": keras.__version__,
        "final_loss": float(history.history["loss"][-1]) if history.history.get("loss") else None,
    }
    if previous is not None:
        record["continued_from"] = {k: v for k, v in previous.items() if k not in ("onnx", "fusion")}
    (out / SPEC_FILE).write_text(json.dumps(record, indent=2), encoding="utf-8")
    return record
