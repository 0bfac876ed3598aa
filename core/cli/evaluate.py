"""``python -m core evaluate``: score predicted segmentations against ground truth (BraTS regions and labels).

One pair::

    python -m core evaluate --pred PRED.nii.gz --gt GT.nii.gz

prints a JSON object with, for WT, TC and ET, Dice, HD95 (mm), sensitivity, specificity, precision, IoU and
the predicted and reference volumes (mL), plus the original design's per-label Dice for NCR, ED and ET.

With ``--lesionwise`` (either mode) it adds the BraTS lesion-wise figures of each region
(``core.analysis.lesionwise``, panoptica in the official evaluator's glioma configuration): lesion-wise Dice and
HD95 (mm) with every missed or spurious lesion counting Dice 0 and HD95 374 mm, the means over matched lesions
only (what brats-evaluation reports), the reference and predicted lesion counts, TP/FP/FN and the region's
global Dice; ``null`` where a figure is undefined (NaN or inf there). Folder rows name them ``<REGION>_lw_<field>``.
``--lesion-rule brats2023`` computes them instead as the BraTS 2023 challenge script did for glioma (reference
lesions within 3 dilations merged, reference lesions of at most 50 mm^3 left out; ``core.analysis.lesionwise``);
the output names the rule under ``lesion_rule``.

A folder of cases::

    python -m core evaluate --pred-dir PRED_DIR --gt-dir GT_DIR [--csv OUT.csv]

pairs files by BraTS case id (ground truth ``<id>_seg.nii[.gz]`` or ``<id>-seg.nii[.gz]``; predictions named
the same way or ``<id>.nii[.gz]``; one folder level, no recursion), writes one CSV row per case and prints a JSON
object with the per-case rows and the mean and median of every metric over the scored cases.

A case whose prediction is missing, or unreadable, or on another grid than its ground truth, is scored as an
empty prediction, as the BraTS challenge scores it (Dice 0 and HD95 373.13 mm for every region the ground truth
holds); it is listed under ``errors``, counted in ``n_errors``, and reported on stderr. A case whose ground truth
cannot be read is listed and counted but not scored. The exit status is then 1 (0 when every case was scored
from its own prediction). Bad arguments or a bad pair in single mode exit with status 2.
"""

from __future__ import annotations

import argparse
import csv
import re
from pathlib import Path
from typing import Any

import numpy as np

from core.analysis.lesionwise import LESION_MISS_HD95_MM, LESION_RULES, flat_lesionwise, lesionwise_scores
from core.analysis.metrics import REGION_ORDER, score_case
from core.cli.common import print_error, print_json
from core.data.cases import SEG_KEY, check_same_grid, normalise_labels, parse_brats_name
from core.data.io import Volume, load_volume
from core.errors import BratsViewerError, DataFolderError

_NIFTI_NAME = re.compile(r"^(?P<id>.+?)\.nii(?:\.gz)?$", re.IGNORECASE)
EMPTY_PREDICTION_NOTE = "scored as an empty prediction (BraTS rule)"


def add_parser(subparsers: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    parser = subparsers.add_parser(
        "evaluate",
        help="score predicted segmentations against ground truth (Dice, HD95, ...)",
        description=("Score predictions against ground truth: BraTS regions WT/TC/ET and per-label Dice. "
                     "Give --pred and --gt for one pair, or --pred-dir and --gt-dir for a folder of cases. "
                     "Folder mode exits with 1 when a case had to be scored as an empty prediction."),
    )
    parser.add_argument("--pred", type=Path, help="predicted label map (NIfTI)")
    parser.add_argument("--gt", type=Path, help="ground-truth label map (NIfTI)")
    parser.add_argument("--pred-dir", type=Path, help="folder of predictions (<id>_seg.nii.gz or <id>.nii.gz)")
    parser.add_argument("--gt-dir", type=Path, help="folder of ground truth (<id>_seg.nii.gz)")
    parser.add_argument("--csv", type=Path, help="folder mode: write one row per case to this CSV file")
    parser.add_argument("--lesionwise", action="store_true",
                        help="add BraTS lesion-wise Dice and HD95 per region (panoptica, brats-evaluation's glioma "
                             "configuration; about 1 s per case)")
    parser.add_argument("--lesion-rule", choices=LESION_RULES, default=None,
                        help="with --lesionwise: panoptica-gli (brats-evaluation's glioma configuration, the default) "
                             "or brats2023 (the BraTS 2023 script's glioma rule: nearby reference lesions merged, "
                             "reference lesions of at most 50 mm^3 left out)")
    parser.set_defaults(run=run)


# --------------------------------------------------------------------------------------------- loading ---

def _load_labels(path: Path) -> Volume:
    """Load a label map (RAS grid) with labels mapped to 0/1/2/4; errors name the file."""
    try:
        vol = load_volume(path)
        return normalise_labels(vol)[0]
    except BratsViewerError as err:
        message = str(err)
        if path.name not in message:
            message = f"{path.name}: {message}"
        raise type(err)(message) from err


def check_same_geometry(pred: Volume, gt: Volume) -> None:
    """Raise CaseError unless both files were stored with the same shape and affine (within 1e-3 mm)."""
    check_same_grid(pred, gt, f"the prediction {pred.source_name}", "the ground truth")


def load_pair(pred_path: Path, gt_path: Path) -> tuple[Volume, Volume]:
    """Load a prediction and its ground truth, check they share a grid, map BraTS 2023 labels.

    Returns:
        (prediction, ground truth), both on the RAS grid with labels 0/1/2/4 (uint8).

    Raises:
        BratsViewerError: a file is unreadable or not a label map, or the grids differ.
    """
    gt = _load_labels(gt_path)
    pred = _load_labels(pred_path)
    check_same_geometry(pred, gt)
    return pred, gt


LESIONWISE_NOTE = (f"dice and hd95_mm: mean over TP + FN + FP lesions, a missed or spurious lesion counting Dice 0 "
                   f"and HD95 {LESION_MISS_HD95_MM:g} mm (1 and 0 when neither side has a lesion); matched_dice and "
                   "matched_hd95_mm: mean over matched lesions only (brats-evaluation's lesionwise_dsc_mean and "
                   "lesionwise_hd95_mean); null: undefined there (no lesion, or none matched)")
LESIONWISE_NOTE_BRATS2023 = (
    "BraTS 2023 glioma rule: reference lesions within 3 dilations (18-connected) of each other merged, reference "
    "lesions of at most 50 mm^3 left out; a reference lesion is scored against every predicted lesion within its "
    "3-fold dilation; dice and hd95_mm: sum over the kept reference lesions / (kept reference lesions + false "
    f"positives), a missed lesion or a false positive counting Dice 0 and HD95 {LESION_MISS_HD95_MM:g} mm (1 and 0 "
    "when there is none of either); tp, fn: kept reference lesions hit or missed; fp: predicted lesions near no "
    "reference lesion; matched_*: mean over the hit reference lesions; null: undefined there")


def lesionwise_note(rule: str) -> str:
    """The JSON note on the lesion-wise figures of ``rule`` (one of ``LESION_RULES``)."""
    return LESIONWISE_NOTE_BRATS2023 if rule == "brats2023" else LESIONWISE_NOTE


def _case_json(pred: Volume, gt: Volume, lesionwise: bool = False, rule: str = LESION_RULES[0]) -> dict[str, Any]:
    score = score_case(pred.data, gt.data, gt.spacing_mm, voxel_volume_ml=gt.voxel_volume_ml)
    out = {
        "pred": pred.source_name,
        "gt": gt.source_name,
        "spacing_mm": list(gt.spacing_mm),
        "regions": {name: score.regions[name].to_dict() for name in REGION_ORDER},
        "per_label_dice": dict(score.per_label_dice),
    }
    if lesionwise:
        lw = lesionwise_scores(pred.data, gt.data, gt.spacing_mm, rule=rule)
        out["lesion_rule"] = rule
        out["lesionwise"] = {name: lw[name].to_dict() for name in REGION_ORDER}
        out["lesionwise_note"] = lesionwise_note(rule)
    return out


# ------------------------------------------------------------------------------------------- pairing ---

def _gt_files(folder: Path) -> dict[str, Path]:
    found: dict[str, Path] = {}
    for path in sorted(folder.iterdir()):
        parsed = parse_brats_name(path.name)
        if path.is_file() and parsed and parsed[1] == SEG_KEY:
            if parsed[0] in found:
                raise DataFolderError(f"expected one ground truth per case, got {found[parsed[0]].name} and {path.name}")
            found[parsed[0]] = path
    return found


def _pred_files(folder: Path) -> dict[str, Path]:
    found: dict[str, Path] = {}
    for path in sorted(folder.iterdir()):
        if not path.is_file():
            continue
        parsed = parse_brats_name(path.name)
        if parsed:
            if parsed[1] != SEG_KEY:
                continue  # an image, not a prediction
            case_id = parsed[0]
        else:
            m = _NIFTI_NAME.match(path.name)
            if not m:
                continue
            case_id = m.group("id")
        if case_id in found:
            raise DataFolderError(f"expected one prediction per case, got {found[case_id].name} and {path.name}")
        found[case_id] = path
    return found


def _require_dir(path: Path, what: str) -> None:
    if not path.is_dir():
        raise DataFolderError(f"expected {what} to be a folder, got {str(path)!r}")


# --------------------------------------------------------------------------------------------- folder ---

def evaluate_folders(pred_dir: Path, gt_dir: Path, lesionwise: bool = False,
                     rule: str = LESION_RULES[0]) -> dict[str, Any]:
    """Score every ground-truth case of ``gt_dir`` against its prediction in ``pred_dir``.

    Args:
        lesionwise: also the lesion-wise figures of each row (``<REGION>_lw_<field>``, ``flat_lesionwise``).
        rule: the lesion-wise rule (``LESION_RULES``; ``lesionwise_scores``).

    Returns:
        JSON-able dict: n_cases, n_scored, n_errors, errors (one line each), unmatched_predictions, cases (rows:
        case_id, status, error, pred, gt and the flat metrics of ``CaseScore.to_dict``), summary (mean, median
        over the cases where a figure is defined; null when it is defined for none).

    Raises:
        DataFolderError: a folder is missing, holds no ground truth, or two files claim one case.
    """
    _require_dir(gt_dir, "--gt-dir")
    _require_dir(pred_dir, "--pred-dir")
    gts = _gt_files(gt_dir)
    if not gts:
        raise DataFolderError(f"expected ground-truth files named <id>_seg.nii.gz in {gt_dir.name!r}, found none")
    preds = _pred_files(pred_dir)
    rows: list[dict[str, Any]] = []
    errors: list[str] = []
    for case_id, gt_path in gts.items():
        row: dict[str, Any] = {"case_id": case_id, "status": "ok", "error": "", "pred": "", "gt": gt_path.name}
        try:
            gt = _load_labels(gt_path)
        except BratsViewerError as err:
            row.update(status="error", error=f"ground truth unreadable, case not scored: {err}")
            errors.append(f"{case_id}: {row['error']}")
            rows.append(row)
            continue
        pred_labels = None
        pred_path = preds.get(case_id)
        if pred_path is None:
            row.update(status="missing_prediction", error=f"missing prediction; {EMPTY_PREDICTION_NOTE}")
        else:
            row["pred"] = pred_path.name
            try:
                pred = _load_labels(pred_path)
                check_same_geometry(pred, gt)
                pred_labels = pred.data
            except BratsViewerError as err:
                row.update(status="invalid_prediction", error=f"{err}; {EMPTY_PREDICTION_NOTE}")
        if pred_labels is None:
            errors.append(f"{case_id}: {row['error']}")
            pred_labels = np.zeros(gt.shape, dtype=np.uint8)
        row.update(score_case(pred_labels, gt.data, gt.spacing_mm, voxel_volume_ml=gt.voxel_volume_ml).to_dict())
        if lesionwise:
            row.update(flat_lesionwise(lesionwise_scores(pred_labels, gt.data, gt.spacing_mm, rule=rule)))
        rows.append(row)
    scored = [r for r in rows if r["status"] != "error"]
    metric_keys = [k for k in (scored[0] if scored else {}) if k not in ("case_id", "status", "error", "pred", "gt")]
    summary: dict[str, dict[str, float | None]] = {"mean": {}, "median": {}}
    for key in metric_keys:
        values = np.array([np.nan if r[key] is None else r[key] for r in scored], dtype=np.float64)
        values = values[np.isfinite(values)]  # lesion-wise figures may be undefined (None) for some cases
        summary["mean"][key] = float(values.mean()) if values.size else None
        summary["median"][key] = float(np.median(values)) if values.size else None
    out: dict[str, Any] = {
        "n_cases": len(rows),
        "n_scored": len(scored),
        "n_errors": len(errors),
        "errors": errors,
        "unmatched_predictions": sorted(p.name for cid, p in preds.items() if cid not in gts),
        "note": "a missing or unusable prediction is " + EMPTY_PREDICTION_NOTE + " and counted in n_errors",
        "cases": rows,
        "summary": summary,
    }
    if lesionwise:
        out["lesion_rule"] = rule
    return out


def write_csv(rows: list[dict[str, Any]], path: Path) -> None:
    """One row per case; columns case_id, status, error, pred, gt, then the metrics (blank when not scored)."""
    columns: list[str] = []
    for row in rows:
        columns.extend(k for k in row if k not in columns)
    with open(path, "w", newline="", encoding="utf-8") as fh:
        writer = csv.DictWriter(fh, fieldnames=columns, restval="")
        writer.writeheader()
        writer.writerows(rows)


# ------------------------------------------------------------------------------------------------ run ---

def run(args: argparse.Namespace) -> int:
    single = args.pred is not None or args.gt is not None
    folder = args.pred_dir is not None or args.gt_dir is not None
    if single == folder or (single and (args.pred is None or args.gt is None)) or (
            folder and (args.pred_dir is None or args.gt_dir is None)):
        raise BratsViewerError("expected either --pred and --gt, or --pred-dir and --gt-dir")
    if args.lesion_rule is not None and not args.lesionwise:
        raise BratsViewerError("expected --lesion-rule only with --lesionwise")
    rule = args.lesion_rule or LESION_RULES[0]
    if single:
        if args.csv is not None:
            raise BratsViewerError("expected --csv only with --pred-dir and --gt-dir")
        pred, gt = load_pair(args.pred, args.gt)
        print_json(_case_json(pred, gt, args.lesionwise, rule))
        return 0
    result = evaluate_folders(args.pred_dir, args.gt_dir, args.lesionwise, rule)
    if args.csv is not None:
        write_csv(result["cases"], args.csv)
        result["csv"] = str(args.csv)
    print_json(result)
    for line in result["errors"]:
        print_error(line)
    return 1 if result["errors"] else 0
