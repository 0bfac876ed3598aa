"""Voxel -> RAS mm and distances in mm (core.views.coords), checked by hand."""

from __future__ import annotations

import math

import numpy as np
import pytest

from core.errors import BratsViewerError
from core.views.coords import distance_mm, voxel_to_ras_mm


def test_voxel_to_ras_mm_applies_scale_and_origin() -> None:
    # 2 x 3 x 4 mm voxels, origin at (-10, 20, 5) mm: voxel (1, 2, 3) -> (-10 + 2, 20 + 6, 5 + 12)
    affine = np.array([[2.0, 0, 0, -10], [0, 3.0, 0, 20], [0, 0, 4.0, 5], [0, 0, 0, 1]])
    assert voxel_to_ras_mm(affine, (1, 2, 3)) == (-8.0, 26.0, 17.0)
    assert voxel_to_ras_mm(affine, (0, 0, 0)) == (-10.0, 20.0, 5.0)


def test_voxel_to_ras_mm_of_a_rotated_grid() -> None:
    # x and y swapped: world x follows voxel j, world y follows voxel i
    affine = np.array([[0, 1.0, 0, 0], [1.0, 0, 0, 0], [0, 0, 1.0, 0], [0, 0, 0, 1]])
    assert voxel_to_ras_mm(affine, (5, 7, 1)) == (7.0, 5.0, 1.0)


def test_distance_mm_with_anisotropic_voxels() -> None:
    # 3 voxels along x at 1 mm and 1 voxel along z at 4 mm: a 3-4-5 triangle
    assert distance_mm((0, 0, 0), (3, 0, 1), (1.0, 1.0, 4.0)) == pytest.approx(5.0, abs=1e-12)
    # 1 voxel along each axis of 0.5 x 0.5 x 5 mm: sqrt(0.25 + 0.25 + 25)
    assert distance_mm((10, 10, 10), (11, 9, 11), (0.5, 0.5, 5.0)) == pytest.approx(math.sqrt(25.5), abs=1e-12)
    assert distance_mm((4, 4, 4), (4, 4, 4), (1.0, 1.0, 1.0)) == 0.0


@pytest.mark.parametrize("bad", [(1, 2), (1, 2, float("nan")), ("a", 1, 2)])
def test_bad_points_are_refused(bad: tuple) -> None:
    with pytest.raises(BratsViewerError, match="expected a voxel of three finite numbers"):
        distance_mm(bad, (0, 0, 0), (1, 1, 1))


def test_bad_spacing_and_affine_are_refused() -> None:
    with pytest.raises(BratsViewerError, match="expected positive voxel sizes in mm, got \\(1, 0, 1\\)"):
        distance_mm((0, 0, 0), (1, 1, 1), (1, 0, 1))
    with pytest.raises(BratsViewerError, match="expected a 4x4 affine, got shape \\(3, 3\\)"):
        voxel_to_ras_mm(np.eye(3), (0, 0, 0))
