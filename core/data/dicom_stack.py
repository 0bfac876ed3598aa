"""One DICOM series as a 3-D stack: the header fields it needs, the consistency checks, the affine and the voxels.

Geometry comes from the headers only: ImageOrientationPatient (row and column cosines), PixelSpacing and
ImagePositionPatient; the slice step is the vector between consecutive positions, *not* SliceThickness. A gantry
tilt (positions not along the slice normal) is kept exactly as a sheared affine, nothing is resampled. Voxel
(i, j, k) = (column, row, slice) maps to ``IPP_0 + i * col_spacing * row_cosine + j * row_spacing * col_cosine +
k * step`` (LPS), stored as RAS.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from core.config import MAX_VOXELS
from core.data.dicom_sequence import normalise_text
from core.errors import DicomError

MIN_SLICES: int = 3  # fewer slices is a localiser or a single image, not a volume
ORIENTATION_TOL: float = 1e-3  # max difference of direction cosines within one series
SPACING_REL_TOL: float = 0.01  # slice gaps may differ by this fraction of the median gap...
SPACING_ABS_TOL_MM: float = 0.02  # ...plus this (positions are written with limited decimals)

_LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0, 1.0])


def _text(ds: Any, tag: str) -> str:
    value = ds.get(tag, "")
    return "" if value is None else str(value).strip()


def _floats(ds: Any, tag: str, n: int) -> tuple[float, ...] | None:
    value = ds.get(tag)
    if value is None:
        return None
    try:
        out = tuple(float(v) for v in value)
    except (TypeError, ValueError):
        return None
    return out if len(out) == n and all(math.isfinite(v) for v in out) else None


def _int_or_none(ds: Any, tag: str) -> int | None:
    try:
        value = ds.get(tag)
        return None if value is None or value == "" else int(value)
    except (TypeError, ValueError):
        return None


@dataclass
class StackHeader:
    """The fields of one DICOM header that grouping, the stack checks and reading use (identifiers stay in memory)."""

    path: Path
    uid: str
    study_uid: str
    patient: str
    sop_uid: str
    mosaic: int
    number: int | None
    description: str
    protocol: str
    modality: str
    image_type: str
    rows: int | None
    columns: int | None
    frames: int
    samples: int
    iop: tuple[float, ...] | None
    ipp: tuple[float, ...] | None
    pixel_spacing: tuple[float, ...] | None
    has_pixels: bool


def header_of(ds: Any, path: Path) -> StackHeader:
    """The fields of one header (a pydicom Dataset) that grouping and the stack checks use."""
    frames = _int_or_none(ds, "NumberOfFrames") or 1
    image_type = "\\".join(str(v) for v in (ds.get("ImageType") or []))
    mosaic = 0  # Siemens mosaic: tiles per image (-1: a mosaic of unknown tile count)
    siemens_tiles = (0x0019, 0x100A) in ds and "SIEMENS" in str(ds.get((0x0019, 0x0010), "") and
                                                               ds[0x0019, 0x0010].value).upper()
    if "MOSAIC" in image_type.upper() or siemens_tiles:
        mosaic = -1
        if siemens_tiles:
            value = ds[0x0019, 0x100A].value
            try:
                mosaic = int.from_bytes(value[:2], "little") if isinstance(value, bytes) else int(value)
            except (TypeError, ValueError):
                pass
        mosaic = mosaic or -1
    patient = "\x1f".join(_text(ds, t) for t in ("PatientID", "PatientName", "PatientBirthDate"))
    return StackHeader(
        path=path, uid=_text(ds, "SeriesInstanceUID"), study_uid=_text(ds, "StudyInstanceUID"), patient=patient,
        sop_uid=_text(ds, "SOPInstanceUID"), mosaic=mosaic, number=_int_or_none(ds, "SeriesNumber"),
        description=_text(ds, "SeriesDescription"), protocol=_text(ds, "ProtocolName"),
        modality=_text(ds, "Modality"), image_type=image_type,
        rows=_int_or_none(ds, "Rows"), columns=_int_or_none(ds, "Columns"), frames=frames,
        samples=_int_or_none(ds, "SamplesPerPixel") or 1, iop=_floats(ds, "ImageOrientationPatient", 6),
        ipp=_floats(ds, "ImagePositionPatient", 3), pixel_spacing=_floats(ds, "PixelSpacing", 2),
        has_pixels=ds.get("Rows") is not None and ds.get("Columns") is not None,
    )


def check_series(headers: list[StackHeader]) -> tuple[str | None, dict[str, Any]]:
    """(refusal or None, geometry) of one series' headers: the consistency checks of a 3-D stack.

    Geometry (LPS, mm): ``row_cos`` (direction of increasing column index), ``col_cos`` (increasing row index),
    ``spacing`` (between columns, between rows), ``order`` of the headers by position along the normal and
    ``step`` (vector between consecutive slices).
    """
    first = headers[0]
    n = len(headers)
    if not any(h.has_pixels for h in headers):
        return f"no image data (modality {first.modality or '?'}: a report, presentation state or key object?)", {}
    if any(h.mosaic for h in headers):
        tiles = max(h.mosaic for h in headers)
        each = f"each tiling {tiles} slices into one image" if tiles > 0 else "slices tiled into one image per file"
        return (f"a Siemens mosaic ({n} file(s), {each}: one file per volume): mosaics are not unpacked here; "
                "convert it with dcm2niix and upload the NIfTI"), {}
    if "LOCALIZER" in first.image_type.upper() or re.search(r"\b(localizer|localiser|scout|survey)\b",
                                                            normalise_text(first.description)):
        return f"a localiser (scout) series of {n} image(s), not a diagnostic volume", {}
    if any(h.frames > 1 for h in headers):
        return ("multi-frame (enhanced) DICOM is not supported here: convert it with dcm2niix and upload "
                "the NIfTI"), {}
    if any(h.samples != 1 for h in headers):
        return "colour images (SamplesPerPixel > 1), not a greyscale MR/CT series", {}
    missing = [t for t, ok in (("ImageOrientationPatient", all(h.iop for h in headers)),
                               ("ImagePositionPatient", all(h.ipp for h in headers)),
                               ("PixelSpacing", all(h.pixel_spacing for h in headers))) if not ok]
    if missing:
        return f"missing geometry ({', '.join(missing)}) in some or all images: no 3-D position to give", {}
    matrices = sorted({(h.rows, h.columns) for h in headers}, key=str)
    if len(matrices) > 1:
        shown = ", ".join(f"{r}x{c}" for r, c in matrices[:3])
        return f"mixed matrix sizes ({shown}): not one 3-D stack", {}
    iops = np.array([h.iop for h in headers], dtype=float)
    if np.abs(iops - iops[0]).max() > ORIENTATION_TOL:
        n_orient = len({tuple(np.round(v, 3)) for v in iops})
        return f"mixed slice orientations ({n_orient} different): a multi-plane localiser or several stacks", {}
    spacings = np.array([h.pixel_spacing for h in headers], dtype=float)
    if np.abs(spacings - spacings[0]).max() > 1e-4:
        return "mixed pixel spacings: not one 3-D stack", {}
    if n < MIN_SLICES:
        return f"only {n} slice(s): a single image or localiser, at least {MIN_SLICES} slices are needed", {}
    row_cos, col_cos = np.asarray(first.iop[:3]), np.asarray(first.iop[3:])  # type: ignore[index]
    if abs(np.linalg.norm(row_cos) - 1) > 0.01 or abs(np.linalg.norm(col_cos) - 1) > 0.01 \
            or abs(float(row_cos @ col_cos)) > 0.01:
        return "ImageOrientationPatient is not two orthogonal unit vectors", {}
    row_cos, col_cos = row_cos / np.linalg.norm(row_cos), col_cos / np.linalg.norm(col_cos)
    normal = np.cross(row_cos, col_cos)
    pos = np.array([h.ipp for h in headers], dtype=float)
    dist = pos @ normal
    order = np.argsort(dist, kind="stable")
    pos, dist = pos[order], dist[order]
    gaps = np.diff(dist)
    if (gaps < 1e-3).any():
        dup = int((gaps < 1e-3).sum()) + 1
        return (f"{dup} images share a slice position (several echoes, phases or time points in one series?): "
                "not one 3-D stack"), {}
    median = float(np.median(gaps))
    tol = SPACING_REL_TOL * median + SPACING_ABS_TOL_MM
    if float(np.abs(gaps - median).max()) > tol:
        return (f"uneven slice spacing ({gaps.min():.3g} to {gaps.max():.3g} mm between positions): "
                "a slice is missing or the series mixes stacks"), {}
    step = (pos[-1] - pos[0]) / (n - 1)
    line = pos[0] + np.arange(n)[:, None] * step
    if float(np.linalg.norm(pos - line, axis=1).max()) > tol:
        return "slice positions do not lie on one line: not one 3-D stack", {}
    ps = spacings[0]
    if ps.min() <= 0:
        return f"non-positive PixelSpacing {tuple(ps)}", {}
    voxels = int(first.rows or 0) * int(first.columns or 0) * n
    if voxels > MAX_VOXELS:
        return f"too large: {voxels:,} voxels, at most {MAX_VOXELS:,}", {}
    return None, {"row_cos": row_cos, "col_cos": col_cos, "spacing": (float(ps[1]), float(ps[0])),
                  "order": order, "step": step, "origin": pos[0], "normal": normal}


def stack_geometry(datasets: Sequence[Any]) -> tuple[str | None, dict[str, Any]]:
    """(refusal or None, geometry) of one series' single-frame headers (pydicom Datasets, any order): the checks
    and the geometry that ``read_study`` uses (see ``check_series``; ``order`` sorts ``datasets`` by position)."""
    return check_series([header_of(ds, Path()) for ds in datasets])


def series_affine(origin: np.ndarray, row_cos: np.ndarray, col_cos: np.ndarray, col_spacing_mm: float,
                  row_spacing_mm: float, step: np.ndarray) -> np.ndarray:
    """The 4x4 voxel-to-RAS affine of a stack with array axes (column i, row j, slice k).

    Args:
        origin: ImagePositionPatient of the first slice (LPS, mm).
        row_cos, col_cos: ImageOrientationPatient's two cosines (LPS).
        col_spacing_mm, row_spacing_mm: PixelSpacing[1] (between columns) and PixelSpacing[0] (between rows).
        step: vector between consecutive slice positions (LPS, mm); not necessarily along the normal.
    """
    lps = np.eye(4)
    lps[:3, 0] = row_cos * col_spacing_mm
    lps[:3, 1] = col_cos * row_spacing_mm
    lps[:3, 2] = step
    lps[:3, 3] = origin
    return _LPS_TO_RAS @ lps


def read_pixels(pydicom: Any, headers: list[StackHeader], order: np.ndarray) -> tuple[np.ndarray, list[str]]:
    """Voxels (columns, rows, slices) of the ordered slices with each slice's rescale applied.

    Integers that fit stay int16; anything else becomes float32.
    """
    slices: list[np.ndarray] = []
    scaled = False
    for idx in order:
        ds = pydicom.dcmread(headers[int(idx)].path, force=False)
        try:
            px = np.asarray(ds.pixel_array)
        except Exception as err:  # compressed without a decoder, truncated pixel data, ...
            uid = getattr(getattr(ds, "file_meta", None), "TransferSyntaxUID", None)
            syntax = getattr(uid, "name", None) or str(uid or "?")
            raise DicomError(f"pixel data could not be decoded (transfer syntax {syntax}, "
                             f"{type(err).__name__}): decompress the files first, e.g. with dcmdjpeg") from err
        if px.ndim != 2:
            raise DicomError(f"expected one 2-D greyscale image per file, got pixel data of shape {px.shape}")
        slope = float(ds.get("RescaleSlope", 1) or 1)
        intercept = float(ds.get("RescaleIntercept", 0) or 0)
        if slope != 1 or intercept != 0:
            scaled = True
            px = px.astype(np.float64) * slope + intercept
        slices.append(px.T)  # (rows, columns) -> (columns, rows)
    vol = np.stack(slices, axis=2)
    notes = ["rescale slope/intercept applied"] if scaled else []
    if vol.dtype.kind in "iu" or (np.isfinite(vol).all() and np.array_equal(vol, np.round(vol))):
        lo, hi = float(vol.min()), float(vol.max())
        if -32768 <= lo and hi <= 32767:
            return vol.astype(np.int16), notes
    return vol.astype(np.float32), notes
