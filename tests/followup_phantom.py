"""A small synthetic patient for the follow-up comparison tests: a 48^3 head at 2 mm with an asymmetric brain
(grey and white matter, two ventricles of different size) and a tumour of nested cubes (ED shell, ET shell, NCR
core), in T1CE and FLAIR; the follow-up is the same brain shifted by whole voxels with a smaller tumour.

Volumes by hand (2 mm voxels, 8 mm^3 = 0.008 mL):
    baseline  (WT 12, TC 10, NCR 4 voxels wide): NCR 64, ET 1000 - 64 = 936, ED 1728 - 1000 = 728 voxels;
    follow-up (WT 8, TC 6, NCR 2 voxels wide):   NCR 8,  ET 216 - 8 = 208,   ED 512 - 216 = 296 voxels.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from conftest import write_nifti
from scipy import ndimage

from core.data.cases import Case, assemble_case
from core.data.io import volume_from_array

SHAPE = (48, 48, 48)
SPACING_MM = 2.0
RAS_AFFINE = np.diag([SPACING_MM, SPACING_MM, SPACING_MM, 1.0])
# Stored like BraTS (LPS: x and y flipped), 2 mm voxels.
LPS_AFFINE_2MM = np.array([[-2.0, 0, 0, 94.0], [0, -2.0, 0, 94.0], [0, 0, 2.0, 0], [0, 0, 0, 1]])
TUMOUR_CENTRE = (30, 22, 26)
BASELINE_HALVES = (6, 5, 2)  # half widths (voxels) of the WT, TC and NCR cubes
FOLLOWUP_HALVES = (4, 3, 1)
SHIFT_VOXELS = (3, -2, 1)  # follow-up content moved by this many voxels along x, y, z
SHIFT_MM = tuple(SPACING_MM * s for s in SHIFT_VOXELS)
VOXEL_ML = SPACING_MM**3 / 1000.0
BASELINE_VOXELS = {"NCR": 64, "ED": 728, "ET": 936, "TC": 1000, "WT": 1728}
FOLLOWUP_VOXELS = {"NCR": 8, "ED": 296, "ET": 208, "TC": 216, "WT": 512}


def _cube(centre: tuple[int, int, int], half: int) -> np.ndarray:
    m = np.zeros(SHAPE, dtype=bool)
    m[tuple(slice(c - half, c + half) for c in centre)] = True
    return m


def phantom(halves: tuple[int, int, int] = BASELINE_HALVES, shift: tuple[int, int, int] = (0, 0, 0),
            extra_lesion: tuple[int, int, int] | None = None, pattern: bool = False) -> dict[str, np.ndarray]:
    """RAS arrays (X, Y, Z): "t1ce", "flair" (float32) and "seg" (uint8 0/1/2/4).

    Args:
        halves: half widths of the WT, TC and NCR cubes in voxels (``None`` tumour: halves (0, 0, 0)).
        shift: whole-voxel shift of everything (content at voxel v moves to v + shift).
        extra_lesion: centre of a second enhancing cube (6 voxels = 12 mm wide: measurable).
        pattern: replace the brain's inside by a checkerboard of 4-voxel blocks (a study that matches nothing).
    """
    g = np.indices(SHAPE).astype(np.float64)
    c = np.array([24.0, 24.0, 24.0])[:, None, None, None]

    def ellipsoid(axes: tuple[float, float, float]) -> np.ndarray:
        return (((g - c) / np.array(axes)[:, None, None, None]) ** 2).sum(0) <= 1.0

    brain, wm = ellipsoid((18, 20, 16)), ellipsoid((12, 14, 10))
    labels = np.zeros(SHAPE, dtype=np.uint8)
    wt, tc, ncr = halves
    if wt:
        labels[_cube(TUMOUR_CENTRE, wt)] = 2
        labels[_cube(TUMOUR_CENTRE, tc)] = 4
        labels[_cube(TUMOUR_CENTRE, ncr)] = 1
    if extra_lesion is not None:
        labels[_cube(extra_lesion, 3)] = 4
    vent = np.zeros(SHAPE, dtype=bool)
    vent[19:23, 18:31, 22:29] = True
    vent[26:28, 22:29, 22:27] = True
    t1ce = np.where(brain, 100.0, 0.0)
    t1ce[wm], t1ce[vent] = 160.0, 30.0
    flair = np.where(brain, 130.0, 0.0)
    flair[wm], flair[vent] = 100.0, 20.0
    for label, (a, b) in {2: (120.0, 250.0), 4: (250.0, 200.0), 1: (40.0, 180.0)}.items():
        t1ce[labels == label] = a
        flair[labels == label] = b
    if pattern:
        checker = ((np.indices(SHAPE) // 4).sum(0) % 2).astype(np.float64)
        t1ce = np.where(brain, 50.0 + 200.0 * checker, 0.0)
        flair = np.where(brain, 250.0 - 200.0 * checker, 0.0)
    out = {k: np.where(brain, ndimage.gaussian_filter(v, 1.0), 0.0).astype(np.float32)
           for k, v in (("t1ce", t1ce), ("flair", flair))}
    out["seg"] = labels
    if any(shift):
        out = {k: np.roll(v, shift, axis=(0, 1, 2)) for k, v in out.items()}
    return out


def make_case(case_id: str, arrays: dict[str, np.ndarray], modalities: tuple[str, ...] = ("flair", "t1ce"),
              with_seg: bool = True) -> Case:
    """A case in memory on the RAS 2 mm grid."""
    images = {k: volume_from_array(arrays[k], RAS_AFFINE, f"{case_id}_{k}.nii.gz") for k in modalities}
    seg = volume_from_array(arrays["seg"], RAS_AFFINE, f"{case_id}_seg.nii.gz") if with_seg else None
    return assemble_case(case_id, images, seg)


def baseline_case() -> Case:
    return make_case("FU_Baseline", phantom())


def followup_case(**kwargs: object) -> Case:
    args = {"halves": FOLLOWUP_HALVES, "shift": SHIFT_VOXELS, **kwargs}
    return make_case("FU_Followup", phantom(**args))  # type: ignore[arg-type]


def to_stored(ras: np.ndarray) -> np.ndarray:
    """RAS array in the LPS voxel order files are stored in (x and y reversed)."""
    return np.ascontiguousarray(ras[::-1, ::-1, :])


def write_case(root: Path, case_id: str, arrays: dict[str, np.ndarray], with_seg: bool = True) -> Path:
    """Write a case folder ``root/<case_id>`` with BraTS 2021 names (stored LPS, 2 mm); returns the folder."""
    folder = root / case_id
    for key in ("flair", "t1ce", *(("seg",) if with_seg else ())):
        write_nifti(folder / f"{case_id}_{key}.nii.gz", to_stored(arrays[key]), LPS_AFFINE_2MM)
    return folder


def write_pair(root: Path, with_seg: bool = True) -> tuple[Path, Path]:
    """The baseline and follow-up folders ``FU_Baseline`` and ``FU_Followup`` under ``root``."""
    base = write_case(root, "FU_Baseline", phantom(), with_seg)
    follow = write_case(root, "FU_Followup", phantom(FOLLOWUP_HALVES, SHIFT_VOXELS), with_seg)
    return base, follow
