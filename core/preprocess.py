"""Preprocessing: the one recorded spec that training and inference share.

A ``PreprocessSpec`` is saved next to a model's weights (``preprocess.json``) and read back by inference,
so the two never disagree. Arrays here are on the case's RAS grid: volumes (X, Y, Z), slices are axial
(X, Y) at one Z, network inputs are (N, size, size, C) float32.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

import cv2
import numpy as np

from core.cases import Case
from core.config import CLASS_TO_LABEL, MODALITIES
from core.errors import CaseError, ModelError

NORMALISATIONS = ("zscore_brain", "slice_max")
CROPS = ("brain_bbox", "none")


@dataclass(frozen=True)
class PreprocessSpec:
    """How a case becomes network input.

    Attributes:
        channels: modality keys in channel order, e.g. ("flair", "t1ce").
        input_size: side of the square network input in pixels.
        normalisation: "zscore_brain" (per volume, over brain voxels = any channel non-zero, clipped to
            +-clip) or "slice_max" (the original design: each slice of each modality divided by its maximum).
        crop: "brain_bbox" (a square in-plane box around the brain, the same for every slice, with a margin)
            or "none" (the whole slice, as designed).
        clip: clip value for z-scores.
        margin_px: margin of the brain box in voxels.
    """

    channels: tuple[str, ...] = ("flair", "t1ce")
    input_size: int = 128
    normalisation: str = "slice_max"
    crop: str = "none"
    clip: float = 5.0
    margin_px: int = 4
    class_to_label: tuple[int, ...] = field(default=CLASS_TO_LABEL)

    def __post_init__(self) -> None:
        if not self.channels or any(c not in MODALITIES for c in self.channels):
            raise ModelError(f"expected channels among {MODALITIES}, got {self.channels}")
        if self.normalisation not in NORMALISATIONS:
            raise ModelError(f"expected normalisation in {NORMALISATIONS}, got {self.normalisation!r}")
        if self.crop not in CROPS:
            raise ModelError(f"expected crop in {CROPS}, got {self.crop!r}")
        if not 16 <= self.input_size <= 512 or self.input_size % 16:
            raise ModelError(f"expected an input size that is a multiple of 16 in [16, 512], got {self.input_size}")

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2)

    @classmethod
    def from_dict(cls, d: dict) -> PreprocessSpec:
        known = {k: v for k, v in d.items() if k in cls.__dataclass_fields__}
        for key in ("channels", "class_to_label"):
            if key in known:
                known[key] = tuple(known[key])
        return cls(**known)

    def save(self, folder: str | Path) -> Path:
        from core.io import atomic_write_bytes

        return atomic_write_bytes(Path(folder) / "preprocess.json", self.to_json().encode())

    @classmethod
    def load(cls, folder: str | Path) -> PreprocessSpec:
        path = Path(folder) / "preprocess.json"
        try:
            return cls.from_dict(json.loads(path.read_text(encoding="utf-8")))
        except (OSError, json.JSONDecodeError, TypeError) as err:
            raise ModelError(f"expected a readable preprocess.json beside the model, got {err}") from err


ORIGINAL_SPEC = PreprocessSpec()
"""The original design: FLAIR + T1CE, whole slice resized to 128, each slice scaled by its maximum."""


@dataclass(frozen=True)
class Prepared:
    """A case ready for the network.

    Attributes:
        slices: (Z, size, size, C) float32 network input for every axial slice.
        box: in-plane crop (x0, x1, y0, y1) on the RAS grid that was resized to size x size.
        brain_z: (Z,) bool, slices that hold brain (others are background without running the network).
        grid_shape: (X, Y, Z) of the case.
    """

    slices: np.ndarray
    box: tuple[int, int, int, int]
    brain_z: np.ndarray
    grid_shape: tuple[int, int, int]


def stack_channels(case: Case, channels: tuple[str, ...]) -> np.ndarray:
    """(X, Y, Z, C) float32 of the case's modalities in channel order.

    Raises:
        CaseError: a channel the model needs is missing from the case.
    """
    missing = [c for c in channels if c not in case.images]
    if missing:
        raise CaseError(f"expected the model's input modalities {list(channels)}, missing {missing}")
    return np.stack([np.asarray(case.images[c].data, dtype=np.float32) for c in channels], axis=-1)


def brain_mask(volume: np.ndarray) -> np.ndarray:
    """(X, Y, Z) bool: voxels where any channel of a (X, Y, Z, C) stack is non-zero (skull-stripped data)."""
    return np.any(volume != 0, axis=-1)


def brain_box(mask: np.ndarray, margin_px: int) -> tuple[int, int, int, int]:
    """Square in-plane box (x0, x1, y0, y1) around a (X, Y, Z) mask, with margin, clipped to the grid."""
    nx, ny = mask.shape[:2]
    xs = np.flatnonzero(mask.any(axis=(1, 2)))
    ys = np.flatnonzero(mask.any(axis=(0, 2)))
    if xs.size == 0:
        return 0, nx, 0, ny
    x0, x1, y0, y1 = xs[0], xs[-1] + 1, ys[0], ys[-1] + 1
    side = min(max(x1 - x0, y1 - y0) + 2 * margin_px, max(nx, ny))
    cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
    bx0 = int(np.clip(round(cx - side / 2), 0, max(nx - side, 0)))
    by0 = int(np.clip(round(cy - side / 2), 0, max(ny - side, 0)))
    return bx0, min(bx0 + side, nx), by0, min(by0 + side, ny)


def normalise(volume: np.ndarray, spec: PreprocessSpec, mask: np.ndarray | None = None) -> np.ndarray:
    """Normalise a (X, Y, Z, C) float32 stack as the spec says; returns a new array."""
    out = np.empty_like(volume, dtype=np.float32)
    if spec.normalisation == "zscore_brain":
        m = brain_mask(volume) if mask is None else mask
        for c in range(volume.shape[-1]):
            ch = volume[..., c]
            vals = ch[m]
            mean = float(vals.mean()) if vals.size else 0.0
            std = float(vals.std()) if vals.size else 0.0
            std = std if std > 1e-6 else 1.0
            z = (ch - mean) / std
            np.clip(z, -spec.clip, spec.clip, out=z)
            z[~m] = 0.0
            out[..., c] = z
    else:  # slice_max
        mx = volume.max(axis=(0, 1), keepdims=True)
        mx = np.where(mx > 0, mx, 1.0)
        np.divide(volume, mx, out=out)
    return out


def prepare_case(case: Case, spec: PreprocessSpec) -> Prepared:
    """Turn a case into network input for every axial slice (all Z, not only 22..121)."""
    vol = stack_channels(case, spec.channels)
    mask = brain_mask(vol)
    norm = normalise(vol, spec, mask)
    box = brain_box(mask, spec.margin_px) if spec.crop == "brain_bbox" else (0, vol.shape[0], 0, vol.shape[1])
    x0, x1, y0, y1 = box
    crop = norm[x0:x1, y0:y1]
    slices = resize_stack(crop, spec.input_size, cv2.INTER_AREA)
    brain_z = mask.any(axis=(0, 1))
    return Prepared(slices, box, brain_z, tuple(int(s) for s in vol.shape[:3]))  # type: ignore[arg-type]


def resize_stack(volume: np.ndarray, size: int, interpolation: int) -> np.ndarray:
    """(X, Y, Z, C) -> (Z, size, size, C) by resizing each axial slice with OpenCV."""
    nz, nc = volume.shape[2], volume.shape[3]
    out = np.empty((nz, size, size, nc), dtype=np.float32)
    for z in range(nz):
        sl = np.ascontiguousarray(volume[:, :, z, :])
        r = cv2.resize(sl, (size, size), interpolation=interpolation)
        out[z] = r.reshape(size, size, nc)
    return out


def labels_to_classes(labels: np.ndarray) -> np.ndarray:
    """Labels 0/1/2/4 -> class indices 0/1/2/3 (uint8, same shape)."""
    lut = np.zeros(256, dtype=np.uint8)
    for cls, lab in enumerate(CLASS_TO_LABEL):
        lut[lab] = cls
    return lut[np.asarray(labels, dtype=np.uint8)]


def classes_to_labels(classes: np.ndarray) -> np.ndarray:
    """Class indices 0/1/2/3 -> labels 0/1/2/4 (uint8)."""
    return np.asarray(CLASS_TO_LABEL, dtype=np.uint8)[np.asarray(classes)]


def prepare_labels(labels: np.ndarray, box: tuple[int, int, int, int], size: int) -> np.ndarray:
    """(X, Y, Z) labels -> (Z, size, size) class indices, cropped to ``box`` and resized nearest-neighbour."""
    x0, x1, y0, y1 = box
    cls = labels_to_classes(labels)[x0:x1, y0:y1]
    nz = cls.shape[2]
    out = np.empty((nz, size, size), dtype=np.uint8)
    for z in range(nz):
        out[z] = cv2.resize(np.ascontiguousarray(cls[:, :, z]), (size, size), interpolation=cv2.INTER_NEAREST)
    return out


def probabilities_to_grid(probs: np.ndarray, box: tuple[int, int, int, int], grid_xy: tuple[int, int]) -> np.ndarray:
    """Bring one slice's (size, size, K) probabilities back to the native (X, Y, K) grid.

    Probabilities are resized bilinearly into the crop box and renormalised; outside the box the
    background class has probability 1.
    """
    x0, x1, y0, y1 = box
    k = probs.shape[-1]
    out = np.zeros((grid_xy[0], grid_xy[1], k), dtype=np.float32)
    out[..., 0] = 1.0
    # cv2.resize takes (width, height) = (columns, rows) = (Y extent, X extent).
    r = cv2.resize(np.ascontiguousarray(probs, dtype=np.float32), (y1 - y0, x1 - x0), interpolation=cv2.INTER_LINEAR)
    r = r.reshape(x1 - x0, y1 - y0, k)
    r /= np.maximum(r.sum(axis=-1, keepdims=True), 1e-6)
    out[x0:x1, y0:y1] = r
    return out
