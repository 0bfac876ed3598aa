"""N4 bias-field correction (SimpleITK) of a case's images, an optional step before segmentation.

Raw scanner images carry a smooth multiplicative intensity field; N4 (Tustison et al., IEEE TMI 2010) estimates
it on a shrunk copy (4x along axes of 64 voxels or more) inside the brain (non-zero voxels) and divides it out at full resolution. Arrays are
(X, Y, Z) on the case's RAS grid; the geometry of every volume is kept.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from core.data.cases import Case
from core.errors import CaseError

SHRINK = 4
ITERATIONS = (50, 50, 50)


def n4_array(image: np.ndarray, mask: np.ndarray, spacing_mm: tuple[float, float, float]) -> np.ndarray:
    """Bias-corrected copy (float32) of a (X, Y, Z) image; voxels outside ``mask`` are returned unchanged.

    Raises:
        CaseError: SimpleITK is not installed, the mask is empty, or ITK fails on the image.
    """
    try:
        import SimpleITK as sitk  # noqa: N813
    except ImportError as err:
        raise CaseError("expected SimpleITK for N4 bias-field correction (pip install SimpleITK), "
                        "found it missing") from err
    if not np.any(mask):
        raise CaseError("expected brain voxels (non-zero) for N4 bias-field correction, got an empty image")
    a = np.asarray(image, dtype=np.float32)
    lo = float(a[mask].min())
    shifted = np.where(mask, a - lo + 1.0, 0.0).astype(np.float32)  # N4 needs positive intensities
    # SimpleITK arrays are (Z, Y, X); spacing is given in (X, Y, Z) order.
    img = sitk.GetImageFromArray(np.ascontiguousarray(shifted.transpose(2, 1, 0)))
    img.SetSpacing(tuple(float(s) for s in spacing_mm))
    msk = sitk.GetImageFromArray(np.ascontiguousarray(mask.transpose(2, 1, 0)).astype(np.uint8))
    msk.CopyInformation(img)
    # shrink each axis by up to 4, keeping at least 16 voxels along it (small images are not shrunk)
    shrink = [max(1, min(SHRINK, int(n) // 16)) for n in a.shape]
    n4 = sitk.N4BiasFieldCorrectionImageFilter()
    n4.SetMaximumNumberOfIterations(list(ITERATIONS))
    try:
        n4.Execute(sitk.Shrink(img, shrink), sitk.Shrink(msk, shrink))
        log_field = sitk.GetArrayFromImage(n4.GetLogBiasFieldAsImage(img)).transpose(2, 1, 0)
    except RuntimeError as err:  # ITK's message is many lines; its gist is the last one
        gist = [line for line in str(err).splitlines() if line.strip()][-1:] or ["unknown ITK error"]
        raise CaseError(f"expected N4 bias-field correction to run on a {a.shape} image, got: {gist[0][:160]}") from err
    corrected = shifted / np.exp(log_field)
    return np.where(mask, corrected + lo - 1.0, a).astype(np.float32)


def n4_case(case: Case, progress: Callable[[float, str], None] | None = None) -> Case:
    """The case with every modality N4-corrected inside the brain (any modality non-zero); labels unchanged."""
    brain = np.zeros(case.shape, dtype=bool)
    for vol in case.images.values():
        brain |= np.asarray(vol.data) != 0
    images = {}
    for i, (key, vol) in enumerate(case.images.items()):
        if progress is not None:
            progress(i / len(case.images), f"N4 bias-field correction of {key}")
        images[key] = vol.with_data(n4_array(np.asarray(vol.data), brain & (np.asarray(vol.data) != 0),
                                             case.spacing_mm))
    notes = "; ".join(n for n in (case.notes, "N4 bias-field corrected before segmentation") if n)
    return Case(case.case_id, images, case.seg, case.label_convention, case.source, notes, case.files)
