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


def test_concurrent_registrations_restore_the_thread_default(threads: None) -> None:
    """Two registrations overlapping in time (two sessions), the first ending before the second: ITK's default
    thread count is one while either runs and comes back to the value before them only when the last ends
    (restoring per call would leave the second call's "before", one thread, for good)."""
    import threading

    from core.data import registration

    sitk.ProcessObject.SetGlobalDefaultNumberOfThreads(3)
    seen: list[int] = []
    first_inside, second_inside, first_done = threading.Event(), threading.Event(), threading.Event()

    class FakeMethod:
        def __init__(self, signal: threading.Event, wait_for: threading.Event) -> None:
            self.signal, self.wait_for = signal, wait_for

        def Execute(self, fixed: object, moving: object) -> sitk.Transform:  # noqa: N802 (ITK's name)
            seen.append(sitk.ProcessObject.GetGlobalDefaultNumberOfThreads())
            self.signal.set()
            self.wait_for.wait(10)
            return sitk.Transform()

    def second() -> None:
        first_inside.wait(10)
        registration.execute(FakeMethod(second_inside, first_done), None, None)  # type: ignore[arg-type]

    worker = threading.Thread(target=second)
    worker.start()
    registration.execute(FakeMethod(first_inside, second_inside), None, None)  # type: ignore[arg-type]
    seen.append(sitk.ProcessObject.GetGlobalDefaultNumberOfThreads())  # the second still runs
    first_done.set()
    worker.join(10)
    assert seen == [1, 1, 1]
    assert sitk.ProcessObject.GetGlobalDefaultNumberOfThreads() == 3
