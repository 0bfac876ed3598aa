"""A model folder's exports: ``model.onnx`` (from ``model.keras``) and ``model.int8.onnx`` (from ``model.onnx``),
each recorded in the folder's model card (``python -m core export``; the end of training).

The network-level conversion, quantisation and validity checks live in ``core.engine.runtime``; this module adds
the folder: it loads the Keras weights (``core.engine.model``), writes the files and records them in the card.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from core.data.io import atomic_write_bytes
from core.engine.model import load_model
from core.engine.model_files import WEIGHTS_NAME, file_sha256, read_card, record_in_card
from core.engine.preprocess import PreprocessSpec
from core.engine.runtime import ONNX_NAME, calibration_batches, export_onnx, quantize_int8, valid_export
from core.errors import ModelError


def export_model_folder(folder: str | Path) -> dict[str, Any]:
    """Export a trained model folder's ``model.keras`` to ``model.onnx`` and record it in the model card.

    Writes the card's ``onnx`` entry (the export's facts plus ``keras_sha256``, the weights it was made from) to
    ``model_card.json`` and a "Runtime" line to ``MODEL_CARD.md`` (replaced if present, else after the weights
    line, else appended). Returns the ``onnx`` entry.

    Raises:
        ModelError: no ``model.keras`` in the folder, or the export failed (see ``export_onnx``).
    """
    out = Path(folder)
    if not (out / WEIGHTS_NAME).is_file():
        raise ModelError(f"expected {WEIGHTS_NAME} in the model folder {out.name!r}, found none")
    loaded = load_model(out, runtime="tensorflow")
    entry = {**export_onnx(loaded.model, out), "keras_sha256": file_sha256(out / WEIGHTS_NAME)}
    record_in_card(out, "onnx", entry)
    md = out / "MODEL_CARD.md"
    if md.is_file():
        line = (f"- Runtime: `{ONNX_NAME}` SHA-256 `{entry['sha256']}` (ONNX opset {entry['opset']}, tf2onnx "
                f"{entry['tf2onnx_version']}, run in ONNX Runtime {entry['onnxruntime_version']}; largest probability "
                f"difference to Keras at export {entry['export_check_max_abs_diff']:.1e}); used for inference when "
                "its checksum matches, TensorFlow otherwise")
        lines = md.read_text(encoding="utf-8").splitlines()
        idx = next((i for i, s in enumerate(lines) if s.startswith("- Runtime:")), None)
        if idx is not None:
            lines[idx] = line
        else:
            w = next((i for i, s in enumerate(lines) if s.startswith("- Weights:")), None)
            lines.insert(w + 1 if w is not None else len(lines), line)
        atomic_write_bytes(md, ("\n".join(lines) + "\n").encode())
    return entry


def quantize_model_folder(folder: str | Path, cases: Any, case_ids: list[str]) -> dict[str, Any]:
    """Quantise a model folder's valid ``model.onnx`` to int8 with calibration slices of ``cases`` (its training
    cases), and record it in the card as ``onnx_int8`` (with ``calibration_cases``: ``case_ids``).

    Raises:
        ModelError: no valid ONNX export of the folder's weights, or the quantisation failed.
    """
    out = Path(folder)
    if valid_export(out, read_card(out), file_sha256(out / WEIGHTS_NAME)) is None:
        raise ModelError(f"expected a valid {ONNX_NAME} export in {out.name!r}: run python -m core export first")
    spec = PreprocessSpec.load(out)
    entry = {**quantize_int8(out, calibration_batches(cases, spec)), "calibration_cases": list(case_ids)}
    record_in_card(out, "onnx_int8", entry)
    return entry
