"""Figure builders of the segmentation and report pages: per-class probability maps, the uncertainty map,
the correction canvas's background and the volume bar chart. Builders return figures or arrays and never
render them.

Axial slices are shown as ``core.analysis.edits.axial_display`` lays them out (anterior at the top, radiological
convention by default: the patient's right on the image's left), the same layout as the slice viewer's
axial view (``core.views.figures.extract_slice``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from core.analysis.edits import axial_display
from core.config import CLASS_NAMES, LABEL_COLOURS, LABEL_NAMES
from core.errors import BratsViewerError
from core.views import figures

PROBABILITY_CLASSES: tuple[tuple[int, str], ...] = ((1, "NCR/NET"), (2, "ED"), (3, "ET"))  # softmax index, title
PROBABILITY_SCALE = "Viridis"
UNCERTAINTY_SCALE = "Plasma"
# Drawn over a greyscale underlay: transparent at 0, more opaque as the value grows (same hues as the scales).
PROBABILITY_OVER_SCALE: list[list[Any]] = [[0.0, "rgba(68,1,84,0)"], [0.05, "rgba(68,1,84,0.15)"],
                                            [0.25, "rgba(59,82,139,0.55)"], [0.5, "rgba(33,145,140,0.7)"],
                                            [0.75, "rgba(94,201,98,0.8)"], [1.0, "rgba(253,231,37,0.9)"]]
UNCERTAINTY_OVER_SCALE: list[list[Any]] = [[0.0, "rgba(13,8,135,0)"], [0.05, "rgba(13,8,135,0.15)"],
                                           [0.25, "rgba(126,3,168,0.55)"], [0.5, "rgba(204,71,120,0.7)"],
                                           [0.75, "rgba(248,149,64,0.8)"], [1.0, "rgba(240,249,33,0.9)"]]
# The underlay under a map is dimmed to at most this grey (0-255): a bright region of the image (the FLAIR's
# hyperintense tumour core) where a probability is near 0 (clear there) must not read as a high value (the
# scales' top is bright yellow), so the image stays uniformly darker than any map colour of note.
UNDERLAY_MAX_GREY = 90
SEGMENTATION_BAR = "#0f7c8c"  # the app's primary colour
GROUND_TRUTH_BAR = "#9aa5ad"
_AXES_OFF = dict(visible=False, showgrid=False, zeroline=False)
LETTER_COLOUR = (255, 213, 79)  # orientation letters (the plotly figures' #ffd54f)


def _check_slice(arr: np.ndarray, ndim: int, what: str) -> np.ndarray:
    a = np.asarray(arr)
    if a.ndim != ndim:
        raise BratsViewerError(f"expected {what} with {ndim} axes, got shape {a.shape}")
    return a


def _heatmap(img: np.ndarray, coloraxis: str, name: str, hover_label: str) -> go.Heatmap:
    """A heatmap of a displayed image (rows, cols) rounded to 3 decimals (smaller payload)."""
    return go.Heatmap(z=np.round(img.astype(np.float32), 3), coloraxis=coloraxis, name=name,
                      hovertemplate=f"{name}: {hover_label} %{{z:.2f}}<extra></extra>")


def _image_axes(fig: go.Figure, rows: int, cols: int, n: int) -> None:
    for i in range(n):
        suffix = "" if i == 0 else str(i + 1)
        fig.update_layout({f"xaxis{suffix}": dict(**_AXES_OFF, range=[-0.5, cols - 0.5], constrain="domain"),
                           f"yaxis{suffix}": dict(**_AXES_OFF, range=[rows - 0.5, -0.5],
                                                  scaleanchor=f"x{suffix}", constrain="domain")})


def _letters(fig: go.Figure, rows: int, cols: int, n: int, radiological: bool) -> None:
    letters = figures.orientation_letters("axial", radiological)
    font = dict(color="#ffd54f", size=12, family="Arial Black, Arial, sans-serif")
    pos = {"top": (cols / 2, 2, "center", "top"), "bottom": (cols / 2, rows - 3, "center", "bottom"),
           "left": (2, rows / 2, "left", "middle"), "right": (cols - 3, rows / 2, "right", "middle")}
    notes = [dict(x=x, y=y, xref=f"x{suffix}", yref=f"y{suffix}", text=f"<b>{letters[edge]}</b>", showarrow=False,
                  font=font, xanchor=xa, yanchor=ya)
             for suffix in ("" if i == 0 else str(i + 1) for i in range(n)) for edge, (x, y, xa, ya) in pos.items()]
    fig.update_layout(annotations=list(fig.layout.annotations) + notes)  # one update: add_annotation is ~10 ms each


def _underlay(image_xy: np.ndarray | None, window: tuple[float, float] | None, shape_xy: tuple[int, int],
              box: tuple[int, int, int, int] | None, radiological: bool) -> go.Image | None:
    """The anatomical slice (X, Y) as a greyscale ``go.Image`` laid out like the maps, dimmed to
    ``UNDERLAY_MAX_GREY`` at most, or None without one."""
    if image_xy is None:
        return None
    img = _check_slice(image_xy, 2, "an anatomical slice (X, Y)")
    if img.shape != tuple(shape_xy):
        raise BratsViewerError(f"expected an anatomical slice of shape {tuple(shape_xy)}, got {img.shape}")
    lo, hi = window if window is not None else figures.auto_window(img[..., None])
    grey = figures.window_to_uint8(axial_display(_crop(img, box), radiological), lo, max(hi, lo + 1e-6))
    grey = np.round(grey.astype(np.float32) * (UNDERLAY_MAX_GREY / 255.0)).astype(np.uint8)
    return go.Image(source=figures.png_data_uri(grey), hoverinfo="skip", name="image")


def _crop(arr: np.ndarray, box: tuple[int, int, int, int] | None) -> np.ndarray:
    if box is None:
        return arr
    x0, x1, y0, y1 = (int(v) for v in box)
    if not (0 <= x0 < x1 <= arr.shape[0] and 0 <= y0 < y1 <= arr.shape[1]):
        raise BratsViewerError(f"expected a crop box (x0, x1, y0, y1) inside {arr.shape[:2]}, got {tuple(box)}")
    return arr[x0:x1, y0:y1]


def probability_figure(probs_xy4: np.ndarray, z: int, radiological: bool = True, height: int = 380,
                       box: tuple[int, int, int, int] | None = None, image_xy: np.ndarray | None = None,
                       window: tuple[float, float] | None = None) -> go.Figure:
    """Heatmaps of the NCR, ED and ET probabilities of one axial slice, side by side, one colour bar 0..1;
    with ``image_xy`` the maps are drawn semi-transparent (clear at 0) over that greyscale anatomical slice.

    Args:
        probs_xy4: (X, Y, 4) class probabilities of the slice (background, NCR, ED, ET).
        z: the slice's index (titles only).
        box: optional crop (x0, x1, y0, y1) on the slice grid (e.g. the brain's box), applied before display.
        image_xy: optional (X, Y) intensities of the same slice (the underlay); ``window`` (low, high) maps
            them to grey (default: ``figures.auto_window``).

    Returns:
        A figure with three ``go.Heatmap`` traces sharing ``coloraxis`` (range 0..1), each after a greyscale
        ``go.Image`` of the underlay when there is one.
    """
    probs = _check_slice(probs_xy4, 3, "slice probabilities (X, Y, 4)")
    if probs.shape[2] != len(CLASS_NAMES):
        raise BratsViewerError(f"expected {len(CLASS_NAMES)} classes on the last axis, got {probs.shape[2]}")
    under = _underlay(image_xy, window, probs.shape[:2], box, radiological)
    probs = _crop(probs, box)
    titles = [f"P({title}) z={z}" for _, title in PROBABILITY_CLASSES]
    fig = make_subplots(rows=1, cols=3, subplot_titles=titles, horizontal_spacing=0.02)
    rows = cols = 0
    for i, (cls, title) in enumerate(PROBABILITY_CLASSES):
        img = axial_display(probs[:, :, cls], radiological)
        rows, cols = img.shape
        if under is not None:
            fig.add_trace(under, row=1, col=i + 1)
        fig.add_trace(_heatmap(img, "coloraxis", title, "probability"), row=1, col=i + 1)
    _image_axes(fig, rows, cols, 3)
    _letters(fig, rows, cols, 3, radiological)
    scale = PROBABILITY_OVER_SCALE if under is not None else PROBABILITY_SCALE
    fig.update_layout(coloraxis=dict(colorscale=scale, cmin=0.0, cmax=1.0,
                                     colorbar=dict(title=dict(text="probability"), thickness=12, len=0.9)),
                      height=height, margin=dict(l=0, r=0, t=30, b=0), plot_bgcolor="black",
                      paper_bgcolor="rgba(0,0,0,0)")
    return fig


def uncertainty_figure(unc_xy: np.ndarray, z: int, radiological: bool = True, height: int = 380,
                       box: tuple[int, int, int, int] | None = None, image_xy: np.ndarray | None = None,
                       window: tuple[float, float] | None = None) -> go.Figure:
    """Heatmap of the normalised predictive entropy (0 certain .. 1 uniform) of one axial slice (X, Y),
    optionally cropped to ``box`` (x0, x1, y0, y1); with ``image_xy`` (X, Y) drawn semi-transparent over that
    greyscale anatomical slice (as ``probability_figure``)."""
    unc_full = _check_slice(unc_xy, 2, "a slice uncertainty map (X, Y)")
    under = _underlay(image_xy, window, unc_full.shape, box, radiological)
    img = axial_display(_crop(unc_full, box), radiological)
    rows, cols = img.shape
    fig = go.Figure([t for t in (under, _heatmap(img, "coloraxis", "uncertainty", "entropy")) if t is not None])
    _image_axes(fig, rows, cols, 1)
    _letters(fig, rows, cols, 1, radiological)
    scale = UNCERTAINTY_OVER_SCALE if under is not None else UNCERTAINTY_SCALE
    fig.update_layout(coloraxis=dict(colorscale=scale, cmin=0.0, cmax=1.0,
                                     colorbar=dict(title=dict(text="entropy"), thickness=12, len=0.9)),
                      title=dict(text=f"Uncertainty (TTA entropy) z={z}", x=0.5, xanchor="center",
                                 font=dict(size=14)),
                      height=height, margin=dict(l=0, r=0, t=30, b=0), plot_bgcolor="black",
                      paper_bgcolor="rgba(0,0,0,0)")
    return fig


def canvas_background(image: np.ndarray, labels: np.ndarray | None, z: int, window: tuple[float, float],
                      target_px: int = 480, opacity: float = 0.35, radiological: bool = True,
                      letters: bool = True) -> Any:
    """The correction canvas's background: axial slice ``z`` of ``image`` (X, Y, Z) with ``labels`` blended in,
    laid out as ``axial_display``, enlarged (nearest neighbour) so its longer side is ``target_px``; with
    ``letters``, the orientation letters (``figures.orientation_letters``) at the middle of each edge.

    Returns:
        A ``PIL.Image.Image`` (RGB) of size (X * s, Y * s) in (width, height), s = target_px / max(X, Y).
    """
    from PIL import Image, ImageDraw, ImageFont

    overlays = [figures.Overlay(labels, opacity)] if labels is not None else []
    rgb = figures.compose_plane(image, "axial", z, window, radiological, overlays)
    width, height = canvas_size(image.shape[:3], target_px)
    out = Image.fromarray(rgb).resize((width, height), Image.Resampling.NEAREST)
    if letters:
        draw = ImageDraw.Draw(out)
        size = max(10, min(width, height) // 22)
        font = ImageFont.load_default(size=size)
        pad = max(2, size // 4)
        for edge, (x, y, anchor) in {"top": (width / 2, pad, "mt"), "bottom": (width / 2, height - pad, "mb"),
                                     "left": (pad, height / 2, "lm"), "right": (width - pad, height / 2, "rm")
                                     }.items():
            draw.text((x, y), figures.orientation_letters("axial", radiological)[edge], fill=LETTER_COLOUR,
                      font=font, anchor=anchor, stroke_width=max(1, size // 8), stroke_fill=(0, 0, 0))
    return out


def legend_html(error: bool = False) -> str:
    """The label colours (``figures.legend_items``) as one line of HTML swatches, for beside a figure."""
    items = "".join(
        f'<span style="display:inline-flex;align-items:center;margin-right:14px;">'
        f'<span style="width:12px;height:12px;background:{colour};display:inline-block;margin-right:6px;'
        f'border-radius:2px;"></span>{name}</span>' for name, colour in figures.legend_items(error=error))
    return f'<div style="font-size:0.85rem;">{items}</div>'


def canvas_size(shape: Sequence[int], target_px: int = 480) -> tuple[int, int]:
    """(width, height) in pixels of an axial slice of a (X, Y, Z) grid drawn with its longer side ``target_px``."""
    nx, ny = int(shape[0]), int(shape[1])
    scale = float(target_px) / max(nx, ny)
    return max(1, int(round(nx * scale))), max(1, int(round(ny * scale)))


def volume_bar_figure(rows: Sequence[Mapping[str, Any]], source_name: str = "Segmentation",
                      height: int = 360) -> go.Figure:
    """Grouped bars of the volumes in mL per structure (``core.analysis.report.volume_table`` rows), the segmentation
    beside the ground truth when the rows hold ``gt_volume_ml``.

    Returns:
        A figure with one ``go.Bar`` trace (segmentation) or two (segmentation, ground truth).
    """
    if not rows:
        raise BratsViewerError("expected at least one volume row, got none")
    names = [str(r["structure"]) for r in rows]
    fig = go.Figure()
    fig.add_trace(go.Bar(x=names, y=[float(r["volume_ml"]) for r in rows], name=source_name,
                         marker=dict(color=SEGMENTATION_BAR), text=[f"{float(r['volume_ml']):.1f}" for r in rows],
                         textposition="outside", hovertemplate="%{x}: %{y:.1f} mL<extra>" + source_name + "</extra>"))
    if all("gt_volume_ml" in r for r in rows):
        fig.add_trace(go.Bar(x=names, y=[float(r["gt_volume_ml"]) for r in rows], name="Ground truth",
                             marker=dict(color=GROUND_TRUTH_BAR), text=[f"{float(r['gt_volume_ml']):.1f}" for r in rows],
                             textposition="outside", hovertemplate="%{x}: %{y:.1f} mL<extra>Ground truth</extra>"))
    top = max([float(r["volume_ml"]) for r in rows] + [float(r.get("gt_volume_ml", 0.0)) for r in rows] + [1.0])
    fig.update_layout(barmode="group", height=height, margin=dict(l=0, r=0, t=10, b=0),
                      yaxis=dict(title="Volume (mL)", range=[0, top * 1.18], rangemode="tozero"),
                      legend=dict(orientation="h", y=1.08, x=0), bargap=0.25)
    return fig


def label_choice_text(label: int) -> str:
    """Text of a paint choice: "NCR/NET (1)", "ED (2)", "ET (4)" or "Erase (0)"."""
    return "Erase (0)" if int(label) == 0 else f"{LABEL_NAMES[int(label)]} ({int(label)})"


def stroke_colour(label: int) -> str:
    """CSS colour of the brush for a paint label (translucent label colour; white for erase)."""
    if int(label) == 0:
        return "rgba(255, 255, 255, 0.8)"
    r, g, b = LABEL_COLOURS[int(label)]
    return f"rgba({r}, {g}, {b}, 0.7)"


def metric_delta(change: float, digits: int, unit: str = "") -> tuple[str, bool]:
    """How a metric's change is shown: (text, neutral). A change that rounds to zero at ``digits`` decimals is
    neutral: "0.0 mm", no sign (the page then shows it grey, without an arrow); else the signed value ("+1.2 mm").
    """
    suffix = f" {unit}" if unit else ""
    if round(float(change), digits) == 0.0:
        return f"{0.0:.{digits}f}{suffix}", True
    return f"{float(change):+.{digits}f}{suffix}", False
