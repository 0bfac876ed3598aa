"""Data for the in-browser slice viewer: a case's volumes cropped to the brain, scaled to 8 bits and deflated
once per case, so that paging, window/level and overlays run on the client without a rerun.

Arrays are (X, Y, Z) on the case's RAS grid. An encoded volume is the cropped (nx, ny, nz) block written
x-fastest (the bytes of the (nz, ny, nx) C-order transpose: index ``(z * ny + y) * nx + x``) and zlib-deflated
(``DecompressionStream("deflate")`` in the browser). A packed case is JSON-ready metadata plus one binary blob
holding every encoded volume back to back (sent as bytes: no base64, no JSON string to parse).
"""

from __future__ import annotations

import hashlib
import zlib
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from core.config import LABEL_COLOURS, LABEL_NAMES, MODALITY_TITLES
from core.errors import BratsViewerError
from core.views import figures

CROP_MARGIN = 2  # voxels kept around the brain's bounding box
SCALE_PERCENTILES: tuple[float, float] = (0.0, 99.9)  # brain percentiles mapped to 8-bit 0 and 255 (see scale_range)


def crop_box(arrays: Sequence[np.ndarray], margin: int = CROP_MARGIN) -> tuple[tuple[int, int, int], tuple[int, int, int]]:
    """Bounding box of the voxels non-zero in any of ``arrays`` (same (X, Y, Z) shape), grown by ``margin``
    voxels and clipped to the grid.

    Returns:
        (start, stop): voxel indices per axis, ``stop`` exclusive; the whole grid when every voxel is zero.

    Raises:
        BratsViewerError: no array, or arrays of different shapes.
    """
    if not arrays:
        raise BratsViewerError("expected at least one volume to crop, got none")
    shape = tuple(int(s) for s in arrays[0].shape)
    if len(shape) != 3 or any(tuple(a.shape) != shape for a in arrays):
        raise BratsViewerError(f"expected volumes of one (X, Y, Z) shape, got {[tuple(a.shape) for a in arrays]}")
    any_nonzero = np.zeros(shape, dtype=bool)
    for a in arrays:
        any_nonzero |= np.asarray(a) != 0
    if not any_nonzero.any():
        return (0, 0, 0), shape  # type: ignore[return-value]
    start, stop = [], []
    for axis in range(3):
        present = np.flatnonzero(np.any(any_nonzero, axis=tuple(b for b in range(3) if b != axis)))
        start.append(max(int(present[0]) - margin, 0))
        stop.append(min(int(present[-1]) + 1 + margin, shape[axis]))
    return tuple(start), tuple(stop)  # type: ignore[return-value]


def scale_range(percentiles: Mapping[float, float]) -> tuple[float, float]:
    """Intensities mapped to 8-bit 0 and 255: from min(0, brain 0th percentile) to the brain's 99.9th
    percentile (brighter voxels saturate; the presets reach 99.9 at most). high > low always."""
    lo = min(0.0, float(percentiles[SCALE_PERCENTILES[0]]))
    hi = float(percentiles[SCALE_PERCENTILES[1]])
    return lo, (hi if hi > lo else lo + 1.0)


def to_uint8(data: np.ndarray, low: float, high: float) -> np.ndarray:
    """``data`` mapped linearly so ``low`` -> 0 and ``high`` -> 255 (rounded, clipped), uint8, same shape."""
    return figures.window_to_uint8(data, low, high)


def window_to_8bit(window: tuple[float, float], low: float, high: float) -> tuple[float, float]:
    """A window (low, high intensity) in the 8-bit units of a volume scaled over ``low``..``high``."""
    scale = 255.0 / (high - low)
    return (round((window[0] - low) * scale, 2), round((window[1] - low) * scale, 2))


def encode_block(block: np.ndarray) -> bytes:
    """A uint8 (nx, ny, nz) block as its deflated x-fastest bytes (see the module docstring)."""
    if block.dtype != np.uint8 or block.ndim != 3:
        raise BratsViewerError(f"expected a uint8 (X, Y, Z) block, got {block.dtype} of shape {block.shape}")
    raw = np.ascontiguousarray(block.transpose(2, 1, 0)).tobytes()
    return zlib.compress(raw, 1)  # level 1: twice as fast as 6 on the demo, 2 % larger


def decode_block(data: bytes, size: Sequence[int]) -> np.ndarray:
    """Inverse of ``encode_block``: the uint8 (nx, ny, nz) block of ``size``.

    Raises:
        BratsViewerError: the bytes do not inflate to ``prod(size)`` voxels.
    """
    try:
        raw = zlib.decompress(data)
    except zlib.error as err:
        raise BratsViewerError(f"expected deflated voxels, got undecodable bytes ({err})") from err
    nx, ny, nz = (int(s) for s in size)
    if len(raw) != nx * ny * nz:
        raise BratsViewerError(f"expected {nx * ny * nz} voxels for a block of {nx}x{ny}x{nz}, got {len(raw)}")
    return np.frombuffer(raw, dtype=np.uint8).reshape(nz, ny, nx).transpose(2, 1, 0)


def plane_layouts() -> dict[str, dict[str, Any]]:
    """Screen layout of each plane for the client (``figures.plane_layout``), in both conventions: the sliced
    axis, the row and column axes and their flips, and the edge letters."""
    out: dict[str, dict[str, Any]] = {}
    for plane in figures.PLANES:
        rad, neu = figures.plane_layout(plane, True), figures.plane_layout(plane, False)
        out[plane] = {"axis": rad.axis, "row_axis": rad.row_axis, "row_flip": rad.row_flip, "col_axis": rad.col_axis,
                      "col_flip": {"radiological": rad.col_flip, "neurological": neu.col_flip},
                      "letters": {"radiological": rad.letters(), "neurological": neu.letters()}}
    return out


def pack_case(images: Mapping[str, np.ndarray], percentiles: Mapping[str, Mapping[float, float]],
              labels: Mapping[str, np.ndarray], affine: np.ndarray, spacing_mm: Sequence[float],
              cursors: Mapping[str, Mapping[str, int] | None] | None = None) -> tuple[dict[str, Any], bytes]:
    """Everything the client viewer needs for one case: JSON-ready metadata and the blob of encoded volumes.

    Args:
        images: modality key -> (X, Y, Z) intensities, in display order.
        percentiles: modality key -> ``figures.brain_percentiles`` (needs 0, 99.9 and the presets' percentiles).
        labels: overlay name (e.g. "Ground truth", "Prediction") -> (X, Y, Z) BraTS labels (0, 1, 2, 4).
        affine: 4x4 voxel-to-RAS (mm) affine of the full grid (for the readout).
        spacing_mm: voxel size along x, y, z (for the ruler).
        cursors: named cursors {x, y, z} on the full grid (e.g. "tumour", "centre"); None values are left out.

    Returns:
        (meta, blob): meta is {"shape", "offset", "size", "affine", "spacing_mm", "images": [{key, title, low,
        high, span, windows}], "labels": [{name, span}], "colours", "label_names", "layouts", "cursors",
        "digest"} where ``offset``/``size`` are the crop box on the full grid, ``low``/``high`` the intensities
        of 8-bit 0/255, windows named (low, high) pairs in 8-bit units, and ``span`` the [start, length] of a
        volume's ``encode_block`` bytes in ``blob``.

    Raises:
        BratsViewerError: no image, shapes differ, or a label map does not fit the grid.
    """
    if not images:
        raise BratsViewerError("expected at least one image to show, got none")
    arrays = [np.asarray(a) for a in images.values()]
    shape = tuple(int(s) for s in arrays[0].shape)
    for name, lab in labels.items():
        if tuple(lab.shape) != shape:
            raise BratsViewerError(f"expected {name} labels of shape {shape}, got {tuple(lab.shape)}")
    start, stop = crop_box(arrays)
    sl = tuple(slice(a, b) for a, b in zip(start, stop, strict=True))
    parts: list[bytes] = []

    def span(data: bytes) -> list[int]:
        start = sum(len(p) for p in parts)
        parts.append(data)
        return [start, len(data)]

    packed_images = []
    for key, data in images.items():
        low, high = scale_range(percentiles[key])
        windows = {name: window_to_8bit(figures.window_from_percentiles(percentiles[key], *pct), low, high)
                   for name, pct in figures.presets_for(key).items()}
        packed_images.append({"key": key, "title": MODALITY_TITLES.get(key, key), "low": low, "high": high,
                              "span": span(encode_block(to_uint8(np.asarray(data)[sl], low, high))),
                              "windows": windows})
    packed_labels = [{"name": name, "span": span(encode_block(np.asarray(lab)[sl].astype(np.uint8)))}
                     for name, lab in labels.items()]
    blob = b"".join(parts)
    digest = hashlib.sha256(blob)
    digest.update(repr([(im["key"], im["span"]) for im in packed_images]
                       + [(lab["name"], lab["span"]) for lab in packed_labels]).encode())
    aff = np.asarray(affine, dtype=float)
    if aff.shape != (4, 4):
        raise BratsViewerError(f"expected a 4x4 affine, got shape {aff.shape}")
    return {
        "shape": list(shape), "offset": list(start), "size": [b - a for a, b in zip(start, stop, strict=True)],
        "affine": aff.round(6).tolist(), "spacing_mm": [float(s) for s in spacing_mm],
        "images": packed_images, "labels": packed_labels,
        "colours": {str(k): list(v) for k, v in LABEL_COLOURS.items()},
        "label_names": {str(k): v for k, v in LABEL_NAMES.items()},
        "layouts": plane_layouts(),
        "cursors": {k: dict(v) for k, v in (cursors or {}).items() if v is not None},
        "digest": digest.hexdigest()[:16],
    }, blob
