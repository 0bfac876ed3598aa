"""``python -m core report CASE... --seg FILE --out report.pdf``: the PDF report of a segmented case.

``CASE`` is one case folder (BraTS names) or the NIfTI files of one case. ``--seg`` is a label map (0/1/2/4,
or BraTS 2023's 3 for ET) on the case's grid: same stored shape and affine (within 1e-3 mm) as the case's
first image. When the case has its own segmentation and it is not the ``--seg`` file itself, it is used as the
reference: the report adds reference volumes and Dice/HD95 scores (``--no-reference`` turns this off).

The PDF is the one the app exports, written atomically. A JSON summary (volumes in mL, output path, PDF
SHA-256) is printed, and an "export_pdf" event is appended to the audit log (``work_dir()/audit.log.jsonl``
unless ``--audit-log`` names another file). Bad input exits with status 2 and one ``error: ...`` line.
"""

from __future__ import annotations

import argparse
import hashlib
import json
from pathlib import Path

import numpy as np

from core.analysis.metrics import score_case
from core.analysis.report import ReportInputs, build_pdf, volume_table
from core.cli.common import load_case_arg, load_seg_on_case_grid, print_json
from core.data.audit import append_event
from core.data.io import atomic_write_bytes
from core.errors import DataFolderError

DEFAULT_MODEL_NAME = "unknown (external segmentation)"
DEFAULT_MODEL_SHA = "n/a"


def add_parser(subparsers: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    parser = subparsers.add_parser(
        "report",
        help="write the PDF report (volumes, three-plane overlays, provenance) of a segmented case",
        description=("Write the PDF report of one case and a segmentation on its grid: volumes (mL), "
                     "three-plane overlay images, model and input hashes, geometry and library versions."),
    )
    parser.add_argument("case", nargs="+", type=Path, metavar="CASE",
                        help="one case folder, or the NIfTI files of one case")
    parser.add_argument("--seg", type=Path, required=True, help="label NIfTI on the case's grid")
    parser.add_argument("--out", type=Path, required=True, help="PDF file to write")
    parser.add_argument("--model-name", default=DEFAULT_MODEL_NAME, help="model that produced the segmentation")
    parser.add_argument("--model-sha", default=DEFAULT_MODEL_SHA, help="SHA-256 of the model's weights file")
    parser.add_argument("--corrected", action="store_true", help="the segmentation was corrected by hand")
    parser.add_argument("--quality", type=Path, default=None,
                        help="the <case>_quality.json that segment wrote (adds the quality flag to the PDF)")
    parser.add_argument("--no-reference", action="store_true",
                        help="ignore the case's own segmentation (no reference volumes or scores)")
    parser.add_argument("--audit-log", type=Path, default=None, help="audit log file (default in the work folder)")
    parser.set_defaults(run=run)


def load_quality(path: Path) -> dict:
    """A quality flag written by ``segment`` (``<case>_quality.json``).

    Raises:
        DataFolderError: unreadable, or not a flag (status "ok" or "review" with a list of reasons).
    """
    try:
        d = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise DataFolderError(f"expected the quality JSON that segment wrote, got an unreadable {path.name!r}") from err
    if not isinstance(d, dict) or d.get("status") not in ("ok", "review") or not isinstance(d.get("reasons"), list):
        raise DataFolderError(f"expected a quality flag (status ok or review, reasons) in {path.name!r}")
    return d


def run(args: argparse.Namespace) -> int:
    case = load_case_arg(list(args.case))
    labels, seg_sha = load_seg_on_case_grid(args.seg, case)
    gt = None
    scores = None
    if case.seg is not None and not args.no_reference and case.seg.sha256 != seg_sha:
        gt = np.asarray(case.seg.data)
        scores = score_case(labels, gt, case.spacing_mm, voxel_volume_ml=case.voxel_volume_ml)
    quality = load_quality(args.quality) if args.quality is not None else None
    inputs = ReportInputs(case=case, labels=labels, model_name=args.model_name, model_sha256=args.model_sha,
                          corrected=bool(args.corrected), gt_labels=gt, scores=scores, seg_sha256=seg_sha,
                          extra={"Segmentation file": args.seg.name}, quality=quality)
    pdf = build_pdf(inputs)
    out = atomic_write_bytes(args.out, pdf)
    rows = volume_table(labels, case.spacing_mm, gt, voxel_volume_ml=case.voxel_volume_ml)
    pdf_sha = hashlib.sha256(pdf).hexdigest()
    hashes = dict(case.input_hashes())
    hashes["segmentation"] = seg_sha
    append_event("export_pdf", case_id=case.case_id, input_hashes=hashes, model_sha256=args.model_sha,
                 extra={"out": str(out), "pdf_sha256": pdf_sha, "corrected": bool(args.corrected),
                        "source": "cli", "model_name": args.model_name},
                 path=args.audit_log)
    summary = {
        "case_id": case.case_id,
        "out": str(out),
        "pdf_sha256": pdf_sha,
        "volumes_ml": {r["structure"]: r["volume_ml"] for r in rows},
        "reference_volumes_ml": {r["structure"]: r["gt_volume_ml"] for r in rows} if gt is not None else None,
        "scores": scores.to_dict() if scores is not None else None,
        "model_name": args.model_name,
        "model_sha256": args.model_sha,
        "corrected": bool(args.corrected),
        "quality": quality["status"] if quality is not None else None,
    }
    print_json(summary)
    return 0
