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

from core.config import CLASS_TO_LABEL, MODALITIES, MODALITY_TITLES
from core.data.cases import Case
from core.errors import CaseError, ModelError

NORMALISATIONS = ("zscore_brain", "robust_brain", "slice_max")
# A case may lack some of a model's modalities (zero-filled: the brain mean in z-score space) if it has at least
# this many of them, FLAIR or T1CE among them.
MIN_PRESENT_MODALITIES = 2
ANCHOR_MODALITIES = ("flair", "t1ce")
ROBUST_PERCENTILES = (0.5, 99.5)
CROPS = ("brain_bbox", "none")


@dataclass(frozen=True)
class PreprocessSpec:
    """How a case becomes network input.

    Attributes:
        channels: modality keys in channel order, e.g. ("flair", "t1ce").
        input_size: side of the square network input in pixels.
        normalisation: "zscore_brain" (per volume, over brain voxels = any channel non-zero, clipped to
            +-clip), "robust_brain" (the same after clipping brain intensities to their 0.5th-99.5th
            percentiles, so a few very bright or dark voxels do not set the scale) or "slice_max" (the original
            design: each slice of each modality divided by its maximum).
        crop: "brain_bbox" (a square in-plane box around the brain, the same for every slice, with a margin)
            or "none" (the whole slice, as designed).
        clip: clip value for z-scores.
        margin_px: margin of the brain box in voxels.
        context: neighbouring axial slices on each side given as extra channels (0: plain 2-D; 1: 2.5-D with
            slices z-1, z, z+1). Network channels are modality-major: modality m, offset d -> m * (2k+1) + d.
        modality_dropout: probability with which training dropped modalities (zero-filled); > 0 means the
            model was trained to segment cases that lack some of its modalities.
    """

    channels: tuple[str, ...] = ("flair", "t1ce")
    input_size: int = 128
    normalisation: str = "slice_max"
    crop: str = "none"
    clip: float = 5.0
    margin_px: int = 4
    class_to_label: tuple[int, ...] = field(default=CLASS_TO_LABEL)
    context: int = 0
    modality_dropout: float = 0.0

    def __post_init__(self) -> None:
        if not self.channels or any(c not in MODALITIES for c in self.channels):
            raise ModelError(f"expected channels among {MODALITIES}, got {self.channels}")
        if self.normalisation not in NORMALISATIONS:
            raise ModelError(f"expected normalisation in {NORMALISATIONS}, got {self.normalisation!r}")
        if self.crop not in CROPS:
            raise ModelError(f"expected crop in {CROPS}, got {self.crop!r}")
        if not 0 <= self.context <= 3:
            raise ModelError(f"expected 0 to 3 context slices on each side, got {self.context}")
        if not 0.0 <= self.modality_dropout < 1.0:
            raise ModelError(f"expected a modality dropout in [0, 1), got {self.modality_dropout}")
        if not 16 <= self.input_size <= 512 or self.input_size % 16:
            raise ModelError(f"expected an input size that is a multiple of 16 in [16, 512], got {self.input_size}")

    @property
    def n_inputs(self) -> int:
        """Channels of the network input: modalities x (2 context + 1) slices."""
        return len(self.channels) * (2 * self.context + 1)

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
        from core.data.io import atomic_write_bytes

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
        slices: (Z, size, size, C) float32, every axial slice, one channel per modality (``network_input``
            adds the context slices).
        box: in-plane crop (x0, x1, y0, y1) on the RAS grid that was resized to size x size.
        brain_z: (Z,) bool, slices that hold brain (others are background without running the network).
        grid_shape: (X, Y, Z) of the case.
        missing: the model's modalities the case lacks (zero-filled), in channel order.
        context: context slices on each side (from the spec).
    """

    slices: np.ndarray
    box: tuple[int, int, int, int]
    brain_z: np.ndarray
    grid_shape: tuple[int, int, int]
    missing: tuple[str, ...] = ()
    context: int = 0

    def network_input(self, zs: np.ndarray) -> np.ndarray:
        """(N, size, size, C * (2k + 1)) float32 network input for axial slices ``zs``."""
        return context_stack(self.slices, zs, self.context)


def context_stack(slices: np.ndarray, zs: np.ndarray, context: int) -> np.ndarray:
    """Stack neighbouring slices as channels, modality-major.

    Args:
        slices: (Z, S, S, C) per-slice inputs of one case.
        zs: (N,) slice indices.
        context: k slices on each side; indices beyond the volume repeat the edge slice.

    Returns:
        (N, S, S, C * (2k + 1)) float32; channel m * (2k + 1) + d holds modality m at slice z + d - k.
    """
    zs = np.asarray(zs, dtype=int)
    if context == 0:
        return np.ascontiguousarray(slices[zs], dtype=np.float32)
    offsets = np.arange(-context, context + 1)
    idx = np.clip(zs[:, None] + offsets[None, :], 0, slices.shape[0] - 1)  # (N, 2k+1)
    stack = np.asarray(slices[idx.ravel()], dtype=np.float32).reshape(len(zs), len(offsets), *slices.shape[1:])
    # (N, D, S, S, C) -> (N, S, S, C, D) -> (N, S, S, C * D): modality-major
    return np.ascontiguousarray(np.moveaxis(stack, 1, -1).reshape(*stack.shape[0:1], *slices.shape[1:3], -1))


def check_modalities(available: tuple[str, ...] | list[str], channels: tuple[str, ...]) -> tuple[str, ...]:
    """The model's modalities a case lacks; raises unless the case has enough to segment.

    All of the model's channels are needed when it has two or fewer. Otherwise a case may lack some if it has
    FLAIR or T1CE and at least two of the model's modalities.

    Raises:
        CaseError: too few modalities, with what was expected and what came.
    """
    missing = tuple(c for c in channels if c not in available)
    if not missing:
        return ()
    present = [c for c in channels if c in available]
    titles = ", ".join(MODALITY_TITLES[c] for c in present) or "none"
    if len(channels) <= MIN_PRESENT_MODALITIES:
        raise CaseError(f"expected the model's modalities {[MODALITY_TITLES[c] for c in channels]}, "
                        f"missing {[MODALITY_TITLES[c] for c in missing]}")
    anchor = [c for c in ANCHOR_MODALITIES if c in channels]
    if len(present) < MIN_PRESENT_MODALITIES or (anchor and not any(c in present for c in anchor)):
        raise CaseError(f"expected FLAIR or T1CE plus at least one other of "
                        f"{[MODALITY_TITLES[c] for c in channels]}, got only {titles} "
                        f"(missing {[MODALITY_TITLES[c] for c in missing]})")
    return missing


def stack_channels(case: Case, channels: tuple[str, ...]) -> np.ndarray:
    """(X, Y, Z, C) float32 of the case's modalities in channel order; a missing modality is all zeros.

    Raises:
        CaseError: the case lacks too many of the model's modalities (``check_modalities``).
    """
    check_modalities(case.modalities, channels)
    ref = case.reference
    return np.stack([np.asarray(case.images[c].data, dtype=np.float32) if c in case.images
                     else np.zeros(ref.shape, dtype=np.float32) for c in channels], axis=-1)


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
    if spec.normalisation in ("zscore_brain", "robust_brain"):
        m = brain_mask(volume) if mask is None else mask
        for c in range(volume.shape[-1]):
            ch = volume[..., c]
            vals = ch[m]
            if not np.any(vals):  # a missing (zero-filled) modality stays 0
                out[..., c] = 0.0
                continue
            if spec.normalisation == "robust_brain":
                lo, hi = np.percentile(vals, ROBUST_PERCENTILES)
                ch = np.clip(ch, lo, hi)
                vals = np.clip(vals, lo, hi)
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
    """Turn a case into network input for every axial slice (all Z, not only 22..121).

    Raises:
        CaseError: the case lacks too many of the spec's modalities.
    """
    missing = check_modalities(case.modalities, spec.channels)
    vol = stack_channels(case, spec.channels)
    mask = brain_mask(vol)
    norm = normalise(vol, spec, mask)
    box = brain_box(mask, spec.margin_px) if spec.crop == "brain_bbox" else (0, vol.shape[0], 0, vol.shape[1])
    x0, x1, y0, y1 = box
    crop = norm[x0:x1, y0:y1]
    slices = resize_stack(crop, spec.input_size, cv2.INTER_AREA)
    brain_z = mask.any(axis=(0, 1))
    return Prepared(slices, box, brain_z, tuple(int(s) for s in vol.shape[:3]),  # type: ignore[arg-type]
                    missing, spec.context)


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
