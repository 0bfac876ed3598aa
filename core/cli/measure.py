"""``python -m core measure CASE... --seg FILE``: RANO-style bidimensional measurement of enhancing tumour.

``CASE`` is one case folder (BraTS names) or the NIfTI files of one case; ``--seg`` is a label map (0/1/2/4, or
BraTS 2023's 3 for ET) on the case's grid (same stored shape and affine, within 1e-3 mm, as the case's first
image), checked as ``report`` checks it. The case's images are only used for the grid and the voxel size.

Prints a JSON object: the case, the segmentation file, the voxel size, how slices are numbered (from 0, on the RAS
grid the app shows: axial slice ``z`` counts from inferior to superior), every enhancing lesion (slice, both
diameters in mm, their product in mm^2, measurable or not, volume in mL, the diameters' end points in voxel
coordinates), the target lesions and the sum of their products (``core.analysis.measure``). Research use only.
Bad input exits with status 2 and one ``error: ...`` line.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from core.analysis.measure import measure_rano
from core.cli.common import load_case_arg, load_seg_on_case_grid, print_json
from core.config import DISCLAIMER


def add_parser(subparsers: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    parser = subparsers.add_parser(
        "measure",
        help="RANO-style bidimensional measurement of enhancing tumour (JSON)",
        description=("Measure every enhancing lesion (3-D connected component of label 4) of a segmentation on "
                     "the axial slice where it is largest: the longest diameter and the longest one perpendicular "
                     "to it (mm), their product (mm^2), and the sum over up to two measurable target lesions "
                     "(both diameters >= 10 mm; RANO 2.0). Slices count from 0. Research use only."),
    )
    parser.add_argument("case", nargs="+", type=Path, metavar="CASE",
                        help="one case folder, or the NIfTI files of one case")
    parser.add_argument("--seg", type=Path, required=True, help="label NIfTI on the case's grid")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    case = load_case_arg(list(args.case))
    labels, seg_sha = load_seg_on_case_grid(args.seg, case)
    result = measure_rano(labels, case.spacing_mm, voxel_volume_ml=case.voxel_volume_ml)
    out = {
        "case_id": case.case_id,
        "seg": args.seg.name,
        "seg_sha256": seg_sha,
        "shape": list(case.shape),
        "grid": "RAS (reoriented at load, as the app shows it)",
        **result.to_dict(),
        "disclaimer": DISCLAIMER,
    }
    print_json(out)
    return 0
