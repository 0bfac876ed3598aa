"""Choose how the 2-D and 3-D networks are combined, and the lesion post-processing, on the cross-validation.

Usage:
    python benchmarks/fusion_cv.py [--weights 0 0.3 0.5 0.7 1] [--variants "decoding=regions" ...]

Needs the stored 2-D fold predictions of ``accuracy.py --configs full_noctx --stages train predict`` and the
composed 3-D fold models of ``accuracy.py --configs full_noctx_3d --stages train``. Stores each 3-D fold model's
region probabilities on the grid (``work/cv/full_noctx_3d/preds3d``), then for each weight w averages the regions
(w x 3-D + (1 - w) x 2-D, on the grid: the product averages on the network's frame before resizing, so its
figures come from ``accuracy.py --configs full_noctx_3d``), decodes them as BraTS regions, applies each
post-processing variant and prints global and lesion-wise (BraTS 2023: every missed or false lesion counts Dice 0)
Dice means per group. A choice made here is in-sample for the post-processing thresholds; the model card says so.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

import cv2  # noqa: E402
import numpy as np  # noqa: E402
from accuracy import REGIONS, TCIA, _refs, cv_dir, evaluations, load_prediction  # noqa: E402

from core.engine.postprocess import decode_labels, parse_variant, refine  # noqa: E402
from core.engine.volume3d import classes_from_regions, regions_from_classes, to_slices, volume_input  # noqa: E402


def regions3d_on_grid(config: str, case_id: str, fold: int, data_root: Path) -> np.ndarray:
    """(X, Y, Z, 3) float32 region probabilities of the fold's 3-D network on the case's grid (stored)."""
    path = cv_dir(config) / "preds3d" / f"{case_id}__fold{fold}.npz"
    if path.is_file():
        with np.load(path) as f:
            return f["regions"].astype(np.float32) / 255.0
    from core.data.cases import load_case
    from core.engine.model import load_model
    from core.engine.preprocess import prepare_case

    loaded = load_model(cv_dir(config) / f"fold{fold}")
    case = load_case(_refs(data_root)[case_id])
    prep = prepare_case(case, loaded.spec)
    vol_in, geom = volume_input(prep.slices, prep.brain_z)
    r = to_slices(loaded.volume.regions(vol_in), geom, prep.grid_shape[2])  # (Z, S, S, 3)
    x0, x1, y0, y1 = prep.box
    out = np.zeros((*prep.grid_shape, 3), dtype=np.float32)
    for z in np.flatnonzero(prep.brain_z):
        out[x0:x1, y0:y1, z] = cv2.resize(r[z], (y1 - y0, x1 - x0), interpolation=cv2.INTER_LINEAR)
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(path, regions=np.rint(out * 255).astype(np.uint8))
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--weights", type=float, nargs="+", default=[0.0, 0.3, 0.5, 0.7, 1.0])
    parser.add_argument("--variants", nargs="+", default=["decoding=regions"])
    parser.add_argument("--config2d", default="full_noctx")
    parser.add_argument("--config3d", default="full_noctx_3d")
    parser.add_argument("--lesionwise", action="store_true", help="also lesion-wise Dice (panoptica, ~1 s a case)")
    parser.add_argument("--out", type=Path, default=None, help="write all rows as JSON here")
    parser.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data")
    args = parser.parse_args()
    from core.analysis.metrics import score_case
    from core.data.cases import load_case

    refs = _refs(args.data)
    rows = []
    gts: dict[str, tuple[np.ndarray, tuple[float, float, float]]] = {}
    for case_id, k in evaluations(args.data):
        if case_id not in gts:
            case = load_case(refs[case_id])
            gts[case_id] = (np.asarray(case.seg.data), case.spacing_mm)
        gt, spacing = gts[case_id]
        p2 = load_prediction(args.config2d, case_id, k)
        r2 = regions_from_classes(p2)
        r3 = regions3d_on_grid(args.config3d, case_id, k, args.data)
        for w in args.weights:
            probs = classes_from_regions((1.0 - w) * r2 + w * r3)
            for variant in args.variants:
                spec = parse_variant(variant)
                labels = refine(decode_labels(probs, "regions"), spacing, spec, probs)
                s = score_case(labels, gt, spacing)
                row = {"case_id": case_id, "fold": k, "weight": w, "variant": variant,
                       **{f"dice_{r}": s.regions[r].dice for r in REGIONS},
                       **{f"hd95_{r}_mm": s.regions[r].hd95_mm for r in REGIONS}}
                if args.lesionwise:
                    from core.analysis.lesionwise import lesionwise_scores

                    lw = lesionwise_scores(labels, gt, spacing)
                    row.update({f"lw_dice_{r}": lw[r].dice for r in REGIONS})
                rows.append(row)
        print(f"{case_id} fold {k} done", file=sys.stderr, flush=True)
    groups = (("12 CV cases", lambda r: r["case_id"] != TCIA), ("TCIA x3", lambda r: r["case_id"] == TCIA))
    keys = [f"dice_{r}" for r in REGIONS] + ([f"lw_dice_{r}" for r in REGIONS] if args.lesionwise else [])
    print("| weight 3-D | variant | group | " + " | ".join(keys) + " | max HD95 WT |")
    print("|---|---|---|" + "---|" * (len(keys) + 1))
    for w in args.weights:
        for variant in args.variants:
            for gname, sel in groups:
                sub = [r for r in rows if r["weight"] == w and r["variant"] == variant and sel(r)]
                if sub:
                    print(f"| {w:g} | {variant} | {gname} | "
                          + " | ".join(f"{np.mean([r[k] for r in sub]):.3f}" for k in keys)
                          + f" | {max(r['hd95_WT_mm'] for r in sub):.1f} |", flush=True)
    if args.out:
        args.out.write_text(json.dumps(rows, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
