"""``python -m core compare BASELINE FOLLOWUP [--seg-a FILE] [--seg-b FILE]``: follow-up comparison as JSON.

``BASELINE`` and ``FOLLOWUP`` are two studies of one patient, each a case folder (BraTS names). ``--seg-a`` and
``--seg-b`` are label maps (0/1/2/4, or BraTS 2023's 3 for ET) on the baseline's and the follow-up's grid; without
one, the case's own segmentation is used. The follow-up is registered rigidly to the baseline
(``core.analysis.compare``: SimpleITK, Euler 3-D, Mattes mutual information, T1CE by default, else FLAIR).

Prints a JSON object: both studies, the registration (modality, rotation in degrees, translation in mm, the
baseline-to-follow-up matrix in RAS mm, the final metric, the alignment measures and their thresholds), the
volumes of NCR, ED, ET, WT and TC in mL at both times with absolute and percent change (``change_pct`` is null,
with a note, when the baseline is 0), the sums of bidimensional products (mm^2) and each study's lesions
(``core.analysis.measure``), the suggested response category with its reasons and the caveat that RANO also needs
clinical data. ``--pdf FILE`` also writes the follow-up report. Research use only.

Bad input, or a follow-up that does not align with the baseline, exits with status 2 and one ``error: ...`` line.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from core.analysis.compare import MIN_NCC, REGISTRATION_ORDER, compare_studies
from core.cli.common import load_case_arg, print_json
from core.config import DISCLAIMER
from core.data.io import load_volume


def add_parser(subparsers: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    parser = subparsers.add_parser(
        "compare",
        help="follow-up comparison of two studies of one patient (JSON)",
        description=("Register the follow-up study rigidly to the baseline and compare them: volumes (NCR, ED, ET, "
                     "WT, TC in mL) and sums of bidimensional products at both times, absolute and percent change, "
                     "and the RANO-like response category the numbers suggest (RANO also needs clinical data). "
                     "Refuses when the studies do not align. Research use only."),
    )
    parser.add_argument("baseline", type=Path, metavar="BASELINE", help="the baseline case folder")
    parser.add_argument("followup", type=Path, metavar="FOLLOWUP", help="the follow-up case folder")
    parser.add_argument("--seg-a", type=Path, default=None,
                        help="baseline label NIfTI on the baseline's grid (default: the case's own)")
    parser.add_argument("--seg-b", type=Path, default=None,
                        help="follow-up label NIfTI on the follow-up's grid (default: the case's own)")
    parser.add_argument("--modality", choices=REGISTRATION_ORDER, default=None,
                        help="modality to register on (default: T1CE when both hold it, else FLAIR)")
    parser.add_argument("--min-ncc", type=float, default=MIN_NCC,
                        help=f"alignment needed: correlation inside the brain after registration (default {MIN_NCC:g})")
    parser.add_argument("--pdf", type=Path, default=None, help="also write the follow-up report (PDF) here")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    baseline = load_case_arg([args.baseline])
    followup = load_case_arg([args.followup])
    seg_a = load_volume(args.seg_a) if args.seg_a is not None else None
    seg_b = load_volume(args.seg_b) if args.seg_b is not None else None
    result = compare_studies(baseline, followup, seg_a, seg_b, args.modality, min_ncc=args.min_ncc)
    out = {**result.to_dict(), "disclaimer": DISCLAIMER}
    if args.pdf is not None:
        from core.analysis.report_followup import save_followup_pdf

        out["pdf"] = str(save_followup_pdf(args.pdf, result))
    print_json(out)
    return 0
