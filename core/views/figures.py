"""Figure builders for the viewer pages: slices, window/level, label and error overlays, montages, 3-D views.

Every builder returns an array or a plotly figure and never renders it. Volumes are on the RAS grid of
``core.data.io.Volume``: shape (X, Y, Z), index increasing toward patient Right, Anterior, Superior.

Display conventions:
    * radiological: patient right on the screen's left (as if facing the patient);
    * neurological: patient left on the screen's left (as if looking from behind).
    Axial and coronal views show anterior / superior at the top; sagittal views show superior at the top and
    anterior on the left in both conventions (the conventions differ in left-right only). The orientation letters
    of each edge are derived from the same layout that slices the array, so they cannot disagree with the pixels.

All compositing is done in numpy on uint8 images (one slice is 240 x 240 pixels for BraTS), so that one cursor
move costs a few milliseconds per view.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from core.config import LABEL_COLOURS, LABEL_LONG_NAMES, LABEL_NAMES, MODALITY_TITLES, TUMOUR_LABELS
from core.errors import BratsViewerError

PLANES: tuple[str, ...] = ("axial", "coronal", "sagittal")
PLANE_AXIS: dict[str, int] = {"axial": 2, "coronal": 1, "sagittal": 0}  # array axis the plane cuts across
AXIS_NAMES: tuple[str, ...] = ("x", "y", "z")
# (low-index end, high-index end) of each RAS array axis.
AXIS_LETTERS: tuple[tuple[str, str], ...] = (("L", "R"), ("P", "A"), ("I", "S"))

FP_COLOUR: tuple[int, int, int] = (255, 215, 0)  # yellow: predicted tumour where the reference has none
FN_COLOUR: tuple[int, int, int] = (255, 0, 255)  # magenta: reference tumour the prediction missed
CROSSHAIR_COLOUR = "rgba(0, 230, 255, 0.75)"

# Window presets as (low, high) percentiles of the brain (non-zero) voxels. MRI intensities have no absolute
# scale (unlike CT Hounsfield units), so presets are relative to each volume's own histogram.
AUTO_PERCENTILES: tuple[float, float] = (0.5, 99.5)
WINDOW_PRESETS: dict[str, dict[str, tuple[float, float]]] = {
    "flair": {"Auto (0.5-99.5%)": AUTO_PERCENTILES, "Lesion (bright edema)": (5.0, 99.9), "Full range": (0.0, 100.0)},
    "t1": {"Auto (0.5-99.5%)": AUTO_PERCENTILES, "Grey/white contrast": (10.0, 99.0), "Full range": (0.0, 100.0)},
    "t1ce": {"Auto (0.5-99.5%)": AUTO_PERCENTILES, "Enhancement": (2.0, 99.9), "Full range": (0.0, 100.0)},
    "t2": {"Auto (0.5-99.5%)": AUTO_PERCENTILES, "Fluid (CSF bright)": (1.0, 99.9), "Full range": (0.0, 100.0)},
}
DEFAULT_PRESET = "Auto (0.5-99.5%)"
_PERCENTILE_GRID: tuple[float, ...] = tuple(sorted({p for d in WINDOW_PRESETS.values() for v in d.values() for p in v}))


# ------------------------------------------------------------------------------------------ orientation ---

@dataclass(frozen=True)
class PlaneLayout:
    """How a plane of a RAS volume is laid out on screen.

    Attributes:
        plane: "axial", "coronal" or "sagittal".
        axis: array axis the plane cuts across (its index is the slice number).
        row_axis, col_axis: array axes shown along the screen's rows (top to bottom) and columns (left to right).
        row_flip, col_flip: True when display row / column 0 is the highest array index of that axis.
    """

    plane: str
    axis: int
    row_axis: int
    row_flip: bool
    col_axis: int
    col_flip: bool

    def letters(self) -> dict[str, str]:
        """Orientation letter of each screen edge: keys "top", "bottom", "left", "right"."""
        low_r, high_r = AXIS_LETTERS[self.row_axis]
        low_c, high_c = AXIS_LETTERS[self.col_axis]
        return {
            "top": high_r if self.row_flip else low_r,
            "bottom": low_r if self.row_flip else high_r,
            "left": high_c if self.col_flip else low_c,
            "right": low_c if self.col_flip else high_c,
        }


def plane_layout(plane: str, radiological: bool = True) -> PlaneLayout:
    """The screen layout of ``plane`` in the radiological (default) or neurological convention."""
    if plane == "axial":  # rows: anterior at the top; columns: patient's right on the left when radiological
        return PlaneLayout("axial", 2, row_axis=1, row_flip=True, col_axis=0, col_flip=radiological)
    if plane == "coronal":  # rows: superior at the top
        return PlaneLayout("coronal", 1, row_axis=2, row_flip=True, col_axis=0, col_flip=radiological)
    if plane == "sagittal":  # rows: superior at the top; columns: anterior on the left
        return PlaneLayout("sagittal", 0, row_axis=2, row_flip=True, col_axis=1, col_flip=True)
    raise BratsViewerError(f"expected a plane among {', '.join(PLANES)}, got {plane!r}")


def orientation_letters(plane: str, radiological: bool = True) -> dict[str, str]:
    """Letters (R/L, A/P, S/I) of the top, bottom, left and right edges of a plane's view."""
    return plane_layout(plane, radiological).letters()


def display_shape(plane: str, shape: Sequence[int]) -> tuple[int, int]:
    """(rows, cols) of a plane's view of a volume of ``shape`` (X, Y, Z)."""
    lay = plane_layout(plane)
    return int(shape[lay.row_axis]), int(shape[lay.col_axis])


def extract_slice(volume: np.ndarray, plane: str, index: int, radiological: bool = True) -> np.ndarray:
    """The 2-D slice of ``volume`` (X, Y, Z[, C]) through ``index`` on ``plane``, oriented for display.

    Returns:
        A view (no copy) of shape (rows, cols[, C]): row 0 is the top of the screen, column 0 its left.

    Raises:
        BratsViewerError: the index is outside the volume or the volume is not 3-D.
    """
    if volume.ndim < 3:
        raise BratsViewerError(f"expected a volume of shape (X, Y, Z), got shape {volume.shape}")
    lay = plane_layout(plane, radiological)
    n = volume.shape[lay.axis]
    if not 0 <= int(index) < n:
        raise BratsViewerError(f"expected a {plane} slice index in 0..{n - 1}, got {index}")
    idx: list[Any] = [slice(None)] * volume.ndim
    idx[lay.axis] = int(index)
    sl = volume[tuple(idx)]
    kept = [a for a in range(3) if a != lay.axis]  # the order of the two spatial axes left in ``sl``
    if kept.index(lay.row_axis) != 0:
        sl = np.swapaxes(sl, 0, 1)
    if lay.row_flip:
        sl = sl[::-1]
    if lay.col_flip:
        sl = sl[:, ::-1]
    return sl


def voxel_to_display(plane: str, voxel: Sequence[int], shape: Sequence[int], radiological: bool = True
                     ) -> tuple[int, int]:
    """(row, col) on the plane's view where voxel (x, y, z) of a volume of ``shape`` appears."""
    lay = plane_layout(plane, radiological)
    r, c = int(voxel[lay.row_axis]), int(voxel[lay.col_axis])
    if lay.row_flip:
        r = int(shape[lay.row_axis]) - 1 - r
    if lay.col_flip:
        c = int(shape[lay.col_axis]) - 1 - c
    return r, c


def display_to_voxel(plane: str, index: int, row: int, col: int, shape: Sequence[int], radiological: bool = True
                     ) -> tuple[int, int, int]:
    """Voxel (x, y, z) shown at (row, col) of the plane's view through slice ``index``."""
    lay = plane_layout(plane, radiological)
    vox = [0, 0, 0]
    vox[lay.axis] = int(index)
    vox[lay.row_axis] = int(shape[lay.row_axis]) - 1 - int(row) if lay.row_flip else int(row)
    vox[lay.col_axis] = int(shape[lay.col_axis]) - 1 - int(col) if lay.col_flip else int(col)
    return vox[0], vox[1], vox[2]


# ----------------------------------------------------------------------------------------- window/level ---

def brain_percentiles(volume: np.ndarray, percentiles: Sequence[float] = _PERCENTILE_GRID,
                      max_samples: int = 1_000_000) -> dict[float, float]:
    """Percentiles of the brain (non-zero) voxels of ``volume`` (any shape), sub-sampled to ``max_samples``.

    Returns:
        percentile -> intensity; all zeros when the volume has no non-zero voxel.
    """
    flat = np.asarray(volume).reshape(-1)
    step = max(1, flat.size // max_samples)
    sample = flat[::step]
    brain = sample[sample != 0]
    if brain.size == 0:
        brain = flat[flat != 0]
    if brain.size == 0:
        return {float(p): 0.0 for p in percentiles}
    values = np.percentile(brain.astype(np.float64), list(percentiles))
    return {float(p): float(v) for p, v in zip(percentiles, values, strict=True)}


def window_from_percentiles(stats: Mapping[float, float], low_pct: float, high_pct: float) -> tuple[float, float]:
    """(low, high) intensities of a window from precomputed ``brain_percentiles``; high > low always."""
    lo, hi = float(stats[float(low_pct)]), float(stats[float(high_pct)])
    if hi <= lo:
        hi = lo + 1.0
    return lo, hi


def auto_window(volume: np.ndarray) -> tuple[float, float]:
    """Window of the 0.5-99.5 percentiles of the brain voxels of ``volume``."""
    return window_from_percentiles(brain_percentiles(volume, AUTO_PERCENTILES), *AUTO_PERCENTILES)


def presets_for(modality: str) -> dict[str, tuple[float, float]]:
    """Named window presets (percentile pairs) of a modality; the auto preset for unknown modalities."""
    return dict(WINDOW_PRESETS.get(modality, {DEFAULT_PRESET: AUTO_PERCENTILES}))


def window_to_uint8(image: np.ndarray, low: float, high: float) -> np.ndarray:
    """Map intensities linearly so ``low`` -> 0 and ``high`` -> 255, clipping outside; returns uint8 (same shape)."""
    if not high > low:
        raise BratsViewerError(f"expected a window with high > low, got low={low}, high={high}")
    scale = np.float32(255.0 / (high - low))
    out = (np.asarray(image, dtype=np.float32) - np.float32(low)) * scale
    np.clip(out, 0.0, 255.0, out=out)
    return (out + 0.5).astype(np.uint8)


# --------------------------------------------------------------------------------------------- overlays ---

def boundary(mask: np.ndarray) -> np.ndarray:
    """Inner boundary of a 2-D boolean mask: mask pixels with a 4-neighbour outside the mask (or the image)."""
    m = np.asarray(mask, dtype=bool)
    inner = np.zeros_like(m)
    inner[1:-1, 1:-1] = m[1:-1, 1:-1] & m[:-2, 1:-1] & m[2:, 1:-1] & m[1:-1, :-2] & m[1:-1, 2:]
    return m & ~inner


def label_overlay_rgba(labels: np.ndarray, opacity: float = 0.4, classes: Sequence[int] = TUMOUR_LABELS,
                       contour: bool = False, colours: Mapping[int, tuple[int, int, int]] = LABEL_COLOURS
                       ) -> np.ndarray:
    """RGBA overlay of a 2-D label slice: each shown label in its colour with alpha ``opacity``.

    Args:
        labels: (H, W) labels 0/1/2/4.
        opacity: 0-1 alpha of the filled labels (contours are drawn fully opaque).
        classes: labels to show (e.g. (1, 4) hides edema).
        contour: draw only each label's boundary.

    Returns:
        (H, W, 4) uint8; alpha 0 where nothing is shown.
    """
    if not 0.0 <= opacity <= 1.0:
        raise BratsViewerError(f"expected an opacity in 0..1, got {opacity}")
    lab = np.asarray(labels)
    out = np.zeros(lab.shape + (4,), dtype=np.uint8)
    alpha = 255 if contour else int(round(opacity * 255))
    for value in classes:
        if value not in colours:
            continue
        mask = lab == value
        if contour:
            mask = boundary(mask)
        if mask.any():
            out[mask, :3] = colours[value]
            out[mask, 3] = alpha
    return out


def error_overlay_rgba(pred: np.ndarray, reference: np.ndarray, opacity: float = 0.6, contour: bool = False
                       ) -> np.ndarray:
    """Whole-tumour error overlay of a 2-D slice: false positives yellow, false negatives magenta.

    Args:
        pred, reference: (H, W) labels; any non-zero label counts as tumour (WT = labels 1, 2, 4).

    Returns:
        (H, W, 4) uint8.
    """
    p, r = np.asarray(pred) > 0, np.asarray(reference) > 0
    fp, fn = p & ~r, r & ~p
    if contour:
        fp, fn = boundary(fp), boundary(fn)
    out = np.zeros(p.shape + (4,), dtype=np.uint8)
    alpha = 255 if contour else int(round(opacity * 255))
    out[fp, :3], out[fp, 3] = FP_COLOUR, alpha
    out[fn, :3], out[fn, 3] = FN_COLOUR, alpha
    return out


def composite(base: np.ndarray, *overlays: np.ndarray) -> np.ndarray:
    """Alpha-blend RGBA ``overlays`` (H, W, 4) in order over ``base`` (H, W) grey or (H, W, 3) RGB uint8.

    Returns:
        (H, W, 3) uint8.
    """
    rgb = np.asarray(base)
    if rgb.ndim == 2:
        rgb = np.repeat(rgb[:, :, None], 3, axis=2)
    out = rgb.astype(np.float32)
    for ov in overlays:
        if ov.shape[:2] != out.shape[:2]:
            raise BratsViewerError(f"expected an overlay of shape {out.shape[:2]}, got {ov.shape[:2]}")
        a = ov[:, :, 3:4].astype(np.float32) * np.float32(1.0 / 255.0)
        if not a.any():
            continue
        out += (ov[:, :, :3].astype(np.float32) - out) * a
    return (out + 0.5).astype(np.uint8)


@dataclass(frozen=True)
class Overlay:
    """One overlay layer of a view.

    Attributes:
        labels: (X, Y, Z) uint8 labels 0/1/2/4 on the image's grid.
        opacity: alpha of filled labels (0-1).
        classes: labels shown.
        contour: outline only.
        reference: when given, the layer shows the whole-tumour errors of ``labels`` against it (FP / FN).
    """

    labels: np.ndarray
    opacity: float = 0.4
    classes: tuple[int, ...] = TUMOUR_LABELS
    contour: bool = False
    reference: np.ndarray | None = None


def compose_plane(image: np.ndarray, plane: str, index: int, window: tuple[float, float], radiological: bool = True,
                  overlays: Sequence[Overlay] = ()) -> np.ndarray:
    """The display RGB of one plane of ``image`` (X, Y, Z) at ``index`` with the overlays blended in order.

    Returns:
        (rows, cols, 3) uint8.
    """
    grey = window_to_uint8(extract_slice(image, plane, index, radiological), *window)
    layers = []
    for ov in overlays:
        if ov.labels.shape[:3] != image.shape[:3]:
            raise BratsViewerError(f"expected labels on the image grid {image.shape[:3]}, got {ov.labels.shape[:3]}")
        lab = extract_slice(ov.labels, plane, index, radiological)
        if ov.reference is not None:
            ref = extract_slice(ov.reference, plane, index, radiological)
            layers.append(error_overlay_rgba(lab, ref, ov.opacity, ov.contour))
        else:
            layers.append(label_overlay_rgba(lab, ov.opacity, ov.classes, ov.contour))
    return composite(grey, *layers)


def legend_items(error: bool = False) -> list[tuple[str, str]]:
    """(label text, CSS colour) of the overlay legend: the three labels, and FP / FN when ``error``."""
    items = [(f"{LABEL_NAMES[k]} - {LABEL_LONG_NAMES[k]}", _hex(c)) for k, c in LABEL_COLOURS.items()]
    if error:
        items += [("False positive (whole tumour)", _hex(FP_COLOUR)), ("False negative (whole tumour)", _hex(FN_COLOUR))]
    return items


def _hex(rgb: Sequence[int]) -> str:
    return "#{:02x}{:02x}{:02x}".format(*(int(v) for v in rgb))


# ------------------------------------------------------------------------------------------ slice finding ---

def tumour_counts(labels: np.ndarray, axis: int) -> np.ndarray:
    """Number of tumour (non-zero) voxels in each slice across ``axis`` of a (X, Y, Z) label volume."""
    others = tuple(a for a in range(3) if a != axis)
    return np.count_nonzero(np.asarray(labels), axis=others)


def most_tumour_slice(labels: np.ndarray, axis: int) -> int | None:
    """Index along ``axis`` (0 = x, 1 = y, 2 = z) of the slice with most tumour voxels; None without tumour.

    Ties go to the lowest index.
    """
    counts = tumour_counts(labels, axis)
    if counts.size == 0 or counts.max() == 0:
        return None
    return int(np.argmax(counts))


def most_tumour_cursor(labels: np.ndarray) -> dict[str, int] | None:
    """Cursor {x, y, z} at the slices of most tumour along each axis; None without tumour."""
    idx = [most_tumour_slice(labels, a) for a in range(3)]
    if any(i is None for i in idx):
        return None
    return {n: int(i) for n, i in zip(AXIS_NAMES, idx, strict=True)}  # type: ignore[arg-type]


def brain_centre(image: np.ndarray) -> dict[str, int]:
    """Cursor {x, y, z} at the centre of the bounding box of the non-zero voxels (mid-brain); volume centre if none."""
    shape = image.shape[:3]
    centre = {}
    for a, name in enumerate(AXIS_NAMES):
        others = tuple(b for b in range(3) if b != a)
        present = np.flatnonzero(np.any(np.asarray(image) != 0, axis=others))
        centre[name] = int((present[0] + present[-1]) // 2) if present.size else int(shape[a] // 2)
    return centre


def montage_indices(n_slices: int, count: int, extent: tuple[int, int] | None = None) -> list[int]:
    """``count`` evenly spaced slice indices within ``extent`` (first, last inclusive) or the whole axis."""
    lo, hi = extent if extent is not None else (0, n_slices - 1)
    lo, hi = max(0, int(lo)), min(n_slices - 1, int(hi))
    count = max(1, min(int(count), hi - lo + 1))
    return sorted({int(round(v)) for v in np.linspace(lo, hi, count)})


def nonzero_extent(volume: np.ndarray, axis: int) -> tuple[int, int] | None:
    """(first, last) index along ``axis`` of slices holding any non-zero voxel; None when all zero."""
    present = np.flatnonzero(tumour_counts(volume, axis))
    return (int(present[0]), int(present[-1])) if present.size else None


# --------------------------------------------------------------------------------------- plotly: 2-D views ---

_AXES_OFF = dict(visible=False, showgrid=False, zeroline=False)


def png_data_uri(pixels: np.ndarray) -> str:
    """A (rows, cols) grey or (rows, cols, 3) RGB uint8 image as a ``data:image/png;base64,...`` URI, for a
    ``go.Image``'s ``source``: the browser draws it at once, where a ``z`` array is painted pixel by pixel by
    plotly (measured in Chromium: the probability figure drew in 270-530 ms with ``z`` underlays, 70-110 ms with
    PNG ones). Hover text from ``customdata`` works the same."""
    import base64
    import io

    from PIL import Image

    arr = np.ascontiguousarray(pixels, dtype=np.uint8)
    if not (arr.ndim == 2 or (arr.ndim == 3 and arr.shape[2] == 3)):
        raise BratsViewerError(f"expected a (rows, cols) or (rows, cols, 3) image, got shape {arr.shape}")
    buf = io.BytesIO()
    Image.fromarray(arr, mode="L" if arr.ndim == 2 else "RGB").save(buf, format="PNG", compress_level=1)
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def image_pixels(trace: Any) -> np.ndarray:
    """The pixels of a ``go.Image`` trace as (rows, cols, 3) uint8, from its ``z`` or its PNG ``source``."""
    if getattr(trace, "z", None) is not None:
        return np.asarray(trace.z).astype(np.uint8)
    import base64
    import io

    from PIL import Image

    head, _, data = str(trace.source).partition(",")
    if head != "data:image/png;base64":
        raise BratsViewerError(f"expected a PNG data URI as the image's source, got {head[:40]!r}")
    return np.asarray(Image.open(io.BytesIO(base64.b64decode(data))).convert("RGB"))


def _hover_data(raw: np.ndarray, plane: str, index: int, shape: Sequence[int], radiological: bool
                ) -> tuple[np.ndarray, str]:
    """Per-pixel customdata (rows, cols, 3) = (voxel index along rows' axis, along cols' axis, intensity)."""
    lay = plane_layout(plane, radiological)
    rows, cols = raw.shape[:2]
    r_idx = np.arange(rows - 1, -1, -1) if lay.row_flip else np.arange(rows)
    c_idx = np.arange(cols - 1, -1, -1) if lay.col_flip else np.arange(cols)
    raw_arr = np.asarray(raw)
    small_ints = raw_arr.dtype.kind in "iub" and (raw_arr.size == 0 or (raw_arr.min() >= -32768 and raw_arr.max() <= 32767))
    data = np.empty((rows, cols, 3), dtype=np.int16 if small_ints else np.float32)  # int16 halves the payload
    data[:, :, 0] = r_idx[:, None]
    data[:, :, 1] = c_idx[None, :]
    data[:, :, 2] = raw
    names = {lay.row_axis: "%{customdata[0]:.0f}", lay.col_axis: "%{customdata[1]:.0f}", lay.axis: str(int(index))}
    template = (f"voxel x={names[0]} y={names[1]} z={names[2]}<br>intensity %{{customdata[2]:.4g}}"
                "<extra></extra>")
    return data, template


def _crosshair_shapes(row: int, col: int, rows: int, cols: int, xref: str = "x", yref: str = "y") -> list[dict]:
    line = dict(color=CROSSHAIR_COLOUR, width=1, dash="dot")
    return [
        dict(type="line", x0=col, x1=col, y0=-0.5, y1=rows - 0.5, xref=xref, yref=yref, line=line),
        dict(type="line", x0=-0.5, x1=cols - 0.5, y0=row, y1=row, xref=xref, yref=yref, line=line),
    ]


def _letter_annotations(letters: Mapping[str, str], rows: int, cols: int, xref: str = "x", yref: str = "y"
                        ) -> list[dict]:
    font = dict(color="#ffd54f", size=15, family="Arial Black, Arial, sans-serif")
    pos = {"top": (cols / 2, 2, "center", "top"), "bottom": (cols / 2, rows - 3, "center", "bottom"),
           "left": (2, rows / 2, "left", "middle"), "right": (cols - 3, rows / 2, "right", "middle")}
    return [dict(x=x, y=y, xref=xref, yref=yref, text=f"<b>{letters[edge]}</b>", showarrow=False, font=font,
                 xanchor=xa, yanchor=ya) for edge, (x, y, xa, ya) in pos.items()]


def pixel_aspect(plane: str, spacing_mm: Sequence[float] | None) -> float:
    """Height / width in mm of one display pixel of a plane (1.0 without spacing): keeps anisotropic voxels true."""
    if spacing_mm is None:
        return 1.0
    lay = plane_layout(plane)
    col = float(spacing_mm[lay.col_axis])
    return float(spacing_mm[lay.row_axis]) / col if col > 0 else 1.0


def slice_figure(rgb: np.ndarray, raw: np.ndarray | None, plane: str, index: int, cursor: Mapping[str, int],
                 shape: Sequence[int], radiological: bool = True, title: str = "", height: int = 360,
                 spacing_mm: Sequence[float] | None = None) -> go.Figure:
    """A plotly view of one composed plane with the cross-hair, the orientation letters and voxel hover.

    Args:
        rgb: (rows, cols, 3) uint8 from ``compose_plane``.
        raw: (rows, cols) intensities of the same slice for hover (``extract_slice``), or None.
        cursor: {x, y, z} cross-hair position on the RAS grid of ``shape``.
        spacing_mm: voxel size (X, Y, Z) in mm; pixels are drawn with its aspect ratio when given.

    Returns:
        A figure with one ``go.Image`` trace, two cross-hair line shapes and four letter annotations.
    """
    rows, cols = rgb.shape[:2]
    trace: dict = dict(source=png_data_uri(rgb))
    if raw is not None:
        data, template = _hover_data(raw, plane, index, shape, radiological)
        trace.update(customdata=data, hovertemplate=template)
    else:
        trace.update(hoverinfo="skip")
    r, c = voxel_to_display(plane, (cursor["x"], cursor["y"], cursor["z"]), shape, radiological)
    fig = go.Figure(go.Image(**trace))
    fig.update_layout(
        shapes=_crosshair_shapes(r, c, rows, cols),
        annotations=_letter_annotations(orientation_letters(plane, radiological), rows, cols),
        title=dict(text=title, x=0.5, xanchor="center", font=dict(size=14)) if title else None,
        margin=dict(l=0, r=0, t=30 if title else 0, b=0), height=height,
        xaxis=dict(**_AXES_OFF, range=[-0.5, cols - 0.5], constrain="domain"),
        yaxis=dict(**_AXES_OFF, range=[rows - 0.5, -0.5], scaleanchor="x", scaleratio=pixel_aspect(plane, spacing_mm),
                   constrain="domain"),
        plot_bgcolor="black", paper_bgcolor="rgba(0,0,0,0)", dragmode="pan",
    )
    return fig


FOUR_VIEW_HEIGHT_PX = 500  # the viewer's controls end ~430 px down: 430 + 500 stays inside a 1000 px window


FOUR_VIEW_TITLE_GAP_PX = 8  # the 2x2 titles sit this far above their image (they touched it at 2)
FOUR_VIEW_ROW_GAP = 0.09  # fraction of the height between the two rows (room for the lower row's titles)


def four_view_figure(rgbs: Mapping[str, np.ndarray], plane: str, cursor: Mapping[str, int], shape: Sequence[int],
                     radiological: bool = True, height: int = FOUR_VIEW_HEIGHT_PX,
                     spacing_mm: Sequence[float] | None = None) -> go.Figure:
    """A 2x2 grid of the same plane in up to four modalities with a shared cross-hair, ``height`` pixels tall
    (the default keeps both rows on a 1000-pixel-high window under the viewer's controls).

    Args:
        rgbs: modality key -> (rows, cols, 3) uint8 of the same plane and slice (at most four, in display order).

    Returns:
        A figure with one ``go.Image`` per modality.
    """
    keys = list(rgbs)[:4]
    if not keys:
        raise BratsViewerError("expected at least one modality image, got none")
    titles = [MODALITY_TITLES.get(k, k) for k in keys] + [""] * (4 - len(keys))
    fig = make_subplots(rows=2, cols=2, subplot_titles=titles, horizontal_spacing=0.02,
                        vertical_spacing=FOUR_VIEW_ROW_GAP)
    fig.update_annotations(yshift=FOUR_VIEW_TITLE_GAP_PX, font=dict(size=13, color="#1c2b33"))
    letters = orientation_letters(plane, radiological)
    r, c = voxel_to_display(plane, (cursor["x"], cursor["y"], cursor["z"]), shape, radiological)
    shapes: list[dict] = []
    annotations = list(fig.layout.annotations)
    for i, key in enumerate(keys):
        rgb = rgbs[key]
        rows, cols = rgb.shape[:2]
        fig.add_trace(go.Image(source=png_data_uri(rgb), hoverinfo="skip", name=key), row=i // 2 + 1, col=i % 2 + 1)
        suffix = "" if i == 0 else str(i + 1)
        xref, yref = f"x{suffix}", f"y{suffix}"
        shapes += _crosshair_shapes(r, c, rows, cols, xref, yref)
        annotations += _letter_annotations(letters, rows, cols, xref, yref)
        fig.update_xaxes(_AXES_OFF, range=[-0.5, cols - 0.5], constrain="domain", row=i // 2 + 1, col=i % 2 + 1)
        fig.update_yaxes(_AXES_OFF, range=[rows - 0.5, -0.5], scaleanchor=xref, constrain="domain",
                         scaleratio=pixel_aspect(plane, spacing_mm), row=i // 2 + 1, col=i % 2 + 1)
    for i in range(len(keys), 4):
        fig.update_xaxes(_AXES_OFF, row=i // 2 + 1, col=i % 2 + 1)
        fig.update_yaxes(_AXES_OFF, row=i // 2 + 1, col=i % 2 + 1)
    fig.update_layout(shapes=shapes, annotations=annotations, height=height,
                      margin=dict(l=0, r=0, t=FOUR_VIEW_TITLE_GAP_PX + 24, b=0),
                      plot_bgcolor="black", paper_bgcolor="rgba(0,0,0,0)", dragmode="pan")
    return fig


def montage_image(image: np.ndarray, plane: str, indices: Sequence[int], window: tuple[float, float],
                  radiological: bool = True, overlays: Sequence[Overlay] = (), ncols: int = 4) -> np.ndarray:
    """The composed slices ``indices`` of ``plane`` tiled row-major in ``ncols`` columns: (H, W, 3) uint8."""
    if not indices:
        raise BratsViewerError("expected at least one slice index for the montage, got none")
    tiles = [compose_plane(image, plane, i, window, radiological, overlays) for i in indices]
    th, tw = tiles[0].shape[:2]
    ncols = max(1, min(int(ncols), len(tiles)))
    nrows = -(-len(tiles) // ncols)
    grid = np.zeros((nrows * th, ncols * tw, 3), dtype=np.uint8)
    for k, tile in enumerate(tiles):
        r, c = divmod(k, ncols)
        grid[r * th:(r + 1) * th, c * tw:(c + 1) * tw] = tile
    return grid


def montage_figure(image: np.ndarray, plane: str, indices: Sequence[int], window: tuple[float, float],
                   radiological: bool = True, overlays: Sequence[Overlay] = (), ncols: int = 4,
                   spacing_mm: Sequence[float] | None = None) -> go.Figure:
    """A plotly montage of slices (one ``go.Image``) with each tile's slice number annotated."""
    grid = montage_image(image, plane, indices, window, radiological, overlays, ncols)
    th, tw = display_shape(plane, image.shape)
    ncols = max(1, min(int(ncols), len(indices)))
    axis_name = AXIS_NAMES[plane_layout(plane).axis]
    notes = [dict(x=(k % ncols) * tw + 4, y=(k // ncols) * th + 4, text=f"{axis_name}={i}", showarrow=False,
                  xanchor="left", yanchor="top", font=dict(color="white", size=12)) for k, i in enumerate(indices)]
    rows, cols = grid.shape[:2]
    fig = go.Figure(go.Image(source=png_data_uri(grid), hoverinfo="skip"))
    fig.update_layout(annotations=notes, margin=dict(l=0, r=0, t=0, b=0),
                      height=int(min(1400, 900 * rows / max(cols, 1) + 20)),
                      xaxis=dict(**_AXES_OFF, range=[-0.5, cols - 0.5], constrain="domain"),
                      yaxis=dict(**_AXES_OFF, range=[rows - 0.5, -0.5], scaleanchor="x", constrain="domain",
                                 scaleratio=pixel_aspect(plane, spacing_mm)),
                      plot_bgcolor="black", paper_bgcolor="rgba(0,0,0,0)")
    return fig


# --------------------------------------------------------------------------------------- plotly: 3-D view ---

def block_mean(mask: np.ndarray, step: int) -> np.ndarray:
    """Mean of ``step``-sized blocks of a 3-D array (fraction of voxels set, for a boolean mask); pads with 0."""
    m = np.asarray(mask, dtype=np.float32)
    pad = [(0, (-s) % step) for s in m.shape]
    m = np.pad(m, pad)
    x, y, z = (s // step for s in m.shape)
    return m.reshape(x, step, y, step, z, step).mean(axis=(1, 3, 5))


def tumour_3d_figure(labels: np.ndarray, spacing_mm: Sequence[float] = (1.0, 1.0, 1.0),
                     brain: np.ndarray | None = None, classes: Sequence[int] = TUMOUR_LABELS,
                     max_points: int = 40_000, height: int = 600) -> go.Figure:
    """A rotatable 3-D view of the tumour labels as isosurfaces of block-averaged masks (no marching cubes).

    Each label's mask is cropped to the tumour's bounding box (plus a margin), averaged over blocks of
    ``step``^3 voxels (``step`` chosen so a trace holds at most ``max_points`` samples) and drawn as the 0.5
    isosurface; coordinates are in mm. ``brain`` (an image (X, Y, Z)) adds a faint outline of its non-zero voxels.

    Returns:
        A figure with one ``go.Isosurface`` per label present (plus one for the brain outline).
    """
    lab = np.asarray(labels)
    sp = np.asarray(spacing_mm, dtype=float)
    fig = go.Figure()
    present = [v for v in classes if v in LABEL_COLOURS and np.any(lab == v)]

    def add_surface(mask: np.ndarray, origin: np.ndarray, name: str, colour: str, opacity: float) -> None:
        step = 1
        while int(np.prod([-(-s // step) for s in mask.shape])) > max_points:
            step += 1
        frac = block_mean(mask, step)
        gx, gy, gz = np.meshgrid(*[(origin[a] + (np.arange(frac.shape[a]) + 0.5) * step - 0.5) * sp[a]
                                   for a in range(3)], indexing="ij")
        fig.add_trace(go.Isosurface(
            x=gx.ravel().astype(np.float32), y=gy.ravel().astype(np.float32), z=gz.ravel().astype(np.float32),
            value=frac.ravel().astype(np.float32), isomin=0.5, isomax=1.0, surface_count=1, opacity=opacity,
            colorscale=[[0, colour], [1, colour]], showscale=False, caps=dict(x_show=False, y_show=False, z_show=False),
            name=name, showlegend=True, hoverinfo="name", flatshading=False))

    if brain is not None:
        bmask = np.asarray(brain) != 0
        if bmask.any():
            add_surface(bmask, np.zeros(3), "Brain outline", "#9e9e9e", 0.08)
    if present:
        tumour = np.isin(lab, present)
        nz = np.nonzero(np.any(tumour, axis=(1, 2))), np.nonzero(np.any(tumour, axis=(0, 2))), \
            np.nonzero(np.any(tumour, axis=(0, 1)))
        lo = np.array([max(0, int(n[0][0]) - 2) for n in nz])
        hi = np.array([min(lab.shape[a], int(nz[a][0][-1]) + 3) for a in range(3)])
        box = lab[lo[0]:hi[0], lo[1]:hi[1], lo[2]:hi[2]]
        order = sorted(present, key=lambda v: v != 2)  # edema (outermost) first, drawn most transparent
        for v in order:
            add_surface(box == v, lo, f"{LABEL_NAMES[v]}", _hex(LABEL_COLOURS[v]), 0.25 if v == 2 else 0.7)
    else:
        fig.add_annotation(text="No tumour labels in this segmentation", showarrow=False, x=0.5, y=0.5,
                           xref="paper", yref="paper")
    fig.update_layout(
        height=height, margin=dict(l=0, r=0, t=0, b=0), legend=dict(orientation="h", y=1.0),
        scene=dict(aspectmode="data", xaxis_title="x (mm, R+)", yaxis_title="y (mm, A+)", zaxis_title="z (mm, S+)",
                   camera=dict(eye=dict(x=1.2, y=1.2, z=0.6))),
    )
    return fig
