"""Tests of ``core.data.registration``'s determinism: a registration gives the same answer, bit for bit, whatever
the number of threads the machine offers; synthetic head built here (tests/phantom_grid.py)."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import pytest
import SimpleITK as sitk
from phantom_grid import AFFINE, SHAPE, SPACING_MM
from phantom_grid import ellipsoid as _ellipsoid

from core.data.io import volume_from_array
from core.data.registration import linear_transform, register_rigid, resample, to_sitk


def _head(brain: float, skull: float) -> np.ndarray:
    """A head (skull around a brain, two ventricles, a bright spot front left); the intensities of brain and skull
    given (two contrasts of one head)."""
    x, y, z = (np.indices(SHAPE).T * SPACING_MM + AFFINE[:3, 3]).T
    img = np.where(_ellipsoid((70.0, 85.0, 60.0)), brain, np.where(_ellipsoid((90.0, 105.0, 80.0)), skull, 0.0))
    img[((np.abs(x) - 15) ** 2 + (y - 10) ** 2 / 4 + z**2) < 150] = 0.3 * brain
    img[((x - 30) ** 2 + (y + 40) ** 2 + (z - 20) ** 2) < 100] = 2.0 * brain
    return img.astype(np.float32)


@pytest.fixture
def threads() -> Iterator[None]:
    """Restores ITK's global default thread count after the test changes it."""
    before = sitk.ProcessObject.GetGlobalDefaultNumberOfThreads()
    yield
    sitk.ProcessObject.SetGlobalDefaultNumberOfThreads(before)


def test_rigid_registration_is_the_same_on_any_number_of_threads(threads: None) -> None:
    """One head onto another contrast of itself turned 7 degrees and shifted 6 mm, registered with ITK's default
    thread count set to 1, 2 and 4: the same transform to the last bit (Mattes MI sums its threads' parts in the
    order they finish; the registration runs on one thread whatever the default)."""
    fixed = to_sitk(volume_from_array(_head(400.0, 900.0), AFFINE))
    other = to_sitk(volume_from_array(_head(700.0, 300.0), AFFINE))
    turn = sitk.Euler3DTransform((0.0, 0.0, 0.0), np.deg2rad(7.0), 0.0, np.deg2rad(-4.0), (6.0, -3.0, 2.0))
    m = np.eye(4)
    m[:3, :3] = np.array(turn.GetMatrix()).reshape(3, 3)
    m[:3, 3] = np.array(turn.GetTranslation())
    moving = resample(other, other, linear_transform(np.linalg.inv(m)))
    found = []
    for n in (1, 2, 4):
        sitk.ProcessObject.SetGlobalDefaultNumberOfThreads(n)
        reg = register_rigid(fixed, moving, shrink=(2, 1), sigmas_mm=(4.0, 0.0), sampling=0.5, iterations=60,
                             gradient_tolerance=1e-6)
        found.append(np.array(reg.transform.GetParameters()))
    assert np.array_equal(found[0], found[1]) and np.array_equal(found[0], found[2]), np.array(found)
    np.testing.assert_allclose(found[0][:3], [np.deg2rad(7.0), 0.0, np.deg2rad(-4.0)], atol=np.deg2rad(1.5))
