"""RANO-style bidimensional measurement of enhancing tumour (ET, label 4) on a label volume.

Each enhancing lesion is one 3-D connected component of ET (26-connectivity). On the axial slice (fixed z) where
the lesion's cross-section is largest, it is measured as a reader measures it:

- ``d1``: the longest in-plane diameter (largest distance between two points of the lesion's outline);
- ``d2``: the longest diameter perpendicular to ``d1`` (within ``PERPENDICULAR_TOLERANCE_DEG``) whose whole
  length lies across the lesion (a chord, not a caliper width: a crescent is not measured across its gap).

Distances are computed in mm (the in-plane voxel sizes may differ). The outline is the 0.5 level line of the
binary cross-section (points half-way between an inside voxel centre and its outside 4-neighbour), so a straight
run of ``n`` voxels measures ``n`` voxel widths, edge to edge. Enclosed holes (necrosis inside an enhancing rim)
are filled before measuring: a ring-enhancing lesion is measured across its outer margin.

A lesion is measurable when both diameters are at least ``MEASURABLE_MIN_MM`` (10 mm). Target lesions are the up
to ``MAX_TARGETS`` (2, RANO 2.0) measurable lesions with the largest products ``d1 x d2``; the response measure
is the sum of their products (mm^2). Not implemented: RANO's other conditions (visible on two or more slices,
clearly defined margins, clinical data); the numbers are a research aid, not a response assessment.

Conventions: arrays are (X, Y, Z) on the RAS grid (after ``core.data.io`` reorientation); slice numbers and
voxel coordinates count from 0; endpoints are continuous voxel coordinates ``(x, y)`` on slice ``z`` (a voxel's
centre is at integer coordinates, so an outline point may be at ``x + 0.5``).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy import ndimage

from core.config import LABEL_ET, VALID_LABELS
from core.data.io import voxel_volume_ml_from
from core.errors import CaseError

MEASURABLE_MIN_MM = 10.0
MAX_TARGETS = 2
PERPENDICULAR_TOLERANCE_DEG = 5.0
SLICE_INDEX_BASE = 0
_INSIDE_LEVEL = 0.4  # bilinear value of the filled mask along a chord that still counts as inside the lesion
_SAMPLE_STEP_VOXELS = 0.25
_STRUCTURE_26 = np.ones((3, 3, 3), dtype=bool)
MAX_OUTLINE_POINTS = 2000  # outline points searched for the perpendicular diameter (memory and time bound)
_PAIR_CHUNK = 2_000_000  # point pairs held at once
_CHORD_BLOCK = 512  # chords checked at once, longest first

Point = tuple[float, float]
Segment = tuple[Point, Point]


@dataclass(frozen=True)
class Lesion:
    """One enhancing lesion, measured on its largest axial cross-section.

    Attributes:
        index: 1-based number of the lesion, in order of decreasing product (then volume).
        slice_z: axial slice (Z index on the RAS grid, counting from 0) where the lesion's area is largest.
        d1_endpoints: the longest diameter's two ends, continuous voxel coordinates ((x, y), (x, y)) on slice_z.
        d2_endpoints: the perpendicular diameter's two ends, same convention.
        d1_mm, d2_mm: the two diameters in mm (d2_mm is 0.0 when no perpendicular chord exists).
        product_mm2: d1_mm x d2_mm.
        measurable: both diameters >= 10 mm.
        volume_ml: the whole 3-D lesion's volume in mL (voxel count x voxel volume).
        area_mm2: the measured cross-section's area in mm^2 (voxel count on slice_z x in-plane voxel area).
        n_voxels: voxels of the 3-D lesion.
    """

    index: int
    slice_z: int
    d1_endpoints: Segment
    d2_endpoints: Segment
    d1_mm: float
    d2_mm: float
    product_mm2: float
    measurable: bool
    volume_ml: float
    area_mm2: float = 0.0
    n_voxels: int = 0

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready: numbers rounded to 0.01 mm / mm^2 and 0.001 mL, endpoints as [[x, y], [x, y]]."""
        return {
            "index": self.index,
            "slice_z": self.slice_z,
            "d1_mm": round(self.d1_mm, 2),
            "d2_mm": round(self.d2_mm, 2),
            "product_mm2": round(self.product_mm2, 2),
            "measurable": self.measurable,
            "volume_ml": round(self.volume_ml, 3),
            "area_mm2": round(self.area_mm2, 2),
            "n_voxels": self.n_voxels,
            "d1_endpoints_voxel": [[round(c, 3) for c in p] for p in self.d1_endpoints],
            "d2_endpoints_voxel": [[round(c, 3) for c in p] for p in self.d2_endpoints],
        }


@dataclass(frozen=True)
class RanoResult:
    """All enhancing lesions of a label volume, the target lesions and the sum of their products.

    Attributes:
        lesions: every ET component, largest product first (``Lesion.index`` = position + 1).
        targets: up to two measurable lesions with the largest products (a prefix of the measurable ones).
        sum_products_mm2: sum of the targets' products (0.0 without a measurable lesion).
        spacing_mm: voxel size (X, Y, Z) the diameters were computed with.
    """

    lesions: tuple[Lesion, ...]
    targets: tuple[Lesion, ...]
    sum_products_mm2: float
    spacing_mm: tuple[float, float, float] = (1.0, 1.0, 1.0)

    @property
    def measurable(self) -> tuple[Lesion, ...]:
        return tuple(les for les in self.lesions if les.measurable)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready summary (plain Python types), saying how slices are numbered."""
        return {
            "slice_numbering": "slice_z counts axial slices from 0 (Z axis of the RAS grid, inferior to superior)",
            "slice_index_base": SLICE_INDEX_BASE,
            "spacing_mm": [round(float(s), 6) for s in self.spacing_mm],
            "n_lesions": len(self.lesions),
            "n_measurable": len(self.measurable),
            "lesions": [les.to_dict() for les in self.lesions],
            "target_indices": [les.index for les in self.targets],
            "sum_products_mm2": round(self.sum_products_mm2, 2),
            "rule": (f"enhancing lesion = 3-D connected component of label {LABEL_ET} (26-connectivity); diameters on "
                     f"the axial slice of largest area; measurable when both >= {MEASURABLE_MIN_MM:g} mm; targets = "
                     f"up to {MAX_TARGETS} measurable lesions with the largest products (RANO 2.0)"),
        }


# ------------------------------------------------------------------------------------------ validation ---

def _check_inputs(labels: np.ndarray, spacing_mm: Sequence[float]) -> tuple[np.ndarray, tuple[float, float, float]]:
    arr = np.asarray(labels)
    if arr.ndim != 3:
        raise CaseError(f"expected labels of shape (X, Y, Z), got shape {arr.shape}")
    if not (np.issubdtype(arr.dtype, np.integer) or arr.dtype == np.bool_):
        raise CaseError(f"expected integer labels, got dtype {arr.dtype}")
    try:
        spacing = tuple(float(s) for s in spacing_mm)
    except (TypeError, ValueError) as err:
        raise CaseError(f"expected three positive voxel sizes in mm, got {spacing_mm!r}") from err
    if len(spacing) != 3 or not all(math.isfinite(s) and s > 0 for s in spacing):
        raise CaseError(f"expected three positive voxel sizes in mm, got {tuple(spacing_mm)}")
    if arr.size:
        values = set(int(v) for v in np.unique(arr))
        if not values <= VALID_LABELS:
            raise CaseError(f"expected labels within {{0, 1, 2, 4}}, got {sorted(values)}")
    return arr, (spacing[0], spacing[1], spacing[2])


# ----------------------------------------------------------------------------------------- 2-D geometry ---

def outline_points(mask2d: np.ndarray) -> np.ndarray:
    """Points of the 0.5 level line of a binary (X, Y) slice: the midpoint between every inside voxel centre and
    each outside 4-neighbour (outside the array counts as outside). Returns (N, 2) float voxel coordinates."""
    m = np.pad(np.asarray(mask2d, dtype=bool), 1)
    pts = []
    for dx, dy in ((1, 0), (-1, 0), (0, 1), (0, -1)):
        nb = np.roll(m, (-dx, -dy), axis=(0, 1))
        xs, ys = np.nonzero(m & ~nb)
        pts.append(np.stack([xs - 1 + dx / 2.0, ys - 1 + dy / 2.0], axis=1))
    return np.unique(np.concatenate(pts, axis=0), axis=0) if pts else np.zeros((0, 2))


def _hull(points_mm: np.ndarray) -> np.ndarray:
    """Indices of the convex hull's vertices (all points when too few or collinear)."""
    if len(points_mm) < 3:
        return np.arange(len(points_mm))
    from scipy.spatial import ConvexHull, QhullError

    try:
        return np.asarray(ConvexHull(points_mm).vertices)
    except QhullError:
        return np.arange(len(points_mm))


def _bilinear(padded: np.ndarray, xs: np.ndarray, ys: np.ndarray) -> np.ndarray:
    """Bilinear values of a 2-D array padded by 2 zero voxels at voxel coordinates (x, y) of the unpadded array."""
    x = np.clip(xs + 2.0, 0.0, padded.shape[0] - 1.001)
    y = np.clip(ys + 2.0, 0.0, padded.shape[1] - 1.001)
    x0, y0 = np.floor(x).astype(np.intp), np.floor(y).astype(np.intp)
    fx, fy = x - x0, y - y0
    return ((1 - fx) * (1 - fy) * padded[x0, y0] + fx * (1 - fy) * padded[x0 + 1, y0]
            + (1 - fx) * fy * padded[x0, y0 + 1] + fx * fy * padded[x0 + 1, y0 + 1])


def _chords_inside(padded: np.ndarray, starts: np.ndarray, ends: np.ndarray) -> np.ndarray:
    """For chords between voxel-coordinate points (M, 2) -> (M, 2), whether the whole chord lies in the lesion
    (``padded``: the filled cross-section as float, padded by 2 zero voxels): every sample, a quarter voxel apart,
    has a bilinear value >= 0.4. Nine samples first, the full check only for the chords that pass them."""
    keep = np.ones(len(starts), dtype=bool)
    lengths = np.linalg.norm(ends - starts, axis=1)
    n_full = max(2, int(math.ceil(float(lengths.max(initial=0.0)) / _SAMPLE_STEP_VOXELS)) + 1)
    for n in (min(11, n_full), n_full):
        t = np.linspace(0.0, 1.0, n)[1:-1]
        idx = np.nonzero(keep)[0]
        if t.size == 0 or idx.size == 0:
            break
        d = ends[idx] - starts[idx]
        vals = _bilinear(padded, starts[idx, None, 0] + d[:, None, 0] * t[None, :],
                         starts[idx, None, 1] + d[:, None, 1] * t[None, :])
        keep[idx] = (vals >= _INSIDE_LEVEL).all(axis=1)
    return keep


def _thin_outline(pts: np.ndarray, max_points: int = MAX_OUTLINE_POINTS) -> np.ndarray:
    """At most ``max_points`` outline points, evenly spread by angle around their centroid (a smooth lesion's
    outline is far below the limit; only ragged, noisy cross-sections are thinned)."""
    if len(pts) <= max_points:
        return pts
    centred = pts - pts.mean(axis=0)
    order = np.lexsort((pts[:, 1], pts[:, 0], np.arctan2(centred[:, 1], centred[:, 0])))
    step = int(math.ceil(len(pts) / max_points))
    return pts[order[::step]]


def _perpendicular_pairs(pts_mm: np.ndarray, u: np.ndarray, tolerance_deg: float
                         ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Pairs (i < j) of points (N, 2) in mm whose direction is within ``tolerance_deg`` of perpendicular to the
    unit vector ``u``: (i, j, length_mm, |cos| of the angle to u), built in chunks to bound memory."""
    n = len(pts_mm)
    limit = math.sin(math.radians(tolerance_deg)) + 1e-12
    rows = max(1, _PAIR_CHUNK // max(n, 1))
    out_i, out_j, out_len, out_cos = [], [], [], []
    for start in range(0, n, rows):
        i = np.arange(start, min(n, start + rows))
        vec = pts_mm[None, :, :] - pts_mm[i, None, :]  # (rows, n, 2)
        length = np.sqrt((vec ** 2).sum(-1))
        with np.errstate(invalid="ignore", divide="ignore"):
            cos = np.abs(vec @ u) / length
        sel = (np.arange(n)[None, :] > i[:, None]) & (length > 0) & (cos <= limit)
        r, j = np.nonzero(sel)
        out_i.append(i[r])
        out_j.append(j)
        out_len.append(length[r, j])
        out_cos.append(cos[r, j])
    if not out_i:
        empty = np.zeros(0)
        return empty.astype(int), empty.astype(int), empty, empty
    return np.concatenate(out_i), np.concatenate(out_j), np.concatenate(out_len), np.concatenate(out_cos)


def measure_slice(mask2d: np.ndarray, spacing_xy_mm: tuple[float, float],
                  tolerance_deg: float = PERPENDICULAR_TOLERANCE_DEG) -> tuple[Segment, Segment, float, float]:
    """The longest diameter and the longest perpendicular chord of a binary (X, Y) cross-section.

    Args:
        mask2d: (X, Y) bool, the lesion on one axial slice (holes are filled here).
        spacing_xy_mm: voxel size along X and Y in mm.
        tolerance_deg: how far from 90 degrees to ``d1`` the second diameter may be.

    Returns:
        (d1 endpoints, d2 endpoints, d1_mm, d2_mm); endpoints in continuous voxel coordinates. An empty mask gives
        zero-length segments at the origin.
    """
    filled = ndimage.binary_fill_holes(np.asarray(mask2d, dtype=bool))
    pts = outline_points(filled)
    if len(pts) == 0:
        zero: Segment = ((0.0, 0.0), (0.0, 0.0))
        return zero, zero, 0.0, 0.0
    scale = np.array(spacing_xy_mm, dtype=np.float64)
    pts_mm = pts * scale
    hull = pts[_hull(pts_mm)]
    hull_mm = hull * scale
    diff = hull_mm[:, None, :] - hull_mm[None, :, :]
    dist = np.sqrt((diff ** 2).sum(-1))
    i, j = np.unravel_index(int(np.argmax(dist)), dist.shape)
    a, b = (hull[i], hull[j]) if tuple(hull[i]) <= tuple(hull[j]) else (hull[j], hull[i])
    d1_mm = float(dist[i, j])
    u = (b - a) * scale / d1_mm if d1_mm > 0 else np.array([1.0, 0.0])

    # second diameter: pairs of outline points whose direction is within the tolerance of perpendicular to d1,
    # longest first, the first whose chord stays inside the (filled) lesion.
    cand_pts = _thin_outline(pts)
    ii, jj, length, cos_to_d1 = _perpendicular_pairs(cand_pts * scale, u, tolerance_deg)
    d2: Segment = ((float(a[0]), float(a[1])), (float(a[0]), float(a[1])))
    d2_mm = 0.0
    if ii.size:
        padded = np.pad(filled.astype(np.float32), 2)  # outside the array is outside the lesion, interpolated
        # longest first; ties broken by closeness to perpendicular, then by pair (deterministic)
        order = np.lexsort((jj, ii, np.round(cos_to_d1, 12), -np.round(length, 9)))
        for start in range(0, order.size, _CHORD_BLOCK):
            block = order[start:start + _CHORD_BLOCK]
            inside = _chords_inside(padded, cand_pts[ii[block]], cand_pts[jj[block]])
            if inside.any():
                k = block[int(np.argmax(inside))]
                p, q = cand_pts[ii[k]], cand_pts[jj[k]]
                d2 = ((float(p[0]), float(p[1])), (float(q[0]), float(q[1])))
                d2_mm = float(length[k])
                break
    d1: Segment = ((float(a[0]), float(a[1])), (float(b[0]), float(b[1])))
    return d1, d2, d1_mm, d2_mm


# ------------------------------------------------------------------------------------------- measurement ---

def _shift(seg: Segment, offset: Point) -> Segment:
    return ((seg[0][0] + offset[0], seg[0][1] + offset[1]), (seg[1][0] + offset[0], seg[1][1] + offset[1]))


def measure_rano(labels: np.ndarray, spacing_mm: tuple[float, float, float], *,
                 voxel_volume_ml: float | None = None) -> RanoResult:
    """Bidimensional (RANO-style) measurement of every enhancing lesion of a label volume.

    Args:
        labels: (X, Y, Z) integer labels 0/1/2/4 on the RAS grid; ET is label 4.
        spacing_mm: voxel size along X, Y, Z in mm.
        voxel_volume_ml: one voxel's volume in mL for the lesions' volumes (``Case.voxel_volume_ml``: |det| of
            the affine, exact on a sheared grid); None: the product of ``spacing_mm``.

    Returns:
        The lesions (largest product first), the target lesions and the sum of their products in mm^2.

    Raises:
        CaseError: labels not 3-D, not integers or outside {0, 1, 2, 4}; spacing not three positive numbers.
    """
    arr, spacing = _check_inputs(labels, spacing_mm)
    et = arr == LABEL_ET
    if not et.any():
        return RanoResult((), (), 0.0, spacing)
    components, n = ndimage.label(et, structure=_STRUCTURE_26)
    voxel_ml = voxel_volume_ml_from(spacing) if voxel_volume_ml is None else float(voxel_volume_ml)
    pixel_mm2 = spacing[0] * spacing[1]
    raw = []
    for k, box in enumerate(ndimage.find_objects(components), start=1):
        if box is None:
            continue
        comp = components[box] == k
        areas = comp.sum(axis=(0, 1))
        z_local = int(np.argmax(areas))  # the lowest slice among equal largest areas
        d1, d2, d1_mm, d2_mm = measure_slice(comp[:, :, z_local], (spacing[0], spacing[1]))
        offset = (float(box[0].start), float(box[1].start))
        n_vox = int(comp.sum())
        raw.append(dict(slice_z=z_local + box[2].start, d1_endpoints=_shift(d1, offset),
                        d2_endpoints=_shift(d2, offset),
                        d1_mm=d1_mm, d2_mm=d2_mm, product_mm2=d1_mm * d2_mm,
                        measurable=bool(d1_mm >= MEASURABLE_MIN_MM and d2_mm >= MEASURABLE_MIN_MM),
                        volume_ml=n_vox * voxel_ml, area_mm2=float(areas[z_local]) * pixel_mm2, n_voxels=n_vox,
                        first=tuple(int(s.start) for s in box)))
    raw.sort(key=lambda r: (-round(r["product_mm2"], 6), -r["n_voxels"], r["slice_z"], r["first"]))
    lesions = tuple(Lesion(index=i, **{k: v for k, v in r.items() if k != "first"})
                    for i, r in enumerate(raw, start=1))
    targets = tuple(les for les in lesions if les.measurable)[:MAX_TARGETS]
    return RanoResult(lesions, targets, float(sum(t.product_mm2 for t in targets)), spacing)
