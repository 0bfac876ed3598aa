"""Tests of ``core.data.pose``: the symmetry plane of a turned synthetic head, and the Euler helper."""

from __future__ import annotations

import numpy as np
import pytest
import SimpleITK as sitk
from phantom_grid import AFFINE, SHAPE, SPACING_MM
from phantom_grid import ellipsoid as _ellipsoid

from core.data.io import volume_from_array
from core.data.pose import euler_of, midsagittal_plane
from core.data.registration import linear_transform, matrix_of, resample, to_sitk


def _symmetric_head() -> np.ndarray:
    """A head symmetric about the x = 0 plane (two ventricles and two bright spots mirrored), with detail front
    and back so nothing else is symmetric."""
    x, y, z = (np.indices(SHAPE).T * SPACING_MM + AFFINE[:3, 3]).T
    img = np.where(_ellipsoid((80.0, 100.0, 80.0)), 300.0, 0.0)
    img[((np.abs(x) - 20) ** 2 + (y - 10) ** 2 / 4 + z**2) < 150] = 80.0
    img[((np.abs(x) - 45) ** 2 + (y + 40) ** 2 + (z - 20) ** 2) < 100] = 900.0
    img[(x**2 + (y - 70) ** 2 + (z + 30) ** 2) < 200] = 600.0
    return img.astype(np.float32)


def test_midsagittal_plane_of_a_turned_head() -> None:
    """The symmetric head turned 17 degrees about I-S and 11 about A-P (about a point off its centre): the plane's
    normal is the turned x axis within 2 degrees, and the plane passes within 2 mm of the turned centre."""
    vol = volume_from_array(_symmetric_head(), AFFINE)
    img = to_sitk(vol)
    turn = sitk.Euler3DTransform((5.0, -8.0, 3.0), 0.0, np.deg2rad(11.0), np.deg2rad(17.0), (4.0, 6.0, -2.0))
    m = np.eye(4)
    m[:3, :3] = np.array(turn.GetMatrix()).reshape(3, 3)
    m[:3, 3] = np.array(turn.TransformPoint((0.0, 0.0, 0.0)))
    moved = resample(img, img, linear_transform(np.linalg.inv(m)))  # the head carried by m
    mask = sitk.Cast(moved > 10, sitk.sitkUInt8)
    plane = midsagittal_plane(moved, mask)
    expected_normal = m[:3, :3] @ np.array([1.0, 0.0, 0.0])
    angle = np.rad2deg(np.arccos(min(1.0, abs(float(plane.normal @ expected_normal)))))
    assert angle < 2.0, angle
    centre = m[:3, 3]  # the head's centre (LPS origin) carried by m
    assert abs(float(plane.normal @ (centre - plane.point))) < 2.0
    assert plane.correlation > 0.9
    assert plane.tilt_deg == pytest.approx(np.rad2deg(np.arccos(abs(expected_normal[0]))), abs=2.0)



def test_euler_of_reproduces_a_rigid_matrix() -> None:
    m = matrix_of(sitk.Euler3DTransform((1.0, 2.0, 3.0), 0.2, -0.1, 0.3, (4.0, -5.0, 6.0)))
    e = euler_of(m, (10.0, 0.0, -3.0))
    np.testing.assert_allclose(matrix_of(e), m, atol=1e-9)
    np.testing.assert_allclose(e.GetCenter(), (10.0, 0.0, -3.0))
