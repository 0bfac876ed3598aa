"""Rigid, affine and B-spline registration and resampling over SimpleITK, and the BraTS 1 mm grid.

Conventions (ITK's): a transform found by registering ``moving`` onto ``fixed`` maps points of the fixed image's
physical space to the moving image's, in LPS millimetres; so resampling ``moving`` onto the fixed grid uses the
transform as it is, and writing something from the fixed space back onto the moving grid uses its inverse.
Volumes cross into SimpleITK through ``to_sitk`` (a ``core.data.io.Volume``: RAS array plus affine) and come back
as arrays on the volume's RAS grid through ``ras_array``; nothing here touches a file but ``save_transform`` and
``load_transform``.
"""

from __future__ import annotations

import threading
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
# Every registration runs on one thread: ITK 5.4's Mattes mutual information adds its threads' derivative parts in
# whatever order they finish, and its sums depend on how many threads share the samples, so the same input gave
# results differing from the 9th digit on (more after a stop decision flipped) from run to run and from machine to
# machine; on one thread it is the same to the last bit. The registration method's own thread setting does not
# reach the metric: ITK's global default is set for the run (``execute``). On the two shared cores here one thread
# was also faster (3.1 s against 3.8-4.9 s for the atlas's rigid fit).
REGISTRATION_THREADS = 1


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


def new_method() -> sitk.ImageRegistrationMethod:
    """A registration method on ``REGISTRATION_THREADS`` threads; run it with ``execute``."""
    reg = sitk.ImageRegistrationMethod()
    reg.SetNumberOfThreads(REGISTRATION_THREADS)
    return reg


_THREADS_LOCK = threading.Lock()
_threads_state: dict[str, int] = {"running": 0, "saved": 0}  # registrations running now; ITK's default before them


def execute(reg: sitk.ImageRegistrationMethod, fixed: sitk.Image, moving: sitk.Image) -> sitk.Transform:
    """``reg.Execute(fixed, moving)`` with ITK's global default thread count at ``REGISTRATION_THREADS`` for the
    run (what the metric reads), restored when the last registration running in this process ends (several
    sessions may register at once): the same answer every run, whatever the machine. ITK errors propagate
    (RuntimeError)."""
    with _THREADS_LOCK:
        if _threads_state["running"] == 0:
            _threads_state["saved"] = sitk.ProcessObject.GetGlobalDefaultNumberOfThreads()
            sitk.ProcessObject.SetGlobalDefaultNumberOfThreads(REGISTRATION_THREADS)
        _threads_state["running"] += 1
    try:
        return reg.Execute(fixed, moving)
    finally:
        with _THREADS_LOCK:
            _threads_state["running"] -= 1
            if _threads_state["running"] == 0:
                sitk.ProcessObject.SetGlobalDefaultNumberOfThreads(_threads_state["saved"])


def _method(fixed_mask: sitk.Image | None, sampling: float, shrink: Sequence[int], sigmas_mm: Sequence[float],
            seed: int = 1) -> sitk.ImageRegistrationMethod:
    reg = new_method()
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
        tx = execute(reg, fixed, moving)
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
                   learning_rate: float = 0.5, gradient_tolerance: float = 1e-4, what: str = "rigid registration",
                   progress: ProgressFn | None = None) -> Registration:
    """Rigid (Euler 3-D) registration of ``moving`` onto ``fixed`` by Mattes mutual information, multi-resolution.

    Without ``initial`` the scanner's own geometry is trusted (identity, rotations about the fixed image's centre):
    right for sequences of one session. ``gradient_tolerance``: the optimiser stops when the (scaled) gradient is
    smaller; Mattes MI between different contrasts has gradients of that order, so a fit that must travel (a head
    onto the atlas) needs a far smaller one. Returns a ``Registration`` whose transform maps fixed to moving points.
    """
    if initial is None:
        init = sitk.Euler3DTransform()
        init.SetCenter(image_centre(fixed))
    else:
        init = sitk.Euler3DTransform(initial)
    reg = _method(fixed_mask, sampling, shrink, sigmas_mm)
    reg.SetOptimizerAsRegularStepGradientDescent(learning_rate, 1e-4, iterations, relaxationFactor=0.5,
                                                 gradientMagnitudeTolerance=gradient_tolerance)
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
        c = np.array(part.GetCenter())  # type: ignore[attr-defined]  # linear: checked above
        m[:3, 3] = np.array(part.GetTranslation()) + c - m[:3, :3] @ c  # type: ignore[attr-defined]
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
