"""The model card written at the end of training: held-out cases scored with the saved model, measured figures
only, as ``model_card.json`` and ``MODEL_CARD.md``.
"""

from __future__ import annotations

import json
import os
import platform
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from core.data.cases import CaseRef, load_case
from core.data.io import atomic_write_bytes
from core.engine.preprocess import PreprocessSpec
from core.engine.training_config import TrainConfig


def evaluate_cases(model_dir: Path, refs: list[CaseRef]) -> list[dict[str, Any]]:
    """Per-case BraTS region scores of the saved model on labelled cases (full grid, native resolution)."""
    from core.analysis.metrics import score_case
    from core.engine.inference import predict_case
    from core.engine.model import load_model

    loaded = load_model(model_dir)
    rows = []
    for ref in refs:
        case = load_case(ref)
        if case.seg is None:
            continue
        pred = predict_case(loaded, case)
        score = score_case(pred.labels, np.asarray(case.seg.data), case.spacing_mm,
                           voxel_volume_ml=case.voxel_volume_ml)
        rows.append({"case_id": ref.case_id, **{f"dice_{r}": round(s.dice, 4) for r, s in score.regions.items()},
                     **{f"hd95_{r}_mm": round(s.hd95_mm, 2) for r, s in score.regions.items()}})
    return rows


def build_card(cfg: TrainConfig, split: dict[str, list[str]], spec: PreprocessSpec, out: Path,
               history: list[dict[str, float]], fit_s: float, total_s: float, by_id: dict[str, CaseRef]) -> dict:
    """Write model_card.json and MODEL_CARD.md with measured figures only."""
    import tensorflow as tf

    from core.engine.model import WEIGHTS_NAME, file_sha256, keras_module

    val_rows = evaluate_cases(out, [by_id[c] for c in split["val"]])
    test_rows = evaluate_cases(out, [by_id[c] for c in split["test"]])
    keras = keras_module()
    model = keras.models.load_model(out / WEIGHTS_NAME, compile=False, safe_mode=True)

    def mean(rows: list[dict[str, Any]], key: str) -> float | None:
        vals = [r[key] for r in rows if key in r]
        return round(float(np.mean(vals)), 4) if vals else None

    card = {
        "name": out.name,
        "architecture": f"2D U-Net, base filters {cfg.base_filters}, depth {cfg.depth}, dropout {cfg.dropout}, "
                        f"4-class softmax, he-normal",
        "parameters": int(model.count_params()),
        "preprocess": json.loads(spec.to_json()),
        "loss": cfg.loss,
        "optimizer": f"Adam lr {cfg.learning_rate}",
        "batch_size": cfg.batch_size,
        "epochs_requested": cfg.epochs,
        "epochs_run": len(history),
        "fit_wall_time_s": round(fit_s, 1),
        "total_wall_time_s": round(total_s, 1),
        "split": split,
        "validation_per_case": val_rows,
        "validation_mean_dice": {r: mean(val_rows, f"dice_{r}") for r in ("WT", "TC", "ET")},
        "test_per_case": test_rows,
        "test_mean_dice": {r: mean(test_rows, f"dice_{r}") for r in ("WT", "TC", "ET")},
        "weights_file": WEIGHTS_NAME,
        "weights_sha256": file_sha256(out / WEIGHTS_NAME),
        "tensorflow_version": tf.__version__,
        "keras_version": keras.__version__,
        "python_version": platform.python_version(),
        "machine": f"{platform.machine()}, {os.cpu_count()} CPU cores",
        "command": "python -m core " + " ".join(sys.argv[1:]) if sys.argv and "core" in " ".join(sys.argv) else "",
        "small_data_warning": (
            f"Trained on {len(split['train'])} cases only: a small-data model. Its scores on a few held-out cases "
            "are a rough indication, not a reliable estimate of performance on new data."
        ),
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    atomic_write_bytes(out / "model_card.json", json.dumps(card, indent=2).encode())
    atomic_write_bytes(out / "MODEL_CARD.md", render_card_markdown(card).encode())
    return card


def render_card_markdown(card: dict) -> str:
    """A readable model card from the card dict."""
    lines = [f"# Model card: {card['name']}", "",
             "Research software only - not a medical device and not for clinical diagnosis.", "",
             f"**{card['small_data_warning']}**", "",
             "## Model", f"- Architecture: {card['architecture']} ({card['parameters']:,} parameters)",
             f"- Inputs: {', '.join(card['preprocess']['channels'])}; {card['preprocess']['input_size']}x"
             f"{card['preprocess']['input_size']} axial slices"
             + (f" with {card['preprocess']['context']} neighbouring slice(s) on each side as channels (2.5-D)"
                if card['preprocess'].get('context') else "")
             + f"; normalisation {card['preprocess']['normalisation']}; crop {card['preprocess']['crop']}"
             + (f"; modality dropout {card['preprocess']['modality_dropout']} (segments cases lacking T1 or T2)"
                if card['preprocess'].get('modality_dropout') else ""),
             f"- Loss {card['loss']}, {card['optimizer']}, batch {card['batch_size']}, "
             f"epochs run {card['epochs_run']} of {card['epochs_requested']}",
             f"- Wall time: fit {card['fit_wall_time_s']} s, total {card['total_wall_time_s']} s on {card['machine']}",
             f"- TensorFlow {card['tensorflow_version']}, Keras {card['keras_version']}, Python {card['python_version']}",
             f"- Weights: `{card['weights_file']}` SHA-256 `{card['weights_sha256']}`", "",
             "## Data", f"- Training cases: {', '.join(card['split']['train'])}",
             f"- Validation cases: {', '.join(card['split']['val']) or 'none'}",
             f"- Test cases: {', '.join(card['split']['test']) or 'none'}", "",
             "## Per-case BraTS region Dice (full 240x240x155 grid, native resolution)", ""]
    held_out = [("validation", r) for r in card["validation_per_case"]] + [("test", r) for r in card["test_per_case"]]
    if held_out:
        lines += ["| set | case | WT | TC | ET |", "|---|---|---|---|---|"]
        lines += [f"| {set_name} | {r['case_id']} | {r.get('dice_WT')} | {r.get('dice_TC')} | {r.get('dice_ET')} |"
                  for set_name, r in held_out]
    else:
        lines.append("No case was held out of this training run (see a cross-validation of the recipe instead).")
    lines += ["", f"Reproduce: `{card['command']}`", ""]
    return "\n".join(lines)
