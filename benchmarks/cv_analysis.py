"""Choose post-processing and score the quality flag on the cross-validation predictions (no network runs).

Usage:
    python benchmarks/cv_analysis.py --config full [--postprocess-grid] [--quality] [--postprocess VARIANT]

Reads the probabilities that ``benchmarks/accuracy.py --stages predict`` stored for every (case, fold model).

``--postprocess-grid``: Dice (WT/TC/ET) of every post-processing variant of the grid, as the change of each
fold's mean against plain argmax; a variant is admissible when no fold's mean of any region drops by more than
0.001, and the admissible variant with the best overall mean Dice is printed last.

``--quality``: the quality flag's measures per (case, fold model) after ``--postprocess`` with the thresholds
of ``core.engine.quality.QualityThresholds`` (the ones shipped), against WT Dice: good predictions (WT Dice >= 0.80)
should be "ok", bad ones (WT Dice < 0.60) "review". Prints the table, hits and false alarms.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import sys
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import numpy as np  # noqa: E402
from accuracy import CONFIGS, FOLDS, TCIA, cv_dir, evaluations, load_prediction  # noqa: E402

from core.config import REGIONS  # noqa: E402
from core.data.cases import discover_cases, load_case  # noqa: E402
from core.engine.postprocess import PostprocessSpec, apply, parse_variant  # noqa: E402

GOOD_WT, BAD_WT = 0.80, 0.60


def region_dice(pred: np.ndarray, gt: np.ndarray) -> dict[str, float]:
    """BraTS region Dice (empty vs empty = 1)."""
    out = {}
    for name, labels in REGIONS.items():
        p, g = np.isin(pred, labels), np.isin(gt, labels)
        denom = int(p.sum()) + int(g.sum())
        out[name] = 1.0 if denom == 0 else 2.0 * int(np.count_nonzero(p & g)) / denom
    return out


def grid() -> list[PostprocessSpec]:
    specs = []
    for decoding, (island, near), et in itertools.product(
            ("argmax", "regions"),
            ((0.0, 0.0), (0.5, 10.0), (1.0, 20.0), (2.0, 20.0), (5.0, 30.0), (10.0, 30.0), (5.0, 0.0), (20.0, 0.0),
             (1e6, 0.0)),
            (0.0, 0.1, 0.5)):
        specs.append(PostprocessSpec(decoding, island, near, et))
    return specs


def load_all(config: str, data_root: Path) -> list[tuple[str, int, np.ndarray, np.ndarray, tuple, object]]:
    refs = {r.case_id: r for r in discover_cases(data_root / "brats") if r.has_seg}
    cases: dict[str, object] = {}
    items = []
    for case_id, k in evaluations(data_root):
        if case_id not in cases:
            cases[case_id] = load_case(refs[case_id])
        case = cases[case_id]
        items.append((case_id, k, load_prediction(config, case_id, k), np.asarray(case.seg.data),  # type: ignore[attr-defined]
                      case.spacing_mm, case))  # type: ignore[attr-defined]
    return items


def _variants(probs: np.ndarray, spacing: tuple, specs: list[PostprocessSpec]) -> dict[PostprocessSpec, np.ndarray]:
    """Labels of every spec (``core.engine.postprocess``), decoding each way once."""
    from core.engine.postprocess import decode_labels, refine

    decoded = {d: decode_labels(probs, d) for d in {s.decoding for s in specs}}
    return {spec: refine(decoded[spec.decoding], spacing, spec) for spec in specs}


def postprocess_grid(config: str, data_root: Path) -> PostprocessSpec:
    items = load_all(config, data_root)
    specs = grid()
    from core.analysis.metrics import hd95_mm

    results: dict[PostprocessSpec, list[tuple[str, int, dict[str, float]]]] = {s: [] for s in specs}
    hd95: dict[PostprocessSpec, list[float]] = {s: [] for s in specs if s.min_et_ml == 0}  # WT, CV cases only
    for cid, k, p, gt, sp, _ in items:
        labs = _variants(p, sp, specs)
        for spec in specs:
            results[spec].append((cid, k, region_dice(labs[spec], gt)))
            if spec in hd95 and cid != TCIA:
                hd95[spec].append(hd95_mm(labs[spec] > 0, gt > 0, sp))
    base = results[PostprocessSpec()]

    def fold_means(rows: list[tuple[str, int, dict[str, float]]]) -> np.ndarray:
        # (fold, region) means over each fold's own cases (TCIA excluded: it is not a CV case)
        return np.array([[np.mean([d[r] for cid, k, d in rows if k == f and cid != TCIA]) for r in REGIONS]
                         for f in range(len(FOLDS))])

    b = fold_means(base)
    print("| post-processing | mean Dice WT/TC/ET (CV cases) | worst fold change | WT HD95 mean / max (mm) | "
          "TCIA WT/TC/ET | admissible |")
    print("|---|---|---|---|---|---|")
    best, best_score = PostprocessSpec(), float(np.mean(b))
    for spec, rows in results.items():
        fm = fold_means(rows)
        worst = float((fm - b).min())
        mean = [np.mean([d[r] for cid, _, d in rows if cid != TCIA]) for r in REGIONS]
        tcia = [np.mean([d[r] for cid, _, d in rows if cid == TCIA]) for r in REGIONS]
        ok = worst >= -0.001
        hd = f"{np.mean(hd95[spec]):.1f} / {np.max(hd95[spec]):.1f}" if spec in hd95 else "-"
        print(f"| {spec.label} | " + "/".join(f"{m:.3f}" for m in mean) + f" | {worst:+.3f} | {hd} | "
              + "/".join(f"{m:.3f}" for m in tcia) + f" | {'yes' if ok else 'no'} |")
        # "largest component only" is shown but never chosen: it deletes a second lesion of any size, which the
        # CV cases (one lesion each) cannot penalise
        if ok and spec.min_island_ml < 1e6 and float(np.mean(fm)) > best_score + 1e-6:
            best, best_score = spec, float(np.mean(fm))
    print(f"\nchosen: {best.label} (mean fold Dice {best_score:.4f} vs argmax {float(np.mean(b)):.4f}); "
          f"as a variant: decoding={best.decoding},min_island_ml={best.min_island_ml:g},"
          f"keep_within_mm={best.keep_within_mm:g},min_et_ml={best.min_et_ml:g}")
    return best


def quality_report(config: str, data_root: Path, variant: str) -> None:
    from core.engine.model import load_model
    from core.engine.preprocess import prepare_case
    from core.engine.quality import QualityModel, QualityThresholds, flag, intensity_quantiles, measure, reference_from

    spec = parse_variant(variant)
    items = load_all(config, data_root)
    models = {}
    print("| case | fold | WT Dice | brain mL | intensity shift | WT mL | symmetry | islands | mean entropy | flag | reasons |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    hits = misses = false_alarms = good_ok = mid_review = n_mid = 0
    for cid, k, probs, gt, spacing, case in items:
        if k not in models:
            loaded = load_model(cv_dir(config) / f"fold{k}")
            qm0 = QualityModel.load(cv_dir(config) / f"fold{k}", trained_for_missing=loaded.spec.modality_dropout > 0)
            if not qm0.reference_quantiles:  # a fold trained before quality.json existed: from its slice cache
                split = json.loads((cv_dir(config) / f"fold{k}" / "split.json").read_text())
                xs = [next((cv_dir(config) / "cache").glob(f"{c}-*_x.npy")) for c in split["train"]]
                ref = reference_from([intensity_quantiles(np.load(x, mmap_mode="r")) for x in xs], loaded.spec.channels)
                qm0 = QualityModel(qm0.thresholds, ref, qm0.trained_for_missing)
            models[k] = (loaded, qm0)
        loaded, qm = models[k]
        qm = QualityModel(QualityThresholds(), qm.reference_quantiles, qm.trained_for_missing)  # shipped thresholds
        labels = apply(probs, spacing, spec)
        wt = region_dice(labels, gt)["WT"]
        prep = prepare_case(case, loaded.spec)  # type: ignore[arg-type]
        brain = np.zeros(gt.shape, bool)
        for vol in case.images.values():  # type: ignore[attr-defined]
            brain |= np.asarray(vol.data) != 0
        m = measure(labels, probs, brain, spacing, intensity_quantiles(prep.slices), qm.reference_quantiles,
                    loaded.spec.channels, qm.thresholds.island_ml)
        f = flag(m, qm, prep.missing)
        review = f.status == "review"
        if wt >= GOOD_WT:
            good_ok += not review
            false_alarms += review
        elif wt < BAD_WT:
            hits += review
            misses += not review
        else:
            n_mid += 1
            mid_review += review
        print(f"| {cid} | {k} | {wt:.3f} | {m['brain_ml']:.0f} | {m['intensity_shift']:.2f} | {m['wt_ml']:.1f} | "
              f"{m['symmetry']:.2f} | {m['islands']} | {m['mean_entropy']:.3f} | {f.status} | "
              + "; ".join(r.split(":")[0] + ":" + r.split(":")[1][:40] for r in f.reasons) + " |")
    print(f"\ngood (WT >= {GOOD_WT}): {good_ok} ok, {false_alarms} flagged review (false alarms); "
          f"bad (WT < {BAD_WT}): {hits} flagged review (hits), {misses} ok (misses); "
          f"in between: {mid_review} of {n_mid} review")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default="full", choices=sorted(CONFIGS))
    parser.add_argument("--postprocess-grid", action="store_true")
    parser.add_argument("--quality", action="store_true")
    parser.add_argument("--postprocess", default="none")
    parser.add_argument("--save-postprocess", type=Path, default=None, metavar="MODEL_DIR",
                        help="with --postprocess-grid: write the chosen post-processing as MODEL_DIR/postprocess.json")
    parser.add_argument("--data", type=Path, default=Path(__file__).resolve().parent.parent.parent / "shared" / "data")
    args = parser.parse_args()
    if args.postprocess_grid:
        chosen = postprocess_grid(args.config, args.data)
        if args.save_postprocess is not None:
            print(f"wrote {chosen.save(args.save_postprocess)}")
    if args.quality:
        quality_report(args.config, args.data, args.postprocess)
    return 0


if __name__ == "__main__":
    sys.exit(main())
