"""``python -m core preprocess STUDY --out DIR [--flair F] [--t1 F] [--t1ce F] [--t2 F]``: a raw study to BraTS.

``STUDY`` is a folder of NIfTI files, one per sequence, as a converter writes them (each on its own grid, skull
on, scanner orientation); sequences are guessed from the file names (``_fla``/``flair``, ``t1c``/``t1ce``/``t1gd``
or ``T1 ... POST GAD``, ``t1``, ``t2``), and the flags name files explicitly (then STUDY may be left out). T1CE
is required (the registration reference) with at least one other sequence.

Writes ``DIR/<case>/<case>_{flair,t1,t1ce,t2}.nii.gz`` in BraTS space (240 x 240 x 155, 1 mm, stored LPS,
brain-extracted; ``python -m core segment DIR/<case>`` reads it as is) and ``DIR/<case>/preprocessing/``: the
transforms (ITK ``.tfm``), the brain mask and ``study.json`` (steps, alignment measures, times). Progress goes to
stderr, one JSON summary line to stdout. ``segment DIR/<case> --native-study DIR/<case>`` then also writes the
labels on each original series' grid. A study already in BraTS space is copied through untouched.

The head may lie in any pose within about 40 degrees of the scanner's axes; a study already brain-extracted but
still in scanner space (no skull around the brain) is registered brain to brain (``input_path`` in the summary and
in study.json says which path ran). A missing sequence, a 2-D localiser, or a registration that did not converge
or fails its checks (correlation with the atlas, midline against the atlas's, brain mask against the atlas's; the
measures and thresholds are in study.json's ``acceptance``) exits with status 2 and one ``error:`` line. Research
use only: not for diagnosis.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from core.cli.common import print_json
from core.config import MODALITIES, MODALITY_TITLES
from core.errors import StudyError


def add_parser(subparsers: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    parser = subparsers.add_parser(
        "preprocess",
        help="bring a raw study (NIfTI per sequence, skull on) to BraTS space, keeping every transform",
        description=("Co-register the sequences to the T1CE, register it to the SRI24 atlas, resample to the 1 mm "
                     "BraTS grid and extract the brain; write a BraTS case folder plus transforms and a JSON of "
                     "steps and measures. Research use only."),
    )
    parser.add_argument("study", type=Path, nargs="?", default=None, metavar="STUDY",
                        help="a folder of NIfTI files whose names tell the sequences")
    parser.add_argument("--out", type=Path, required=True, help="output folder (the case folder is made inside)")
    for seq in MODALITIES:
        parser.add_argument(f"--{seq}", type=Path, default=None, metavar="FILE",
                            help=f"the {MODALITY_TITLES[seq]} file (overrides the guess from names)")
    parser.add_argument("--case-id", default=None, help="case id (default: the study folder's name)")
    parser.add_argument("--deformable", action="store_true",
                        help="brain extraction with a B-spline stage after the affine atlas fit (about 50 s more)")
    parser.add_argument("--quiet", action="store_true", help="no progress lines on stderr")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from core.data.study import find_series, preprocess_study

    explicit = {seq: getattr(args, seq) for seq in MODALITIES}
    if args.study is None and not any(explicit.values()):
        raise StudyError("expected a STUDY folder or the files named with --flair/--t1/--t1ce/--t2, got neither")
    if args.out.exists() and not args.out.is_dir():
        raise StudyError(f"expected --out to be a folder, got {str(args.out)!r} which is a file")
    files = find_series(args.study, explicit)
    case_id = args.case_id or (args.study.resolve().name if args.study is not None
                               else files.series.get("t1ce", next(iter(files.series.values()), Path("case"))).parent.name)
    last = [-1]

    def progress(fraction: float, message: str) -> None:
        pct = int(round(100 * fraction))
        if not args.quiet and (pct >= last[0] + 5 or pct == 100 or pct == 0):
            last[0] = pct
            print(f"[{pct:3d}%] {message}", file=sys.stderr, flush=True)

    result = preprocess_study(files.series, args.out, case_id, ignored=files.ignored,
                              deformable=args.deformable, progress=progress)
    rec = result.record
    summary = {
        "case_id": result.case_id, "case_dir": str(result.case_dir),
        "images": {s: str(p) for s, p in result.images.items()},
        "passthrough": rec.get("passthrough", False), "missing": rec["missing"], "ignored": rec["ignored"],
        "input_path": rec.get("input_path"), "accepted": rec.get("acceptance", {}).get("accepted"),
        "measures": {f"{st['step']}_{st.get('sequence', '')}".rstrip("_"):
                     {k: v for k, v in st.items() if k in {"nmi", "ncc_with_atlas", "brain_volume_ml"}}
                     for st in rec["steps"] if any(k in st for k in ("nmi", "ncc_with_atlas", "brain_volume_ml"))},
        "time_s": rec["time_s"], "record": str(result.case_dir / "preprocessing" / "study.json"),
        "disclaimer": rec["disclaimer"],
    }
    print_json(summary, indent=None)
    return 0
