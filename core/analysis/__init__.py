"""Metrics, edits and reports computed from labels (never imports the engine's TensorFlow)."""
