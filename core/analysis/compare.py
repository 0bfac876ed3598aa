"""Follow-up comparison of two studies of one patient: rigid registration, volumes, RANO products, response.

The follow-up is registered rigidly to the baseline with SimpleITK (Euler 3-D transform, Mattes mutual
information, three resolution levels, centre-of-mass initialisation) on one modality both studies hold (T1CE by
default, else FLAIR, else T1 or T2). Its images (linear) and labels (nearest neighbour) are then resampled onto the
baseline's RAS grid for side-by-side viewing; an alignment measure (normalised cross-correlation of the
registration modality inside the baseline brain, and the overlap of both brain masks) is checked and a
``RegistrationError`` is raised when it is poor.

Volumes and bidimensional products are computed on each study's own grid from its own header voxel size (the
resampled labels are for display only). Products come from ``core.analysis.measure.measure_rano``.

Coordinates: world points are NIfTI scanner coordinates (RAS, mm), as ``Volume.affine`` gives them. The transform
maps a baseline point to the follow-up point that shows the same anatomy.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from scipy import ndimage

from core.analysis.measure import measure_rano
from core.analysis.metrics import label_volumes_ml
from core.config import LABEL_ET, MODALITY_TITLES
from core.data.cases import Case, check_same_grid, normalise_labels
from core.data.io import Volume
from core.errors import CaseError, RegistrationError

# ---- settings (one place) ------------------------------------------------------------------------------------
REGISTRATION_ORDER: tuple[str, ...] = ("t1ce", "flair", "t1", "t2")  # default modality: first present in both
# Images are averaged over bins of whole voxels to at least this voxel size before registering (ITK's pyramid on a
# 1 mm 240 x 240 x 155 image took 20 s on 2 cores; on 2 mm bins under 1 s, see benchmarks/bench_compare.py).
REGISTRATION_SPACING_MM = 2.0
SHRINK_FACTORS: tuple[int, ...] = (4, 2, 1)
SMOOTHING_SIGMAS_VOXELS: tuple[float, ...] = (2.0, 1.0, 0.0)
HISTOGRAM_BINS = 32
SAMPLES_PER_LEVEL = 20_000  # random metric samples per level (all voxels when the level has fewer)
SAMPLING_SEED = 20240611
MAX_ITERATIONS = 200
# Alignment accepted when the NCC inside the baseline brain and the brain-mask Dice reach these values. Measured
# (benchmarks/bench_compare.py; no real longitudinal pair was available): a real case against itself moved rigidly
# 0.965-1.0; the synthetic shrunk-tumour follow-up of the tests 0.93; different patients in BraTS space 0.15-0.26.
MIN_NCC = 0.5
MIN_BRAIN_DICE = 0.8

STRUCTURES: tuple[str, ...] = ("NCR", "ED", "ET", "WT", "TC")
STRUCTURE_NAMES: dict[str, str] = {
    "NCR": "NCR/NET - necrotic / non-enhancing core (label 1)", "ED": "ED - peritumoral edema (label 2)",
    "ET": "ET - enhancing tumour (label 4)", "WT": "WT - whole tumour (labels 1+2+4)",
    "TC": "TC - tumour core (labels 1+4)",
}
PR_DECREASE_PCT = 50.0  # sum of products down by at least this much: partial response
PD_INCREASE_PCT = 25.0  # sum of products up by at least this much: progressive disease
CATEGORY_NAMES: dict[str, str] = {"CR": "complete response", "PR": "partial response", "SD": "stable disease",
                                  "PD": "progressive disease"}
CAVEAT = ("RANO also needs clinical data (steroids, clinical status, non-enhancing disease); this is a "
          "suggestion from the images only")
PERCENT_UNDEFINED = "undefined: the baseline value is 0"


# ---- result types --------------------------------------------------------------------------------------------
MODEL_SOURCE_PREFIX = "model "  # source_name of a label volume the model made (not a file)

@dataclass(frozen=True)
class Registration:
    """A rigid registration of the follow-up to the baseline.

    Attributes:
        modality: the modality both images were registered on.
        matrix: 4x4 rigid map of world points (RAS, mm) from the baseline to the follow-up.
        rotation_deg: Euler angles about the world x, y, z axes in degrees.
        translation_mm: translation (x, y, z) in mm of the transform (about ``centre_mm``).
        centre_mm: centre of rotation (world, mm).
        final_metric: Mattes mutual information at the end (negative; lower is better).
        ncc: normalised cross-correlation of the baseline and the resampled follow-up inside the baseline brain.
        brain_dice: Dice of the two brain masks (non-zero voxels; the follow-up's resampled by nearest neighbour).
        iterations: optimiser iterations at the last level.
        stop_condition: the optimiser's reason to stop.
    """

    modality: str
    matrix: tuple[tuple[float, ...], ...]
    rotation_deg: tuple[float, float, float]
    translation_mm: tuple[float, float, float]
    centre_mm: tuple[float, float, float]
    final_metric: float
    ncc: float
    brain_dice: float
    iterations: int
    stop_condition: str

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready: angles to 0.001 degree, lengths to 0.001 mm, measures to 0.0001."""
        return {"modality": self.modality, "rotation_deg": [round(v, 3) for v in self.rotation_deg],
                "translation_mm": [round(v, 3) for v in self.translation_mm],
                "centre_mm": [round(v, 3) for v in self.centre_mm],
                "matrix_baseline_to_followup": [[round(v, 6) for v in r] for r in self.matrix],
                "final_metric_mattes_mi": round(self.final_metric, 4), "ncc_in_brain": round(self.ncc, 4),
                "brain_dice": round(self.brain_dice, 4), "iterations": self.iterations,
                "stop_condition": self.stop_condition,
                "thresholds": {"min_ncc_in_brain": MIN_NCC, "min_brain_dice": MIN_BRAIN_DICE}}


@dataclass(frozen=True)
class Change:
    """One quantity at both times: ``baseline``, ``followup``, ``change`` (follow-up minus baseline) and
    ``change_pct`` (percent of the baseline; None when the baseline is 0, with ``note`` saying so)."""

    name: str
    unit: str
    baseline: float
    followup: float
    change: float
    change_pct: float | None
    note: str = ""

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready: values rounded to 0.0001 (mL) / 0.01 (mm^2), percent to 0.01."""
        digits = 4 if self.unit == "mL" else 2
        return {"name": self.name, "unit": self.unit, "baseline": round(self.baseline, digits),
                "followup": round(self.followup, digits), "change": round(self.change, digits),
                "change_pct": None if self.change_pct is None else round(self.change_pct, 2),
                **({"note": self.note} if self.note else {})}


@dataclass(frozen=True)
class Response:
    """The response category the numbers suggest: ``category`` (CR, PR, SD, PD), its name, the reasons, the
    caveat (always)."""

    category: str
    reasons: tuple[str, ...]
    caveat: str = CAVEAT

    @property
    def name(self) -> str:
        return CATEGORY_NAMES[self.category]

    def to_dict(self) -> dict[str, Any]:
        return {"category": self.category, "name": self.name, "reasons": list(self.reasons), "caveat": self.caveat}


@dataclass(frozen=True, eq=False)
class Comparison:
    """Everything the follow-up comparison shows.

    Attributes:
        baseline, followup: the two cases as loaded (own grids).
        baseline_labels, followup_labels: labels 0/1/2/4 (uint8) on each study's own RAS grid.
        registration: the rigid registration and its alignment measures.
        followup_images: follow-up modalities resampled (linear) onto the baseline grid, (X, Y, Z) float32.
        followup_labels_on_baseline: follow-up labels resampled (nearest) onto the baseline grid, uint8.
        volumes: one ``Change`` per structure (NCR, ED, ET, WT, TC) in mL.
        products: the sum of bidimensional products (mm^2) at both times, a ``Change``.
        rano_baseline, rano_followup: ``core.analysis.measure.RanoResult`` of each study (own grid).
        new_lesions: measurable enhancing lesions of the follow-up that overlap no baseline enhancing tumour.
        response: the suggested category.
    """

    baseline: Case
    followup: Case
    baseline_labels: np.ndarray
    followup_labels: np.ndarray
    registration: Registration
    followup_images: Mapping[str, np.ndarray]
    followup_labels_on_baseline: np.ndarray
    volumes: tuple[Change, ...]
    products: Change
    rano_baseline: Any
    rano_followup: Any
    new_lesions: int
    response: Response
    label_sources: Mapping[str, str] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """JSON-able summary (no arrays)."""
        return {
            "baseline": _study_dict(self.baseline, self.label_sources.get("baseline", "")),
            "followup": _study_dict(self.followup, self.label_sources.get("followup", "")),
            "registration": self.registration.to_dict(),
            "volumes_ml": {c.name: c.to_dict() for c in self.volumes},
            "sum_of_products_mm2": self.products.to_dict(),
            "rano": {"baseline": _rano_dict(self.rano_baseline), "followup": _rano_dict(self.rano_followup)},
            "new_measurable_lesions": self.new_lesions,
            "response": self.response.to_dict(),
        }


def _study_dict(case: Case, label_source: str) -> dict[str, Any]:
    return {"case_id": case.case_id, "modalities": list(case.modalities), "shape": list(case.shape),
            "spacing_mm": list(case.spacing_mm), "labels": label_source}


def _rano_dict(result: Any) -> Any:
    if hasattr(result, "to_dict"):
        return result.to_dict()
    return {"sum_products_mm2": float(result.sum_products_mm2)}


# ---- labels and modality -------------------------------------------------------------------------------------

def study_labels(case: Case, seg: Volume | None, role: str) -> np.ndarray:
    """The labels of a study: ``seg`` (a label file on the case's grid) when given, else the case's own.

    Args:
        role: "baseline" or "follow-up" (for messages).

    Returns:
        (X, Y, Z) uint8 labels 0/1/2/4 on the case's RAS grid.

    Raises:
        CaseError: no segmentation, or one that is not a label map of the case's grid.
    """
    if seg is None:
        if case.seg is None:
            raise CaseError(f"expected a segmentation of the {role} study {case.case_id!r} (its own or a file "
                            "given), got none")
        return np.asarray(case.seg.data, dtype=np.uint8)
    name = seg.source_name or "the segmentation"
    check_same_grid(seg, case.reference, f"the {role} segmentation {name}", f"the {role} images")
    return np.asarray(normalise_labels(seg)[0].data, dtype=np.uint8)


def choose_modality(baseline: Case, followup: Case, modality: str | None = None) -> str:
    """The modality to register on: ``modality`` when both hold it, else the first of T1CE, FLAIR, T1, T2 that
    both hold.

    Raises:
        CaseError: the requested modality is missing from a study, or the studies share none.
    """
    common = [k for k in REGISTRATION_ORDER if k in baseline.images and k in followup.images]
    if modality is not None:
        if modality not in common:
            raise CaseError(f"expected a modality both studies hold {[MODALITY_TITLES[k] for k in common]} to "
                            f"register on, got {modality!r}")
        return modality
    if not common:
        raise CaseError(f"expected the studies to share a modality, got {list(baseline.modalities)} and "
                        f"{list(followup.modalities)}")
    return common[0]


# ---- registration --------------------------------------------------------------------------------------------

def _sitk() -> Any:
    try:
        import SimpleITK as sitk  # noqa: N813
    except ImportError as err:
        raise RegistrationError("expected SimpleITK for registration (pip install SimpleITK), found it missing") from err
    return sitk


def _itk_gist(err: Exception) -> str:
    lines = [line for line in str(err).splitlines() if line.strip()]
    return (lines[-1] if lines else "unknown ITK error")[:200]


def to_sitk(volume: Volume, data: np.ndarray | None = None) -> Any:
    """A SimpleITK image of ``data`` (default the volume's, (X, Y, Z) on its RAS grid) with the volume's
    world geometry (origin, spacing and direction in RAS mm, from ``Volume.affine``)."""
    sitk = _sitk()
    arr = np.asarray(volume.data if data is None else data)
    img = sitk.GetImageFromArray(np.ascontiguousarray(arr.transpose(2, 1, 0)))  # SimpleITK arrays are (Z, Y, X)
    spacing = np.asarray(volume.spacing_mm, dtype=np.float64)
    direction = volume.affine[:3, :3] / spacing
    try:
        img.SetSpacing(tuple(float(s) for s in spacing))
        img.SetOrigin(tuple(float(v) for v in volume.affine[:3, 3]))
        img.SetDirection(tuple(float(v) for v in direction.ravel()))
    except RuntimeError as err:
        raise RegistrationError(f"expected an image geometry SimpleITK accepts, got: {_itk_gist(err)}") from err
    return img


def from_sitk(img: Any) -> np.ndarray:
    """(X, Y, Z) array of a SimpleITK image."""
    return np.ascontiguousarray(_sitk().GetArrayFromImage(img).transpose(2, 1, 0))


def _levels(shape: Sequence[int]) -> tuple[list[int], list[float], list[float]]:
    """Shrink factors, smoothing sigmas and sampling fractions per level (coarse levels dropped where the image
    would shrink below 8 voxels along an axis)."""
    factors, sigmas = [], []
    for f, s in zip(SHRINK_FACTORS, SMOOTHING_SIGMAS_VOXELS, strict=True):
        if f == 1 or min(shape) // f >= 8:
            factors.append(f)
            sigmas.append(s)
    n = float(np.prod(shape))
    fractions = [min(1.0, SAMPLES_PER_LEVEL / (n / f**3)) for f in factors]
    return factors, sigmas, fractions


def bin_factors(spacing_mm: Sequence[float]) -> tuple[int, int, int]:
    """Whole voxels per bin along each axis so that bins are at least ``REGISTRATION_SPACING_MM`` wide."""
    return tuple(max(1, int(REGISTRATION_SPACING_MM / float(s) + 1e-6)) for s in spacing_mm)  # type: ignore[return-value]


def _registration_image(vol: Volume) -> Any:
    """The volume as a float32 SimpleITK image, averaged over bins (``bin_factors``) of its voxels."""
    sitk = _sitk()
    img = to_sitk(vol, np.asarray(vol.data, dtype=np.float32))
    factors = bin_factors(vol.spacing_mm)
    return sitk.BinShrink(img, list(factors)) if max(factors) > 1 else img


def register_rigid(baseline: Volume, followup: Volume) -> tuple[Any, float, int, str]:
    """Rigid (Euler 3-D) registration of ``followup`` (moving) to ``baseline`` (fixed).

    Returns:
        (the SimpleITK transform mapping baseline world points to follow-up world points, the final Mattes
        mutual information, the iterations of the last level, the optimiser's stop condition).

    Raises:
        RegistrationError: an empty image, or ITK fails.
    """
    sitk = _sitk()
    for vol, role in ((baseline, "baseline"), (followup, "follow-up")):
        if not np.any(np.asarray(vol.data)):
            raise RegistrationError(f"expected a {role} image with a brain (non-zero voxels), got an empty image")
    try:
        fixed = _registration_image(baseline)
        moving = _registration_image(followup)
    except RuntimeError as err:
        raise RegistrationError(f"expected images SimpleITK can shrink, got: {_itk_gist(err)}") from err
    factors, sigmas, fractions = _levels(fixed.GetSize())
    reg = sitk.ImageRegistrationMethod()
    reg.SetMetricAsMattesMutualInformation(numberOfHistogramBins=HISTOGRAM_BINS)
    reg.SetMetricSamplingStrategy(reg.RANDOM)
    reg.SetMetricSamplingPercentagePerLevel(fractions, SAMPLING_SEED)
    reg.SetInterpolator(sitk.sitkLinear)
    reg.SetOptimizerAsRegularStepGradientDescent(learningRate=2.0, minStep=1e-3,
                                                 numberOfIterations=MAX_ITERATIONS, relaxationFactor=0.5,
                                                 gradientMagnitudeTolerance=1e-6)
    reg.SetOptimizerScalesFromPhysicalShift()
    reg.SetShrinkFactorsPerLevel(factors)
    reg.SetSmoothingSigmasPerLevel(sigmas)
    reg.SmoothingSigmasAreSpecifiedInPhysicalUnitsOff()
    reg.SetNumberOfThreads(1)  # one thread: the same result on every run and machine
    try:
        initial = sitk.CenteredTransformInitializer(fixed, moving, sitk.Euler3DTransform(),
                                                    sitk.CenteredTransformInitializerFilter.MOMENTS)
        reg.SetInitialTransform(initial, inPlace=False)
        final = reg.Execute(fixed, moving)
    except RuntimeError as err:
        raise RegistrationError(f"expected the rigid registration to run, got: {_itk_gist(err)}") from err
    return final, float(reg.GetMetricValue()), int(reg.GetOptimizerIteration()), \
        str(reg.GetOptimizerStopConditionDescription())


def _euler(transform: Any) -> Any:
    """The Euler3DTransform inside what ``Execute`` returns (a composite with one transform, or the transform)."""
    sitk = _sitk()
    if transform.GetName() == "CompositeTransform":
        transform = sitk.CompositeTransform(transform).GetNthTransform(0)
    return sitk.Euler3DTransform(transform)


def resample_to(reference: Volume, moving: Volume, data: np.ndarray, transform: Any, nearest: bool) -> np.ndarray:
    """``data`` (on ``moving``'s RAS grid) resampled onto ``reference``'s grid through ``transform`` (baseline
    world -> follow-up world): linear for images (float32), nearest neighbour for labels (uint8). Points outside
    the follow-up get 0."""
    sitk = _sitk()
    img = to_sitk(moving, np.asarray(data, dtype=np.uint8 if nearest else np.float32))
    ref = to_sitk(reference, np.zeros(reference.shape, dtype=np.uint8))
    out = sitk.Resample(img, ref, transform, sitk.sitkNearestNeighbor if nearest else sitk.sitkLinear, 0.0,
                        sitk.sitkUInt8 if nearest else sitk.sitkFloat32)
    return from_sitk(out)


def ncc(a: np.ndarray, b: np.ndarray, mask: np.ndarray) -> float:
    """Pearson correlation of ``a`` and ``b`` over ``mask`` (0 when either is constant there or the mask is
    empty)."""
    x = np.asarray(a, dtype=np.float64)[mask]
    y = np.asarray(b, dtype=np.float64)[mask]
    if x.size < 2:
        return 0.0
    x = x - x.mean()
    y = y - y.mean()
    den = math.sqrt(float((x * x).sum()) * float((y * y).sum()))
    return float((x * y).sum() / den) if den > 0 else 0.0


def _dice(a: np.ndarray, b: np.ndarray) -> float:
    total = int(a.sum()) + int(b.sum())
    return 1.0 if total == 0 else 2.0 * int((a & b).sum()) / total


def _matrix(euler: Any) -> np.ndarray:
    m = np.eye(4)
    rot = np.asarray(euler.GetMatrix(), dtype=np.float64).reshape(3, 3)
    centre = np.asarray(euler.GetCenter(), dtype=np.float64)
    m[:3, :3] = rot
    m[:3, 3] = np.asarray(euler.GetTranslation()) + centre - rot @ centre
    return m


# ---- volumes, products, response -----------------------------------------------------------------------------

def change(name: str, unit: str, baseline: float, followup: float) -> Change:
    """``followup`` against ``baseline``: absolute change and percent change (None when the baseline is 0)."""
    b, f = float(baseline), float(followup)
    if b == 0:
        return Change(name, unit, b, f, f - b, None, PERCENT_UNDEFINED)
    return Change(name, unit, b, f, f - b, (f - b) / b * 100.0)


def volume_changes(baseline_labels: np.ndarray, baseline_spacing_mm: Sequence[float],
                   followup_labels: np.ndarray, followup_spacing_mm: Sequence[float], *,
                   baseline_voxel_ml: float | None = None, followup_voxel_ml: float | None = None,
                   ) -> tuple[Change, ...]:
    """Volumes in mL of NCR, ED, ET, WT and TC, each study from its own labels and voxel volume
    (``*_voxel_ml``: |det| of its affine, ``Case.voxel_volume_ml``; None: the product of its voxel sizes)."""
    b = label_volumes_ml(baseline_labels, baseline_spacing_mm, voxel_volume_ml=baseline_voxel_ml)
    f = label_volumes_ml(followup_labels, followup_spacing_mm, voxel_volume_ml=followup_voxel_ml)
    return tuple(change(s, "mL", b[s], f[s]) for s in STRUCTURES)


def new_measurable_lesions(baseline_labels: np.ndarray, followup_on_baseline: np.ndarray,
                           spacing_mm: Sequence[float]) -> int:
    """Enhancing lesions of the follow-up (resampled onto the baseline grid) that touch no baseline enhancing
    tumour (26-connected components, the baseline ET dilated by one voxel) and that ``measure_rano`` finds
    measurable on their own."""
    base_et = ndimage.binary_dilation(np.asarray(baseline_labels) == LABEL_ET, iterations=1)
    comps, n = ndimage.label(np.asarray(followup_on_baseline) == LABEL_ET, structure=np.ones((3, 3, 3), bool))
    count = 0
    for i in range(1, n + 1):
        lesion = comps == i
        if np.any(lesion & base_et):
            continue
        alone = np.where(lesion, LABEL_ET, 0).astype(np.uint8)
        if measure_rano(alone, (float(spacing_mm[0]), float(spacing_mm[1]), float(spacing_mm[2]))).measurable:
            count += 1
    return count


def suggest_response(products: Change, followup_et_ml: float, baseline_et_ml: float, new_lesions: int) -> Response:
    """The RANO-like category the numbers suggest.

    CR: no enhancing tumour at follow-up. PD: a new measurable enhancing lesion, or the sum of products up by
    >= 25 % (or measurable disease where the baseline had none). PR: the sum of products down by >= 50 %.
    SD: otherwise. ``CAVEAT`` always goes with it.
    """
    if followup_et_ml == 0:
        why = ("no enhancing tumour at follow-up" if baseline_et_ml > 0 else
               "no enhancing tumour at follow-up (nor at baseline: there was no enhancing disease to respond)")
        return Response("CR", (why,))
    reasons: list[str] = []
    if new_lesions:
        reasons.append(f"{new_lesions} new measurable enhancing lesion{'s' if new_lesions > 1 else ''}")
    pct = products.change_pct
    if pct is None:
        if products.followup > 0:
            reasons.append("measurable enhancing disease where the baseline had none")
        if reasons:
            return Response("PD", tuple(reasons))
        return Response("SD", ("enhancing tumour present but not measurable (both diameters >= 10 mm) at either "
                               "time",))
    if pct >= PD_INCREASE_PCT:
        reasons.append(f"sum of products up {pct:.1f} % (>= {PD_INCREASE_PCT:g} %)")
    if reasons:
        return Response("PD", tuple(reasons))
    if pct <= -PR_DECREASE_PCT:
        return Response("PR", (f"sum of products down {-pct:.1f} % (>= {PR_DECREASE_PCT:g} %)",))
    return Response("SD", (f"sum of products changed {pct:+.1f} % (neither >= {PR_DECREASE_PCT:g} % down nor "
                           f">= {PD_INCREASE_PCT:g} % up)",))


def focus_voxel(comparison: Comparison) -> tuple[int, int, int]:
    """The (x, y, z) voxel of the baseline grid the views open on: the centre of mass of the largest connected
    component (26-connectivity) of the baseline's tumour core (TC), else of its whole tumour; else the same of
    the registered follow-up; else the middle of the grid. A centre, not the slice of largest area, so that a
    tumour that shrank around its centre shows at both times."""
    for labels in (comparison.baseline_labels, comparison.followup_labels_on_baseline):
        for region in ((1, 4), (1, 2, 4)):
            mask = np.isin(np.asarray(labels), region)
            if not mask.any():
                continue
            comps, _ = ndimage.label(mask, structure=np.ones((3, 3, 3), dtype=bool))
            sizes = np.bincount(comps.ravel())
            sizes[0] = 0
            centre = ndimage.center_of_mass(comps == int(np.argmax(sizes)))
            return int(round(centre[0])), int(round(centre[1])), int(round(centre[2]))
    x, y, z = comparison.baseline.shape
    return x // 2, y // 2, z // 2


# ---- the comparison ------------------------------------------------------------------------------------------

def compare_studies(baseline: Case, followup: Case, baseline_seg: Volume | None = None,
                    followup_seg: Volume | None = None, modality: str | None = None, *,
                    min_ncc: float = MIN_NCC, min_brain_dice: float = MIN_BRAIN_DICE) -> Comparison:
    """Register the follow-up to the baseline and compare them.

    Args:
        baseline, followup: the two studies (each on its own grid).
        baseline_seg, followup_seg: label files on each study's grid; None uses the case's own segmentation.
        modality: the modality to register on (default: T1CE when both hold it, else FLAIR, T1, T2).
        min_ncc, min_brain_dice: alignment needed after registration.

    Raises:
        CaseError: a study has no segmentation, a label file does not fit, or no common modality.
        RegistrationError: the registration fails or the aligned images do not match (poor alignment).
    """
    base_labels = study_labels(baseline, baseline_seg, "baseline")
    follow_labels = study_labels(followup, followup_seg, "follow-up")
    key = choose_modality(baseline, followup, modality)
    fixed, moving = baseline.images[key], followup.images[key]
    transform, metric, iterations, stop = register_rigid(fixed, moving)
    euler = _euler(transform)
    images = {k: resample_to(baseline.reference, followup.images[k], followup.images[k].data, euler, False)
              for k in followup.modalities}
    for arr in images.values():
        arr.setflags(write=False)
    labels_on_base = resample_to(baseline.reference, followup.reference, follow_labels, euler, True)
    labels_on_base.setflags(write=False)
    brain = np.asarray(fixed.data) != 0
    moved = images[key]
    score = ncc(fixed.data, moved, brain)
    # The follow-up's brain mask is taken on its own grid and resampled by nearest neighbour: thresholding the
    # linearly resampled image (moved != 0) grew the mask by a shell of faint interpolated voxels, so identical
    # studies scored a brain overlap of 0.94-0.98 instead of 1.
    moved_brain = resample_to(baseline.reference, moving, np.asarray(moving.data) != 0, euler, True) != 0
    dice = _dice(brain, moved_brain)
    rot = tuple(math.degrees(a) for a in (euler.GetAngleX(), euler.GetAngleY(), euler.GetAngleZ()))
    reg = Registration(key, tuple(tuple(float(v) for v in row) for row in _matrix(euler)),
                       rot, tuple(float(v) for v in euler.GetTranslation()),  # type: ignore[arg-type]
                       tuple(float(v) for v in euler.GetCenter()), metric, score, dice, iterations, stop)  # type: ignore[arg-type]
    if score < min_ncc or dice < min_brain_dice:
        raise RegistrationError(
            f"expected the follow-up to align with the baseline after rigid registration on "
            f"{MODALITY_TITLES[key]} (NCC inside the brain >= {min_ncc:g}, brain overlap Dice >= "
            f"{min_brain_dice:g}), got NCC {score:.2f} and Dice {dice:.2f}: are both studies of the same patient "
            "and of the whole brain?")
    volumes = volume_changes(base_labels, baseline.spacing_mm, follow_labels, followup.spacing_mm,
                             baseline_voxel_ml=baseline.voxel_volume_ml, followup_voxel_ml=followup.voxel_volume_ml)
    rano_b = measure_rano(base_labels, baseline.spacing_mm, voxel_volume_ml=baseline.voxel_volume_ml)
    rano_f = measure_rano(follow_labels, followup.spacing_mm, voxel_volume_ml=followup.voxel_volume_ml)
    products = change("sum_of_products", "mm2", float(rano_b.sum_products_mm2), float(rano_f.sum_products_mm2))
    new = new_measurable_lesions(base_labels, labels_on_base, baseline.spacing_mm)
    et = {c.name: c for c in volumes}["ET"]
    response = suggest_response(products, et.followup, et.baseline, new)
    base_labels.setflags(write=False)
    follow_labels.setflags(write=False)
    sources = {"baseline": _label_source(baseline, baseline_seg), "followup": _label_source(followup, followup_seg)}
    return Comparison(baseline, followup, base_labels, follow_labels, reg, images, labels_on_base, volumes,
                      products, rano_b, rano_f, new, response, sources)


def _label_source(case: Case, seg: Volume | None) -> str:
    if seg is not None:
        if seg.source_name.startswith(MODEL_SOURCE_PREFIX):  # the model's labels (core.app.followup)
            return seg.source_name
        return f"file {seg.source_name}" if seg.source_name else "file given"
    return "expert segmentation (the case's own label file" + (f" {case.seg.source_name})" if case.seg is not None
                                                                and case.seg.source_name else ")")
