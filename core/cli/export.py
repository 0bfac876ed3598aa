"""``python -m core export MODEL_DIR``: export a trained model to ONNX for inference without TensorFlow."""

from __future__ import annotations

import argparse
import json
from pathlib import Path


def add_parser(subparsers: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    parser = subparsers.add_parser(
        "export", help="export a model folder's model.keras to model.onnx (ONNX Runtime inference)",
        description=("Convert MODEL_DIR/model.keras to MODEL_DIR/model.onnx with tf2onnx, check it against Keras, "
                     "and record its SHA-256 in the model card; inference then runs in ONNX Runtime without "
                     "TensorFlow. Training does this itself at its end."))
    parser.add_argument("model_dir", type=Path, metavar="MODEL_DIR", help="a trained model folder")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from core.engine.runtime import export_model_folder

    entry = export_model_folder(args.model_dir)
    print(json.dumps({"model_dir": str(args.model_dir), "onnx": entry}))
    return 0
