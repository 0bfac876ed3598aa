"""Compare ``core.analysis.lesionwise`` with the official BraTS evaluator (brats-evaluation, glioma configuration).

brats-evaluation (AGPL-3.0) is never a dependency of this project and never imported by core/ or pages/; this
script installs nothing. It pins panoptica's own dependency caps (numpy < 2.3, pandas < 3, ...), below this
project's pins, so put it in a throwaway virtual environment and run the check from there::

    python3 -m venv /tmp/be && /tmp/be/bin/pip install brats-evaluation==0.0.10
    PYTHONPATH=. /tmp/be/bin/python benchmarks/check_lesionwise.py [--data ../shared/data/brats/train] [--cases 3]

For each labelled case (``<case>/<case>_seg.nii.gz``) it writes the expert labels and perturbed copies as NIfTI
files in the BraTS 2023 convention (ET = 3, which the official glioma configuration expects: its label 4 is the
resection cavity): identical, eroded (whole tumour eroded twice), specks (small spurious lesions of ED and ET
away from the tumour), a missing lesion (the smallest whole-tumour lesion removed, or the largest enhancing
one when the tumour is one piece), shifted (by 3, -2, 1 voxels) and the eroded copy again with 2.5 mm slices.
Each pair goes through the official pipeline (``evaluate_single_exam`` with ``config_path("gli")``, then
``parse_seg_results``) and through this project's ``python -m core evaluate --lesionwise`` path (loading with
RAS reorientation and label mapping, then ``lesionwise_scores``).

Printed: both tables (WT, TC, ET per pair), then the largest absolute difference of each figure. The official
``lesionwise_dsc_mean`` / ``lesionwise_hd95_mean`` are the means over matched lesions (``matched_dice`` /
``matched_hd95_mm`` here); the penalised lesion-wise Dice and HD95 (a missed or spurious lesion counting 0 and
374 mm) are derived from the official per-lesion output (``reference_instances`` and the false positives) for
comparison with ``dice`` / ``hd95_mm`` here.

Anisotropic voxels: panoptica 2.1.7 reads a NIfTI path through SimpleITK (tried before nibabel), whose array
is (z, y, x) while ``GetSpacing()`` is (x, y, z), and uses the two unreordered: the slice thickness lands on the
wrong axis and the official HD95 is off. Such pairs are therefore also scored here with the spacing reversed on
the stored array (as the official evaluator reads them); that must match exactly, and the difference from this
project's figure (spacing on the right axes) is printed apart. BraTS images are 1 mm isotropic: unaffected.

Exit status 0 when every compared difference is below 1e-9, else 1; 2 when brats-evaluation is not importable
or no case is found.
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import json
import math
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402

REGIONS = ("WT", "TC", "ET")
TOLERANCE = 1e-9
# LesionScore fields compared (the official side computed under the same names in ``official``).
FIGURES = ("n_ref", "n_pred", "tp", "fp", "fn", "dice", "hd95_mm", "matched_dice", "matched_hd95_mm", "global_dice")


def perturbations(gt: np.ndarray, rng: np.random.Generator) -> dict[str, np.ndarray]:
    """Perturbed copies of an on-disk label map (0/1/2/3 or 0/1/2/4, any ET value kept as it is)."""
    from scipy import ndimage

    from core.analysis.metrics import label_components

    et_value = 3 if (gt == 3).any() else 4
    wt = gt > 0
    out = {"identical": gt.copy()}
    eroded = gt.copy()
    eroded[~ndimage.binary_erosion(wt, iterations=2)] = 0
    out["eroded"] = eroded
    specks = gt.copy()
    near = ndimage.binary_dilation(wt, iterations=10)  # specks at least 10 voxels away from the tumour
    placed: list[tuple[int, int, int]] = []
    while len(placed) < 6:
        x, y, z = (int(rng.integers(2, n - 3)) for n in gt.shape)
        if near[x, y, z] or any(max(abs(x - a), abs(y - b), abs(z - c)) < 4 for a, b, c in placed):
            continue
        placed.append((x, y, z))
    for k, (x, y, z) in enumerate(placed):
        if k < 3:
            specks[x, y, z] = 2  # one-voxel ED speck: a spurious WT lesion
        else:
            specks[x:x + 2, y:y + 2, z:z + 2] = et_value  # 2 x 2 x 2 ET: spurious WT, TC and ET lesions
    out["specks"] = specks
    missing = gt.copy()
    comps, n = label_components(wt)
    if n > 1:
        sizes = np.bincount(comps.ravel())[1:]
        missing[comps == 1 + int(np.argmin(sizes))] = 0
    else:
        comps, n = label_components(gt == et_value)
        if n:
            sizes = np.bincount(comps.ravel())[1:]
            missing[comps == 1 + int(np.argmax(sizes))] = 1  # the enhancing lesion read as necrosis: ET missed
    out["missing lesion"] = missing
    out["shifted"] = np.roll(gt, (3, -2, 1), axis=(0, 1, 2))
    return out


def official(pred_path: Path, gt_path: Path, name: str, work: Path) -> dict[str, dict[str, float]]:
    """The official figures of one pair: evaluate_single_exam + parse_seg_results (glioma configuration)."""
    from brats_evaluation import config_path, evaluate_single_exam, parse_seg_results
    from panoptica import Panoptica_Evaluator

    with contextlib.redirect_stdout(sys.stderr):  # its progress and tables: stdout is for the comparison
        evaluator = Panoptica_Evaluator.load_from_config(str(config_path("gli")))
        result = evaluate_single_exam(str(pred_path), str(gt_path), name, evaluator)
        if "error" in result:
            raise RuntimeError(f"official evaluator failed on {name}: {result['error']}")
        (work / "summary.json").write_text(json.dumps({"metrics": [result], "missings": []}, default=float))
        parse_seg_results(str(work / "summary.json"), str(work / "parsed.csv"))
    with open(work / "parsed.csv", newline="") as fh:
        row = next(r for r in csv.DictReader(fh) if r["subject_id"] == name)
    out = {}
    for region in REGIONS:
        key = region.lower()
        res = result[key]
        matched = [r for r in res.get("reference_instances", []) if r.get("is_matched") == 1]
        tp, fp, fn = int(res["tp"]), int(res["fp"]), int(res["fn"])
        n = tp + fp + fn
        dsc = [float(r["sq_dsc"]) for r in matched]
        hd = [float(r["sq_hd95"]) for r in matched]
        out[region] = {
            "n_ref": int(res["n_ref_instances"]), "n_pred": int(res["n_pred_instances"]), "tp": tp, "fp": fp, "fn": fn,
            "dice": sum(dsc) / n if n else 1.0,
            "hd95_mm": (sum(hd) + 374.0 * (fp + fn)) / n if n else 0.0,
            "matched_dice": float(row[f"lesionwise_dsc_mean_{key}"] or "nan"),
            "matched_hd95_mm": float(row[f"lesionwise_hd95_mean_{key}"] or "nan"),
            "global_dice": float(row[f"global_dsc_{key}"] or "nan"),
        }
    return out


def ours(pred_path: Path, gt_path: Path) -> dict[str, dict[str, float]]:
    """This project's figures of one pair, loaded as ``python -m core evaluate`` loads them."""
    from core.analysis.lesionwise import lesionwise_scores
    from core.cli.evaluate import load_pair

    pred, gt = load_pair(pred_path, gt_path)
    scores = lesionwise_scores(pred.data, gt.data, gt.spacing_mm)
    return {r: {f: float(getattr(scores[r], f)) for f in FIGURES} for r in REGIONS}


def difference(a: float, b: float) -> float:
    """|a - b|, 0 when both are NaN or the same infinity, inf when only one is."""
    if (math.isnan(a) and math.isnan(b)) or a == b:
        return 0.0
    if not (math.isfinite(a) and math.isfinite(b)):
        return math.inf
    return abs(a - b)


def as_official_reads(pred_path: Path, gt_path: Path) -> dict[str, dict[str, float]]:
    """This project's figures on the stored arrays with the spacing reversed, as panoptica pairs SimpleITK's
    (z, y, x) array with its (x, y, z) spacing (the module notes)."""
    import nibabel as nib

    from core.analysis.lesionwise import lesionwise_scores

    def read(path: Path) -> np.ndarray:
        arr = np.asarray(nib.load(str(path)).dataobj).astype(np.uint8)
        return np.where(arr == 3, 4, arr).astype(np.uint8)

    zooms = tuple(float(z) for z in nib.load(str(gt_path)).header.get_zooms()[:3])
    scores = lesionwise_scores(read(pred_path), read(gt_path), zooms[::-1])
    return {r: {f: float(getattr(scores[r], f)) for f in FIGURES} for r in REGIONS}


def table(rows: list[dict], side: str, title: str | None = None) -> str:
    head = ["case", "pair", "region", "ref", "pred", "TP", "FP", "FN", "LW Dice", "LW HD95", "matched Dice",
            "matched HD95", "global Dice"]
    lines = [f"**{title or side}**", "", "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        if side not in r:
            continue
        s = r[side]
        lines.append(f"| {r['case']} | {r['pair']} | {r['region']} | {s['n_ref']:.0f} | {s['n_pred']:.0f} | "
                     f"{s['tp']:.0f} | {s['fp']:.0f} | {s['fn']:.0f} | {s['dice']:.6f} | {s['hd95_mm']:.4f} | "
                     f"{s['matched_dice']:.6f} | {s['matched_hd95_mm']:.4f} | {s['global_dice']:.6f} |")
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data" / "brats" / "train")
    parser.add_argument("--cases", type=int, default=3, help="number of cases (sorted by name; 0: all)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    try:
        import brats_evaluation  # noqa: F401
    except ImportError:
        print("error: brats-evaluation is not importable; run this from a separate venv (see the module notes)",
              file=sys.stderr)
        return 2
    import nibabel as nib

    seg_paths = sorted(p for p in args.data.glob("*/*_seg.nii.gz"))
    if args.cases:
        seg_paths = seg_paths[:args.cases]
    if not seg_paths:
        print(f"error: no <case>/<case>_seg.nii.gz under {args.data}", file=sys.stderr)
        return 2
    rng = np.random.default_rng(args.seed)
    rows: list[dict] = []
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        for seg_path in seg_paths:
            case = seg_path.name[: -len("_seg.nii.gz")]
            img = nib.load(str(seg_path))
            gt = np.asarray(img.dataobj).astype(np.uint8)
            gt[gt == 4] = 3  # BraTS 2023 convention, as the official glioma configuration reads it
            pairs = {name: (arr, img.affine) for name, arr in perturbations(gt, rng).items()}
            pairs["eroded, 2.5 mm slices"] = (pairs["eroded"][0], img.affine @ np.diag([1.0, 1.0, 2.5, 1.0]))
            for pair, (pred, affine) in pairs.items():
                gt_path, pred_path = work / f"{case}-00000-gt.nii.gz", work / f"{case}-00000-pred.nii.gz"
                nib.save(nib.Nifti1Image(gt, affine), str(gt_path))
                nib.save(nib.Nifti1Image(pred.astype(np.uint8), affine), str(pred_path))
                off = official(pred_path, gt_path, f"{case} {pair}", work)
                mine = ours(pred_path, gt_path)
                aniso = len({round(float(z), 6) for z in nib.load(str(gt_path)).header.get_zooms()[:3]}) > 1
                sitk = as_official_reads(pred_path, gt_path) if aniso else None
                rows += [{"case": case, "pair": pair, "region": r, "official": off[r], "ours": mine[r],
                          **({"sitk": sitk[r]} if sitk else {})} for r in REGIONS]
                print(f"{case} {pair}: done", file=sys.stderr, flush=True)
    print(table(rows, "official"), table(rows, "ours"),
          table(rows, "sitk", "ours, anisotropic pairs, spacing reversed as the official evaluator reads it"),
          "", sep="\n\n")
    iso = [r for r in rows if "sitk" not in r]
    aniso_rows = [r for r in rows if "sitk" in r]
    compared = [(r["official"], r["ours"]) for r in iso] + [(r["official"], r["sitk"]) for r in aniso_rows]
    worst = {f: max(difference(a[f], b[f]) for a, b in compared) for f in FIGURES}
    print(f"max |official - ours| over {len(iso)} isotropic region pairs and {len(aniso_rows)} anisotropic ones "
          "(those with the spacing as the official evaluator reads it): "
          + ", ".join(f"{f} {v:.3g}" for f, v in worst.items()))
    overall = max(worst.values())
    print(f"overall max difference: {overall:.3g}")
    if aniso_rows:
        apart = {f: max(difference(r["official"][f], r["ours"][f]) for r in aniso_rows) for f in FIGURES}
        print("anisotropic pairs, official vs this project (spacing on the right axes): "
              + ", ".join(f"{f} {v:.3g}" for f, v in apart.items()))
    return 0 if overall < TOLERANCE else 1


if __name__ == "__main__":
    sys.exit(main())
