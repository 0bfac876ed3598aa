"""The RANO-style measurement drawn on its axial slice, and the lesion table of the report page. Builders return
a figure or rows and never render them.

The slice is laid out as the slice viewer's axial view (``core.views.figures.extract_slice``: anterior at the top,
radiological convention by default). Diameters come from ``core.analysis.measure`` in continuous voxel
coordinates ``(x, y)`` on the RAS grid; on screen, voxel ``(x, y)`` of an (X, Y) slice is at column ``X - 1 - x``
(radiological; ``x`` when neurological) and row ``Y - 1 - y``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import plotly.graph_objects as go

from core.analysis.measure import Lesion, RanoResult
from core.analysis.report import measurement_window
from core.errors import BratsViewerError
from core.views import figures

D1_COLOUR = "#ffd700"  # yellow: the longest diameter
D2_COLOUR = "#00e6ff"  # cyan: the perpendicular diameter
_AXES_OFF = dict(visible=False, showgrid=False, zeroline=False)


def display_segment(segment: Sequence[Sequence[float]], shape_xy: Sequence[int], radiological: bool = True
                    ) -> tuple[tuple[float, float], tuple[float, float]]:
    """Screen positions ((col, row), (col, row)) of a segment's two ends given in voxel coordinates (x, y) of an
    axial slice of ``shape_xy`` (X, Y)."""
    nx, ny = int(shape_xy[0]), int(shape_xy[1])
    out = []
    for x, y in segment:
        col = (nx - 1 - float(x)) if radiological else float(x)
        out.append((col, ny - 1 - float(y)))
    return out[0], out[1]


def lesion_rows(result: RanoResult) -> list[dict[str, Any]]:
    """One row per lesion for a table: number, axial slice (from 0), both diameters (mm), product (mm^2),
    volume (mL), measurable, target."""
    targets = {les.index for les in result.targets}
    return [{"Lesion": les.index, "Axial slice z": les.slice_z, "Longest (mm)": round(les.d1_mm, 1),
             "Perpendicular (mm)": round(les.d2_mm, 1), "Product (mm²)": round(les.product_mm2, 1),
             "Volume (mL)": round(les.volume_ml, 2), "Measurable": les.measurable, "Target": les.index in targets}
            for les in result.lesions]


def _lesion_of(result: RanoResult, lesion_index: int | None) -> Lesion:
    if not result.lesions:
        raise BratsViewerError("expected at least one enhancing lesion to draw, got none")
    if lesion_index is None:
        return result.targets[0] if result.targets else result.lesions[0]
    for les in result.lesions:
        if les.index == lesion_index:
            return les
    raise BratsViewerError(f"expected a lesion number in 1..{len(result.lesions)}, got {lesion_index}")


def measurement_figure(image: np.ndarray, labels: np.ndarray, result: RanoResult, lesion_index: int | None = None,
                       window: tuple[float, float] | None = None, radiological: bool = True,
                       spacing_mm: Sequence[float] | None = None, opacity: float = 0.35, height: int = 480,
                       zoom: bool = True) -> go.Figure:
    """The axial slice of a lesion with the label overlay and the two diameters of every lesion measured on
    that slice (longest in yellow, perpendicular in cyan, each labelled with its length).

    Args:
        image: background volume (X, Y, Z) on the RAS grid.
        labels: label volume (X, Y, Z), 0/1/2/4, on the same grid.
        result: ``core.analysis.measure.measure_rano`` of ``labels``.
        lesion_index: the lesion whose slice is shown (default: the first target, else lesion 1).
        window: grey window (low, high) of ``image`` (default ``figures.auto_window``).
        spacing_mm: voxel size (X, Y, Z); anisotropic pixels are drawn to scale when given.
        zoom: open zoomed on the lesion (``core.analysis.report.measurement_window``: 60 mm or 2.5 x its longest
            diameter, the same view as the PDF's picture); a double click in the app returns to this view, the
            zoom-out button of the mode bar to the whole slice.

    Returns:
        A figure with one ``go.Image`` trace, then two line traces (longest, perpendicular) per lesion on the
        slice, in lesion order; its title names the slice (counted from 0).

    Raises:
        BratsViewerError: no lesion, an unknown lesion number, or volumes on different grids.
    """
    img = np.asarray(image)
    lab = np.asarray(labels)
    if img.ndim != 3 or lab.shape != img.shape:
        raise BratsViewerError(f"expected labels on the image grid {img.shape}, got {lab.shape}")
    lesion = _lesion_of(result, lesion_index)
    z = lesion.slice_z
    win = window if window is not None else figures.auto_window(img)
    rgb = figures.compose_plane(img, "axial", z, win, radiological, overlays=[figures.Overlay(lab, opacity)])
    rows, cols = rgb.shape[:2]
    fig = go.Figure(go.Image(source=figures.png_data_uri(rgb), hoverinfo="skip", name="slice"))
    annotations = []
    for les in result.lesions:
        if les.slice_z != z:
            continue
        for name, seg, length, colour in (("longest", les.d1_endpoints, les.d1_mm, D1_COLOUR),
                                          ("perpendicular", les.d2_endpoints, les.d2_mm, D2_COLOUR)):
            (c0, r0), (c1, r1) = display_segment(seg, lab.shape[:2], radiological)
            fig.add_trace(go.Scatter(
                x=[c0, c1], y=[r0, r1], mode="lines+markers", name=f"Lesion {les.index}: {name} {length:.1f} mm",
                line=dict(color=colour, width=3), marker=dict(color=colour, size=6),
                hovertemplate=f"lesion {les.index}, {name} diameter {length:.1f} mm<extra></extra>"))
        (c0, r0), _ = display_segment(les.d1_endpoints, lab.shape[:2], radiological)
        annotations.append(dict(x=c0, y=r0, text=f"<b>{les.index}</b>", showarrow=False, xshift=-10, yshift=-10,
                                font=dict(color=D1_COLOUR, size=14)))
    letters = figures.orientation_letters("axial", radiological)
    font = dict(color="#ffd54f", size=15, family="Arial Black, Arial, sans-serif")
    pos = {"top": (0.5, 0.99, "center", "top"), "bottom": (0.5, 0.01, "center", "bottom"),
           "left": (0.01, 0.5, "left", "middle"), "right": (0.99, 0.5, "right", "middle")}
    annotations += [dict(x=x, y=y, xref="x domain", yref="y domain", text=f"<b>{letters[edge]}</b>",
                         showarrow=False, font=font, xanchor=xa, yanchor=ya) for edge, (x, y, xa, ya) in pos.items()]
    x_range, y_range = [-0.5, cols - 0.5], [rows - 0.5, -0.5]
    if zoom:
        sp = spacing_mm if spacing_mm is not None else (1.0, 1.0, 1.0)
        x0, x1, y0, y1 = measurement_window(lesion, (lab.shape[0], lab.shape[1]), (float(sp[0]), float(sp[1])))
        (ca, ra), (cb, rb) = display_segment(((x0, y0), (x1, y1)), lab.shape[:2], radiological)
        x_range = [min(ca, cb) - 0.5, max(ca, cb) + 0.5]
        y_range = [max(ra, rb) + 0.5, min(ra, rb) - 0.5]
    fig.update_layout(
        title=dict(text=(f"Axial slice z = {z} (counted from 0): lesion {lesion.index}, "
                         f"{lesion.d1_mm:.1f} × {lesion.d2_mm:.1f} mm = {lesion.product_mm2:.0f} mm²"),
                   x=0.5, xanchor="center", font=dict(size=14)),
        annotations=annotations, height=height, margin=dict(l=0, r=0, t=36, b=0),
        xaxis=dict(**_AXES_OFF, range=x_range, constrain="domain"),
        yaxis=dict(**_AXES_OFF, range=y_range, scaleanchor="x",
                   scaleratio=figures.pixel_aspect("axial", spacing_mm), constrain="domain"),
        legend=dict(orientation="h", yanchor="top", y=-0.02, x=0), showlegend=True,
        plot_bgcolor="black", paper_bgcolor="rgba(0,0,0,0)", dragmode="pan",
    )
    return fig
