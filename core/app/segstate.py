"""Pure helpers of the segmentation and report pages (no Streamlit): which segmentation a report uses, the
saved manual corrections of a case, cheap digests and checks of label volumes, and the report's PDF bytes.

Label volumes are (X, Y, Z) uint8 arrays on the case's RAS grid with labels 0/1/2/4.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any

import numpy as np

from core.analysis.edits import EditStore, hierarchy_report
from core.data.cases import Case
from core.errors import BratsViewerError

SOURCE_CORRECTED = "corrected"
SOURCE_PREDICTION = "prediction"
SOURCE_GROUND_TRUTH = "ground_truth"


# ------------------------------------------------------------------------------------------------ digests ---

def labels_digest(labels: np.ndarray) -> str:
    """A short content hash (32 hex characters) of a label volume: its shape, dtype and values."""
    arr = np.ascontiguousarray(labels)
    h = hashlib.blake2b(digest_size=16)
    h.update(f"{arr.shape}|{arr.dtype.str}|".encode())
    h.update(arr.data.cast("B"))
    return h.hexdigest()


def labels_of(obj: Any, shape: tuple[int, ...]) -> np.ndarray | None:
    """The labels of a stored prediction (``.labels``) or a bare array, when they lie on a grid of ``shape``."""
    arr = getattr(obj, "labels", obj)
    if isinstance(arr, np.ndarray) and arr.ndim == 3 and tuple(arr.shape) == tuple(shape):
        return arr
    return None


# ------------------------------------------------------------------------------------ choosing the labels ---

RUNTIME_NAMES: dict[str, str] = {"onnxruntime": "ONNX Runtime", "onnxruntime-int8": "ONNX Runtime, int8 network",
                                  "tensorflow": "TensorFlow"}


def runtime_name(runtime: str) -> str:
    """Readable name of a ``LoadedModel.runtime`` / ``Prediction.runtime`` value ("" stays "")."""
    return RUNTIME_NAMES.get(str(runtime or ""), str(runtime or ""))


def describe_segmentation(kind: str, *, model_name: str = "", tta: bool | None = None,
                          runtime: str = "") -> str:
    """The one line every page (and the PDF) uses to say which segmentation its volumes come from.

    Args:
        kind: ``SOURCE_GROUND_TRUTH`` (the case's own label file, usually an expert's), ``SOURCE_PREDICTION``
            (the model's output as it came) or ``SOURCE_CORRECTED`` (the model's output corrected by hand).
        model_name: the model behind a prediction or a correction ("" when unknown).
        tta: whether the model used flip test-time augmentation (None when unknown).
        runtime: the runtime that ran the model (``runtime_name`` keys; "" when unknown).

    Returns:
        e.g. "Reference label: the case's own segmentation file (...)", "Model prediction (model `m`, TTA off,
        ONNX Runtime)", "Model prediction corrected by hand (model `m`, TTA on)".

    Raises:
        BratsViewerError: an unknown ``kind``.
    """
    if kind == SOURCE_GROUND_TRUTH:
        return ("Reference label: the case's own segmentation file (an expert's, unless the case notes say "
                "otherwise; no model)")
    if kind not in (SOURCE_PREDICTION, SOURCE_CORRECTED):
        raise BratsViewerError(f"expected a segmentation kind among {SOURCE_GROUND_TRUTH!r}, {SOURCE_PREDICTION!r}, "
                               f"{SOURCE_CORRECTED!r}, got {kind!r}")
    details = [f"model `{model_name}`" if model_name else "model unknown"]
    if tta is not None:
        details.append(f"TTA {'on' if tta else 'off'}")
    if runtime:
        details.append(runtime_name(runtime))
    head = "Model prediction corrected by hand" if kind == SOURCE_CORRECTED else "Model prediction"
    return f"{head} ({', '.join(details)})"


@dataclass(frozen=True, eq=False)
class ReportSource:
    """The segmentation a report shows.

    Attributes:
        kind: "corrected", "prediction" or "ground_truth".
        labels: (X, Y, Z) uint8 labels 0/1/2/4 on the case grid.
        model_name: the model behind the labels ("" for the ground truth).
        model_sha256: SHA-256 of the model's weights ("" when unknown or not a model).
        corrected: the labels were corrected by hand after the model.
        description: one line for the page and the report (``describe_segmentation``).
        tta: the model used test-time augmentation (None: unknown or not a model).
        runtime: the runtime that ran the model ("" unknown or not a model).
    """

    kind: str
    labels: np.ndarray
    model_name: str
    model_sha256: str
    corrected: bool
    description: str
    tta: bool | None = None
    runtime: str = ""


def choose_report_source(case_key: str, shape: tuple[int, int, int], *,
                         corrected: Any = None, corrected_key: str | None = None,
                         corrected_model_name: str = "", corrected_model_sha256: str = "",
                         prediction: Any = None, prediction_key: str | None = None,
                         ground_truth: np.ndarray | None = None, use_ground_truth: bool = False
                         ) -> ReportSource | None:
    """Which labels the report of a case uses.

    Order: the hand-corrected labels when they belong to this case (``corrected_key == case_key``) and fit its
    grid; else the model's prediction when it belongs to this case; else, only when ``use_ground_truth``, the
    ground truth; else None (nothing to report yet).

    Args:
        case_key: ``Case.content_key`` of the case shown.
        shape: (X, Y, Z) of the case grid.
        corrected: corrected labels (array) or None; ``corrected_key`` the case key stored beside them.
        corrected_model_name, corrected_model_sha256: the model the corrections started from, when known.
        prediction: a ``core.engine.inference.Prediction`` (or anything with ``.labels``, ``.model_name`` and
            ``.model_sha256``) or None; ``prediction_key`` the case key stored beside it.
        ground_truth: the case's reference labels or None.
        use_ground_truth: fall back to the ground truth when there is neither.
    """
    pred_labels = labels_of(prediction, shape) if prediction_key == case_key else None
    pred_name = str(getattr(prediction, "model_name", "")) if pred_labels is not None else ""
    pred_sha = str(getattr(prediction, "model_sha256", "")) if pred_labels is not None else ""
    pred_tta = bool(getattr(prediction, "tta", False)) if pred_labels is not None else None
    pred_runtime = str(getattr(prediction, "runtime", "") or "") if pred_labels is not None else ""
    corr = labels_of(corrected, shape) if corrected_key == case_key else None
    if corr is not None:
        name = corrected_model_name or pred_name
        sha = corrected_model_sha256 or pred_sha
        same = pred_labels is not None and (not sha or sha == pred_sha)  # started from this very prediction's model
        tta, runtime = (pred_tta, pred_runtime) if same else (None, "")
        return ReportSource(SOURCE_CORRECTED, corr, name, sha, True,
                            describe_segmentation(SOURCE_CORRECTED, model_name=name, tta=tta, runtime=runtime),
                            tta, runtime)
    if pred_labels is not None:
        return ReportSource(SOURCE_PREDICTION, pred_labels, pred_name, pred_sha, False,
                            describe_segmentation(SOURCE_PREDICTION, model_name=pred_name, tta=pred_tta,
                                                  runtime=pred_runtime), pred_tta, pred_runtime)
    gt = labels_of(ground_truth, shape)
    if use_ground_truth and gt is not None:
        return ReportSource(SOURCE_GROUND_TRUTH, gt, "", "", False, describe_segmentation(SOURCE_GROUND_TRUTH))
    return None


# ----------------------------------------------------------------------------------- saved corrections ---

@dataclass(frozen=True, eq=False)
class SavedCorrections:
    """The edit session of a case on disk.

    Attributes:
        labels: current labels (X, Y, Z) uint8.
        model_labels: the model's labels the session started from.
        model_sha256: SHA-256 of that model's weights ("" when not recorded).
        corrected: the labels differ from the model's labels.
        undo_depth: number of actions that can be undone.
        strokes: paint/erase actions in the history (undone ones included).
    """

    labels: np.ndarray
    model_labels: np.ndarray
    model_sha256: str
    corrected: bool
    undo_depth: int
    strokes: int


def saved_corrections(store: EditStore, case_key: str, shape: tuple[int, int, int]) -> SavedCorrections | None:
    """The saved edit session of a case, or None when there is none, it does not fit the grid or is unreadable."""
    try:
        labels = store.load(case_key)
        model = store.model_labels(case_key)
    except BratsViewerError:
        return None
    if labels is None or model is None or labels.shape != tuple(shape) or model.shape != tuple(shape):
        return None
    meta = store.meta(case_key) or {}
    strokes = sum(1 for h in store.history(case_key) if h.get("action") in ("paint", "erase"))
    return SavedCorrections(labels, model, str(meta.get("model_sha256") or ""),
                            not np.array_equal(labels, model), store.undo_depth(case_key), strokes)


# --------------------------------------------------------------------------------------------- checks ---

def tumour_box(labels: np.ndarray, margin: int = 2) -> tuple[slice, slice, slice] | None:
    """Bounding box of the tumour (non-zero) voxels grown by ``margin`` and clipped to the grid; None if none."""
    arr = np.asarray(labels)
    box = []
    for axis in range(3):
        present = np.flatnonzero(np.any(arr != 0, axis=tuple(a for a in range(3) if a != axis)))
        if present.size == 0:
            return None
        box.append(slice(max(0, int(present[0]) - margin), min(arr.shape[axis], int(present[-1]) + margin + 1)))
    return box[0], box[1], box[2]


def hierarchy_summary(labels: np.ndarray) -> dict[str, int]:
    """``core.analysis.edits.hierarchy_report`` computed on the tumour's bounding box (grown by 2 voxels), which gives
    the same counts as the whole grid at a fraction of the cost (every count depends on voxels within one
    voxel of the tumour only)."""
    box = tumour_box(labels, margin=2)
    if box is None:
        return hierarchy_report(np.zeros((1, 1, 1), dtype=np.uint8))
    return hierarchy_report(np.asarray(labels)[box])


def hierarchy_caption(report: dict[str, int]) -> str:
    """One line about the plausibility counts of ``hierarchy_summary``."""
    parts = [f"{report['tumour_components']} connected tumour piece(s)"]
    if report["small_tumour_components"]:
        parts.append(f"{report['small_tumour_components']} smaller than 10 voxels")
    if report["isolated_core_voxels"]:
        parts.append(f"{report['isolated_core_voxels']} isolated core voxel(s)")
    if report["core_voxels_without_edema_nearby"]:
        parts.append(f"{report['core_voxels_without_edema_nearby']} core voxel(s) touching healthy tissue "
                     "without edema")
    ok = not (report["isolated_core_voxels"] or report["small_tumour_components"])
    return ("Label check: " if ok else "Label check (worth a look): ") + "; ".join(parts) + "."


def brain_box_xy(image: np.ndarray, margin: int = 4) -> tuple[int, int, int, int] | None:
    """In-plane box (x0, x1, y0, y1), end-exclusive, of the non-zero voxels of ``image`` (X, Y, Z) over all
    slices, grown by ``margin`` and clipped to the grid; None when the image is all zero."""
    footprint = np.any(np.asarray(image) != 0, axis=2)
    xs, ys = np.flatnonzero(footprint.any(axis=1)), np.flatnonzero(footprint.any(axis=0))
    if xs.size == 0:
        return None
    nx, ny = footprint.shape
    return (max(0, int(xs[0]) - margin), min(nx, int(xs[-1]) + margin + 1),
            max(0, int(ys[0]) - margin), min(ny, int(ys[-1]) + margin + 1))


def most_tumour_z(labels: np.ndarray | None) -> int | None:
    """Axial index z of the slice with most tumour voxels in (X, Y, Z) ``labels``; None without tumour."""
    if labels is None:
        return None
    counts = np.count_nonzero(np.asarray(labels), axis=(0, 1))
    if counts.size == 0 or counts.max() == 0:
        return None
    return int(np.argmax(counts))


# ---------------------------------------------------------------------------------------------- report ---

def report_pdf_bytes(case: Case, source: ReportSource, scores: Any = None, notes: str = "",
                     quality: dict | None = None) -> bytes:
    """The PDF report of ``case`` for the labels of ``source`` (with the case's ground truth and ``scores``
    beside them when the source is not the ground truth itself, and the model's quality flag ``quality``,
    a ``QualityFlag.to_dict()``, when the source is the model's)."""
    from core.analysis.report import ReportInputs, build_pdf

    is_gt = source.kind == SOURCE_GROUND_TRUTH
    gt = case.seg.data if case.seg is not None and not is_gt else None
    inputs = ReportInputs(
        case=case, labels=source.labels,
        model_name=source.model_name or ("Reference segmentation file (no model)" if is_gt else "unknown model"),
        model_sha256=source.model_sha256 or "n/a", corrected=source.corrected, gt_labels=gt,
        scores=None if is_gt else scores, seg_sha256=case.seg.sha256 if is_gt and case.seg is not None else "",
        notes=notes, quality=None if is_gt else quality, description=source.description.replace("`", ""),
        runtime="" if is_gt else (source.runtime or None))
    return build_pdf(inputs)


def nifti_download_bytes(case: Case, labels: np.ndarray) -> bytes:
    """The labels as a gzipped NIfTI in the input's own geometry and label convention (ET 4 or 3), uint8."""
    from core.data.cases import labels_for_disk
    from core.data.io import nifti_bytes

    return nifti_bytes(case.reference, labels_for_disk(labels, case.label_convention), np.uint8)
