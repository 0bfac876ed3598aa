"""Rigid, affine and B-spline registration and resampling over SimpleITK, and the BraTS 1 mm grid.

Conventions (ITK's): a transform found by registering ``moving`` onto ``fixed`` maps points of the fixed image's
physical space to the moving image's, in LPS millimetres; so resampling ``moving`` onto the fixed grid uses the
transform as it is, and writing something from the fixed space back onto the moving grid uses its inverse.
Volumes cross into SimpleITK through ``to_sitk`` (a ``core.data.io.Volume``: RAS array plus affine) and come back
as arrays on the volume's RAS grid through ``ras_array``; nothing here touches a file but ``save_transform`` and
``load_transform``.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from core.data.io import Volume, volume_from_array
from core.errors import RegistrationError

ProgressFn = Callable[[float, str], None]

# BraTS space: 240 x 240 x 155 voxels of 1 mm, stored LPS, the SRI24 atlas's field of view. The NIfTI affine of
# every BraTS file (nibabel, RAS world): diag(-1, -1, 1) with the origin offset (0, 239, 0).
BRATS_SHAPE: tuple[int, int, int] = (240, 240, 155)
BRATS_AFFINE: np.ndarray = np.array(
    [[-1.0, 0.0, 0.0, 0.0], [0.0, -1.0, 0.0, 239.0], [0.0, 0.0, 1.0, 0.0], [0.0, 0.0, 0.0, 1.0]]
)
_LPS = np.diag([-1.0, -1.0, 1.0, 1.0])
HISTOGRAM_BINS = 32


# ------------------------------------------------------------------------------------------- conversions ---

def to_sitk(volume: Volume, array_ras: np.ndarray | None = None, pixel: int = sitk.sitkFloat32) -> sitk.Image:
    """A SimpleITK image of ``volume`` (or of ``array_ras`` on its RAS grid, shape (X, Y, Z)) in LPS physical space.

    The ITK index order (i, j, k) is the volume's RAS axis order (X, Y, Z); the geometry is the volume's affine.
    """
    arr = volume.data if array_ras is None else np.asarray(array_ras)
    if tuple(arr.shape[:3]) != volume.shape:
        raise RegistrationError(f"array grid must be {volume.shape}, not {tuple(arr.shape[:3])}")
    img = sitk.GetImageFromArray(np.ascontiguousarray(np.transpose(arr, (2, 1, 0))))
    img = sitk.Cast(img, pixel)
    lps = _LPS @ np.asarray(volume.affine, dtype=np.float64)
    spacing = np.sqrt((lps[:3, :3] ** 2).sum(axis=0))
    img.SetSpacing([float(s) for s in spacing])
    img.SetDirection([float(v) for v in (lps[:3, :3] / spacing).ravel()])
    img.SetOrigin([float(v) for v in lps[:3, 3]])
    return img


def ras_array(image: sitk.Image) -> np.ndarray:
    """The voxel array of an image made by ``to_sitk`` (or resampled onto such a grid), shape (X, Y, Z)."""
    return np.ascontiguousarray(np.transpose(sitk.GetArrayFromImage(image), (2, 1, 0)))


def winsorize(array: np.ndarray, upper_percentile: float = 99.5) -> np.ndarray:
    """``array`` with values above its ``upper_percentile`` clipped to it (float32): bright fat and vessels no longer
    crowd the brain's tissues into a few histogram bins of the mutual information (ANTs does the same)."""
    arr = np.asarray(array, dtype=np.float32)
    return np.minimum(arr, np.float32(np.percentile(arr, upper_percentile)))


def grid_volume(shape: Sequence[int], affine: np.ndarray, name: str = "") -> Volume:
    """An empty (uint8 zeros) volume of a stored grid: its RAS form is what outputs are written back through."""
    return volume_from_array(np.zeros(tuple(int(s) for s in shape), dtype=np.uint8), affine, name)


def brats_volume() -> Volume:
    """The BraTS grid as an empty volume (240 x 240 x 155, 1 mm, stored LPS like every BraTS file)."""
    return grid_volume(BRATS_SHAPE, BRATS_AFFINE, "brats-grid")


def is_brats_grid(volume: Volume, tol_mm: float = 1e-3) -> bool:
    """Whether ``volume`` lies on the BraTS grid: 240 x 240 x 155 voxels of 1 mm, same world position."""
    if volume.shape != BRATS_SHAPE:
        return False
    ref = brats_volume()
    return bool(np.allclose(volume.affine, ref.affine, atol=tol_mm))


# ------------------------------------------------------------------------------------------- measures ---

def ncc(a: np.ndarray, b: np.ndarray, mask: np.ndarray | None = None) -> float:
    """Normalised cross-correlation of two arrays of one grid over ``mask`` (all voxels when None), in [-1, 1].

    NaN when either side is constant over the mask (nothing to correlate).
    """
    m = np.ones(a.shape, dtype=bool) if mask is None else np.asarray(mask, dtype=bool)
    x = np.asarray(a, dtype=np.float64)[m]
    y = np.asarray(b, dtype=np.float64)[m]
    if x.size == 0:
        return float("nan")
    x = x - x.mean()
    y = y - y.mean()
    den = float(np.sqrt((x * x).sum() * (y * y).sum()))
    return float((x * y).sum() / den) if den > 0 else float("nan")


def normalised_mi(a: np.ndarray, b: np.ndarray, mask: np.ndarray | None = None, bins: int = HISTOGRAM_BINS) -> float:
    """Normalised mutual information (H(A) + H(B)) / H(A, B) over ``mask``: 1 for independent images, 2 for images
    that determine each other. The alignment measure of two sequences of different contrast. NaN on an empty mask."""
    m = np.ones(a.shape, dtype=bool) if mask is None else np.asarray(mask, dtype=bool)
    x = np.asarray(a, dtype=np.float64)[m]
    y = np.asarray(b, dtype=np.float64)[m]
    if x.size == 0:
        return float("nan")
    hist, _, _ = np.histogram2d(x, y, bins=bins)
    p = hist / hist.sum()

    def entropy(q: np.ndarray) -> float:
        q = q[q > 0]
        return float(-(q * np.log(q)).sum())

    joint = entropy(p)
    return (entropy(p.sum(axis=0)) + entropy(p.sum(axis=1))) / joint if joint > 0 else float("nan")


# ------------------------------------------------------------------------------------------- registration ---

@dataclass(frozen=True)
class Registration:
    """One registration's outcome.

    Attributes:
        transform: maps fixed-space points to moving-space points (LPS mm).
        metric: the final Mattes mutual-information value (negative; lower is better), as SimpleITK reports it.
        iterations: optimiser iterations at the last level.
        stop: the optimiser's stop condition.
        time_s: wall time in seconds.
    """

    transform: sitk.Transform
    metric: float
    iterations: int
    stop: str
    time_s: float


def image_centre(image: sitk.Image) -> tuple[float, float, float]:
    """Physical centre of an image's field of view (LPS mm)."""
    return tuple(image.TransformContinuousIndexToPhysicalPoint([(s - 1) / 2.0 for s in image.GetSize()]))


def centroid(image: sitk.Image, mask: sitk.Image) -> tuple[float, float, float]:
    """Physical centre of mass (LPS mm) of a mask's voxels (the field of view's centre when the mask is empty)."""
    stats = sitk.LabelShapeStatisticsImageFilter()
    stats.Execute(sitk.Cast(mask > 0, sitk.sitkUInt8))
    if not stats.HasLabel(1):
        return image_centre(image)
    return tuple(stats.GetCentroid(1))


def foreground_mask(image: sitk.Image) -> sitk.Image:
    """Otsu foreground of a head image (uint8 1 inside): the head, without the air around it."""
    otsu = sitk.OtsuThresholdImageFilter()
    otsu.SetInsideValue(0)
    otsu.SetOutsideValue(1)
    return otsu.Execute(image)


def _method(fixed_mask: sitk.Image | None, sampling: float, shrink: Sequence[int], sigmas_mm: Sequence[float],
            seed: int = 1) -> sitk.ImageRegistrationMethod:
    reg = sitk.ImageRegistrationMethod()
    reg.SetMetricAsMattesMutualInformation(HISTOGRAM_BINS)
    reg.SetMetricSamplingStrategy(reg.RANDOM)
    reg.SetMetricSamplingPercentage(sampling, seed)
    reg.SetInterpolator(sitk.sitkLinear)
    reg.SetShrinkFactorsPerLevel(list(shrink))
    reg.SetSmoothingSigmasPerLevel(list(sigmas_mm))
    reg.SmoothingSigmasAreSpecifiedInPhysicalUnitsOn()
    if fixed_mask is not None:
        reg.SetMetricFixedMask(fixed_mask)
    return reg


def _execute(reg: sitk.ImageRegistrationMethod, fixed: sitk.Image, moving: sitk.Image, what: str,
             progress: ProgressFn | None, n_levels: int) -> Registration:
    t0 = time.perf_counter()
    if progress is not None:
        reg.AddCommand(sitk.sitkMultiResolutionIterationEvent,
                       lambda: progress(min(1.0, reg.GetCurrentLevel() / n_levels),
                                        f"{what}: level {reg.GetCurrentLevel() + 1} of {n_levels}"))
    try:
        tx = reg.Execute(fixed, moving)
    except RuntimeError as err:  # ITK exceptions: e.g. too few samples in the overlap
        first = str(err).strip().splitlines()[-1] if str(err).strip() else type(err).__name__
        raise RegistrationError(f"{what}: expected the images to overlap enough to register, got ITK error: "
                                f"{first[:200]}") from err
    if progress is not None:
        progress(1.0, f"{what}: done")
    return Registration(tx, float(reg.GetMetricValue()), int(reg.GetOptimizerIteration()),
                        reg.GetOptimizerStopConditionDescription(), time.perf_counter() - t0)


def register_rigid(fixed: sitk.Image, moving: sitk.Image, initial: sitk.Transform | None = None, *,
                   fixed_mask: sitk.Image | None = None, shrink: Sequence[int] = (4, 2, 1),
                   sigmas_mm: Sequence[float] = (3.0, 1.5, 0.0), sampling: float = 0.1, iterations: int = 200,
                   learning_rate: float = 0.5, what: str = "rigid registration",
                   progress: ProgressFn | None = None) -> Registration:
    """Rigid (Euler 3-D) registration of ``moving`` onto ``fixed`` by Mattes mutual information, multi-resolution.

    Without ``initial`` the scanner's own geometry is trusted (identity, rotations about the fixed image's centre):
    right for sequences of one session. Returns a ``Registration`` whose transform maps fixed to moving points.
    """
    if initial is None:
        init = sitk.Euler3DTransform()
        init.SetCenter(image_centre(fixed))
    else:
        init = sitk.Euler3DTransform(initial)
    reg = _method(fixed_mask, sampling, shrink, sigmas_mm)
    reg.SetOptimizerAsRegularStepGradientDescent(learning_rate, 1e-4, iterations, relaxationFactor=0.5)
    reg.SetOptimizerScalesFromPhysicalShift()
    reg.SetInitialTransform(init, inPlace=False)
    out = _execute(reg, fixed, moving, what, progress, len(shrink))
    return Registration(_flatten(out.transform), out.metric, out.iterations, out.stop, out.time_s)


def register_affine(fixed: sitk.Image, moving: sitk.Image, initial: sitk.Transform, *,
                    fixed_mask: sitk.Image | None = None, shrink: Sequence[int] = (4, 2),
                    sigmas_mm: Sequence[float] = (3.0, 1.5), sampling: float = 0.1, iterations: int = 200,
                    learning_rate: float = 0.5, what: str = "affine registration",
                    progress: ProgressFn | None = None) -> Registration:
    """Affine (12 parameters) registration of ``moving`` onto ``fixed``, starting from ``initial`` (rigid or
    affine); Mattes mutual information."""
    init = _as_affine(initial, image_centre(fixed))
    reg = _method(fixed_mask, sampling, shrink, sigmas_mm)
    reg.SetOptimizerAsRegularStepGradientDescent(learning_rate, 1e-4, iterations, relaxationFactor=0.5)
    reg.SetOptimizerScalesFromPhysicalShift()
    reg.SetInitialTransform(init, inPlace=False)
    out = _execute(reg, fixed, moving, what, progress, len(shrink))
    return Registration(_flatten(out.transform), out.metric, out.iterations, out.stop, out.time_s)


def register_bspline(fixed: sitk.Image, moving: sitk.Image, initial: sitk.Transform, *,
                     fixed_mask: sitk.Image | None = None, mesh_mm: float = 50.0, shrink: Sequence[int] = (4, 2),
                     sigmas_mm: Sequence[float] = (2.0, 1.0), sampling: float = 0.05, iterations: int = 40,
                     what: str = "deformable registration", progress: ProgressFn | None = None) -> Registration:
    """B-spline (free-form) registration of ``moving`` onto ``fixed`` on top of ``initial`` (kept fixed), with a
    control-point mesh of about ``mesh_mm`` spacing; Mattes mutual information, L-BFGS-B.

    Returns a composite transform (initial, then the B-spline) mapping fixed to moving points.
    """
    size_mm = [sz * sp for sz, sp in zip(fixed.GetSize(), fixed.GetSpacing(), strict=True)]
    mesh = [max(1, int(round(s / mesh_mm))) for s in size_mm]
    bspline = sitk.BSplineTransformInitializer(fixed, mesh, order=3)
    reg = _method(fixed_mask, sampling, shrink, sigmas_mm)
    reg.SetOptimizerAsLBFGSB(gradientConvergenceTolerance=1e-5, numberOfIterations=iterations,
                             maximumNumberOfCorrections=5, maximumNumberOfFunctionEvaluations=4 * iterations)
    reg.SetMovingInitialTransform(initial)
    reg.SetInitialTransform(bspline, inPlace=True)
    out = _execute(reg, fixed, moving, what, progress, len(shrink))
    composite = sitk.CompositeTransform([initial, bspline])
    return Registration(composite, out.metric, out.iterations, out.stop, out.time_s)


def _grid_search(fixed: sitk.Image, moving: sitk.Image, fixed_mask: sitk.Image, start: sitk.Transform,
                 steps: Sequence[int], scales: Sequence[float], shrink: int, sigma_mm: float, *,
                 correlation: bool = False) -> list[tuple[float, tuple[float, ...]]]:
    """Every point of an exhaustive grid of ``start``'s parameters (``steps[i]`` steps of ``scales[i]`` either
    side of parameter i) with its metric (Mattes MI, or correlation; lower is better) at one coarse resolution.
    The fixed mask is sampled on a regular grid, so the values of one call compare with each other."""
    reg = sitk.ImageRegistrationMethod()
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
        reg.Execute(fixed, moving)
    except RuntimeError as err:
        raise RegistrationError("atlas registration: expected the head to overlap the atlas, got an ITK error "
                                "in the starting-point search") from err
    return [t for t in tried if np.isfinite(t[0])]


def _with_parameters(start: sitk.Euler3DTransform, params: Sequence[float]) -> sitk.Euler3DTransform:
    out = sitk.Euler3DTransform(start)
    out.SetParameters([float(v) for v in params])
    return out


def euler_of(matrix: np.ndarray, centre: Sequence[float]) -> sitk.Euler3DTransform:
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
    mirrored = resample(image, image, linear_transform(flip))
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
    reg = sitk.ImageRegistrationMethod()
    reg.SetMetricAsCorrelation()
    reg.SetMetricFixedMask(mask)
    reg.SetMetricSamplingStrategy(reg.REGULAR)
    reg.SetMetricSamplingPercentage(0.25, 1)
    reg.SetInterpolator(sitk.sitkLinear)
    reg.SetShrinkFactorsPerLevel([int(f) for f in shrink])
    reg.SetSmoothingSigmasPerLevel([sigma_mm / 2**i for i in range(len(shrink))])
    reg.SmoothingSigmasAreSpecifiedInPhysicalUnitsOn()
    reg.SetOptimizerAsRegularStepGradientDescent(1.0, 1e-3, 60, relaxationFactor=0.5)
    reg.SetOptimizerScalesFromPhysicalShift()
    reg.SetInitialTransform(start, inPlace=False)
    try:
        found = matrix_of(reg.Execute(image, mirrored))
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
    tried = sorted(_grid_search(fixed, aligned, fixed_mask, search, steps, scales, shrink, sigma_mm))
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
            options.append(sitk.Euler3DTransform(_flatten(reg.Execute(fixed, moving))))
        except RuntimeError:
            pass
        for option in options:
            scored = _grid_search(fixed, moving, fixed_mask, option, [0] * 6, [1.0] * 6, judge, sigma_mm / 2)
            if scored and (best is None or scored[0][0] < best[0]):
                best = (scored[0][0], option)
    if best is None:
        best = (float("nan"), euler_of(align, c_fixed))
    return PoseStart(best[1], best[0], plane, len(chosen), time.perf_counter() - t0)


def _as_affine(transform: sitk.Transform, centre: Sequence[float]) -> sitk.AffineTransform:
    """An affine transform equal to a rigid/affine ``transform`` (same mapping), centred at ``centre``."""
    tx = _flatten(transform)
    dim = 3
    matrix = np.array(tx.GetMatrix()).reshape(dim, dim) if hasattr(tx, "GetMatrix") else np.eye(dim)
    c = np.array(centre)
    mapped = np.array(tx.TransformPoint([float(v) for v in c]))
    out = sitk.AffineTransform(dim)
    out.SetMatrix([float(v) for v in matrix.ravel()])
    out.SetCenter([float(v) for v in c])
    out.SetTranslation([float(v) for v in mapped - c])
    return out


def _flatten(transform: sitk.Transform) -> sitk.Transform:
    """The concrete transform inside a one-element composite (what ``Execute`` returns with inPlace=False)."""
    if transform.GetName() == "CompositeTransform":
        comp = sitk.CompositeTransform(transform)
        if comp.GetNumberOfTransforms() == 1:
            return _flatten(comp.GetNthTransform(0))
    if transform.GetName() == "Euler3DTransform":
        return sitk.Euler3DTransform(transform)
    if transform.GetName() == "AffineTransform":
        return sitk.AffineTransform(transform)
    return transform


def matrix_of(transform: sitk.Transform) -> np.ndarray:
    """The 4x4 homogeneous matrix (LPS mm) of a linear transform (Euler, affine, or a composite of them)."""
    out = np.eye(4)
    tx = _flatten(transform)
    parts = ([sitk.CompositeTransform(tx).GetNthTransform(i)
              for i in range(sitk.CompositeTransform(tx).GetNumberOfTransforms())]
             if tx.GetName() == "CompositeTransform" else [tx])
    for part in parts:  # a composite applies its last transform first: T(x) = parts[0](parts[1](...(x)))
        part = _flatten(part)
        if not hasattr(part, "GetMatrix"):
            raise RegistrationError(f"expected a linear transform, got {part.GetName()}")
        m = np.eye(4)
        m[:3, :3] = np.array(part.GetMatrix()).reshape(3, 3)
        c = np.array(part.GetCenter())
        m[:3, 3] = np.array(part.GetTranslation()) + c - m[:3, :3] @ c
        out = out @ m
    return out


def linear_transform(matrix: np.ndarray) -> sitk.AffineTransform:
    """An affine transform of a 4x4 homogeneous matrix (LPS mm)."""
    out = sitk.AffineTransform(3)
    out.SetMatrix([float(v) for v in np.asarray(matrix)[:3, :3].ravel()])
    out.SetTranslation([float(v) for v in np.asarray(matrix)[:3, 3]])
    return out


def chain(*transforms: sitk.Transform) -> sitk.Transform:
    """One linear transform doing ``transforms[0]`` first, then ``transforms[1]``, ... (points in, points out)."""
    m = np.eye(4)
    for tx in transforms:
        m = matrix_of(tx) @ m
    return linear_transform(m)


def inverse(transform: sitk.Transform) -> sitk.AffineTransform:
    """The inverse of a linear transform."""
    return linear_transform(np.linalg.inv(matrix_of(transform)))


def resample(image: sitk.Image, reference: sitk.Image, transform: sitk.Transform, *, nearest: bool = False,
             default: float = 0.0) -> sitk.Image:
    """``image`` resampled onto ``reference``'s grid; ``transform`` maps reference points to image points.

    Linear interpolation for images, nearest neighbour for labels (``nearest``); outside the image: ``default``.
    """
    interp = sitk.sitkNearestNeighbor if nearest else sitk.sitkLinear
    return sitk.Resample(image, reference, transform, interp, default, image.GetPixelID())


def save_transform(transform: sitk.Transform, path: str | Path) -> Path:
    """Write a transform as an ITK ``.tfm`` text file (any composite flattened to one affine when linear)."""
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    sitk.WriteTransform(transform, str(target))
    return target


def load_transform(path: str | Path) -> sitk.Transform:
    """Read an ITK transform file (``.tfm``); a malformed or missing file is a ``RegistrationError``."""
    p = Path(path)
    if not p.is_file():
        raise RegistrationError(f"expected a transform file {p.name}, found none")
    try:
        return _flatten(sitk.ReadTransform(str(p)))
    except RuntimeError as err:
        raise RegistrationError(f"expected an ITK transform file in {p.name}, got one ITK cannot read") from err
