"""Choose post-processing and score the quality flag on the cross-validation predictions (no network runs).

Usage:
    python benchmarks/cv_analysis.py --config full [--postprocess-grid] [--quality] [--loo [--write-quality DIR]]
        [--postprocess VARIANT]

Reads the probabilities that ``benchmarks/accuracy.py --stages predict`` stored for every (case, fold model).

``--postprocess-grid``: Dice (WT/TC/ET) of every post-processing variant of the grid, as the change of each
fold's mean against plain argmax; a variant is admissible when no fold's mean of any region drops by more than
0.001, and the admissible variant with the best overall mean Dice is printed last.

``--quality``: the quality flag's measures per (case, fold model) after ``--postprocess`` with the thresholds
of ``core.engine.quality.QualityThresholds`` (the ones shipped), against WT Dice: good predictions (WT Dice >= 0.80)
should be "ok", bad ones (WT Dice < 0.60) "review". Prints the table, hits and false alarms.

``--loo``: chooses the flag's output thresholds on the predictions and scores the choice leave-one-case-out. Target:
a prediction with WT Dice < 0.80 (and every TCIA prediction: raw intensities) should be "review", one with WT Dice
>= 0.80 "ok". For each held-out case (its one fold prediction, or the TCIA case's three) every threshold of
``LOO_MEASURES`` is chosen on the other cases' predictions only, then the held-out predictions are flagged. The
rule, per measure, never makes an in-sample false alarm: for a "max" measure, let g be the largest value of a good
prediction; when some bad prediction lies above g, the threshold is the midpoint between g and the nearest such
value (rounded down for counts), else the measure is off; "min" measures mirror it; a volume range applies the
rule at each end; with no good prediction a measure is off. ``max_intensity_shift`` and ``wt_ml_range`` keep
their defaults as outer bounds (a-priori sanity limits: a gross intensity difference, an empty or implausibly
large tumour), which the rule can only tighten; the input checks (voxel size, brain volume) and the component
sizes ``island_ml``/``lesion_ml`` keep their defaults. TCIA predictions count as bad when thresholds are chosen.
Prints the per-(case, fold) table, the totals over the 12 cross-validated cases and, separately, the TCIA case, the
thresholds chosen on all the predictions (those to ship), and writes them with ``--write-quality MODEL_DIR`` into
that folder's ``quality.json`` (its reference quantiles kept). ``network_agreement`` (WT Dice between the 2-D and
3-D networks) is measured when ``work/cv/<config>/preds3d`` and ``work/cv/full_noctx/preds`` hold the prediction.
"""

from __future__ import annotations

import argparse
import dataclasses
import itertools
import json
import math
import os
import sys
from collections.abc import Iterator
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import numpy as np  # noqa: E402
from accuracy import CONFIGS, FOLDS, TCIA, cv_dir, evaluations, load_prediction  # noqa: E402

from core.config import REGIONS  # noqa: E402
from core.data.cases import discover_cases, load_case  # noqa: E402
from core.engine.postprocess import PostprocessSpec, apply, parse_variant  # noqa: E402
from core.engine.quality import QualityModel, QualityThresholds  # noqa: E402

GOOD_WT, BAD_WT = 0.80, 0.60
TWO_D_CONFIG = "full_noctx"  # the 2-D network whose stored predictions network_agreement compares with the 3-D one
PRIOR = "prior"  # off value of a threshold whose default is kept as an outer bound the rule can only tighten
# (measure key, threshold field, kind, value when off): thresholds chosen by --loo. Kinds: "max" (flag above),
# "max_int" (a count), "min" (flag below), "range" (flag outside). The measures new to quality.json are off as None;
# the older ones have no None and take a value that never fires (fractions and normalised entropy are <= 1).
LOO_MEASURES: tuple[tuple[str, str, str, object], ...] = (
    ("intensity_shift", "max_intensity_shift", "max", PRIOR),
    ("symmetry", "max_symmetry", "max", 1.0),
    ("islands", "max_islands", "max_int", 10 ** 6),
    ("mean_entropy", "max_mean_entropy", "max", 1.0),
    ("far_component_mm", "max_far_component_mm", "max", None),
    ("tc_components", "max_tc_components", "max_int", None),
    ("et_components", "max_et_components", "max_int", None),
    ("network_agreement", "min_network_agreement", "min", None),
    ("wt_ml", "wt_ml_range", "range", PRIOR),
    ("tc_ml", "tc_ml_range", "range", None),  # one end off: 0 or 1e6 mL
)


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


def iter_all(config: str, data_root: Path) -> Iterator[tuple[str, int, np.ndarray, np.ndarray, tuple, object]]:
    """(case id, fold, probabilities, reference labels, spacing, case) of every evaluation, one at a time (a case
    is loaded once for its consecutive fold predictions)."""
    refs = {r.case_id: r for r in discover_cases(data_root / "brats") if r.has_seg}
    loaded_id, case = "", None
    for case_id, k in evaluations(data_root):
        if case_id != loaded_id:
            loaded_id, case = case_id, load_case(refs[case_id])
        yield (case_id, k, load_prediction(config, case_id, k), np.asarray(case.seg.data),  # type: ignore[attr-defined]
               case.spacing_mm, case)  # type: ignore[attr-defined]


def load_all(config: str, data_root: Path) -> list[tuple[str, int, np.ndarray, np.ndarray, tuple, object]]:
    return list(iter_all(config, data_root))


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


def fold_quality(config: str, k: int) -> tuple[object, QualityModel]:
    """The fold model's preprocessing spec and quality model (its ``quality.json``; the intensity reference from
    its slice cache when the fold was trained before quality.json existed). No network is loaded."""
    from core.engine.preprocess import PreprocessSpec
    from core.engine.quality import intensity_quantiles, reference_from

    folder = cv_dir(config) / f"fold{k}"
    spec = PreprocessSpec.load(folder)
    qm = QualityModel.load(folder, trained_for_missing=spec.modality_dropout > 0)
    if not qm.reference_quantiles:
        split = json.loads((folder / "split.json").read_text())
        xs = [next((cv_dir(config) / "cache").glob(f"{c}-*_x.npy")) for c in split["train"]]
        ref = reference_from([intensity_quantiles(np.load(x, mmap_mode="r")) for x in xs], spec.channels)
        qm = QualityModel(qm.thresholds, ref, qm.trained_for_missing)
    return spec, qm


def network_agreement(config: str, case_id: str, k: int) -> float | None:
    """Whole-tumour Dice between the 2-D network (``work/cv/full_noctx/preds``: 1 - P(background) > 0.5) and the
    3-D network (``work/cv/<config>/preds3d``: P(WT) > 0.5) of fold ``k``; None unless both are stored (empty vs
    empty = 1)."""
    p3 = cv_dir(config) / "preds3d" / f"{case_id}__fold{k}.npz"
    p2 = cv_dir(TWO_D_CONFIG) / "preds" / f"{case_id}__fold{k}.npz"
    if not (p3.is_file() and p2.is_file()):
        return None
    with np.load(p2) as f2, np.load(p3) as f3:
        a = 1.0 - f2["probs"][..., 0].astype(np.float32) / 255.0 > 0.5
        b = f3["regions"][..., 0].astype(np.float32) / 255.0 > 0.5
    denom = int(np.count_nonzero(a)) + int(np.count_nonzero(b))
    return 1.0 if denom == 0 else round(2.0 * int(np.count_nonzero(a & b)) / denom, 4)


def measure_all(config: str, data_root: Path, variant: str) -> list[dict]:
    """Per (case, fold model): the flag's measures of the labels decoded as ``variant`` says, with the fold's
    quality model; rows {case, fold, wt_dice, measures, missing, quality}."""
    from core.engine.preprocess import prepare_case
    from core.engine.quality import intensity_quantiles, measure

    spec = parse_variant(variant)
    models: dict[int, tuple[object, QualityModel]] = {}
    quantiles: dict[tuple[str, object], tuple[list, tuple[str, ...]]] = {}
    rows = []
    for cid, k, probs, gt, spacing, case in iter_all(config, data_root):
        if k not in models:
            models[k] = fold_quality(config, k)
        pspec, qm = models[k]
        labels = apply(probs, spacing, spec)
        if (cid, pspec) not in quantiles:  # the same for every fold model with the same preprocessing
            prep = prepare_case(case, pspec)  # type: ignore[arg-type]
            quantiles[(cid, pspec)] = (intensity_quantiles(prep.slices), tuple(prep.missing))
        case_q, missing = quantiles[(cid, pspec)]
        brain = np.zeros(gt.shape, bool)
        for vol in case.images.values():  # type: ignore[attr-defined]
            brain |= np.asarray(vol.data) != 0
        t = QualityThresholds()
        m = measure(labels, probs, brain, spacing, case_q, qm.reference_quantiles, pspec.channels,  # type: ignore[attr-defined]
                    t.island_ml, t.lesion_ml, network_agreement(config, cid, k))
        rows.append({"case": cid, "fold": k, "wt_dice": region_dice(labels, gt)["WT"], "measures": m,
                     "missing": missing, "quality": qm})
        print(f"measured {cid} fold {k}", file=sys.stderr, flush=True)
    return rows


def quality_report(config: str, data_root: Path, variant: str) -> None:
    from core.engine.quality import flag

    print("| case | fold | WT Dice | brain mL | intensity shift | WT mL | symmetry | islands | mean entropy | flag | reasons |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    hits = misses = false_alarms = good_ok = mid_review = n_mid = 0
    for row in measure_all(config, data_root, variant):
        cid, k, wt, m, qm = row["case"], row["fold"], row["wt_dice"], row["measures"], row["quality"]
        qm = QualityModel(QualityThresholds(), qm.reference_quantiles, qm.trained_for_missing)  # shipped thresholds
        f = flag(m, qm, row["missing"])
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


# ------------------------------------------------------------------------------ leave-one-case-out ---

def is_bad(row: dict) -> bool:
    """The target: "review" for WT Dice < 0.80 and for the raw-intensity TCIA case."""
    return row["case"] == TCIA or row["wt_dice"] < GOOD_WT


def _above(good: list[float], bad: list[float], integer: bool) -> float | None:
    """Midpoint between the largest good value and the nearest bad value above it (rounded down for counts);
    None when no bad value lies above every good one."""
    if not good:
        return None
    g = max(good)
    beyond = [v for v in bad if v > g]
    if not beyond:
        return None
    b = min(beyond)
    t = (g + b) / 2.0
    if integer:
        return float(math.floor(t))
    r = round(t, 4)
    return r if g < r < b else t


def choose_thresholds(rows: list[dict]) -> QualityThresholds:
    """Thresholds of ``LOO_MEASURES`` chosen on ``rows`` by the rule of the module docstring (no false alarm on
    ``rows``); the other thresholds keep their defaults. A measure that is None in a row is left out for it."""
    default = QualityThresholds()
    chosen: dict[str, object] = {}
    for key, field_name, kind, off in LOO_MEASURES:
        vals = [(float(r["measures"][key]), is_bad(r)) for r in rows if r["measures"].get(key) is not None]
        good = [v for v, b in vals if not b]
        bad = [v for v, b in vals if b]
        prior = getattr(default, field_name)
        if kind in ("max", "max_int"):
            t = _above(good, bad, kind == "max_int")
            if t is None:
                chosen[field_name] = prior if off == PRIOR else off
            else:
                t = min(t, prior) if off == PRIOR else t
                chosen[field_name] = int(t) if kind == "max_int" else t
        elif kind == "min":
            t = _above([-v for v in good], [-v for v in bad], False)
            chosen[field_name] = off if t is None else -t
        else:  # range
            lo_off, hi_off = prior if off == PRIOR else (0.0, 1e6)
            lo = _above([-v for v in good], [-v for v in bad], False)
            hi = _above(good, bad, False)
            both_off = lo is None and hi is None
            lo = lo_off if lo is None else max(-lo, lo_off)
            hi = hi_off if hi is None else min(hi, hi_off)
            chosen[field_name] = off if both_off and off != PRIOR else (lo, hi)
    return dataclasses.replace(default, **chosen)  # type: ignore[arg-type]


def _shown(t: QualityThresholds) -> str:
    default = QualityThresholds()
    parts = []
    for _, name, _, _ in LOO_MEASURES:
        v = getattr(t, name)
        text = (f"({v[0]:g}, {v[1]:g})" if isinstance(v, tuple) else f"{v:g}") if v is not None else "off (None)"
        parts.append(f"{name}={text}" + ("" if v != getattr(default, name) else " (default)"))
    return ", ".join(parts)


def loo_report(config: str, data_root: Path, variant: str, write_quality: Path | None) -> QualityThresholds:
    from core.engine.quality import flag

    rows = measure_all(config, data_root, variant)
    print(f"\nleave-one-case-out of the quality flag's thresholds: config {config}, post-processing "
          f"{parse_variant(variant).label}; target: review when WT Dice < {GOOD_WT} or TCIA\n")
    print("| case | fold | WT Dice | target | WT mL | TC mL | ET mL | shift | symmetry | islands | entropy | far mm | "
          "TC comp | ET comp | agreement | flag | reasons (measures past their held-out thresholds) |")
    print("|" + "---|" * 17)
    results = []
    reason_counts: dict[str, list[int]] = {}
    for held in dict.fromkeys(r["case"] for r in rows):
        t = choose_thresholds([r for r in rows if r["case"] != held])
        for r in (r for r in rows if r["case"] == held):
            qm = r["quality"]
            f = flag(r["measures"], QualityModel(t, qm.reference_quantiles, qm.trained_for_missing), r["missing"])
            review, bad = f.status == "review", is_bad(r)
            results.append((r, review, bad))
            for reason in f.reasons:
                reason_counts.setdefault(_reason_kind(reason), [0, 0])[0 if bad else 1] += 1
            m = r["measures"]
            agree = "-" if m.get("network_agreement") is None else f"{m['network_agreement']:.3f}"
            print(f"| {r['case']} | {r['fold']} | {r['wt_dice']:.3f} | {'review' if bad else 'ok'} | {m['wt_ml']:.1f} | "
                  f"{m['tc_ml']:.1f} | {m['et_ml']:.1f} | {m['intensity_shift']:.2f} | {m['symmetry']:.2f} | "
                  f"{m['islands']} | {m['mean_entropy']:.3f} | {m['far_component_mm']:.0f} | {m['tc_components']} | "
                  f"{m['et_components']} | {agree} | {f.status} | " + "; ".join(_reason_kind(x) for x in f.reasons)
                  + " |")

    def totals(sel: list[tuple[dict, bool, bool]]) -> str:
        n_bad = sum(b for _, _, b in sel)
        hits = sum(rv and b for _, rv, b in sel)
        fa = sum(rv and not b for _, rv, b in sel)
        return (f"hits {hits} / {n_bad} bad predictions, false alarms {fa} / {len(sel) - n_bad} good predictions")

    print(f"\nout of sample, 12 cross-validated cases: {totals([x for x in results if x[0]['case'] != TCIA])}")
    tcia = [x for x in results if x[0]["case"] == TCIA]
    print(f"out of sample, TCIA (target review): flagged review by {sum(rv for _, rv, _ in tcia)} of {len(tcia)} fold "
          "models")
    print("reasons fired out of sample (on bad / on good predictions): "
          + ", ".join(f"{k} {v[0]}/{v[1]}" for k, v in sorted(reason_counts.items())))
    def with_thresholds(t: QualityThresholds, sel: list[dict]) -> list[tuple[dict, bool, bool]]:
        return [(r, flag(r["measures"], QualityModel(t, r["quality"].reference_quantiles,
                                                     r["quality"].trained_for_missing), r["missing"]).status == "review",
                 is_bad(r)) for r in sel]

    cv_rows = [r for r in rows if r["case"] != TCIA]
    print(f"for comparison, today's default thresholds (chosen in sample) on the 12 cases: "
          f"{totals(with_thresholds(QualityThresholds(), cv_rows))}; on TCIA: flagged review by "
          f"{sum(rv for _, rv, _ in with_thresholds(QualityThresholds(), [r for r in rows if r['case'] == TCIA]))} of "
          f"{len(rows) - len(cv_rows)}")
    shipped = choose_thresholds(rows)
    print(f"\nthresholds chosen on all {len(rows)} predictions (to ship): {_shown(shipped)}")
    print(f"in sample with them: {totals(with_thresholds(shipped, rows))}")
    if write_quality is not None:
        from core.engine.preprocess import PreprocessSpec

        trained = (PreprocessSpec.load(write_quality).modality_dropout > 0
                   if (write_quality / "preprocess.json").is_file() else False)
        base = QualityModel.load(write_quality, trained_for_missing=trained)
        path = QualityModel(shipped, base.reference_quantiles, base.trained_for_missing).save(write_quality)
        print(f"wrote {path}" + ("" if base.reference_quantiles else " (no intensity reference there: "
                                                                     "the intensity measure stays off)"))
    return shipped


def _reason_kind(reason: str) -> str:
    """A short name of the measure behind a reason sentence of ``core.engine.quality.flag``."""
    for words, name in (("voxel size", "spacing"), ("brain volume", "brain_ml"), ("intensities differ", "intensity_shift"),
                        ("missing and zero-filled", "missing"), ("mirrored", "symmetry"),
                        ("separate tumour regions", "islands"), ("whole-tumour volume", "wt_ml"),
                        ("uncertainty", "mean_entropy"), ("second tumour region", "far_component_mm"),
                        ("tumour core is split", "tc_components"), ("enhancing tumour is split", "et_components"),
                        ("tumour-core volume", "tc_ml"), ("networks disagree", "network_agreement")):
        if words in reason:
            return name
    return reason[:40]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default="full", choices=sorted(CONFIGS))
    parser.add_argument("--postprocess-grid", action="store_true")
    parser.add_argument("--quality", action="store_true")
    parser.add_argument("--loo", action="store_true",
                        help="choose the quality flag's thresholds leave-one-case-out and report hits and false alarms")
    parser.add_argument("--write-quality", type=Path, default=None, metavar="MODEL_DIR",
                        help="with --loo: write the thresholds chosen on all predictions into MODEL_DIR/quality.json")
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
    if args.loo:
        loo_report(args.config, args.data, args.postprocess, args.write_quality)
    elif args.write_quality is not None:
        parser.error("--write-quality needs --loo")
    return 0


if __name__ == "__main__":
    sys.exit(main())
