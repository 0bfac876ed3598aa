"""Preprocessing: the one recorded spec that training and inference share.

A ``PreprocessSpec`` is saved next to a model's weights (``preprocess.json``) and read back by inference,
so the two never disagree. Arrays here are on the case's RAS grid: volumes (X, Y, Z), slices are axial
(X, Y) at one Z, network inputs are (N, size, size, C) float32.
"""

from __future__ import annotations

import json
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path

import cv2
import numpy as np

from core.analysis.metrics import bounding_box
from core.config import CLASS_TO_LABEL, MODALITIES, MODALITY_TITLES
from core.data.cases import Case
from core.errors import CaseError, ModelError

PREPARE_THREADS = 2  # modalities normalised, and slices resized, at once (prepare_case, resize_stack)

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
        brain: (X, Y, Z) bool, voxels where any modality is non-zero (None when not kept).
    """

    slices: np.ndarray
    box: tuple[int, int, int, int]
    brain_z: np.ndarray
    grid_shape: tuple[int, int, int]
    missing: tuple[str, ...] = ()
    context: int = 0
    brain: np.ndarray | None = None

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
    def listed(keys: tuple[str, ...]) -> str:  # read by clinicians: "FLAIR, T1, T2", not a Python list
        return ", ".join(MODALITY_TITLES[c] for c in keys)

    if len(channels) <= MIN_PRESENT_MODALITIES:
        raise CaseError(f"expected the model's modalities {listed(channels)}; missing {listed(missing)}")
    anchor = [c for c in ANCHOR_MODALITIES if c in channels]
    if len(present) < MIN_PRESENT_MODALITIES or (anchor and not any(c in present for c in anchor)):
        raise CaseError(f"expected FLAIR or T1CE plus at least one other of {listed(channels)}; got only {titles} "
                        f"(missing {listed(missing)})")
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


def normalise_channel(channel: np.ndarray, spec: PreprocessSpec, mask: np.ndarray,
                      bounds: tuple[slice, ...] | None = None) -> np.ndarray:
    """Z-score one (X, Y, Z) channel over the brain ``mask`` (``zscore_brain`` / ``robust_brain``): a new float32
    array, 0 outside the mask and for an all-zero (missing) channel."""
    bb = bounding_box(mask) if bounds is None else bounds
    out = np.zeros(channel.shape, dtype=np.float32)
    block = _normalised_block(channel, spec, mask, bb)
    if block is not None:
        out[bb] = block
    return out


def _normalised_block(channel: np.ndarray, spec: PreprocessSpec, mask: np.ndarray, bb: tuple[slice, ...]
                      ) -> np.ndarray | None:
    """The z-scores of ``channel[bb]`` (0 outside the mask), ``bb`` the mask's bounding box
    (``bounding_box``); None for an all-zero (missing) channel. ``channel`` may hold any real dtype; the
    arithmetic is that of its float32 values.

    The brain voxels and their order are those of the whole volume, so the statistics do not depend on ``bb``.
    """
    ch, m = np.asarray(channel[bb], dtype=np.float32), mask[bb]
    vals = ch[m]
    if not np.any(vals):
        return None
    if spec.normalisation == "robust_brain":
        lo, hi = np.percentile(vals, ROBUST_PERCENTILES)
        z = np.clip(ch, lo, hi)  # float64, as lo and hi are: the arithmetic below stays in float64 here
        vals = np.clip(vals, lo, hi)
    else:
        z = np.array(ch, copy=True) if np.may_share_memory(ch, channel) else ch  # never change the caller's data
    mean = float(vals.mean())
    std = float(vals.std())
    std = std if std > 1e-6 else 1.0
    z -= mean
    z /= std
    np.clip(z, -spec.clip, spec.clip, out=z)
    z[~m] = 0.0
    return z


def normalise(volume: np.ndarray, spec: PreprocessSpec, mask: np.ndarray | None = None) -> np.ndarray:
    """Normalise a (X, Y, Z, C) float32 stack as the spec says; returns a new array."""
    if spec.normalisation in ("zscore_brain", "robust_brain"):
        out = np.empty_like(volume, dtype=np.float32)
        m = brain_mask(volume) if mask is None else mask
        bb = bounding_box(m)
        for c in range(volume.shape[-1]):
            out[..., c] = normalise_channel(volume[..., c], spec, m, bb)
        return out
    out = np.empty_like(volume, dtype=np.float32)  # slice_max
    mx = volume.max(axis=(0, 1), keepdims=True)
    mx = np.where(mx > 0, mx, 1.0)
    np.divide(volume, mx, out=out)
    return out


def prepare_case(case: Case, spec: PreprocessSpec) -> Prepared:
    """Turn a case into network input for every axial slice (all Z, not only 22..121).

    Works one modality at a time on its own (X, Y, Z) array, and only inside the brain's bounding box, so that
    no (X, Y, Z, C) copy of the whole grid is made; the result equals normalising the stacked volume.

    Raises:
        CaseError: the case lacks too many of the spec's modalities.
    """
    missing = check_modalities(case.modalities, spec.channels)
    shape = tuple(int(s) for s in case.reference.shape[:3])
    mask = np.zeros(shape, dtype=bool)
    for key in spec.channels:
        if key in case.images:
            mask |= np.asarray(case.images[key].data) != 0  # stored dtype: no float copy of the whole grid
    box = brain_box(mask, spec.margin_px) if spec.crop == "brain_bbox" else (0, shape[0], 0, shape[1])
    x0, x1, y0, y1 = box
    brain_z = mask.any(axis=(0, 1))
    if spec.normalisation not in ("zscore_brain", "robust_brain"):
        norm = normalise(stack_channels(case, spec.channels), spec, mask)
        mask.setflags(write=False)
        return Prepared(resize_stack(norm[x0:x1, y0:y1], spec.input_size, cv2.INTER_AREA), box,
                        brain_z,  # type: ignore[arg-type]
                        shape, missing, spec.context, mask)  # type: ignore[arg-type]
    bb = bounding_box(mask)
    crop = np.zeros((x1 - x0, y1 - y0, shape[2], len(spec.channels)), dtype=np.float32)
    # the part of the brain's box inside the crop box, in each one's coordinates
    bx = slice(max(bb[0].start, x0), max(min(bb[0].stop, x1), max(bb[0].start, x0)))
    by = slice(max(bb[1].start, y0), max(min(bb[1].stop, y1), max(bb[1].start, y0)))

    def block_of(key: str) -> np.ndarray | None:
        block = _normalised_block(np.asarray(case.images[key].data), spec, mask, bb)
        return None if block is None else block.astype(np.float32, copy=False)  # the crop's own rounding

    # Two modalities at a time: numpy releases the GIL, so on two cores this takes about half the time.
    with ThreadPoolExecutor(max_workers=PREPARE_THREADS, thread_name_prefix="prepare") as pool:
        pending = {key: pool.submit(block_of, key) for key in spec.channels if key in case.images}
        for c, key in enumerate(spec.channels):
            block = pending.pop(key).result() if key in pending else None
            if block is not None:
                crop[bx.start - x0 : bx.stop - x0, by.start - y0 : by.stop - y0, bb[2], c] = block[
                    bx.start - bb[0].start : bx.stop - bb[0].start, by.start - bb[1].start : by.stop - bb[1].start]
            del block
    mask.setflags(write=False)
    return Prepared(resize_stack(crop, spec.input_size, cv2.INTER_AREA, brain_z), box, brain_z, shape,  # type: ignore[arg-type]
                    missing, spec.context, mask)


def resize_stack(volume: np.ndarray, size: int, interpolation: int, nonzero_z: np.ndarray | None = None
                 ) -> np.ndarray:
    """(X, Y, Z, C) -> (Z, size, size, C) by resizing each axial slice with OpenCV.

    ``nonzero_z`` (Z,) bool, when given, names the slices that may be non-zero; the others are all-zero in
    ``volume`` and are left 0 without resizing.
    """
    nz, nc = volume.shape[2], volume.shape[3]
    out = np.zeros((nz, size, size, nc), dtype=np.float32)
    zs = np.arange(nz) if nonzero_z is None else np.flatnonzero(nonzero_z)

    def resize(part: np.ndarray) -> None:
        for z in part:
            sl = np.ascontiguousarray(volume[:, :, z, :])
            out[z] = cv2.resize(sl, (size, size), interpolation=interpolation).reshape(size, size, nc)

    # Slices in PREPARE_THREADS interleaved parts at once: OpenCV releases the GIL while it resizes.
    with ThreadPoolExecutor(max_workers=PREPARE_THREADS, thread_name_prefix="resize") as pool:
        for done in [pool.submit(resize, zs[k::PREPARE_THREADS]) for k in range(PREPARE_THREADS)]:
            done.result()
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
    out[x0:x1, y0:y1] = probabilities_in_box(probs, box)
    return out


def probabilities_in_box(probs: np.ndarray, box: tuple[int, int, int, int]) -> np.ndarray:
    """One slice's (size, size, K) probabilities resized bilinearly to the crop box's (x1 - x0, y1 - y0, K)
    and renormalised (the part of ``probabilities_to_grid`` inside the box)."""
    x0, x1, y0, y1 = box
    # cv2.resize takes (width, height) = (columns, rows) = (Y extent, X extent).
    r: np.ndarray = cv2.resize(np.ascontiguousarray(probs, dtype=np.float32), (y1 - y0, x1 - x0),
                               interpolation=cv2.INTER_LINEAR)
    r = r.reshape(x1 - x0, y1 - y0, probs.shape[-1])
    total: np.ndarray = r[..., 0].copy()  # summed class by class, in order: what r.sum(axis=-1) gives, three times faster
    for k in range(1, r.shape[-1]):
        total += r[..., k]
    r /= np.maximum(total, 1e-6, out=total)[..., None]
    return r
