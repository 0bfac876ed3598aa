"""Benchmark the follow-up comparison (core.analysis.compare) on real BraTS cases.

No longitudinal pair ships with the shared data, so follow-ups are made from a real case: its images and labels
moved by known rigid transforms (resampled with SimpleITK, linear / nearest). For each, the comparison's wall
time, the registration error (largest distance, over the 8 corners of the brain's bounding box, between where the
recovered and the true transform send a baseline point) and the alignment measures are printed. Then pairs of
*different* patients (all in BraTS space) are compared, to show where the alignment check puts them.

Run: ``.venv/bin/python benchmarks/bench_compare.py [CASE_FOLDER ...]`` (default: BraTS2021_00000, then 00002
and 00014 as the other patients, from ``../shared/data/brats/train``). Prints figures only.
"""

from __future__ import annotations

import itertools
import math
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from core.analysis import compare  # noqa: E402
from core.config import shared_data_dir  # noqa: E402
from core.data.cases import Case, load_case_folder  # noqa: E402
from core.errors import RegistrationError  # noqa: E402

MOVES: tuple[tuple[tuple[float, float, float], tuple[float, float, float]], ...] = (
    ((0.0, 0.0, 0.0), (0.0, 0.0, 0.0)),
    ((3.0, -2.0, 5.0), (5.0, -8.0, 3.0)),
    ((10.0, 0.0, -8.0), (-12.0, 6.0, 10.0)),
    ((-6.0, 8.0, 12.0), (20.0, 15.0, -10.0)),
)


def moved(case: Case, angles_deg: tuple[float, float, float], shift_mm: tuple[float, float, float]
          ) -> tuple[Case, np.ndarray]:
    """The case moved by a rigid transform about its grid centre, and the true baseline-to-follow-up matrix."""
    import SimpleITK as sitk  # noqa: N813

    ref = compare.to_sitk(case.reference, np.zeros(case.shape, np.uint8))
    tr = sitk.Euler3DTransform()
    tr.SetCenter(ref.TransformContinuousIndexToPhysicalPoint([s / 2 for s in ref.GetSize()]))
    tr.SetRotation(*[math.radians(a) for a in angles_deg])
    tr.SetTranslation(shift_mm)
    # Resample pulls follow-up(p) = baseline(tr(p)): baseline point q shows in the follow-up at tr^-1(q)
    images = {k: v.with_data(compare.resample_to(v, v, v.data, tr, False)) for k, v in case.images.items()}
    seg = case.seg.with_data(compare.resample_to(case.seg, case.seg, case.seg.data, tr, True))
    moved_case = Case(f"{case.case_id}-moved", images, seg, case.label_convention, case.source)
    return moved_case, np.linalg.inv(compare._matrix(tr))


def brain_corners(case: Case) -> np.ndarray:
    """(4, 8) homogeneous world points (mm) of the corners of the brain's bounding box."""
    nz = np.argwhere(np.asarray(case.reference.data) != 0)
    lo, hi = nz.min(0), nz.max(0)
    corners = np.array(list(itertools.product(*zip(lo, hi, strict=True))), dtype=np.float64)
    return case.reference.affine @ np.c_[corners, np.ones(8)].T


def main(argv: list[str]) -> int:
    root = shared_data_dir()
    if argv:
        folders = [Path(a) for a in argv]
    elif root is not None:
        train = root / "brats" / "train"
        folders = [train / n for n in ("BraTS2021_00000", "BraTS2021_00002", "BraTS2021_00014")]
    else:
        print("no case folder given and ../shared/data not found")
        return 1
    print(f"python {platform.python_version()} on {platform.machine()}, {os.cpu_count()} CPUs; "
          f"registration threads: 1; samples per level: {compare.SAMPLES_PER_LEVEL}; "
          f"registration bins: {compare.REGISTRATION_SPACING_MM} mm")
    base = load_case_folder(folders[0])
    corners = brain_corners(base)
    print(f"baseline {base.case_id}: shape {base.shape}, voxel {base.spacing_mm} mm")
    print("rotation (deg) | shift (mm) | wall (s) | max corner error (mm) | NCC | brain Dice | category")
    for angles, shift in MOVES:
        follow, true = moved(base, angles, shift)
        t0 = time.perf_counter()
        result = compare.compare_studies(base, follow)
        wall = time.perf_counter() - t0
        err = float(np.linalg.norm((np.array(result.registration.matrix) @ corners - true @ corners)[:3], axis=0).max())
        reg = result.registration
        print(f"{angles} | {shift} | {wall:.1f} | {err:.2f} | {reg.ncc:.3f} | {reg.brain_dice:.3f} | "
              f"{result.response.category}")
    print("different patients (expected refused):")
    for other in folders[1:]:
        case = load_case_folder(other)
        t0 = time.perf_counter()
        try:
            result = compare.compare_studies(base, case)
            print(f"{base.case_id} vs {case.case_id}: accepted, NCC {result.registration.ncc:.3f}, "
                  f"Dice {result.registration.brain_dice:.3f} ({time.perf_counter() - t0:.1f} s)")
        except RegistrationError as err:
            print(f"{base.case_id} vs {case.case_id}: refused ({time.perf_counter() - t0:.1f} s): {err}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
