"""A quality flag on every prediction: ``ok`` or ``review``, with the reasons a reader can check.

Measures (all from the case and the prediction, no reference label):
- input out of the training distribution: voxel size far from the training data's 1 mm, a brain volume outside
  the range of adult brains in BraTS space, and normalised brain intensities whose quantiles differ from those
  of the model's training cases (``intensity_shift``, in z-score units);
- missing modalities (zero-filled) when the model was not trained for them;
- implausible output: a whole tumour mirrored across the brain's midline (bilateral symmetric "tumour"), many
  separate tumour islands, a second tumour region far from the main one (``far_component_mm``), a tumour core or
  enhancing tumour split into many lesions (``tc_components``, ``et_components``), a whole-tumour or tumour-core
  volume out of range;
- high uncertainty: the mean normalised entropy of the class probabilities over the predicted tumour, and the
  whole-tumour Dice between the members of an ensemble (``network_agreement``, e.g. the 2-D and 3-D networks,
  computed by the caller).

The thresholds are chosen on the cross-validation predictions (``benchmarks/cv_analysis.py --loo``, which also
scores the choice leave-one-case-out) and are saved beside a model as ``quality.json`` together with the training
cases' intensity quantiles. Arrays are (X, Y, Z) on the
case's RAS grid (X runs left to right), probabilities (X, Y, Z, 4), spacing in mm.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from core.config import LABEL_ET, LABEL_NCR, MODALITY_TITLES
from core.data.io import voxel_volume_ml_from
from core.errors import ModelError

QUALITY_FILE = "quality.json"
QUANTILES: tuple[float, ...] = (1.0, 5.0, 25.0, 50.0, 75.0, 95.0, 99.0)
OK, REVIEW = "ok", "review"


@dataclass(frozen=True)
class QualityThresholds:
    """Where a measure turns a prediction to ``review`` (chosen on the cross-validation table)."""

    spacing_tolerance: float = 0.25  # difference of any voxel side from 1 mm, in mm
    brain_ml_range: tuple[float, float] = (900.0, 2100.0)  # CV cases: 1084-1690 mL
    # Largest quantile difference from the training cases, z-score units. On the CV table it did not separate
    # the raw TCIA case (1.09-1.20) from BraTS cases (0.58-1.44): set above all of them, it catches only
    # gross differences.
    max_intensity_shift: float = 2.0
    max_symmetry: float = 0.5  # fraction of tumour mirrored across the midline; good CV cases <= 0.34
    max_islands: int = 4  # whole-tumour components of at least ``island_ml``; good CV cases <= 2
    island_ml: float = 0.5
    wt_ml_range: tuple[float, float] = (0.5, 300.0)
    # Mean normalised entropy over predicted tumour voxels. On the CV table of the shipped recipe (single
    # slices, islands < 5 mL removed; benchmarks/cv_analysis.py --config full_noctx --quality):
    # every prediction with WT Dice < 0.80 is above 0.25 (0.28-0.39), and so are the raw TCIA predictions; the
    # BraTS-preprocessed ones with WT Dice >= 0.80 are below it (0.12-0.23).
    max_mean_entropy: float = 0.25
    # The thresholds below are off (None) by default; benchmarks/cv_analysis.py --loo chooses them.
    max_far_component_mm: float | None = None  # distance of a second region (>= island_ml) from the main one
    max_tc_components: int | None = None  # tumour-core components of at least ``lesion_ml``
    max_et_components: int | None = None  # enhancing-tumour components of at least ``lesion_ml``
    lesion_ml: float = 0.1
    min_network_agreement: float | None = None  # whole-tumour Dice between the ensemble's networks
    tc_ml_range: tuple[float, float] | None = None  # tumour-core volume, mL

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> QualityThresholds:
        """Thresholds from a ``quality.json`` body; keys it lacks (files written before a measure existed) take
        the defaults, unknown keys are ignored."""
        known: dict[str, Any] = {k: (tuple(v) if isinstance(v, list) else v) for k, v in d.items() if k in cls.__dataclass_fields__}
        return cls(**known)


@dataclass(frozen=True)
class QualityModel:
    """What the flag compares a case with: thresholds and the training cases' intensity quantiles.

    Attributes:
        thresholds: the flag's thresholds.
        reference_quantiles: modality key -> normalised brain-intensity quantiles at ``QUANTILES`` averaged
            over the training cases; empty when unknown (the intensity measure is then skipped).
        trained_for_missing: whether the model was trained with modality dropout.
    """

    thresholds: QualityThresholds = field(default_factory=QualityThresholds)
    reference_quantiles: dict[str, list[float]] = field(default_factory=dict)
    trained_for_missing: bool = False

    def save(self, folder: str | Path) -> Path:
        from core.data.io import atomic_write_bytes

        body = {"thresholds": asdict(self.thresholds), "reference_quantiles": self.reference_quantiles,
                "quantiles": list(QUANTILES), "trained_for_missing": self.trained_for_missing}
        return atomic_write_bytes(Path(folder) / QUALITY_FILE, json.dumps(body, indent=2).encode())

    @classmethod
    def load(cls, folder: str | Path, trained_for_missing: bool = False) -> QualityModel:
        """The folder's ``quality.json``, or default thresholds without an intensity reference.

        Raises:
            ModelError: the file exists but cannot be read.
        """
        path = Path(folder) / QUALITY_FILE
        if not path.is_file():
            return cls(trained_for_missing=trained_for_missing)
        try:
            d = json.loads(path.read_text(encoding="utf-8"))
            return cls(QualityThresholds.from_dict(d.get("thresholds", {})),
                       {k: [float(x) for x in v] for k, v in d.get("reference_quantiles", {}).items()},
                       bool(d.get("trained_for_missing", trained_for_missing)))
        except (OSError, json.JSONDecodeError, TypeError, ValueError) as err:
            raise ModelError(f"expected a readable {QUALITY_FILE} beside the model, got {err}") from err


@dataclass(frozen=True)
class QualityFlag:
    """``status`` "ok" or "review"; ``reasons`` one sentence per measure past its threshold; ``measures`` the
    values (JSON-able); ``missing`` the modalities the case lacked."""

    status: str
    reasons: tuple[str, ...]
    measures: dict[str, float]
    missing: tuple[str, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        return {"status": self.status, "reasons": list(self.reasons), "measures": self.measures,
                "missing_modalities": list(self.missing)}


# ------------------------------------------------------------------------------------------- measures ---

def intensity_quantiles(slices: np.ndarray) -> list[list[float] | None]:
    """Per channel of a (Z, S, S, C) normalised stack, the brain (any channel non-zero) intensity quantiles at
    ``QUANTILES``; None for an all-zero (missing) channel. Subsamples to at most ~200k voxels."""
    idx = np.flatnonzero(np.any(slices != 0, axis=-1))  # brain voxels, in C order
    if idx.size > 200_000:
        idx = idx[:: idx.size // 200_000]
    vals = np.asarray(slices.reshape(-1, slices.shape[-1])[idx], dtype=np.float32)  # (N, C): no full-brain copy
    out: list[list[float] | None] = []
    for c in range(slices.shape[-1]):
        v = vals[:, c] if vals.size else np.zeros(0, np.float32)
        out.append([float(x) for x in np.percentile(v, QUANTILES)] if v.size and np.any(v) else None)
    return out


def reference_from(per_case: list[list[list[float] | None]], channels: tuple[str, ...]) -> dict[str, list[float]]:
    """Average the per-case quantiles (``intensity_quantiles``) of training cases, per modality."""
    ref: dict[str, list[float]] = {}
    for c, key in enumerate(channels):
        rows: list[Any] = [q[c] for q in per_case if q[c] is not None]
        if rows:
            ref[key] = [round(float(x), 4) for x in np.mean(rows, axis=0)]
    return ref


def intensity_shift(case_q: list[list[float] | None], reference: dict[str, list[float]],
                    channels: tuple[str, ...]) -> tuple[float, str]:
    """Largest absolute quantile difference (z-score units) of any present modality from the reference, and
    that modality's key ("" when nothing to compare)."""
    worst, worst_key = 0.0, ""
    for c, key in enumerate(channels):
        if case_q[c] is None or key not in reference:
            continue
        d = float(np.max(np.abs(np.asarray(case_q[c]) - np.asarray(reference[key]))))
        if d > worst:
            worst, worst_key = d, key
    return worst, worst_key


def symmetry_fraction(wt: np.ndarray, brain: np.ndarray) -> float:
    """Fraction of whole-tumour voxels whose mirror image across the brain's mid-sagittal plane (the middle of
    the brain's X extent) is tumour too; 0 for an empty tumour."""
    n = int(np.count_nonzero(wt))
    if n == 0:
        return 0.0
    xs = np.flatnonzero(brain.any(axis=(1, 2)))
    if xs.size == 0:
        return 0.0
    c2 = int(xs[0] + xs[-1])  # mirror x -> c2 - x
    x_idx = np.flatnonzero(wt.any(axis=(1, 2)))
    hits = 0
    for x in x_idx:
        xm = c2 - x
        if 0 <= xm < wt.shape[0]:
            hits += int(np.count_nonzero(wt[x] & wt[xm]))
    return hits / n


def count_islands(wt: np.ndarray, spacing_mm: tuple[float, float, float], min_ml: float) -> int:
    """Whole-tumour components (26-connected) of at least ``min_ml``."""
    from core.analysis.metrics import bounding_box, label_components

    comps, n = label_components(wt[bounding_box(wt)])  # all of wt is inside its box
    if n == 0:
        return 0
    sizes = np.bincount(comps.ravel())[1:] * voxel_volume_ml_from(tuple(spacing_mm))
    return int(np.count_nonzero(sizes >= min_ml))


def far_component_mm(wt: np.ndarray, spacing_mm: tuple[float, float, float], min_ml: float) -> float:
    """Largest distance (mm, Euclidean between voxel centres) from the largest whole-tumour component
    (26-connected) to the nearest voxel of any other component of at least ``min_ml``; 0 when there is none.

    Computed inside the tumour's bounding box: it holds the largest component, so every voxel's nearest voxel of
    that component is inside it too.
    """
    from core.analysis.metrics import bounding_box, label_components

    if not np.any(wt):
        return 0.0
    comps, n = label_components(wt[bounding_box(wt)])
    if n <= 1:
        return 0.0
    sizes = np.bincount(comps.ravel())[1:]
    main = int(np.argmax(sizes)) + 1
    voxel_ml = voxel_volume_ml_from(tuple(spacing_mm))
    others = [c for c in range(1, n + 1) if c != main and sizes[c - 1] * voxel_ml >= min_ml]
    if not others:
        return 0.0
    from scipy import ndimage

    dist = ndimage.distance_transform_edt(comps != main, sampling=spacing_mm)
    return float(np.max(ndimage.minimum(dist, comps, others)))


def mean_entropy(probs: np.ndarray, mask: np.ndarray) -> float:
    """Mean normalised entropy (0..1) of (X, Y, Z, K) probabilities over ``mask``; 0 for an empty mask."""
    if not np.any(mask):
        return 0.0
    p = np.asarray(probs[mask], dtype=np.float32)
    ent = -np.sum(p * np.log(np.clip(p, 1e-7, 1.0)), axis=-1) / np.log(p.shape[-1])
    return float(np.mean(ent))


def measure(labels: np.ndarray, probs: np.ndarray, brain: np.ndarray, spacing_mm: tuple[float, float, float],
            case_quantiles: list[list[float] | None], reference: dict[str, list[float]],
            channels: tuple[str, ...], island_ml: float = 0.5, lesion_ml: float = 0.1,
            network_agreement: float | None = None) -> dict[str, float]:
    """Every measure of the flag as a JSON-able dict (volumes in mL, distances in mm).

    Args:
        labels: (X, Y, Z) labels 0/1/2/4; probs: (X, Y, Z, 4) class probabilities; brain: (X, Y, Z) bool.
        island_ml: smallest whole-tumour component counted by ``islands`` and ``far_component_mm``.
        lesion_ml: smallest tumour-core / enhancing-tumour component counted by ``tc_components`` /
            ``et_components``.
        network_agreement: whole-tumour Dice between the ensemble's networks, computed by the caller; stored as
            is (None when unknown: the flag then skips it).
    """
    wt = labels > 0
    tc = np.isin(labels, (LABEL_NCR, LABEL_ET))
    et = labels == LABEL_ET
    voxel_ml = voxel_volume_ml_from(tuple(spacing_mm))
    shift, shift_key = intensity_shift(case_quantiles, reference, channels)
    return {
        "max_spacing_deviation": round(float(max(abs(s - 1.0) for s in spacing_mm)), 4),
        "brain_ml": round(float(np.count_nonzero(brain)) * voxel_ml, 1),
        "intensity_shift": round(shift, 3),
        "intensity_shift_modality": shift_key,  # type: ignore[dict-item]
        "wt_ml": round(float(np.count_nonzero(wt)) * voxel_ml, 2),
        "symmetry": round(symmetry_fraction(wt, brain), 3),
        "islands": count_islands(wt, spacing_mm, island_ml),
        "mean_entropy": round(mean_entropy(probs, wt), 3),
        "far_component_mm": round(far_component_mm(wt, spacing_mm, island_ml), 1),
        "tc_ml": round(float(np.count_nonzero(tc)) * voxel_ml, 3),
        "et_ml": round(float(np.count_nonzero(et)) * voxel_ml, 3),
        "tc_components": count_islands(tc, spacing_mm, lesion_ml),
        "et_components": count_islands(et, spacing_mm, lesion_ml),
        "network_agreement": None if network_agreement is None else float(network_agreement),  # type: ignore[dict-item]
    }


def flag(measures: dict[str, float], model: QualityModel, missing: tuple[str, ...] = ()) -> QualityFlag:
    """Turn measures into ``ok``/``review`` with one reason per threshold crossed. A measure the dict lacks or
    holds as None (measures saved before it existed; no ensemble) is skipped, and so is a threshold left off."""
    t = model.thresholds
    m = measures
    reasons: list[str] = []
    if m["max_spacing_deviation"] > t.spacing_tolerance:
        reasons.append(f"input: voxel size differs from the training data's 1 mm by up to "
                       f"{m['max_spacing_deviation']:.2f} mm; the model expects BraTS-preprocessed 1 mm images")
    lo, hi = t.brain_ml_range
    if not lo <= m["brain_ml"] <= hi:
        reasons.append(f"input: brain volume {m['brain_ml']:.0f} mL is outside {lo:.0f}-{hi:.0f} mL (not a "
                       "skull-stripped whole brain in BraTS space?)")
    if m["intensity_shift"] > t.max_intensity_shift:
        key = str(m.get("intensity_shift_modality", ""))
        reasons.append(f"input: {MODALITY_TITLES.get(key, key)} intensities differ from the training cases "
                       f"(quantile shift {m['intensity_shift']:.2f} > {t.max_intensity_shift:.2f} z); raw or "
                       "differently processed images are segmented less reliably")
    if missing and not model.trained_for_missing:
        reasons.append(f"input: {', '.join(MODALITY_TITLES[k] for k in missing)} missing and zero-filled; this "
                       "model was not trained for missing modalities")
    if m["symmetry"] > t.max_symmetry:
        reasons.append(f"output: {m['symmetry']:.0%} of the tumour is mirrored across the midline (bilateral, "
                       "symmetric 'tumour' is usually normal anatomy painted as tumour)")
    if m["islands"] > t.max_islands:
        reasons.append(f"output: {int(m['islands'])} separate tumour regions of {t.island_ml:g} mL or more "
                       f"(more than {t.max_islands})")
    wlo, whi = t.wt_ml_range
    if not wlo <= m["wt_ml"] <= whi:
        reasons.append(f"output: whole-tumour volume {m['wt_ml']:.1f} mL is outside {wlo:g}-{whi:g} mL, where this "
                       "model's cross-validated predictions were reliable")
    if m["mean_entropy"] > t.max_mean_entropy:
        reasons.append(f"output: high uncertainty over the tumour (mean normalised entropy {m['mean_entropy']:.2f}"
                       f" > {t.max_mean_entropy:.2f})")
    far = m.get("far_component_mm")
    if far is not None and t.max_far_component_mm is not None and far > t.max_far_component_mm:
        reasons.append(f"output: a second tumour region {far:.0f} mm from the main one (more than "
                       f"{t.max_far_component_mm:g} mm; a distant region is often normal tissue painted as tumour)")
    for key, limit, name in (("tc_components", t.max_tc_components, "tumour core"),
                             ("et_components", t.max_et_components, "enhancing tumour")):
        count = m.get(key)
        if count is not None and limit is not None and count > limit:
            reasons.append(f"output: the {name} is split into {int(count)} separate parts of {t.lesion_ml:g} mL or "
                           f"more (more than {limit}); a fragmented {name} is often noise")
    tc_ml = m.get("tc_ml")
    if tc_ml is not None and t.tc_ml_range is not None:
        tlo, thi = t.tc_ml_range
        if not tlo <= tc_ml <= thi:
            side = f"below {tlo:g}" if tc_ml < tlo else f"above {thi:g}"
            reasons.append(f"output: tumour-core volume {tc_ml:.1f} mL is {side} mL, outside the range where "
                           "this model's cross-validated predictions were reliable")
    agreement = m.get("network_agreement")
    if agreement is not None and t.min_network_agreement is not None and agreement < t.min_network_agreement:
        reasons.append(f"output: the ensemble's networks disagree on the whole tumour (Dice between them "
                       f"{agreement:.2f} < {t.min_network_agreement:.2f})")
    return QualityFlag(REVIEW if reasons else OK, tuple(reasons), dict(measures), tuple(missing))
