"""From class probabilities to an anatomically plausible label map.

Steps, each optional and chosen on the cross-validation table (``benchmarks/cv_analysis.py``); the chosen
settings are saved beside a model as ``postprocess.json`` and read by inference:

1. Decoding: per-voxel argmax over (background, NCR, ED, ET), or BraTS region decoding (WT where
   P(NCR)+P(ED)+P(ET) > 0.5, TC inside it where P(NCR)+P(ET) > 0.5, ET inside TC where P(ET) > 0.5). Either
   way the labels obey the BraTS hierarchy ET in TC in WT.
2. Islands: whole-tumour connected components (26-connected) other than the largest are removed when they are
   smaller than ``min_island_ml`` and farther than ``keep_within_mm`` from the largest.
3. Tiny enhancing tumour: when the whole ET is smaller than ``min_et_ml``, it is relabelled NCR/NET (BraTS
   scores an ET predicted where the reference has none as Dice 0).
4. Lesion specks: enhancing-tumour components smaller than ``min_et_lesion_ml`` become NCR/NET, then
   tumour-core components smaller than ``min_tc_ml`` become edema (the BraTS lesion-wise metrics count every
   false speck as a lesion with Dice 0).
5. Far components: a whole-tumour component other than the largest whose nearest voxel is farther than
   ``far_mm`` from the largest is removed when its mean whole-tumour probability is below ``far_min_wt_prob``
   (judged by its distance and its own probability, not by its size).

Arrays are on the case's RAS grid, (X, Y, Z); probabilities (X, Y, Z, 4); spacing in mm.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from core.analysis.metrics import bounding_box, label_components
from core.config import CLASS_TO_LABEL, LABEL_ED, LABEL_ET, LABEL_NCR
from core.data.io import voxel_volume_ml_from
from core.errors import ModelError

POSTPROCESS_FILE = "postprocess.json"
DECODINGS = ("argmax", "regions")


@dataclass(frozen=True)
class PostprocessSpec:
    """Post-processing settings (see the module docstring). The defaults change nothing but the decoding."""

    decoding: str = "argmax"
    min_island_ml: float = 0.0
    keep_within_mm: float = 0.0
    min_et_ml: float = 0.0
    min_et_lesion_ml: float = 0.0
    min_tc_ml: float = 0.0
    far_mm: float = 0.0
    far_min_wt_prob: float = 0.0

    def __post_init__(self) -> None:
        if self.decoding not in DECODINGS:
            raise ModelError(f"expected decoding in {DECODINGS}, got {self.decoding!r}")
        if min(self.min_island_ml, self.keep_within_mm, self.min_et_ml, self.min_et_lesion_ml, self.min_tc_ml,
               self.far_mm, self.far_min_wt_prob) < 0:
            raise ModelError("expected non-negative post-processing thresholds, got a negative one")

    @property
    def label(self) -> str:
        """A short readable name, e.g. "regions, islands < 2 mL beyond 10 mm, ET < 0.5 mL -> NCR"."""
        parts = [self.decoding]
        if self.min_island_ml >= 1e6:
            parts.append("largest tumour component only")
        elif self.min_island_ml > 0 and self.keep_within_mm <= 0:
            parts.append(f"islands < {self.min_island_ml:g} mL removed wherever they lie")
        elif self.min_island_ml > 0:
            parts.append(f"islands < {self.min_island_ml:g} mL beyond {self.keep_within_mm:g} mm removed")
        if self.min_et_ml > 0:
            parts.append(f"ET < {self.min_et_ml:g} mL -> NCR")
        if self.min_et_lesion_ml > 0:
            parts.append(f"ET lesions < {self.min_et_lesion_ml:g} mL -> NCR")
        if self.min_tc_ml > 0:
            parts.append(f"core lesions < {self.min_tc_ml:g} mL -> edema")
        if self.far_mm > 0 and self.far_min_wt_prob > 0:
            parts.append(f"components beyond {self.far_mm:g} mm with mean P(WT) < {self.far_min_wt_prob:g} removed")
        return ", ".join(parts)

    def save(self, folder: str | Path) -> Path:
        from core.data.io import atomic_write_bytes

        return atomic_write_bytes(Path(folder) / POSTPROCESS_FILE, json.dumps(asdict(self), indent=2).encode())

    @classmethod
    def load(cls, folder: str | Path) -> PostprocessSpec:
        """The folder's ``postprocess.json``, or the plain argmax when there is none.

        Raises:
            ModelError: the file exists but cannot be read as settings.
        """
        path = Path(folder) / POSTPROCESS_FILE
        if not path.is_file():
            return cls()
        try:
            d = json.loads(path.read_text(encoding="utf-8"))
            return cls(**{k: v for k, v in d.items() if k in cls.__dataclass_fields__})
        except (OSError, json.JSONDecodeError, TypeError) as err:
            raise ModelError(f"expected readable post-processing settings in {POSTPROCESS_FILE}, got {err}") from err


def decode_labels(probs: np.ndarray, decoding: str = "argmax") -> np.ndarray:
    """(X, Y, Z, 4) probabilities -> (X, Y, Z) uint8 labels 0/1/2/4."""
    p = np.asarray(probs, dtype=np.float32)
    if decoding == "argmax":
        return np.asarray(CLASS_TO_LABEL, dtype=np.uint8)[np.argmax(p, axis=-1)]
    wt = p[..., 1] + p[..., 2] + p[..., 3] > 0.5
    tc = wt & (p[..., 1] + p[..., 3] > 0.5)
    et = tc & (p[..., 3] > 0.5)
    out = np.zeros(p.shape[:3], dtype=np.uint8)
    out[wt] = 2
    out[tc] = LABEL_NCR
    out[et] = LABEL_ET
    return out


def remove_islands(labels: np.ndarray, spacing_mm: tuple[float, float, float], min_island_ml: float,
                   keep_within_mm: float) -> np.ndarray:
    """Remove whole-tumour components other than the largest that are smaller than ``min_island_ml`` and whose
    nearest voxel is farther than ``keep_within_mm`` from the largest component. Returns a new array.

    Works inside the tumour's bounding box, and measures distances (Euclidean, in mm) inside the largest
    component's box grown by ``keep_within_mm``: a voxel outside that box is farther than that from it.
    """
    out = np.array(labels, dtype=np.uint8, copy=True)
    if min_island_ml <= 0 or not np.any(out):
        return out
    box = bounding_box(out > 0)
    comps, n = label_components(out[box] > 0)
    if n <= 1:
        return out
    voxel_ml = voxel_volume_ml_from(tuple(spacing_mm))
    sizes = np.bincount(comps.ravel())[1:]
    main = int(np.argmax(sizes)) + 1
    small = [i + 1 for i, s in enumerate(sizes) if i + 1 != main and s * voxel_ml < min_island_ml]
    if not small:
        return out
    if keep_within_mm > 0:
        from scipy import ndimage

        grow = [int(np.ceil(keep_within_mm / s)) + 1 for s in spacing_mm]
        near = tuple(slice(max(sl.start - g, 0), min(sl.stop + g, n_ax))
                     for sl, g, n_ax in zip(bounding_box(comps == main), grow, comps.shape, strict=True))
        sub = comps[near]
        dist = ndimage.distance_transform_edt(sub != main, sampling=spacing_mm)
        inside = set(np.unique(sub).tolist())
        mins = {c: float(ndimage.minimum(dist, sub, c)) for c in small if c in inside}
        small = [c for c in small if mins.get(c, np.inf) > keep_within_mm]
    if small:
        view = out[box]
        view[np.isin(comps, small)] = 0
    return out


def remove_far_components(labels: np.ndarray, probs: np.ndarray, spacing_mm: tuple[float, float, float],
                          far_mm: float, min_wt_prob: float) -> np.ndarray:
    """Remove whole-tumour components other than the largest whose nearest voxel is farther than ``far_mm`` from
    the largest and whose mean whole-tumour probability (1 - P(background)) is below ``min_wt_prob``.

    Args:
        labels: (X, Y, Z) labels; probs: (X, Y, Z, 4) class probabilities. Returns a new array.
    """
    out = np.array(labels, dtype=np.uint8, copy=True)
    if far_mm <= 0 or min_wt_prob <= 0 or not np.any(out):
        return out
    box = bounding_box(out > 0)
    comps, n = label_components(out[box] > 0)
    if n <= 1:
        return out
    from scipy import ndimage

    sizes = np.bincount(comps.ravel())[1:]
    main = int(np.argmax(sizes)) + 1
    dist = ndimage.distance_transform_edt(comps != main, sampling=spacing_mm)
    wt_prob = 1.0 - np.asarray(probs[box][..., 0], dtype=np.float32)
    others = [c for c in range(1, n + 1) if c != main]
    far = ndimage.minimum(dist, comps, others)
    mean_p = ndimage.mean(wt_prob, comps, others)
    drop = [c for c, d, m in zip(others, np.atleast_1d(far), np.atleast_1d(mean_p), strict=True)
            if d > far_mm and m < min_wt_prob]
    if drop:
        view = out[box]
        view[np.isin(comps, drop)] = 0
    return out


def remove_lesion_specks(labels: np.ndarray, spacing_mm: tuple[float, float, float], min_et_ml: float,
                         min_tc_ml: float) -> np.ndarray:
    """Enhancing-tumour components (26-connected) under ``min_et_ml`` become NCR/NET; then tumour-core (NCR/NET +
    ET) components under ``min_tc_ml`` become edema. (X, Y, Z) labels in, a new array out."""
    out = np.array(labels, dtype=np.uint8, copy=True)
    voxel_ml = voxel_volume_ml_from(tuple(spacing_mm))
    for min_ml, region, target in ((min_et_ml, (LABEL_ET,), LABEL_NCR), (min_tc_ml, (LABEL_NCR, LABEL_ET), LABEL_ED)):
        mask = np.isin(out, region)
        if min_ml <= 0 or not mask.any():
            continue
        box = bounding_box(mask)
        comps, n = label_components(mask[box])
        sizes = np.bincount(comps.ravel())[1:]
        small = [i + 1 for i, s in enumerate(sizes) if s * voxel_ml < min_ml]
        if small:
            view = out[box]
            view[np.isin(comps, small)] = target
    return out


def refine(labels: np.ndarray, spacing_mm: tuple[float, float, float], spec: PostprocessSpec,
           probs: np.ndarray | None = None) -> np.ndarray:
    """The spec's island, far-component, tiny-ET and lesion-speck rules on a decoded (X, Y, Z) label map
    (``probs`` (X, Y, Z, 4) is needed for the far-component rule, which is skipped without it); a new array."""
    out = remove_islands(labels, spacing_mm, spec.min_island_ml, spec.keep_within_mm)
    if probs is not None:
        out = remove_far_components(out, probs, spacing_mm, spec.far_mm, spec.far_min_wt_prob)
    if spec.min_et_ml > 0:
        et = out == LABEL_ET
        n_et = int(np.count_nonzero(et))
        if 0 < n_et * voxel_volume_ml_from(tuple(spacing_mm)) < spec.min_et_ml:
            out[et] = LABEL_NCR
    if spec.min_et_lesion_ml > 0 or spec.min_tc_ml > 0:
        out = remove_lesion_specks(out, spacing_mm, spec.min_et_lesion_ml, spec.min_tc_ml)
    return out


def apply(probs: np.ndarray, spacing_mm: tuple[float, float, float], spec: PostprocessSpec) -> np.ndarray:
    """Decode probabilities and apply the spec's rules: (X, Y, Z) uint8 labels 0/1/2/4."""
    return refine(decode_labels(probs, spec.decoding), spacing_mm, spec, probs)


def decode(probs: np.ndarray, spacing_mm: tuple[float, float, float], variant: str | PostprocessSpec) -> np.ndarray:
    """``apply`` with a spec, or with a variant written as text: "none" (argmax), or comma-separated
    ``key=value`` settings of ``PostprocessSpec`` (e.g. "decoding=regions,min_island_ml=2,keep_within_mm=10")."""
    if isinstance(variant, PostprocessSpec):
        return apply(probs, spacing_mm, variant)
    return apply(probs, spacing_mm, parse_variant(variant))


def parse_variant(text: str) -> PostprocessSpec:
    """A ``PostprocessSpec`` from "none" or "key=value,key=value".

    Raises:
        ModelError: an unknown key or a bad value.
    """
    if text.strip() in ("", "none"):
        return PostprocessSpec()
    fields: dict[str, object] = {}
    for part in text.split(","):
        key, _, value = part.partition("=")
        key = key.strip()
        if key not in PostprocessSpec.__dataclass_fields__:
            raise ModelError(f"expected post-processing keys among {list(PostprocessSpec.__dataclass_fields__)}, "
                             f"got {key!r}")
        try:
            fields[key] = value.strip() if key == "decoding" else float(value)
        except ValueError as err:
            raise ModelError(f"expected a number for {key}, got {value!r}") from err
    return PostprocessSpec(**fields)  # type: ignore[arg-type]
