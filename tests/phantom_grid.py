"""The small synthetic head grid shared by the atlas-fit and pose tests: 4 mm voxels over a 256 x 256 x 224 mm
field of view, stored RAS, centred on the origin."""

from __future__ import annotations

import numpy as np

SPACING_MM = 4.0
SHAPE = (64, 64, 56)
AFFINE = np.diag([SPACING_MM, SPACING_MM, SPACING_MM, 1.0])
AFFINE[:3, 3] = [-(s - 1) * SPACING_MM / 2 for s in SHAPE]


def ellipsoid(half_axes_mm: tuple[float, float, float]) -> np.ndarray:
    """Boolean ellipsoid centred in the grid, half axes (x, y, z) in mm; shape ``SHAPE``."""
    x, y, z = (np.indices(SHAPE).T * SPACING_MM + AFFINE[:3, 3]).T
    a, b, c = half_axes_mm
    return (x / a) ** 2 + (y / b) ** 2 + (z / c) ** 2 <= 1.0
