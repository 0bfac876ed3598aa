"""A model folder's file names, their checksums, its card on disk, and the lazy Keras import.

Shared by ``model`` (loading), ``runtime`` (ONNX), ``volume3d`` (the 3-D network) and ``export`` (writing the
exports into a folder), so that none of them needs another's module for these basics.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

WEIGHTS_NAME = "model.keras"
CARD_JSON = "model_card.json"


def file_sha256(path: str | Path) -> str:
    """SHA-256 hex digest of a file's bytes, read in 1 MiB chunks."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def keras_module() -> Any:
    """Import Keras (and TensorFlow) on first use, quietly."""
    import os

    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import keras

    return keras


def read_card(folder: Path) -> dict[str, Any]:
    """The folder's ``model_card.json`` as a dict ({} when absent or unreadable)."""
    try:
        card = json.loads((folder / CARD_JSON).read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        return {}
    return card if isinstance(card, dict) else {}


def record_in_card(folder: Path, key: str, entry: dict[str, Any]) -> None:
    """Set ``key`` of the folder's ``model_card.json`` to ``entry`` (written atomically)."""
    from core.data.io import atomic_write_bytes

    card = read_card(folder)
    card[key] = entry
    atomic_write_bytes(folder / CARD_JSON, json.dumps(card, indent=2).encode())
