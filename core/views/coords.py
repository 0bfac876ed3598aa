"""Coordinate maths of the viewer's cursor readout and ruler: voxel indices to scanner (RAS) millimetres, and
distances in millimetres on anisotropic grids.

Voxel indices are (x, y, z) on a case's RAS grid (axes ordered R, A, S after load); the affine is that grid's
4x4 voxel-to-world matrix (``Volume.affine``), world coordinates in mm, RAS+.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from core.errors import BratsViewerError


def _ijk(voxel: Sequence[float], what: str = "voxel") -> np.ndarray:
    try:
        arr = np.asarray(voxel, dtype=float)
    except (TypeError, ValueError):
        arr = np.full(1, np.nan)
    if arr.shape != (3,) or not np.all(np.isfinite(arr)):
        raise BratsViewerError(f"expected a {what} of three finite numbers (x, y, z), got {voxel!r}")
    return arr


def voxel_to_ras_mm(affine: np.ndarray, voxel: Sequence[float]) -> tuple[float, float, float]:
    """Scanner coordinates (RAS, mm) of voxel (x, y, z)'s centre: ``affine @ [x, y, z, 1]``.

    Raises:
        BratsViewerError: the affine is not 4x4 or the voxel not three finite numbers.
    """
    aff = np.asarray(affine, dtype=float)
    if aff.shape != (4, 4):
        raise BratsViewerError(f"expected a 4x4 affine, got shape {aff.shape}")
    out = aff @ np.append(_ijk(voxel), 1.0)
    return float(out[0]), float(out[1]), float(out[2])


def distance_mm(a: Sequence[float], b: Sequence[float], spacing_mm: Sequence[float]) -> float:
    """Distance in mm between voxels ``a`` and ``b`` (x, y, z) of a grid with voxel size ``spacing_mm``
    (mm along x, y, z): ``sqrt(sum(((a - b) * spacing)**2))``.

    Raises:
        BratsViewerError: a point is not three finite numbers or a spacing is not positive.
    """
    sp = _ijk(spacing_mm, "voxel size")
    if np.any(sp <= 0):
        raise BratsViewerError(f"expected positive voxel sizes in mm, got {tuple(spacing_mm)}")
    return float(np.sqrt(np.sum(((_ijk(a) - _ijk(b)) * sp) ** 2)))
