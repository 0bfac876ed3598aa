"""``python -m core export MODEL_DIR [--int8 --data FOLDER]``: export a trained model to ONNX for inference without
TensorFlow, and optionally quantise it to int8."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from core.cli.common import print_json
from core.errors import DataFolderError


def add_parser(subparsers: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    parser = subparsers.add_parser(
        "export", help="export a model folder's model.keras to model.onnx (ONNX Runtime inference)",
        description=("Convert MODEL_DIR/model.keras to MODEL_DIR/model.onnx with tf2onnx, check it against Keras, "
                     "and record its SHA-256 in the model card; inference then runs in ONNX Runtime without "
                     "TensorFlow. Training does this itself at its end. With --int8, also quantise model.onnx "
                     "to model.int8.onnx (static, calibrated on the model's training cases found in --data), run "
                     "only when asked for (segment --runtime onnx-int8)."))
    parser.add_argument("model_dir", type=Path, metavar="MODEL_DIR", help="a trained model folder")
    parser.add_argument("--int8", action="store_true", help="also write the int8 network model.int8.onnx")
    parser.add_argument("--data", type=Path, default=None, metavar="FOLDER",
                        help="with --int8: a folder holding the model's training cases (split.json names them)")
    parser.add_argument("--skip-fp32", action="store_true",
                        help="with --int8: keep the existing model.onnx (valid for these weights) instead of "
                             "exporting it again")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from core.engine.export import export_model_folder

    if args.int8 and args.data is None:
        raise DataFolderError("expected --data FOLDER (the model's training cases) with --int8")
    result: dict = {"model_dir": str(args.model_dir)}
    if not (args.int8 and args.skip_fp32):
        result["onnx"] = export_model_folder(args.model_dir)
        from core.engine.volume3d import VOLUME_DIR, export_volume_network

        if (Path(args.model_dir) / VOLUME_DIR / "model.keras").is_file():  # the 3-D context network, when present
            result["volume3d_onnx"] = export_volume_network(Path(args.model_dir))
    if args.int8:
        result["onnx_int8"] = quantize(args.model_dir, args.data)
    print_json(result, indent=None)
    return 0


def quantize(model_dir: Path, data: Path) -> dict:
    """Quantise with the model's training cases (``split.json``'s "train") found under ``data`` as calibration.

    Raises:
        DataFolderError: no split.json, or none of its training cases under ``data``.
    """
    from core.data.cases import discover_cases, load_case
    from core.engine.export import quantize_model_folder

    split_path = model_dir / "split.json"
    try:
        train = list(json.loads(split_path.read_text(encoding="utf-8")).get("train", []))
    except (OSError, json.JSONDecodeError) as err:
        raise DataFolderError(f"expected a readable split.json in {model_dir.name!r} naming the training cases") from err
    refs = {r.case_id: r for r in discover_cases(data)}
    found = [c for c in train if c in refs]
    if not found:
        raise DataFolderError(f"expected the model's training cases under {str(data)!r}, found none of {len(train)}")
    cases = (load_case(refs[c], labels=False) for c in found)
    return quantize_model_folder(model_dir, cases, found)
