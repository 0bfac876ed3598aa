"""The data side of training: the split by case, the on-disk slice cache, augmentation and the batches.

Arrays: cached slices are (Z, S, S, C) float16 network inputs and (Z, S, S) uint8 class indices; batches are
(N, S, S, C * (2k + 1)) float32 inputs (k: context slices on each side) and (N, S, S, 4) one-hot targets.
"""

from __future__ import annotations

import hashlib
import math
import os
import random
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from core.data.cases import CaseRef, load_case
from core.engine.preprocess import PreprocessSpec, prepare_case, prepare_labels
from core.errors import DataFolderError

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
