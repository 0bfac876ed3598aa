"""The engine's functions that pages call directly, passed through here so that pages reach the engine (anything
that runs the model or checks a case for it) through ``core/app`` only (walls in ``tests/test_layout.py``)."""

from __future__ import annotations

from core.engine.inference import predict_slice
from core.engine.preprocess import check_modalities

__all__ = ["check_modalities", "predict_slice"]
