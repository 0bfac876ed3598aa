"""Linked side-by-side views of a follow-up comparison: the baseline and the registered follow-up cut through the
same slice of the baseline grid, with their labels, as display RGB arrays (pure; the page shows them)."""

from __future__ import annotations

import numpy as np

from core.analysis.compare import Comparison
from core.views import figures


def common_modalities(comparison: Comparison) -> tuple[str, ...]:
    """Modalities shown side by side: those both studies hold, the registration modality first."""
    key = comparison.registration.modality
    both = [k for k in comparison.baseline.modalities if k in comparison.followup_images]
    return (key, *[k for k in both if k != key])


def square_pixels(rgb: np.ndarray, plane: str, spacing_mm: tuple[float, float, float]) -> np.ndarray:
    """``rgb`` (rows, cols, 3) with rows repeated or columns repeated (nearest neighbour) so that one display
    pixel is square in mm (anisotropic voxels are not shown squashed)."""
    aspect = figures.pixel_aspect(plane, spacing_mm)  # pixel height / width in mm
    if abs(aspect - 1.0) < 1e-3:
        return rgb
    rows, cols = rgb.shape[:2]
    if aspect > 1:
        idx = np.minimum((np.arange(round(rows * aspect)) / aspect).astype(int), rows - 1)
        return rgb[idx]
    idx = np.minimum((np.arange(round(cols / aspect)) * aspect).astype(int), cols - 1)
    return rgb[:, idx]


def linked_pair(comparison: Comparison, plane: str, index: int, modality: str, overlay: bool = True,
                opacity: float = 0.4, radiological: bool = True,
                windows: tuple[tuple[float, float], tuple[float, float]] | None = None
                ) -> tuple[np.ndarray, np.ndarray]:
    """(baseline RGB, registered follow-up RGB) of ``plane`` at ``index`` on the baseline grid, each windowed on
    ``windows`` (default: its own brain's 0.5-99.5 percentiles), with its labels blended when ``overlay``.

    Raises:
        BratsViewerError: an unknown plane or an index outside the grid.
    """
    base = np.asarray(comparison.baseline.images[modality].data)
    follow = np.asarray(comparison.followup_images[modality])
    wins = windows or (figures.auto_window(base), figures.auto_window(follow))
    out = []
    for image, labels, window in ((base, comparison.baseline_labels, wins[0]),
                                  (follow, comparison.followup_labels_on_baseline, wins[1])):
        layers = [figures.Overlay(np.asarray(labels), opacity=opacity)] if overlay else []
        rgb = figures.compose_plane(image, plane, index, window, radiological, layers)
        out.append(square_pixels(rgb, plane, comparison.baseline.spacing_mm))
    return out[0], out[1]
