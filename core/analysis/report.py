"""Reports of one segmented case: the volume table (rows, CSV) and a PDF with the disclaimer (once, on the first
page), the volumes with the number of lesions of each region, the RANO-style bidimensional measurement of enhancing tumour (``core.analysis.measure``),
three-plane overlay images through the tumour core and the measurement drawn on its axial slice, and the
provenance (model and input hashes, geometry, library versions).

Everything here is pure: builders return bytes and write nothing, except ``save_pdf`` which writes one file
atomically. Text in the PDF uses the PDF core fonts (latin-1 only); other characters are replaced.

Display convention of the images: radiological (the patient's right on the image's left), anterior at the top
of axial images, superior at the top of coronal and sagittal ones, anterior on the left of sagittal ones. Slice
numbers count from 0 on the RAS grid, as in the app's viewer; the PDF says so.
"""

from __future__ import annotations

import csv
import importlib.metadata
import io
import os
import platform
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import ROUND_HALF_UP, Decimal
from pathlib import Path
from typing import Any

import numpy as np
from scipy import ndimage

from core.analysis.edits import axial_display
from core.analysis.lesionwise import count_lesions
from core.analysis.measure import Lesion, RanoResult, measure_rano
from core.config import DISCLAIMER, LABEL_COLOURS, LABEL_LONG_NAMES, LABEL_NAMES, MODALITIES, MODALITY_TITLES
from core.data.cases import Case
from core.data.io import atomic_write_bytes, voxel_volume_ml_from
from core.errors import CaseError

REPORT_TITLE = "Brain tumour segmentation report"
OVERLAY_ALPHA = 0.45
IMAGE_MAX_PX = 600  # pixels of an image's longer side: a 90 mm wide picture prints at 169 dpi
MEASURE_D1_COLOUR: tuple[int, int, int] = (255, 215, 0)  # yellow: the longest diameter
MEASURE_D2_COLOUR: tuple[int, int, int] = (0, 230, 255)  # cyan: the perpendicular diameter
MAX_LESION_ROWS = 8
MEASURE_VIEW_MIN_MM = 60.0  # the measurement picture shows at least 60 mm around the lesion
SLICE_NUMBERING = ("Slice numbers count from 0 (the first slice is 0), as in the app's viewer, on the RAS grid: "
                   "x increases toward the patient's right, y toward anterior, z toward superior.")
_STRUCTURE_26 = np.ones((3, 3, 3), dtype=bool)
PLANE_AXIS_INDEX: dict[str, int] = {"sagittal": 0, "coronal": 1, "axial": 2}  # the array axis a plane cuts across

# Table rows: key, kind, labels counted, display name. ET is one row: label 4 is also the whole ET region.
VOLUME_ROWS: tuple[tuple[str, str, tuple[int, ...], str], ...] = (
    ("NCR", "label", (1,), "NCR/NET - necrotic / non-enhancing core (label 1)"),
    ("ED", "label", (2,), "ED - peritumoral edema (label 2)"),
    ("ET", "label = region", (4,), "ET - enhancing tumour (label 4 = region ET)"),
    ("TC", "region", (1, 4), "TC - tumour core (region: labels 1+4)"),
    ("WT", "region", (1, 2, 4), "WT - whole tumour (region: labels 1+2+4)"),
)


# ------------------------------------------------------------------------------------------- volume table ---

def _check_volume(labels: np.ndarray, name: str) -> np.ndarray:
    arr = np.asarray(labels)
    if arr.ndim != 3:
        raise CaseError(f"expected {name} of shape (X, Y, Z), got shape {arr.shape}")
    return arr


def round_ml(volume_mm3: float, digits: int = 1) -> float:
    """``volume_mm3`` in mL rounded half up to ``digits`` decimals, from the shortest decimal form of the mm^3
    value (so 150 mm^3 gives 0.2 mL, as by hand, not 0.1 from the binary form of 0.15)."""
    exact = Decimal(repr(float(volume_mm3))) / Decimal(1000)
    return float(exact.quantize(Decimal(1).scaleb(-digits), rounding=ROUND_HALF_UP))


def _tumour_label_counts(arr: np.ndarray) -> np.ndarray:
    """Voxels of labels 1, 2 and 4 at those indices of a length-5 array (the volume rows use no other). uint8
    labels are counted by one comparison per label, without the int64 copy ``np.bincount`` needs (several
    times faster on a 240 x 240 x 155 volume, and this runs on every page run that shows volumes)."""
    if not arr.size:
        return np.zeros(5, int)
    if arr.dtype == np.uint8:
        counts = np.zeros(5, int)
        for value in (1, 2, 4):
            counts[value] = int(np.count_nonzero(arr == value))
        return counts
    return np.bincount(arr.ravel().astype(np.int64, copy=False), minlength=5)


def volume_table(labels: np.ndarray, spacing_mm: Sequence[float],
                 gt_labels: np.ndarray | None = None, *, voxel_volume_ml: float | None = None) -> list[dict[str, Any]]:
    """Rows of the volume table: labels NCR, ED, ET (ET is also the region ET), then regions TC and WT.

    Args:
        labels: label volume (X, Y, Z), 0/1/2/4.
        spacing_mm: voxel size along X, Y, Z in mm.
        voxel_volume_ml: one voxel's volume in mL (``Case.voxel_volume_ml``: |det| of the affine, exact on a
            sheared grid); None: the product of ``spacing_mm``.
        gt_labels: optional reference labels on the same grid; adds ``gt_voxels``, ``gt_volume_ml`` and
            ``difference_ml`` (segmentation minus reference).

    Returns:
        One dict per row: ``structure`` (NCR, ED, ET, TC, WT), ``kind`` ("label", "label = region", "region"),
        ``labels`` (e.g. "1+4"), ``name``, ``voxels`` and ``volume_ml`` (voxels x voxel volume, 1 mL =
        1000 mm^3, rounded half up to 0.1 mL, see ``round_ml``).

    Raises:
        CaseError: not 3-D, grids differ, or a spacing that is not three positive numbers.
    """
    arr = _check_volume(labels, "labels")
    spacing = tuple(float(s) for s in spacing_mm)
    if len(spacing) != 3 or not all(np.isfinite(s) and s > 0 for s in spacing):
        raise CaseError(f"expected three positive voxel sizes in mm, got {tuple(spacing_mm)}")
    voxel_mm3 = 1000.0 * (voxel_volume_ml_from(spacing) if voxel_volume_ml is None else float(voxel_volume_ml))
    if not (np.isfinite(voxel_mm3) and voxel_mm3 > 0):
        raise CaseError(f"expected a positive voxel volume, got {voxel_volume_ml} mL")
    gt = None
    if gt_labels is not None:
        gt = _check_volume(gt_labels, "reference labels")
        if gt.shape != arr.shape:
            raise CaseError(f"expected reference labels of shape {arr.shape}, got {gt.shape}")
    counts = _tumour_label_counts(arr)
    gt_counts = _tumour_label_counts(gt) if gt is not None else np.zeros(5, int)
    rows: list[dict[str, Any]] = []
    for key, kind, labs, name in VOLUME_ROWS:
        n = int(sum(counts[lab] for lab in labs))
        row: dict[str, Any] = {"structure": key, "kind": kind, "labels": "+".join(str(v) for v in labs),
                               "name": name, "voxels": n, "volume_ml": round_ml(n * voxel_mm3)}
        if gt is not None:
            g = int(sum(gt_counts[lab] for lab in labs))
            row["gt_voxels"] = g
            row["gt_volume_ml"] = round_ml(g * voxel_mm3)
            row["difference_ml"] = round_ml((n - g) * voxel_mm3)
        rows.append(row)
    return rows


def table_csv(rows: Sequence[Mapping[str, Any]], case_id: str | None = None) -> bytes:
    """The volume table as UTF-8 CSV (header line, then one line per row; ``case_id`` adds a first column)."""
    buf = io.StringIO()
    fields: list[str] = []
    for row in rows:
        fields.extend(k for k in row if k not in fields)
    if case_id is not None:
        fields = ["case_id", *fields]
    writer = csv.DictWriter(buf, fieldnames=fields, lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({**({"case_id": case_id} if case_id is not None else {}), **row})
    return buf.getvalue().encode("utf-8")


# ------------------------------------------------------------------------------------------------ images ---

def _background_key(case: Case) -> str:
    return "flair" if "flair" in case.images else case.modalities[0]


def _labels_and_background(case: Case, labels: np.ndarray, modality: str | None) -> tuple[np.ndarray, str]:
    """The checked label volume (on the case grid) and the background modality's key.

    Raises:
        CaseError: labels not on the case grid, or an unknown modality.
    """
    arr = _check_volume(labels, "labels")
    if arr.shape != case.shape:
        raise CaseError(f"expected labels on the case grid {case.shape}, got {arr.shape}")
    key = modality or _background_key(case)
    if key not in case.images:
        raise CaseError(f"expected a modality of the case {case.modalities}, got {key!r}")
    return arr, key


def _grey(volume: np.ndarray) -> np.ndarray:
    """Intensities scaled to 0..1 between the 1st and 99th percentile of non-zero voxels."""
    data = np.asarray(volume, dtype=np.float32)
    nz = data[data != 0]
    if nz.size == 0:
        return np.zeros(data.shape, dtype=np.float32)
    lo, hi = np.percentile(nz, [1.0, 99.0])
    if hi <= lo:
        hi = lo + 1.0
    return np.clip((data - lo) / (hi - lo), 0.0, 1.0)


def tumour_core_slices(labels: np.ndarray) -> tuple[tuple[int, int, int], str]:
    """The slices the report's pictures go through, and what they go through.

    Per axis (x, y, z), the slice holding most voxels of the largest 3-D connected component (26-connectivity)
    of the tumour core (TC: labels 1 and 4); without a core, of the whole tumour (WT: 1, 2, 4); without tumour,
    the middle slices. A component, not the whole label map: scattered false edema elsewhere must not pull the
    pictures away from the tumour. Ties go to the lowest slice.

    Returns:
        ((x, y, z), basis) with basis "tumour core", "whole tumour" or "middle".
    """
    arr = np.asarray(labels)
    for basis, labs in (("tumour core", (1, 4)), ("whole tumour", (1, 2, 4))):
        mask = np.isin(arr, labs)
        if not mask.any():
            continue
        components, _ = ndimage.label(mask, structure=_STRUCTURE_26)
        sizes = np.bincount(components.ravel())
        sizes[0] = 0
        largest = components == int(np.argmax(sizes))
        out = [int(np.argmax(largest.sum(axis=tuple(a for a in range(3) if a != axis)))) for axis in range(3)]
        return (out[0], out[1], out[2]), basis
    return (arr.shape[0] // 2, arr.shape[1] // 2, arr.shape[2] // 2), "middle"


def _composite(grey2d: np.ndarray, labels2d: np.ndarray) -> np.ndarray:
    """RGB uint8 image of a grey slice with the labels blended in their colours."""
    rgb = np.repeat((grey2d * 255.0)[..., None], 3, axis=-1)
    for label, colour in LABEL_COLOURS.items():
        sel = labels2d == label
        if sel.any():
            rgb[sel] = (1 - OVERLAY_ALPHA) * rgb[sel] + OVERLAY_ALPHA * np.asarray(colour, dtype=np.float32)
    return np.clip(np.rint(rgb), 0, 255).astype(np.uint8)


def _resized(rgb: np.ndarray, pixel_mm: tuple[float, float], max_px: int = IMAGE_MAX_PX) -> Any:
    """A PIL image of an RGB array resampled to square pixels (nearest neighbour), ``max_px`` on its longer side.

    ``pixel_mm`` is (row height, column width) in mm.
    """
    from PIL import Image

    rows, cols = rgb.shape[:2]
    height_mm, width_mm = rows * pixel_mm[0], cols * pixel_mm[1]
    scale = max_px / max(height_mm, width_mm)
    size = (max(1, round(width_mm * scale)), max(1, round(height_mm * scale)))
    return Image.fromarray(rgb, mode="RGB").resize(size, Image.Resampling.NEAREST)


def _png_bytes(img: Any) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format="PNG", optimize=False)
    return buf.getvalue()


def _png(rgb: np.ndarray, pixel_mm: tuple[float, float], max_px: int = IMAGE_MAX_PX) -> tuple[bytes, float]:
    """PNG bytes of an RGB image resampled to square pixels (nearest neighbour), and its width/height ratio.

    ``pixel_mm`` is (row height, column width) in mm.
    """
    rows, cols = rgb.shape[:2]
    return _png_bytes(_resized(rgb, pixel_mm, max_px)), (cols * pixel_mm[1]) / (rows * pixel_mm[0])


@dataclass(frozen=True)
class PlaneImage:
    """One rendered plane: ``plane`` ("axial", "coronal", "sagittal"), slice ``index`` along its axis,
    PNG bytes, width/height ``aspect``, and the patient directions at the image's left/right/top/bottom."""

    plane: str
    index: int
    n_slices: int
    png: bytes
    aspect: float
    left: str
    right: str
    top: str
    bottom: str


def render_planes(case: Case, labels: np.ndarray, modality: str | None = None,
                  max_px: int = IMAGE_MAX_PX) -> list[PlaneImage]:
    """Axial, coronal and sagittal overlays through the tumour core (``tumour_core_slices``), radiological
    convention.

    Args:
        case: the case (background image: ``modality``, default FLAIR when present, else the first one).
        labels: label volume (X, Y, Z) on the case grid.

    Raises:
        CaseError: labels not on the case grid, or an unknown modality.
    """
    arr, key = _labels_and_background(case, labels, modality)
    grey = _grey(case.images[key].data)
    sx, sy, sz = case.spacing_mm
    (x, y, z), _ = tumour_core_slices(arr)
    out = []
    # axial: (X, Y) -> displayed (Y, X) with rows anterior->posterior, columns right->left
    ax = _composite(axial_display(grey[:, :, z]), axial_display(arr[:, :, z]))
    png, aspect = _png(ax, (sy, sx), max_px)
    out.append(PlaneImage("axial", z, arr.shape[2], png, aspect, "R", "L", "A", "P"))
    # coronal: (X, Z) -> rows superior->inferior, columns right->left
    cor = _composite(grey[:, y, :].T[::-1, ::-1], arr[:, y, :].T[::-1, ::-1])
    png, aspect = _png(cor, (sz, sx), max_px)
    out.append(PlaneImage("coronal", y, arr.shape[1], png, aspect, "R", "L", "S", "I"))
    # sagittal: (Y, Z) -> rows superior->inferior, columns anterior->posterior
    sag = _composite(grey[x, :, :].T[::-1, ::-1], arr[x, :, :].T[::-1, ::-1])
    png, aspect = _png(sag, (sz, sy), max_px)
    out.append(PlaneImage("sagittal", x, arr.shape[0], png, aspect, "A", "P", "S", "I"))
    return out


def measured_lesion(rano: RanoResult) -> Lesion | None:
    """The lesion whose slice the measurement picture shows: the first target lesion, else the largest lesion."""
    if rano.targets:
        return rano.targets[0]
    return rano.lesions[0] if rano.lesions else None


def render_measurement(case: Case, labels: np.ndarray, rano: RanoResult | None = None, modality: str | None = None,
                       max_px: int = IMAGE_MAX_PX) -> PlaneImage | None:
    """The axial slice of ``measured_lesion`` with the labels blended and the two diameters of every lesion
    measured on that slice drawn (longest ``MEASURE_D1_COLOUR``, perpendicular ``MEASURE_D2_COLOUR``).

    Args:
        rano: the measurement of ``labels`` (computed here when None).

    Returns:
        The picture (radiological convention), or None without an enhancing lesion.

    Raises:
        CaseError: labels not on the case grid, or an unknown modality.
    """
    from PIL import ImageDraw

    arr, key = _labels_and_background(case, labels, modality)
    rano = rano if rano is not None else measure_rano(arr, case.spacing_mm, voxel_volume_ml=case.voxel_volume_ml)
    lesion = measured_lesion(rano)
    if lesion is None:
        return None
    z = lesion.slice_z
    sx, sy, _ = case.spacing_mm
    x0, x1, y0, y1 = measurement_window(lesion, arr.shape[:2], (sx, sy))
    grey = _grey(case.images[key].data)[x0:x1 + 1, y0:y1 + 1, z]  # the whole volume's window, as elsewhere
    img = _resized(_composite(axial_display(grey), axial_display(arr[x0:x1 + 1, y0:y1 + 1, z])), (sy, sx), max_px)
    nx, ny = x1 - x0 + 1, y1 - y0 + 1

    def to_px(p: tuple[float, float]) -> tuple[float, float]:
        # voxel (x, y) -> display column nx-1-x (radiological), row ny-1-y (anterior at the top), pixel centres
        return ((nx - 1 - (p[0] - x0)) + 0.5) * img.width / nx, ((ny - 1 - (p[1] - y0)) + 0.5) * img.height / ny

    draw = ImageDraw.Draw(img)
    width = max(3, round(max(img.size) / 150))
    for les in rano.lesions:
        if les.slice_z == z:
            draw.line([to_px(p) for p in les.d1_endpoints], fill=MEASURE_D1_COLOUR, width=width)
            draw.line([to_px(p) for p in les.d2_endpoints], fill=MEASURE_D2_COLOUR, width=width)
    # scale bar: 10 mm, bottom left
    bar_px = 10.0 * img.width / (nx * sx)
    margin = img.width * 0.04
    draw.line([(margin, img.height - margin), (margin + bar_px, img.height - margin)], fill=(255, 255, 255),
              width=width)
    return PlaneImage("axial", z, arr.shape[2], _png_bytes(img), (nx * sx) / (ny * sy), "R", "L", "A", "P")


def measurement_window(lesion: Lesion, shape_xy: tuple[int, int], spacing_xy_mm: tuple[float, float],
                       min_side_mm: float = MEASURE_VIEW_MIN_MM) -> tuple[int, int, int, int]:
    """The part of the axial slice the measurement picture shows, zoomed on the lesion: a square of
    ``max(min_side_mm, 2.5 x d1)`` mm centred on the longest diameter, clipped to the slice.

    Returns:
        (x0, x1, y0, y1), inclusive voxel bounds.
    """
    (ax, ay), (bx, by) = lesion.d1_endpoints
    cx, cy = (ax + bx) / 2.0, (ay + by) / 2.0
    half_mm = max(min_side_mm, 2.5 * lesion.d1_mm) / 2.0
    hx, hy = half_mm / spacing_xy_mm[0], half_mm / spacing_xy_mm[1]
    x0, x1 = max(0, int(np.floor(cx - hx))), min(shape_xy[0] - 1, int(np.ceil(cx + hx)))
    y0, y1 = max(0, int(np.floor(cy - hy))), min(shape_xy[1] - 1, int(np.ceil(cy + hy)))
    return x0, x1, y0, y1


# --------------------------------------------------------------------------------------------- provenance ---

def _dist_version(*names: str) -> str:
    for name in names:
        try:
            return importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            continue
    return "not installed"


RUNTIME_LIBRARIES: dict[str, tuple[str, ...]] = {"onnxruntime": ("onnxruntime",),
                                                  "onnxruntime-int8": ("onnxruntime",),
                                                  "tensorflow": ("tensorflow", "keras"), "": ()}


def library_versions(runtime: str | None = None) -> dict[str, str]:
    """Versions of Python and the libraries behind a result (TensorFlow's from the loaded module when imported,
    else from the installed package metadata, without importing it).

    Args:
        runtime: the runtime that ran the model ("onnxruntime", "onnxruntime-int8", "tensorflow"), "" when no model
            was involved (an expert label): only that runtime's libraries are listed. None lists TensorFlow and
            Keras (callers that do not know).
    """
    import numpy

    tf = sys.modules.get("tensorflow")
    tf_version = getattr(tf, "__version__", None) or _dist_version("tensorflow", "tensorflow-cpu")
    keras = sys.modules.get("keras")
    keras_version = getattr(keras, "__version__", None) or _dist_version("keras")
    runtime_libs: dict[str, str] = {"tensorflow": str(tf_version), "keras": str(keras_version),
                                    "onnxruntime": _dist_version("onnxruntime")}
    wanted = ("tensorflow", "keras") if runtime is None else RUNTIME_LIBRARIES.get(runtime, ())
    return {
        "python": platform.python_version(),
        "numpy": numpy.__version__,
        "nibabel": _dist_version("nibabel"),
        "scipy": _dist_version("scipy"),
        **{name: runtime_libs[name] for name in wanted},
        "fpdf2": _dist_version("fpdf2"),
        "pillow": _dist_version("pillow", "Pillow"),
    }


def runtime_line(runtime: str) -> str:
    """The inference runtime as the report names it: "ONNX Runtime 1.x", "TensorFlow 2.x", or "none (no model)"
    for "" (an expert label); an unknown value is echoed."""
    names = {"onnxruntime": "ONNX Runtime", "onnxruntime-int8": "ONNX Runtime (int8 network)",
             "tensorflow": "TensorFlow"}
    if not runtime:
        return "none (no model)"
    if runtime not in names:
        return runtime
    lib = RUNTIME_LIBRARIES[runtime][0]
    return f"{names[runtime]} {library_versions(runtime)[lib]}"


@dataclass(frozen=True, eq=False)
class ReportInputs:
    """What a report shows.

    Attributes:
        case: the case (images with their file hashes, geometry).
        labels: the segmentation reported, (X, Y, Z) on the case grid, labels 0/1/2/4.
        model_name: name of the model that produced ``labels`` (or a description of an external source).
        model_sha256: the model's identity ("n/a" when unknown): the SHA-256 of its weights file, or for a model
            with a 3-D context network the SHA-256 over both networks' weight hashes and the fusion settings
            (``core.engine.model.load_model``).
        corrected: the segmentation was corrected by hand after the model.
        gt_labels: optional reference labels on the same grid (adds reference volumes to the table).
        scores: optional scores against the reference: a ``metrics.CaseScore`` or its ``to_dict()``.
        seg_sha256: SHA-256 of the segmentation file when it came from a file.
        created_utc: time stamp of the report (default: now).
        notes: free text (e.g. "TTA on"; the case's notes are added).
        quality: the model's quality flag as ``core.engine.quality.QualityFlag.to_dict()`` (status, reasons,
            measures, missing_modalities), or None when the segmentation did not come from the model.
        description: which segmentation this is, in words (``core.app.segstate.describe_segmentation``); "" shows
            ``model_name``.
        runtime: the runtime that ran the model ("onnxruntime", "onnxruntime-int8", "tensorflow"); "" when no
            model was involved; None when unknown (the libraries of both are listed).
    """

    case: Case
    labels: np.ndarray
    model_name: str
    model_sha256: str
    corrected: bool = False
    gt_labels: np.ndarray | None = None
    scores: Any = None
    seg_sha256: str = ""
    created_utc: datetime | None = None
    notes: str = ""
    extra: Mapping[str, str] = field(default_factory=dict)
    quality: Mapping[str, Any] | None = None
    description: str = ""
    runtime: str | None = None


def _flat_scores(scores: Any) -> dict[str, float]:
    if scores is None:
        return {}
    if hasattr(scores, "to_dict"):
        scores = scores.to_dict()
    return {str(k): float(v) for k, v in dict(scores).items() if isinstance(v, int | float | np.floating)}


# -------------------------------------------------------------------------------------------------- PDF ---

_REPLACEMENTS = {"\u2013": "-", "\u2014": "-", "\u2018": "'", "\u2019": "'", "\u201c": '"', "\u201d": '"',
                 "\u2026": "...", "\u2212": "-", "\u00a0": " ", "\u2265": ">=", "\u2264": "<="}


def latin1(text: object) -> str:
    """``text`` restricted to latin-1 (what the PDF core fonts can show); other characters become '?'."""
    s = str(text)
    for a, b in _REPLACEMENTS.items():
        s = s.replace(a, b)
    return s.encode("latin-1", "replace").decode("latin-1")


def _make_pdf_class() -> type:
    from fpdf import FPDF

    class _ReportPDF(FPDF):
        case_id = ""

        def header(self) -> None:
            # the disclaimer is printed once, on the first page; the running header names the report and case
            self.set_font("Helvetica", "B", 8)
            self.set_text_color(90, 90, 90)
            self.cell(0, 4, latin1(REPORT_TITLE), align="L")
            self.set_font("Helvetica", "", 8)
            self.cell(0, 4, latin1(f"Case {self.case_id}"), align="R", new_x="LMARGIN", new_y="NEXT")
            self.set_text_color(0, 0, 0)
            self.ln(2)

        def footer(self) -> None:
            self.set_y(-12)
            self.set_font("Helvetica", "I", 7)
            self.set_text_color(90, 90, 90)
            self.cell(0, 4, f"Page {self.page_no()} of {{nb}}", align="C")
            self.set_text_color(0, 0, 0)

    return _ReportPDF


def open_first_page(pdf: Any, heading: str, title: str, created: datetime) -> None:
    """Page setup, document metadata, the first page's heading and the research disclaimer in a red box (the
    only place it is printed)."""
    pdf.set_auto_page_break(auto=True, margin=18)
    pdf.set_margins(12, 10, 12)
    pdf.set_creation_date(created)
    pdf.set_title(latin1(title))
    pdf.set_author("brats-viewer (research software)")
    pdf.add_page()
    pdf.set_font("Helvetica", "B", 16)
    pdf.cell(0, 9, latin1(heading), new_x="LMARGIN", new_y="NEXT")
    pdf.set_draw_color(190, 0, 0)
    pdf.set_line_width(0.6)
    pdf.set_text_color(150, 0, 0)
    pdf.set_font("Helvetica", "B", 10)
    pdf.multi_cell(0, 5.5, latin1(f"RESEARCH USE ONLY. {DISCLAIMER}"), border=1, align="C",
                   new_x="LMARGIN", new_y="NEXT", padding=1.5)
    pdf.set_text_color(0, 0, 0)
    pdf.set_draw_color(0, 0, 0)
    pdf.set_line_width(0.2)
    pdf.ln(2)


def _section(pdf: Any, title: str) -> None:
    pdf.ln(2)
    pdf.set_font("Helvetica", "B", 11)
    pdf.cell(0, 6, latin1(title), new_x="LMARGIN", new_y="NEXT")
    pdf.set_font("Helvetica", "", 9)


def _kv(pdf: Any, key: str, value: str, mono: bool = False, key_w: float = 48) -> None:
    pdf.set_font("Helvetica", "B", 8.5)
    pdf.cell(key_w, 4.6, latin1(key))
    pdf.set_font("Courier" if mono else "Helvetica", "", 8 if mono else 8.5)
    pdf.multi_cell(0, 4.6, latin1(value), new_x="LMARGIN", new_y="NEXT")


def _table(pdf: Any, header: Sequence[str], rows: Sequence[Sequence[str]], widths: Sequence[float],
           aligns: Sequence[str]) -> None:
    pdf.set_font("Helvetica", "B", 8.5)
    pdf.set_fill_color(230, 230, 230)
    for text, w, a in zip(header, widths, aligns, strict=True):
        pdf.cell(w, 5.5, latin1(text), border=1, align=a, fill=True)
    pdf.ln(5.5)
    pdf.set_font("Helvetica", "", 8.5)
    for row in rows:
        for text, w, a in zip(row, widths, aligns, strict=True):
            pdf.cell(w, 5, latin1(text), border=1, align=a)
        pdf.ln(5)


def _fmt(value: float, digits: int = 3) -> str:
    return "n/a" if value is None or not np.isfinite(value) else f"{value:.{digits}f}"


def _quality_section(pdf: Any, quality: Mapping[str, Any], corrected: bool) -> None:
    """The model's quality flag: OK in green or REVIEW in red, with its reasons."""
    review = quality.get("status") == "review"
    _section(pdf, "Quality check of the model's prediction" + (" (before the corrections)" if corrected else ""))
    pdf.set_font("Helvetica", "B", 10)
    pdf.set_text_color(*((170, 0, 0) if review else (0, 120, 40)))
    pdf.multi_cell(0, 5, latin1("REVIEW - check this segmentation before using its volumes" if review else
                                "OK - no warning sign found (this is not a guarantee of accuracy)"),
                   new_x="LMARGIN", new_y="NEXT")
    pdf.set_text_color(0, 0, 0)
    pdf.set_font("Helvetica", "", 8.5)
    for reason in quality.get("reasons", []):
        pdf.multi_cell(0, 4.2, latin1(f"- {reason}"), new_x="LMARGIN", new_y="NEXT")


def _rano_section(pdf: Any, rano: RanoResult) -> None:
    """The RANO-style measurement: one row per lesion (largest product first), the sum over the targets."""
    _section(pdf, "Bidimensional measurement of enhancing tumour (RANO-style)")
    if not rano.lesions:
        pdf.multi_cell(0, 4.6, latin1("No enhancing tumour (label 4) in this segmentation: nothing to measure."),
                       new_x="LMARGIN", new_y="NEXT")
    else:
        targets = {les.index for les in rano.targets}
        rows = [[str(les.index), str(les.slice_z), f"{les.d1_mm:.1f}", f"{les.d2_mm:.1f}", f"{les.product_mm2:.0f}",
                 f"{les.volume_ml:.2f}", "yes" if les.measurable else "no", "yes" if les.index in targets else ""]
                for les in rano.lesions[:MAX_LESION_ROWS]]
        _table(pdf, ["Lesion", "Axial slice z", "Longest (mm)", "Perpendicular (mm)", "Product (mm^2)",
                     "Volume (mL)", "Measurable", "Target"], rows, [15, 24, 25, 31, 28, 23, 22, 18],
               ["R", "R", "R", "R", "R", "R", "C", "C"])
        rest = rano.lesions[MAX_LESION_ROWS:]
        if rest:
            n_meas = sum(les.measurable for les in rest)
            pdf.set_font("Helvetica", "I", 8)
            pdf.cell(0, 4.5, latin1(f"... and {len(rest)} smaller lesions not listed ({n_meas} of them measurable)."),
                     new_x="LMARGIN", new_y="NEXT")
        pdf.set_font("Helvetica", "B", 9)
        if rano.targets:
            listed = " + ".join(f"lesion {les.index} ({les.product_mm2:.0f})" for les in rano.targets)
            text = f"Sum of the products of the target lesions: {rano.sum_products_mm2:.0f} mm^2 = {listed}"
        else:
            text = "No measurable lesion (both diameters >= 10 mm): no target lesion, no sum of products."
        pdf.multi_cell(0, 5, latin1(text), new_x="LMARGIN", new_y="NEXT")
    pdf.set_font("Helvetica", "I", 7.5)
    pdf.multi_cell(0, 3.8, latin1(
        "Lesion: a 3-D connected component of label 4. On the axial slice where it is largest: the longest diameter "
        "and the longest diameter perpendicular to it (within 5 degrees) across the lesion, in mm from the voxel "
        "size; product in mm^2. Measurable: both diameters >= 10 mm. Targets: up to two measurable lesions with the "
        "largest products (RANO 2.0). An automatic measurement: a response assessment also needs the reader's "
        "review and clinical data. " + SLICE_NUMBERING), new_x="LMARGIN", new_y="NEXT")


def build_pdf(inputs: ReportInputs) -> bytes:
    """The PDF report of one case as bytes (writes nothing).

    Page 1: title, the disclaimer (printed once, here), case summary, volume table, scores (when given), the
    RANO-style measurement of enhancing tumour. Next page: three-plane overlay images through the tumour core
    (``tumour_core_slices``) and the measurement drawn on its axial slice, 90 mm wide (600 pixels: 169 dpi),
    with a legend and how slices are numbered. Then: provenance (model name and weights SHA-256, each input
    file's SHA-256, original orientation codes, shape and voxel size), the display convention and library
    versions.

    Raises:
        CaseError: labels not on the case grid.
    """
    case = inputs.case
    labels = _check_volume(inputs.labels, "labels")
    if labels.shape != case.shape:
        raise CaseError(f"expected labels on the case grid {case.shape}, got {labels.shape}")
    created = inputs.created_utc or datetime.now(UTC)
    if created.tzinfo is None:
        created = created.replace(tzinfo=UTC)
    created = created.astimezone(UTC)
    rows = volume_table(labels, case.spacing_mm, inputs.gt_labels, voxel_volume_ml=case.voxel_volume_ml)
    planes = render_planes(case, labels)
    _, basis = tumour_core_slices(labels)
    rano = measure_rano(labels, case.spacing_mm, voxel_volume_ml=case.voxel_volume_ml)
    measurement = render_measurement(case, labels, rano)
    scores = _flat_scores(inputs.scores)
    ref = case.reference

    pdf = _make_pdf_class()(orientation="P", unit="mm", format="A4")
    pdf.case_id = case.case_id
    open_first_page(pdf, REPORT_TITLE, f"{REPORT_TITLE} - {case.case_id}", created)

    _kv(pdf, "Case", case.case_id)
    _kv(pdf, "Report date (UTC)", created.strftime("%Y-%m-%d %H:%M:%S UTC"))
    _kv(pdf, "Segmentation source", inputs.description or inputs.model_name)
    _kv(pdf, "Corrected by hand", "yes - manual corrections applied after the model" if inputs.corrected else "no")
    _kv(pdf, "Voxel size (mm)", " x ".join(f"{s:g}" for s in case.spacing_mm)
        + f"   (voxel volume {ref.voxel_volume_ml * 1000:g} mm^3)")
    missing = [MODALITY_TITLES.get(k, k) for k in (inputs.quality or {}).get("missing_modalities", [])]
    _kv(pdf, "Input sequences", ", ".join(MODALITY_TITLES[k] for k in case.modalities)
        + (f"   (missing: {', '.join(missing)} - segmented without them)" if missing else ""))
    notes = "; ".join(n for n in (case.notes, inputs.notes) if n)
    if notes:
        _kv(pdf, "Notes", notes)
    if inputs.quality is not None:
        _quality_section(pdf, inputs.quality, inputs.corrected)

    _section(pdf, "Volumes")
    has_gt = inputs.gt_labels is not None
    lesions = count_lesions(labels, case.spacing_mm)
    gt_lesions = count_lesions(inputs.gt_labels, case.spacing_mm) if inputs.gt_labels is not None else {}
    header = (["Structure", "Voxels", "Volume (mL)"] + (["Reference (mL)", "Difference (mL)"] if has_gt else [])
              + ["Lesions"] + (["Ref. lesions"] if has_gt else []))
    widths = [69, 16, 21, 24, 24, 14, 18] if has_gt else [86, 22, 24, 16]
    table_rows = []
    for r in rows:
        cells = [r["name"], str(r["voxels"]), f"{r['volume_ml']:.1f}"]
        if has_gt:
            cells += [f"{r['gt_volume_ml']:.1f}", f"{r['difference_ml']:+.1f}"]
        cells.append(str(lesions.get(r["structure"], "")))  # regions only (WT, TC, ET): blank for NCR and ED
        if has_gt:
            cells.append(str(gt_lesions.get(r["structure"], "")))
        table_rows.append(cells)
    _table(pdf, header, table_rows, widths, ["L"] + ["R"] * (len(header) - 1))
    pdf.set_font("Helvetica", "I", 7.5)
    pdf.multi_cell(0, 3.8, latin1("Volume = voxel count x voxel volume (1 mL = 1000 mm^3), rounded to 0.1 mL. "
                                  "Labels are BraTS 2017-2021 labels; regions are the BraTS evaluation regions. "
                                  "Lesions: 3-D connected components (26-connected) of each region, however small."),
                   new_x="LMARGIN", new_y="NEXT")

    if scores:
        _section(pdf, "Agreement with the reference segmentation")
        metric_cols = [("dice", "Dice", 3), ("hd95_mm", "HD95 (mm)", 2), ("sensitivity", "Sensitivity", 3),
                       ("specificity", "Specificity", 4), ("precision", "Precision", 3)]
        srows = []
        for region in ("WT", "TC", "ET"):
            if any(f"{region}_{m}" in scores for m, _, _ in metric_cols):
                srows.append([region] + [_fmt(scores.get(f"{region}_{m}", float("nan")), d)
                                         for m, _, d in metric_cols])
        if srows:
            _table(pdf, ["Region"] + [t for _, t, _ in metric_cols], srows, [22] + [32] * 5, ["L"] + ["R"] * 5)
        per_label = [f"{n} {_fmt(scores[f'label_{n}_dice'])}" for n in ("NCR", "ED", "ET")
                     if f"label_{n}_dice" in scores]
        if per_label:
            pdf.set_font("Helvetica", "", 8.5)
            pdf.cell(0, 5, latin1("Per-label Dice: " + ", ".join(per_label)), new_x="LMARGIN", new_y="NEXT")

    _rano_section(pdf, rano)

    # images: a 2 x 2 grid of 90 mm boxes on a page of their own
    pdf.add_page()
    _section(pdf, "Images (radiological convention: patient's right on the image's left)")
    bg_key = _background_key(case)
    gap = 6.0
    box_w = (pdf.w - pdf.l_margin - pdf.r_margin - gap) / 2
    box_h = box_w
    top0 = pdf.get_y() + 2
    pictures: list[tuple[PlaneImage, str]] = [
        (p, f"{p.plane.capitalize()} slice {'xyz'[PLANE_AXIS_INDEX[p.plane]]} = {p.index} (slices 0-{p.n_slices - 1})")
        for p in planes]
    lesion = measured_lesion(rano)
    if measurement is not None and lesion is not None:
        pictures.append((measurement, f"Measurement: axial z = {measurement.index}, lesion {lesion.index}: "
                                      f"{lesion.d1_mm:.1f} x {lesion.d2_mm:.1f} mm"))
    for i, (plane, caption) in enumerate(pictures):
        x0 = pdf.l_margin + (i % 2) * (box_w + gap)
        top = top0 + (i // 2) * (box_h + 8)
        w, h = (box_w, box_w / plane.aspect) if plane.aspect >= 1 else (box_h * plane.aspect, box_h)
        xi, yi = x0 + (box_w - w) / 2, top + (box_h - h) / 2
        pdf.image(io.BytesIO(plane.png), x=xi, y=yi, w=w, h=h)
        pdf.set_font("Helvetica", "B", 9)
        pdf.set_text_color(200, 120, 0)
        pdf.text(xi + 1.0, yi + h / 2 + 1.5, plane.left)
        pdf.text(xi + w - 3.6, yi + h / 2 + 1.5, plane.right)
        pdf.text(xi + w / 2 - 1.0, yi + 3.8, plane.top)
        pdf.text(xi + w / 2 - 1.0, yi + h - 1.0, plane.bottom)
        pdf.set_text_color(0, 0, 0)
        pdf.set_xy(x0, top + box_h + 1)
        pdf.set_font("Helvetica", "", 8)
        pdf.cell(box_w, 4, latin1(caption), align="C")
    rows_used = (len(pictures) + 1) // 2
    pdf.set_xy(pdf.l_margin, top0 + rows_used * (box_h + 8))
    pdf.set_font("Helvetica", "", 8)
    through = {"tumour core": "the largest connected component of the tumour core (labels 1+4)",
               "whole tumour": "the largest connected component of the whole tumour (no tumour core labelled)",
               "middle": "the middle of the volume (no tumour labelled)"}[basis]
    pdf.multi_cell(0, 4, latin1(f"Background: {MODALITY_TITLES.get(bg_key, bg_key)}; the three planes go through "
                                f"{through}, each at the slice holding most of it; overlay opacity "
                                f"{OVERLAY_ALPHA:.0%}."
                                + (" Measurement (zoomed on the lesion): longest diameter in yellow, perpendicular "
                                   "diameter in cyan; the white bar is 10 mm." if measurement is not None else "")),
                   new_x="LMARGIN", new_y="NEXT")
    pdf.set_font("Helvetica", "B", 8)
    pdf.multi_cell(0, 4, latin1(SLICE_NUMBERING), new_x="LMARGIN", new_y="NEXT")
    # legend
    pdf.ln(1)
    x = pdf.l_margin
    y = pdf.get_y()
    for label in (1, 2, 4):
        pdf.set_fill_color(*LABEL_COLOURS[label])
        pdf.rect(x, y + 0.8, 3.5, 3.5, style="F")
        text = latin1(f"{LABEL_NAMES[label]} ({label}): {LABEL_LONG_NAMES[label]}")
        pdf.set_xy(x + 4.5, y)
        pdf.set_font("Helvetica", "", 8)
        pdf.cell(pdf.get_string_width(text) + 2, 5, text)
        x += pdf.get_string_width(text) + 10
    pdf.ln(7)

    # provenance
    pdf.add_page()
    _section(pdf, "Provenance")
    _kv(pdf, "Model", inputs.model_name)
    _kv(pdf, "Model SHA-256", inputs.model_sha256 or "n/a", mono=True)
    if inputs.runtime is not None:
        _kv(pdf, "Inference runtime", runtime_line(inputs.runtime))
    if inputs.seg_sha256:
        _kv(pdf, "Segmentation file SHA-256", inputs.seg_sha256, mono=True)
    _kv(pdf, "Corrected by hand", "yes" if inputs.corrected else "no")
    for key, value in inputs.extra.items():
        _kv(pdf, str(key), str(value))

    _section(pdf, "Input files")
    files = [(MODALITY_TITLES[k], case.images[k]) for k in MODALITIES if k in case.images]
    if case.seg is not None:
        files.append(("Reference segmentation", case.seg))
    for title, vol in files:
        _kv(pdf, title, vol.source_name or "(unnamed)")
        _kv(pdf, "  SHA-256", vol.sha256, mono=True)

    _section(pdf, "Geometry")
    _kv(pdf, "Original orientation", "".join(ref.original_axcodes) + " (stored axes point toward " + ", ".join(ref.original_axcodes) + ")")
    _kv(pdf, "Original shape", " x ".join(str(s) for s in ref.original_shape))
    _kv(pdf, "Voxel size (mm)", " x ".join(f"{s:g}" for s in case.spacing_mm) + " (R-L, A-P, S-I axes)")
    _kv(pdf, "Processing grid", "RAS (reoriented at load; outputs written back in the original orientation)")
    _kv(pdf, "Display convention", "radiological: patient's right on the image's left")
    warnings = sorted({w for v in case.images.values() for w in v.warnings})
    if warnings:
        _kv(pdf, "Load warnings", "; ".join(warnings))

    _section(pdf, "Software")
    for name, version in library_versions(inputs.runtime).items():
        _kv(pdf, name, version)
    pdf.ln(2)
    pdf.set_font("Helvetica", "I", 8)
    pdf.multi_cell(0, 4, latin1("Automatic segmentations can be wrong. Every result must be reviewed by a qualified "
                                "person; volumes and diameters depend on the segmentation and on the voxel size in "
                                "the file header."), new_x="LMARGIN", new_y="NEXT")
    return bytes(pdf.output())


def save_pdf(path: str | os.PathLike[str], inputs: ReportInputs) -> Path:
    """Build the PDF and write it to ``path`` atomically; returns the path."""
    return atomic_write_bytes(path, build_pdf(inputs))


def report_file_name(case_id: str, suffix: str = "report.pdf") -> str:
    """A safe download file name for a case's report (letters, digits, '_', '-', '.')."""
    clean = "".join(c if c.isalnum() or c in "_-." else "_" for c in case_id)[:80].strip("._") or "case"
    return f"{clean}_{suffix}"
