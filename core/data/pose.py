"""The pose of a head (or a brain) before its registration to the atlas: its left-right symmetry plane, then a
coarse search over what symmetry cannot tell (pitch, the antero-posterior and cranio-caudal shifts), then short local
fits of the best candidates. Over SimpleITK, LPS millimetres, transforms mapping fixed (atlas) points to moving
(subject) points, as in ``core.data.registration``."""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import SimpleITK as sitk

from core.data.registration import (
    HISTOGRAM_BINS,
    _flatten,
    _method,
    centroid,
    execute,
    linear_transform,
    matrix_of,
    ncc,
    new_method,
    resample,
)
from core.errors import RegistrationError


def grid_search(fixed: sitk.Image, moving: sitk.Image, fixed_mask: sitk.Image, start: sitk.Transform,
                 steps: Sequence[int], scales: Sequence[float], shrink: int, sigma_mm: float, *,
                 correlation: bool = False) -> list[tuple[float, tuple[float, ...]]]:
    """Every point of an exhaustive grid of ``start``'s parameters (``steps[i]`` steps of ``scales[i]`` either
    side of parameter i) with its metric (Mattes MI, or correlation; lower is better) at one coarse resolution.
    The fixed mask is sampled on a regular grid, so the values of one call compare with each other."""
    reg = new_method()
    if correlation:
        reg.SetMetricAsCorrelation()
    else:
        reg.SetMetricAsMattesMutualInformation(HISTOGRAM_BINS)
    reg.SetMetricFixedMask(fixed_mask)
    reg.SetMetricSamplingStrategy(reg.REGULAR)
    reg.SetMetricSamplingPercentage(0.5, 1)  # a fixed seed: the same answer every run
    reg.SetInterpolator(sitk.sitkLinear)
    reg.SetShrinkFactorsPerLevel([shrink])
    reg.SetSmoothingSigmasPerLevel([sigma_mm])
    reg.SmoothingSigmasAreSpecifiedInPhysicalUnitsOn()
    reg.SetOptimizerAsExhaustive([int(s) for s in steps])
    reg.SetOptimizerScales([float(s) for s in scales])
    reg.SetInitialTransform(sitk.Euler3DTransform(start), inPlace=False)
    tried: list[tuple[float, tuple[float, ...]]] = []
    reg.AddCommand(sitk.sitkIterationEvent,
                   lambda: tried.append((reg.GetMetricValue(), tuple(reg.GetOptimizerPosition()))))
    try:
        execute(reg, fixed, moving)
    except RuntimeError as err:
        raise RegistrationError("atlas registration: expected the head to overlap the atlas, got an ITK error "
                                "in the starting-point search") from err
    return [t for t in tried if np.isfinite(t[0])]


def _with_parameters(start: sitk.Euler3DTransform, params: Sequence[float]) -> sitk.Euler3DTransform:
    out = sitk.Euler3DTransform(start)
    out.SetParameters([float(v) for v in params])
    return out


def euler_of(matrix: np.ndarray, centre: Sequence[float] | np.ndarray) -> sitk.Euler3DTransform:
    """An Euler transform (rotations about ``centre``) equal to a rigid 4x4 matrix (LPS mm); the linear part is
    projected onto the nearest rotation first."""
    m = np.asarray(matrix, dtype=np.float64)
    u, _, vt = np.linalg.svd(m[:3, :3])
    rot = u @ vt
    if np.linalg.det(rot) < 0:
        u[:, -1] *= -1
        rot = u @ vt
    c = np.asarray(centre, dtype=np.float64)
    out = sitk.Euler3DTransform()
    out.SetCenter([float(v) for v in c])
    out.SetMatrix([float(v) for v in rot.ravel()])
    out.SetTranslation([float(v) for v in m[:3, :3] @ c + m[:3, 3] - c])
    return out


def _reflection(normal: np.ndarray, point: np.ndarray) -> np.ndarray:
    """4x4 reflection about the plane through ``point`` with unit ``normal``."""
    n = np.asarray(normal, dtype=np.float64) / np.linalg.norm(normal)
    m = np.eye(4)
    m[:3, :3] = np.eye(3) - 2.0 * np.outer(n, n)
    m[:3, 3] = 2.0 * float(n @ point) * n
    return m


@dataclass(frozen=True)
class Midplane:
    """A head's (or brain's) plane of left-right symmetry, in LPS mm.

    Attributes:
        normal: unit normal, pointing to the left (positive LPS x).
        point: a point on the plane (the mask's centre of mass projected onto it).
        correlation: correlation of the image with its mirror about the plane, over the mask (1 = symmetric).
        tilt_deg: angle between the normal and the LPS x axis (how far the head is turned from the scanner's).
    """

    normal: np.ndarray
    point: np.ndarray
    correlation: float
    tilt_deg: float


def _isotropic(image: sitk.Image, spacing_mm: float) -> sitk.Image:
    """``image`` resampled (linear) onto a grid of ``spacing_mm`` cubes in its own orientation and extent."""
    size = [max(1, int(np.ceil(sz * sp / spacing_mm))) for sz, sp in zip(image.GetSize(), image.GetSpacing(),
                                                                        strict=True)]
    return sitk.Resample(image, size, sitk.Transform(), sitk.sitkLinear, image.GetOrigin(), [spacing_mm] * 3,
                         image.GetDirection(), 0.0, sitk.sitkFloat32)


def midsagittal_plane(image: sitk.Image, mask: sitk.Image, *, max_tilt_deg: float = 40.0, step_deg: float = 5.0,
                      grid_mm: float = 4.0, shrink: Sequence[int] = (4, 2), sigma_mm: float = 3.0) -> Midplane:
    """The plane about which ``image`` is most left-right symmetric, within ``max_tilt_deg`` of the LPS x axis.

    Every plane through the mask's centre of mass tilted by up to ``max_tilt_deg`` (``step_deg`` steps about the
    I-S and A-P axes) is scored by the correlation of the image with its reflection (smoothed, ``grid_mm``
    voxels); from the best, the image mirrored about the x plane is registered onto itself (rigid,
    correlation): if ``S`` is the map found, ``mirror o S`` is the reflection about the symmetry plane (two
    reflections compose to a rotation by twice the angle between their planes).
    """
    c = np.array(centroid(image, mask))
    flip = _reflection(np.array([1.0, 0.0, 0.0]), c)
    # the grid: each candidate plane through c scored directly (image against its reflection, on an isotropic
    # grid of ``grid_mm`` voxels: thick slices would otherwise be shrunk along with the in-plane axes)
    iso = _isotropic(sitk.SmoothingRecursiveGaussian(image, sigma_mm), grid_mm)
    iso_mask = sitk.GetArrayFromImage(resample(mask, iso, sitk.Transform(), nearest=True)) > 0
    iso_arr = sitk.GetArrayFromImage(iso)
    best = (-np.inf, flip, 0.0, 0.0)
    coarse = np.arange(-max_tilt_deg, max_tilt_deg + 1e-6, 2 * step_deg)
    for grid in (((a, b) for a in coarse for b in coarse), None):
        if grid is None:  # then the half steps around the best
            grid = ((best[2] + da, best[3] + db) for da in (-step_deg, 0.0, step_deg)
                    for db in (-step_deg, 0.0, step_deg) if da or db)
        for a_deg, b_deg in grid:
            a, b = np.deg2rad(a_deg), np.deg2rad(b_deg)
            refl = _reflection(np.array([np.cos(a) * np.cos(b), np.sin(a) * np.cos(b), np.sin(b)]), c)
            back = sitk.GetArrayFromImage(resample(iso, iso, linear_transform(refl)))
            value = ncc(iso_arr, back, iso_mask)
            if np.isfinite(value) and value > best[0]:
                best = (value, refl, a_deg, b_deg)
    start = euler_of(flip @ best[1], c)  # mirror o S = reflection  =>  S = mirror o reflection
    # the local fit on an isotropic grid of grid_mm / 2 (shrink factors count its voxels): the same fit whatever
    # the slice thickness
    fine = _isotropic(image, grid_mm / 2.0)
    fine_mask = resample(mask, fine, sitk.Transform(), nearest=True)
    mirrored = resample(fine, fine, linear_transform(flip))
    reg = new_method()
    reg.SetMetricAsCorrelation()
    reg.SetMetricFixedMask(fine_mask)
    reg.SetMetricSamplingStrategy(reg.REGULAR)
    reg.SetMetricSamplingPercentage(0.25, 1)
    reg.SetInterpolator(sitk.sitkLinear)
    reg.SetShrinkFactorsPerLevel([max(1, int(f) // 2) for f in shrink])
    reg.SetSmoothingSigmasPerLevel([sigma_mm / 2**i for i in range(len(shrink))])
    reg.SmoothingSigmasAreSpecifiedInPhysicalUnitsOn()
    reg.SetOptimizerAsRegularStepGradientDescent(1.0, 1e-3, 60, relaxationFactor=0.5)
    reg.SetOptimizerScalesFromPhysicalShift()
    reg.SetInitialTransform(start, inPlace=False)
    try:
        found = matrix_of(execute(reg, fine, mirrored))
        value = -float(reg.GetMetricValue())
    except RuntimeError:
        found, value = matrix_of(start), float("nan")
    sym = flip @ found  # x -> S(x) -> mirror(S(x)): the reflection about the symmetry plane
    w, v = np.linalg.eigh((sym[:3, :3] + sym[:3, :3].T) / 2.0)
    normal = v[:, int(np.argmin(w))]
    normal = normal if normal[0] >= 0 else -normal
    centre_image = (c + sym[:3, :3] @ c + sym[:3, 3]) / 2.0  # halfway between c and its mirror: on the plane
    point = c - float(normal @ (c - centre_image)) * normal
    tilt = float(np.rad2deg(np.arccos(min(1.0, abs(float(normal[0]))))))
    return Midplane(normal, point, value, tilt)


def _rotation_between(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """The smallest rotation (3x3) taking unit vector ``a`` onto unit vector ``b``."""
    a = a / np.linalg.norm(a)
    b = b / np.linalg.norm(b)
    v = np.cross(a, b)
    s = float(np.linalg.norm(v))
    cos = float(a @ b)
    if s < 1e-12:
        return np.eye(3) if cos > 0 else -np.eye(3)
    k = np.array([[0, -v[2], v[1]], [v[2], 0, -v[0]], [-v[1], v[0], 0]]) / s
    ang = np.arctan2(s, cos)
    return np.eye(3) + np.sin(ang) * k + (1 - np.cos(ang)) * (k @ k)


@dataclass(frozen=True)
class PoseStart:
    """A starting pose found by ``search_pose_start``.

    Attributes:
        transform: fixed -> moving points (LPS mm), rigid.
        metric: Mattes MI of the winning candidate after its short local fit (lower is better).
        midplane: the moving image's symmetry plane (fixes yaw, roll and the left-right shift).
        candidates: how many starts were refined.
        time_s: wall time in seconds.
    """

    transform: sitk.Euler3DTransform
    metric: float
    midplane: Midplane
    candidates: int
    time_s: float


def search_pose_start(fixed: sitk.Image, moving: sitk.Image, fixed_mask: sitk.Image, moving_mask: sitk.Image, *,
                      pitch_deg: float = 40.0, pitch_step_deg: float = 5.0, turn_deg: float = 0.0,
                      shift_mm: tuple[float, float] = (20.0, 40.0), shift_step_mm: float = 10.0, keep: int = 3,
                      shrink: int = 6, sigma_mm: float = 4.0, max_tilt_deg: float = 40.0) -> PoseStart:
    """A rigid starting point for ``moving`` (a head or a brain in any plausible pose) onto ``fixed`` (an atlas
    whose mid-sagittal plane is its x plane through the centre of ``fixed_mask``).

    1. Moments and symmetry: the moving image's mid-sagittal plane (``midsagittal_plane``, within
       ``max_tilt_deg``) is put onto the atlas's, centre of mass onto centre of mass: this fixes yaw, roll and
       the left-right shift, the three a symmetric head tells.
    2. What symmetry cannot tell: an exhaustive grid over pitch (+-``pitch_deg``), yaw and roll around the plane's
       (+-``turn_deg``, one step each way), and the antero-posterior / cranio-caudal shift (``shift_mm``
       half-ranges: a head's centre of mass sits below its brain's), Mattes MI at ``shrink`` x coarser.
    3. The ``keep`` best distinct poses each get a short local rigid fit; each pose, before and after its fit, is
       scored alike (Mattes MI, regular sampling, a finer level) and the best wins (a fit that wanders off a good
       grid point does not replace it).

    Returns:
        A ``PoseStart`` (its transform maps fixed to moving points).
    """
    t0 = time.perf_counter()
    c_fixed = np.array(centroid(fixed, fixed_mask))
    plane = midsagittal_plane(moving, moving_mask, max_tilt_deg=max_tilt_deg)
    align = np.eye(4)  # fixed -> moving: atlas x-plane through c_fixed onto the moving mid-sagittal plane
    align[:3, :3] = _rotation_between(np.array([1.0, 0.0, 0.0]), plane.normal)
    align[:3, 3] = plane.point - align[:3, :3] @ c_fixed
    # the moving image seen in the atlas's frame once (coarse grid over the atlas field of view and 60 mm more
    # each way): the search below then moves it along the atlas's own axes
    spacing = [2.0 * sp for sp in fixed.GetSpacing()]
    margin = 60.0
    size = [int(np.ceil((sz * sp + 2 * margin) / s2)) for sz, sp, s2 in zip(fixed.GetSize(), fixed.GetSpacing(),
                                                                            spacing, strict=True)]
    direction = np.array(fixed.GetDirection()).reshape(3, 3)
    origin = np.array(fixed.GetOrigin()) - direction @ np.full(3, margin)
    aligned = sitk.Resample(moving, size, linear_transform(align), sitk.sitkLinear, [float(v) for v in origin],
                            spacing, fixed.GetDirection(), 0.0, sitk.sitkFloat32)
    search = sitk.Euler3DTransform()
    search.SetCenter([float(v) for v in c_fixed])
    n_turn = 1 if turn_deg > 0 else 0
    steps = [int(round(pitch_deg / pitch_step_deg)), n_turn, n_turn, 0,
             int(round(shift_mm[0] / shift_step_mm)), int(round(shift_mm[1] / shift_step_mm))]
    scales = [np.deg2rad(pitch_step_deg), np.deg2rad(turn_deg or 1.0), np.deg2rad(turn_deg or 1.0), 1.0,
              shift_step_mm, shift_step_mm]
    tried = sorted(grid_search(fixed, aligned, fixed_mask, search, steps, scales, shrink, sigma_mm))
    chosen: list[tuple[float, ...]] = []
    for _, params in tried:  # the best, skipping near neighbours of one already chosen
        far = all(abs(params[0] - c[0]) > 2.5 * scales[0] or np.abs(np.subtract(params[4:], c[4:])).max() > 15.0
                  for c in chosen)
        if far:
            chosen.append(params)
        if len(chosen) >= keep:
            break
    best: tuple[float, sitk.Euler3DTransform] | None = None
    judge = max(1, shrink // 2 + 1)  # every candidate, before and after its local fit, scored alike at this level
    for params in chosen or [tuple(search.GetParameters())]:
        cand = euler_of(align @ matrix_of(_with_parameters(search, params)), c_fixed)
        options = [cand]
        reg = _method(fixed_mask, 0.25, [shrink, judge], [sigma_mm, sigma_mm / 2])
        reg.SetMetricSamplingStrategy(reg.REGULAR)
        reg.SetOptimizerAsRegularStepGradientDescent(1.0, 1e-3, 60, relaxationFactor=0.5)
        reg.SetOptimizerScalesFromPhysicalShift()
        reg.SetInitialTransform(cand, inPlace=False)
        try:
            options.append(sitk.Euler3DTransform(_flatten(execute(reg, fixed, moving))))
        except RuntimeError:
            pass
        for option in options:
            scored = grid_search(fixed, moving, fixed_mask, option, [0] * 6, [1.0] * 6, judge, sigma_mm / 2)
            if scored and (best is None or scored[0][0] < best[0]):
                best = (scored[0][0], option)
    if best is None:
        best = (float("nan"), euler_of(align, c_fixed))
    return PoseStart(best[1], best[0], plane, len(chosen), time.perf_counter() - t0)

