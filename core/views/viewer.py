"""Pure logic of the case browser and slice viewer pages (no Streamlit): the shared cursor, per-case display
statistics, and the per-file checking of uploads.

The cursor is a dict ``{"x": int, "y": int, "z": int}`` of voxel indices on the case's RAS grid (X, Y, Z).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

from core.config import MODALITIES, MODALITY_TITLES
from core.data.cases import SEG_KEY, Case, case_from_uploads, guess_modality
from core.data.io import load_volume_bytes
from core.errors import BratsViewerError
from core.views import figures

UPLOAD_KEYS: tuple[str, ...] = (*MODALITIES, SEG_KEY)
UPLOAD_TITLES: dict[str, str] = {**MODALITY_TITLES, SEG_KEY: "Segmentation"}


# ------------------------------------------------------------------------- the browser viewer's own view ---
CLIENT_VIEW_FIELDS: tuple[str, ...] = ("modality", "plane", "radiological", "opacity", "outline", "show", "hidden",
                                       "windows")
ALL_MODALITIES = "all"  # the 2x2 layout: every modality of one plane


def parse_client_view(view: object, modalities: Sequence[str], overlays: Sequence[str]) -> dict[str, object]:
    """The valid fields of a view the browser viewer reports (untrusted): what is malformed is left out.

    Args:
        view: {"modality": a key of ``modalities`` or "all", "plane": "axial" | "coronal" | "sagittal",
            "radiological": bool, "opacity": 0..1, "outline": bool, "show": overlay names, "hidden": label
            values ("1", "2", "4") not drawn, "windows": {modality key: [low, high]} in 8-bit units}.
        modalities: the case's modality keys; overlays: the overlay names sent to the viewer.

    Returns:
        The fields that passed, same names, lists for ``show`` / ``hidden``, [float, float] windows.
    """
    if not isinstance(view, Mapping):
        return {}
    out: dict[str, object] = {}
    mod = view.get("modality")
    if isinstance(mod, str) and (mod in modalities or (mod == ALL_MODALITIES and len(modalities) > 1)):
        out["modality"] = mod
    if view.get("plane") in figures.PLANES:
        out["plane"] = str(view["plane"])
    for name in ("radiological", "outline"):
        if isinstance(view.get(name), bool):
            out[name] = view[name]
    op = view.get("opacity")
    if isinstance(op, (int, float)) and not isinstance(op, bool) and 0.0 <= float(op) <= 1.0:
        out["opacity"] = round(float(op), 2)
    show = view.get("show")
    if isinstance(show, list) and all(isinstance(n, str) and n in overlays for n in show):
        out["show"] = list(dict.fromkeys(show))
    hidden = view.get("hidden")
    if isinstance(hidden, list) and all(h in ("1", "2", "4") for h in hidden):
        out["hidden"] = sorted(set(hidden))
    windows = view.get("windows")
    if isinstance(windows, Mapping):
        good = {}
        for key, win in windows.items():
            if key in modalities and isinstance(win, (list, tuple)) and len(win) == 2 and all(
                    isinstance(v, (int, float)) and not isinstance(v, bool) and np.isfinite(v) and -2000 <= v <= 2000
                    for v in win) and win[1] > win[0]:
                good[str(key)] = [round(float(win[0]), 2), round(float(win[1]), 2)]
        out["windows"] = good
    return out


def client_settings(sidebar: Mapping[str, object], browser: Mapping[str, object] | None,
                    seed: Mapping[str, object] | None) -> dict[str, object]:
    """The settings the browser viewer opens with: the sidebar's, except that each choice made in the browser
    (``browser``, from ``parse_client_view``) is kept while the sidebar's value of that field is still the one
    it had when the browser reported it (``seed``): a trip to the Montage or 3-D tab and back keeps the reader's
    image, window, outlines and convention, and a later change in the sidebar still wins."""
    out = dict(sidebar)
    for name, value in (browser or {}).items():
        if name not in sidebar or seed is None or seed.get(name) == sidebar.get(name):
            out[name] = value
    return out


# -------------------------------------------------------------------------------------------------- cursor ---

def clamp_cursor(cursor: Mapping[str, int] | None, shape: Sequence[int]) -> dict[str, int] | None:
    """The cursor with each index clipped into ``0..shape-1``; None when ``cursor`` is None or malformed."""
    if not cursor:
        return None
    try:
        return {n: int(min(max(int(cursor[n]), 0), int(shape[a]) - 1)) for a, n in enumerate(figures.AXIS_NAMES)}
    except (KeyError, TypeError, ValueError):
        return None


def default_cursor(image: np.ndarray, labels: np.ndarray | None = None) -> dict[str, int]:
    """Where to open a case: the slices of most tumour when ``labels`` hold any, else the brain's centre."""
    if labels is not None:
        cur = figures.most_tumour_cursor(labels)
        if cur is not None:
            return cur
    return figures.brain_centre(image)


def move_cursor(cursor: Mapping[str, int], axis_name: str, index: int, shape: Sequence[int]) -> dict[str, int]:
    """A copy of ``cursor`` with one axis ("x", "y" or "z") set to ``index`` (clipped into the grid)."""
    if axis_name not in figures.AXIS_NAMES:
        raise BratsViewerError(f"expected an axis among x, y, z, got {axis_name!r}")
    out = {n: int(cursor[n]) for n in figures.AXIS_NAMES}
    out[axis_name] = int(index)
    return {n: int(min(max(v, 0), int(shape[a]) - 1)) for a, (n, v) in enumerate(out.items())}


@dataclass(frozen=True)
class CaseDisplayStats:
    """Per-case numbers the viewer needs on every rerun, computed once per case.

    Attributes:
        percentiles: modality -> {percentile: intensity} of its brain voxels (for window presets).
        tumour_cursor: {x, y, z} of the slices of most ground-truth tumour, or None.
        centre: {x, y, z} of the brain's centre.
        value_range: modality -> (min, max) intensity.
    """

    percentiles: dict[str, dict[float, float]]
    tumour_cursor: dict[str, int] | None
    centre: dict[str, int]
    value_range: dict[str, tuple[float, float]] = field(default_factory=dict)


def display_stats(case: Case) -> CaseDisplayStats:
    """Window percentiles, intensity ranges, most-tumour cursor and brain centre of a case."""
    pct, rng = {}, {}
    for key in case.modalities:
        data = case.images[key].data
        pct[key] = figures.brain_percentiles(data)
        rng[key] = (float(data.min()), float(data.max()))
    seg = case.seg.data if case.seg is not None else None
    tumour = figures.most_tumour_cursor(seg) if seg is not None else None
    centre = figures.brain_centre(case.reference.data)
    return CaseDisplayStats(pct, tumour, centre, rng)


# -------------------------------------------------------------------------------------------------- uploads ---

@dataclass(frozen=True)
class UploadCheck:
    """The check of one uploaded file on its own.

    Attributes:
        name: display name as uploaded (never used as a path).
        guess: modality key guessed from the name (flair, t1, t1ce, t2, seg) or None.
        ok: the bytes are an acceptable 3-D NIfTI image.
        message: the error (one line) when not ok, else a summary (shape, voxel size).
        shape: RAS grid shape when ok.
    """

    name: str
    guess: str | None
    ok: bool
    message: str
    shape: tuple[int, int, int] | None = None


def check_upload(name: str, blob: bytes) -> UploadCheck:
    """Validate one uploaded file with ``core.data.io.load_volume_bytes``; never raises for bad bytes."""
    guess = guess_modality(name)
    try:
        vol = load_volume_bytes(blob, name)
    except BratsViewerError as err:
        return UploadCheck(name, guess, False, str(err))
    spacing = "x".join(f"{s:g}" for s in vol.spacing_mm)
    summary = f"{'x'.join(str(s) for s in vol.shape)} voxels of {spacing} mm, stored {''.join(vol.original_axcodes)}"
    if vol.warnings:
        summary += "; " + "; ".join(vol.warnings)
    return UploadCheck(name, guess, True, summary, vol.shape)


@dataclass(frozen=True)
class UploadResult:
    """Per-file problems (index in the upload list -> message) and the case when everything fits."""

    file_errors: dict[int, str]
    case: Case | None
    error: str | None


def build_upload_case(items: Sequence[tuple[str, bytes, str | None]],
                      checks: Iterable[UploadCheck] | None = None) -> UploadResult:
    """Turn uploads ``[(name, bytes, chosen modality key or None)]`` into a case, or say per file what is wrong.

    Each file is checked on its own first (``checks`` may give precomputed ``check_upload`` results in the same
    order); unreadable files, files without a modality and duplicated modalities are reported against the file.
    Only when every file passes is ``cases.case_from_uploads`` called; its error (e.g. mismatched grids) is
    the case-level ``error``.
    """
    checks = list(checks) if checks is not None else [check_upload(n, b) for n, b, _ in items]
    errors = upload_file_errors([(n, k) for n, _, k in items], checks)
    if not items:
        return UploadResult({}, None, "expected at least one uploaded image, got none")
    if errors:
        return UploadResult(errors, None, f"{len(errors)} of {len(items)} files need attention")
    if not any(k in MODALITIES for _, _, k in items):
        return UploadResult({}, None, "expected at least one MRI modality besides the segmentation, got none")
    try:
        case = case_from_uploads([(n, b, str(k)) for n, b, k in items])
    except BratsViewerError as err:
        return UploadResult({}, None, str(err))
    return UploadResult({}, case, None)


def upload_file_errors(choices: Sequence[tuple[str, str | None]], checks: Sequence[UploadCheck]) -> dict[int, str]:
    """Problems of each upload on its own: unreadable, no modality chosen, or a modality chosen twice.

    Args:
        choices: (display name, chosen modality key or None) per file, in upload order.
        checks: ``check_upload`` results in the same order.

    Returns:
        file index -> one-line message, for the files with a problem only.
    """
    if len(checks) != len(choices):
        raise BratsViewerError(f"expected one check per upload ({len(choices)}), got {len(checks)}")
    errors: dict[int, str] = {}
    seen: dict[str, int] = {}
    for i, ((_name, key), chk) in enumerate(zip(choices, checks, strict=True)):
        if not chk.ok:
            errors[i] = chk.message
        elif key not in UPLOAD_KEYS:
            errors[i] = f"expected a modality among {', '.join(UPLOAD_TITLES.values())}, got none chosen"
        elif key in seen:
            errors[i] = (f"expected one file per modality, got a second {UPLOAD_TITLES[key]} "
                         f"(also {choices[seen[key]][0]})")
        else:
            seen[key] = i
    return errors
