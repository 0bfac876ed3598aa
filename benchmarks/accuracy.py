"""Cross-validation over every labelled shared case: per-case BraTS WT/TC/ET Dice and HD95, means, markdown.

Usage:
    python benchmarks/accuracy.py [--configs base full] [--stages train predict score] [--data ../shared/data]
    python benchmarks/accuracy.py --configs full_noctx --stages quantize predict score --int8 --postprocess V

Folds: the seven complete cases and the five partial (FLAIR + T1c only) cases are split into three folds by
patient (``FOLDS``). For each configuration and fold, a model is trained on the other folds' cases with
``python -m core train`` (a separate process; a fold whose model folder is complete is not retrained), then
it segments its own fold's cases and the TCIA example (raw intensities, pseudo-label; in no training set).
Probabilities are stored (uint8, compressed) under ``work/cv/<config>/preds`` so that post-processing and the
quality flag are chosen and scored on the same predictions without running a network again
(``benchmarks/cv_analysis.py``). The score stage prints one markdown table per configuration and writes
``work/cv/<config>/scores.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402

from core.engine.postprocess import parse_variant  # noqa: E402

REGIONS = ("WT", "TC", "ET")
TCIA = "TCIA-example"
# Three folds by patient. Brats18_2013_21_1 is 2013 patient 4, which is not in the partial set.
FOLDS: tuple[tuple[str, ...], ...] = (
    ("BraTS2021_00000", "BraTS2021_00005", "Brats18_2013_21_1", "brats_2013_pat0001_1", "brats_2013_pat0002_1"),
    ("BraTS2021_00002", "BraTS2021_00006", "brats_2013_pat0003_1", "brats_2013_pat0005_1"),
    ("BraTS2021_00003", "BraTS2021_00014", "brats_2013_pat0006_1"),
)
# The same number of gradient steps for every configuration (20 x 50 batches of 16), a wall-time cap as a guard.
_EPOCHS = ["--epochs", "20", "--steps-per-epoch", "50", "--max-minutes", "12"]
_COMMON = ["--crop", "brain_bbox", "--base-filters", "16", "--depth", "4", "--batch-size", "16",
           "--loss", "ce_dice", "--split", "1,0,0", "--seed", "42"]
CONFIGS: dict[str, dict] = {
    # The recipe of the model shipped before this benchmark: 4 modalities, complete cases only.
    "base": {"data": "brats/train", "args": ["--channels", "flair,t1ce,t1,t2", "--normalisation", "zscore_brain",
                                             "--bias-field", "0.3", *_EPOCHS, *_COMMON]},
    # 2.5-D context, modality dropout, partial cases in training, robust normalisation, stronger augmentation.
    "full": {"data": "brats", "args": ["--channels", "flair,t1ce,t1,t2", "--normalisation", "robust_brain",
                                       "--context", "1", "--modality-dropout", "0.3", "--bias-field", "0.3",
                                       "--strong-augment", *_EPOCHS, *_COMMON]},
    # As "full" without the 2.5-D context (one axial slice per input), to ablate the context.
    "full_noctx": {"data": "brats", "args": ["--channels", "flair,t1ce,t1,t2", "--normalisation", "robust_brain",
                                             "--context", "0", "--modality-dropout", "0.3", "--bias-field", "0.3",
                                             "--strong-augment", *_EPOCHS, *_COMMON]},
    # The 2-D fold models of "full_noctx" with a 3-D context network each (scripts/train_volume3d.py folds, trained
    # on the same folds; copied from work/vol3d/fold<k>), fused as the volume3d.json "fusion" settings say.
    "full_noctx_3d": {"data": "brats", "compose": {"from": "full_noctx", "volume3d": "work/vol3d",
                                                   "fusion": {"weight": 0.5, "cascade_threshold": 0.0,
                                                              "margin_slices": 4}}},
    # As "full_noctx_3d", with the 2-D network run only on axial slices within 4 slices of one where the 3-D
    # network's whole-tumour probability exceeds 0.3 (the cascade: what the shipped model does, for speed).
    "full_noctx_3d_cascade": {"data": "brats", "compose": {"from": "full_noctx", "volume3d": "work/vol3d",
                                                           "fusion": {"weight": 0.5, "cascade_threshold": 0.3,
                                                                      "margin_slices": 4}}},
    # As "full_noctx_3d_cascade", with the 3-D network also run on the left-right mirrored input (averaged).
    "full_noctx_3d_mirror": {"data": "brats", "compose": {"from": "full_noctx", "volume3d": "work/vol3d",
                                                          "fusion": {"weight": 0.5, "cascade_threshold": 0.3,
                                                                     "margin_slices": 4, "mirror": True}}},
}


def compose_stage(config: str) -> None:
    """Make each fold model of a composed configuration: the 2-D fold model's files (linked) and the 3-D network's
    folder (copied, with the configuration's fusion settings), exported to ONNX. A fold already made is kept."""
    import shutil

    from core.engine.volume3d import VOLUME_DIR, export_volume_network

    spec = CONFIGS[config]["compose"]
    for k in range(len(FOLDS)):
        out = cv_dir(config) / f"fold{k}"
        src2d = cv_dir(spec["from"]) / f"fold{k}"
        src3d = ROOT / spec["volume3d"] / f"fold{k}"
        out.mkdir(parents=True, exist_ok=True)
        for f in src2d.iterdir():
            if f.is_file() and not (out / f.name).exists():
                (out / f.name).symlink_to(f.resolve())
        if (out / VOLUME_DIR / "model.onnx").is_file():
            continue
        (out / VOLUME_DIR).mkdir(exist_ok=True)
        shutil.copy2(src3d / "model.keras", out / VOLUME_DIR / "model.keras")
        record = json.loads((src3d / "volume3d.json").read_text())
        record["fusion"] = spec["fusion"]
        (out / VOLUME_DIR / "volume3d.json").write_text(json.dumps(record, indent=2))
        entry = export_volume_network(out)
        print(f"[{config}] fold {k}: composed, 3-D network exported (max diff {entry['export_check_max_abs_diff']})",
              flush=True)


def cv_dir(config: str) -> Path:
    return ROOT / "work" / "cv" / config


def all_cv_cases() -> list[str]:
    return [c for fold in FOLDS for c in fold]


def train_stage(config: str, data_root: Path) -> None:
    spec = CONFIGS[config]
    if "compose" in spec:
        compose_stage(config)
        return
    for k, fold in enumerate(FOLDS):
        out = cv_dir(config) / f"fold{k}"
        if (out / "model_card.json").is_file():
            print(f"[{config}] fold {k}: trained already ({out})", flush=True)
            continue
        excluded = [*fold, TCIA]
        cmd = [sys.executable, "-m", "core", "train", "--data", str(data_root / spec["data"]), "--out", str(out),
               "--exclude-cases", ",".join(excluded), "--cache-dir", str(cv_dir(config) / "cache"), *spec["args"]]
        print(f"[{config}] fold {k}: {' '.join(cmd[1:])}", flush=True)
        started = time.time()
        subprocess.run(cmd, cwd=ROOT, check=True, stdout=subprocess.DEVNULL)
        print(f"[{config}] fold {k}: trained in {time.time() - started:.0f} s", flush=True)


def _refs(data_root: Path) -> dict:
    from core.data.cases import discover_cases

    return {r.case_id: r for r in discover_cases(data_root / "brats") if r.has_seg}


def preds_name(n4: bool = False, int8: bool = False, drop: tuple[str, ...] = (), tta: bool = False) -> str:
    """The folder of stored predictions: ``preds``, ``preds_n4``, ``preds_int8`` or ``preds_n4_int8``, with
    ``_drop-t1-t2`` when the cases were given without those modalities and ``_tta`` with flip test-time
    augmentation."""
    return ("preds" + ("_n4" if n4 else "") + ("_int8" if int8 else "") + (f"_drop-{'-'.join(drop)}" if drop else "")
            + ("_tta" if tta else ""))


def quantize_stage(config: str, data_root: Path) -> None:
    """Export each fold model to ONNX and quantise it to int8, calibrated on that fold's own training cases
    (``python -m core export FOLD --int8 --data ...``, a separate process); a fold already done is skipped."""
    import json as _json

    from core.engine.model import file_sha256
    from core.engine.runtime import valid_int8

    for k in range(len(FOLDS)):
        folder = cv_dir(config) / f"fold{k}"
        if not (folder / "model_card.json").is_file():
            print(f"[{config}] fold {k}: no trained model yet, not quantised", flush=True)
            continue
        card = _json.loads((folder / "model_card.json").read_text())
        if valid_int8(folder, card, file_sha256(folder / "model.keras")) is not None:
            continue
        started = time.perf_counter()
        subprocess.run([sys.executable, "-m", "core", "export", str(folder), "--int8", "--data",
                        str(data_root / "brats")], cwd=ROOT, check=True, stdout=subprocess.DEVNULL)
        print(f"[{config}] fold {k}: exported and quantised in {time.perf_counter() - started:.1f} s", flush=True)


def predict_stage(config: str, data_root: Path, n4: bool = False, int8: bool = False, drop: tuple[str, ...] = (),
                  tta: bool = False) -> None:
    """Store each fold model's probabilities on its fold's cases and on TCIA (uint8 = round(255 p)); with
    ``n4``, after N4 bias-field correction (``core.engine.biasfield``), in ``preds_n4``, skipping the z-scored partial
    cases (N4 needs the raw intensities); with ``int8``, by the fold model's int8 network (``quantize_stage``), in
    ``preds_int8``; with ``drop`` (e.g. ("t1", "t2")), complete cases only, given without those modalities."""
    from core.data.cases import assemble_case, load_case
    from core.engine.inference import predict_case
    from core.engine.model import load_model

    refs = _refs(data_root)
    preds = cv_dir(config) / preds_name(n4, int8, drop, tta)
    preds.mkdir(parents=True, exist_ok=True)
    for k, fold in enumerate(FOLDS):
        if not (cv_dir(config) / f"fold{k}" / "model_card.json").is_file():
            print(f"[{config}] fold {k}: no trained model yet, not predicted", flush=True)
            continue
        loaded = None
        for case_id in (*fold, TCIA):
            path = preds / f"{case_id}__fold{k}.npz"
            if path.is_file():
                continue
            if loaded is None:
                loaded = load_model(cv_dir(config) / f"fold{k}", runtime="onnx-int8" if int8 else None)
            if (n4 or drop) and refs[case_id].layout != "brats":
                continue
            case = load_case(refs[case_id])
            if drop:
                case = assemble_case(case.case_id, {m: v for m, v in case.images.items() if m not in drop}, case.seg)
            started = time.perf_counter()
            if n4:
                from core.engine.biasfield import n4_case

                case = n4_case(case)
            pred = predict_case(loaded, case, tta=tta)
            q = np.rint(np.asarray(pred.probabilities, dtype=np.float32) * 255).astype(np.uint8)
            np.savez_compressed(path, probs=q, seconds=time.perf_counter() - started)
            print(f"[{config}] fold {k}: predicted {case_id} in {time.perf_counter() - started:.1f} s", flush=True)


def load_prediction(config: str, case_id: str, fold: int, preds: str = "preds") -> np.ndarray:
    """(X, Y, Z, 4) float32 probabilities stored by the predict stage (``preds`` or ``preds_n4``)."""
    with np.load(cv_dir(config) / preds / f"{case_id}__fold{fold}.npz") as f:
        return f["probs"].astype(np.float32) / 255.0


def fold_of(case_id: str) -> int:
    for k, fold in enumerate(FOLDS):
        if case_id in fold:
            return k
    raise KeyError(case_id)


def evaluations(data_root: Path, n4: bool = False, complete_only: bool = False) -> list[tuple[str, int]]:
    """(case id, fold model) pairs scored: each CV case by its own fold's model, TCIA by every fold model (with
    ``n4`` or ``complete_only``, without the partial cases)."""
    cases = [c for c in all_cv_cases() if not ((n4 or complete_only) and "_pat" in c)]
    return [(c, fold_of(c)) for c in cases] + [(TCIA, k) for k in range(len(FOLDS))]


def score_rows(config: str, data_root: Path, postprocess: str = "none", n4: bool = False, int8: bool = False,
               drop: tuple[str, ...] = (), tta: bool = False) -> list[dict]:
    """Per-(case, fold) scores of the stored predictions after a post-processing variant: Dice and HD95 per region
    (``dice_WT``, ``hd95_WT_mm``, ...) and the BraTS lesion-wise Dice and HD95 (``lw_dice_WT``, ``lw_hd95_WT_mm``,
    ...; ``core.analysis.lesionwise``: a missed or spurious lesion counts Dice 0 and HD95 374 mm), by the default
    rule (panoptica in brats-evaluation's glioma configuration) and, as ``lw23_dice_WT``, ``lw23_hd95_WT_mm``, ...,
    by the BraTS 2023 script's glioma rule (nearby reference lesions merged, those of at most 50 mm^3 left out)."""
    from core.analysis.lesionwise import lesionwise_scores
    from core.analysis.metrics import score_case
    from core.data.cases import load_case
    from core.engine.postprocess import decode

    refs = _refs(data_root)
    rows = []
    gts: dict[str, tuple[np.ndarray, tuple[float, float, float], str]] = {}
    for case_id, k in evaluations(data_root, n4, bool(drop)):
        if case_id not in gts:
            case = load_case(refs[case_id])
            mods = ",".join(m for m in case.modalities if m not in drop)
            gts[case_id] = (np.asarray(case.seg.data), case.spacing_mm, mods)
        gt, spacing, mods = gts[case_id]
        labels = decode(load_prediction(config, case_id, k, preds_name(n4, int8, drop, tta)), spacing, postprocess)
        s = score_case(labels, gt, spacing)
        lw = lesionwise_scores(labels, gt, spacing)
        lw23 = lesionwise_scores(labels, gt, spacing, rule="brats2023")
        rows.append({"case_id": case_id, "fold": k, "modalities": mods,
                     **{f"dice_{r}": round(s.regions[r].dice, 4) for r in REGIONS},
                     **{f"hd95_{r}_mm": round(s.regions[r].hd95_mm, 2) for r in REGIONS},
                     **{f"lw_dice_{r}": round(lw[r].dice, 4) for r in REGIONS},
                     **{f"lw_hd95_{r}_mm": round(lw[r].hd95_mm, 2) for r in REGIONS},
                     **{f"lw23_dice_{r}": round(lw23[r].dice, 4) for r in REGIONS},
                     **{f"lw23_hd95_{r}_mm": round(lw23[r].hd95_mm, 2) for r in REGIONS}})
    return rows


# Columns of the markdown table after case, fold and inputs: (row key pattern, header, format, bold mean).
_TABLE_COLUMNS: tuple[tuple[str, str, str, bool], ...] = (
    *((f"dice_{g}", f"Dice {g}", ".3f", True) for g in REGIONS),
    *((f"hd95_{g}_mm", f"HD95 {g}", ".1f", False) for g in REGIONS),
    *((f"lw_dice_{g}", f"LW Dice {g}", ".3f", True) for g in REGIONS),
    *((f"lw_hd95_{g}_mm", f"LW HD95 {g}", ".1f", False) for g in REGIONS),
    *((f"lw23_dice_{g}", f"LW23 Dice {g}", ".3f", True) for g in REGIONS),
    *((f"lw23_hd95_{g}_mm", f"LW23 HD95 {g}", ".1f", False) for g in REGIONS),
)


def _cell(value: float | None, fmt: str, bold: bool = False) -> str:
    """A table cell; "-" for a figure the row lacks (rows scored before the lesion-wise columns existed)."""
    if value is None:
        return "-"
    return f"**{value:{fmt}}**" if bold else f"{value:{fmt}}"


def markdown_table(rows: list[dict], title: str) -> str:
    """Per-row Dice, HD95 (mm), lesion-wise (LW) Dice and LW HD95 (mm) of WT/TC/ET, the same by the BraTS 2023
    glioma rule (LW23), then the means of each group of cases (bold: the Dice columns; "-" where a row of the group
    lacks the figure)."""
    lines = [f"**{title}**", "", "| case | fold | inputs | " + " | ".join(h for _, h, _, _ in _TABLE_COLUMNS) + " |",
             "|---|---|---|" + "---|" * len(_TABLE_COLUMNS)]
    for r in rows:
        lines.append(f"| {r['case_id']} | {r['fold']} | {r['modalities']} | "
                     + " | ".join(_cell(r.get(key), fmt) for key, _, fmt, _ in _TABLE_COLUMNS) + " |")
    for name, sel in (("complete cases (7)", lambda r: r["case_id"].lower().startswith("brats") and "pat" not in r["case_id"]),
                      ("partial FLAIR+T1c cases (5)", lambda r: "pat" in r["case_id"]),
                      ("TCIA (raw intensities, pseudo-label; 3 fold models)", lambda r: r["case_id"] == TCIA)):
        sub = [r for r in rows if sel(r)]
        if sub:
            means = [None if any(key not in r for r in sub) else float(np.mean([r[key] for r in sub]))
                     for key, _, _, _ in _TABLE_COLUMNS]
            lines.append(f"| **mean, {name}** | | | "
                         + " | ".join(_cell(m, fmt, bold) for m, (_, _, fmt, bold) in zip(means, _TABLE_COLUMNS,
                                                                                         strict=True)) + " |")
    return "\n".join(lines)


def write_card(model_dir: Path, rows: list[dict], config: str, postprocess: str) -> None:
    """Put the cross-validation means into ``model_dir/model_card.json`` under "cross_validation"."""
    path = model_dir / "model_card.json"
    card = json.loads(path.read_text(encoding="utf-8"))

    def means(sel: list[dict], key: str = "dice_{g}", digits: int = 4) -> dict[str, float]:
        return {g: round(float(np.mean([r[key.format(g=g)] for r in sel])), digits) for g in REGIONS}

    cv_rows = [r for r in rows if r["case_id"] != TCIA]
    lw23: dict = {}
    if cv_rows and all("lw23_dice_WT" in r for r in cv_rows):  # rows scored before the brats2023 rule lack them
        lw23 = {
            "lesionwise_brats2023_mean_dice": means(cv_rows, "lw23_dice_{g}"),
            "lesionwise_brats2023_mean_hd95_mm": means(cv_rows, "lw23_hd95_{g}_mm", 2),
            "lesionwise_brats2023_rules": (
                "BraTS 2023 challenge script, glioma (core.analysis.lesionwise, rule brats2023): reference lesions "
                "within 3 dilations merged, reference lesions of at most 50 mm^3 left out, a missed reference lesion "
                "or a false-positive predicted lesion counts Dice 0 and HD95 374 mm"),
        }
    card["cross_validation"] = {
        "folds": len(FOLDS), "cases": len(cv_rows), "configuration": config,
        "postprocess": parse_variant(postprocess).label,
        "mean_dice": means(cv_rows),
        "complete_cases_mean_dice": means([r for r in cv_rows if "_pat" not in r["case_id"]]),
        "partial_cases_mean_dice": means([r for r in cv_rows if "_pat" in r["case_id"]]),
        "tcia_mean_dice": means([r for r in rows if r["case_id"] == TCIA]),
        "lesionwise_mean_dice": means(cv_rows, "lw_dice_{g}"),
        "lesionwise_mean_hd95_mm": means(cv_rows, "lw_hd95_{g}_mm", 2),
        "lesionwise_rules": ("BraTS lesion-wise (core.analysis.lesionwise: panoptica in brats-evaluation's glioma "
                             "configuration); a missed or spurious lesion counts Dice 0 and HD95 374 mm"),
        **lw23,
        "max_hd95_WT_mm": max(r["hd95_WT_mm"] for r in cv_rows),
        "command": f"python benchmarks/accuracy.py --configs {config} --postprocess {postprocess}",
        "per_case": rows,
    }
    path.write_text(json.dumps(card, indent=2), encoding="utf-8")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--configs", nargs="+", default=["base", "full"], choices=sorted(CONFIGS))
    parser.add_argument("--stages", nargs="+", default=["train", "predict", "score"],
                        choices=("train", "quantize", "predict", "score"))
    parser.add_argument("--int8", action="store_true",
                        help="predict and score with each fold model's int8 network (run the quantize stage first)")
    parser.add_argument("--postprocess", default="none", help="post-processing variant for the score stage")
    parser.add_argument("--n4", action="store_true", help="predict and score after N4 bias-field correction")
    parser.add_argument("--tta", action="store_true", help="predict and score with flip test-time augmentation")
    parser.add_argument("--drop", default="", help="predict and score the complete cases without these modalities "
                                                   "(comma-separated, e.g. t1,t2: FLAIR + T1CE only)")
    parser.add_argument("--card", type=Path, default=None,
                        help="model folder whose model_card.json gets this configuration's cross-validation figures")
    parser.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data")
    args = parser.parse_args()
    if not (args.data / "brats").is_dir():
        print(f"error: expected the shared data folder with brats/ in {args.data}", file=sys.stderr)
        return 2
    drop = tuple(m.strip() for m in args.drop.split(",") if m.strip())
    for config in args.configs:
        if "train" in args.stages:
            train_stage(config, args.data)
        if "quantize" in args.stages:
            quantize_stage(config, args.data)
        if "predict" in args.stages:
            predict_stage(config, args.data, args.n4, args.int8, drop, args.tta)
        if "score" in args.stages:
            rows = score_rows(config, args.data, args.postprocess, args.n4, args.int8, drop, args.tta)
            tag = (f"{args.postprocess}{'_n4' if args.n4 else ''}{'_int8' if args.int8 else ''}"
                   f"{'_drop-' + '-'.join(drop) if drop else ''}{'_tta' if args.tta else ''}")
            (cv_dir(config) / f"scores_{tag}.json").write_text(json.dumps(rows, indent=2))
            table = markdown_table(rows, f"{config}{' with N4' if args.n4 else ''}{' int8' if args.int8 else ''}"
                                         f"{' without ' + ','.join(drop) if drop else ''}{' with TTA' if args.tta else ''}, "
                                         "post-processing "
                                         f"{parse_variant(args.postprocess).label}")
            (cv_dir(config) / f"table_{tag}.md").write_text(table + "\n")
            print(table, flush=True)
            if args.card is not None:
                write_card(args.card, rows, config, args.postprocess)
    return 0


if __name__ == "__main__":
    sys.exit(main())
