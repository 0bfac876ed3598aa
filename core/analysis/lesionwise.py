"""BraTS lesion-wise metrics (the figures BraTS has ranked by since 2023), two rules, and lesion counts.

Label arrays are 3-D, axes (X, Y, Z), one voxel grid, internal labels 0/1/2/4 (``core.config.VALID_LABELS``);
spacing is in mm. A lesion is a 26-connected component of a region mask: WT = labels 1+2+4, TC = 1+4, ET = 4.

``lesionwise_scores`` (default ``rule="panoptica-gli"``) runs panoptica (Apache-2.0) configured as the official
evaluator ``brats-evaluation`` 0.0.10 configures it for glioma (``configs/config_gli.yaml``; AGPL-3.0, read and
never imported here):

* semantic input, one merged label group per region (its wt/tc/et groups; its label 3 is ET and its label 4 is
  the BraTS 2024 resection cavity, kept out of WT and TC, so files with ET = 4 must be mapped to 3 before it);
* instances: connected components of each region mask (``ConnectedComponentsInstanceApproximator``, cc3d in
  3-D, 26-connected); no dilation of the reference, no merging of nearby lesions, no minimum lesion size (the
  BraTS 2023 script dilated the reference by 3 voxels and dropped glioma reference lesions of at most 50
  voxels: ``rule="brats2023"`` below; the panoptica-based evaluator does neither);
* matching: one-to-one maximum bipartite matching on Dice (``MaxBipartiteMatching``, threshold 1e-6: any
  overlap may match); unmatched predicted lesions are false positives, unmatched reference lesions false
  negatives;
* per matched pair: Dice and HD95 (MedPy surfaces, 6-connected erosion; 95th percentile of the pooled
  surface distances, in mm), each lesion pair on its own.

Figures of a region (``LesionScore``):

* ``dice`` and ``hd95_mm``: the lesion-wise scores penalised the BraTS 2023 way: the mean over TP + FN + FP
  lesions, every false negative or false positive counting Dice 0 and HD95 ``LESION_MISS_HD95_MM`` (374 mm);
  no lesion on either side: Dice 1 and HD95 0 mm.
* ``matched_dice`` and ``matched_hd95_mm``: the mean over matched lesions only, which is what brats-evaluation
  reports for glioma as ``lesionwise_dsc_mean`` / ``lesionwise_hd95_mean`` (panoptica's ``sq_dsc``/``sq_hd95``):
  with lesions but none matched, Dice 0 and HD95 inf; with no lesion on either side, NaN (as there).
* ``global_dice``: Dice of the whole region mask (panoptica's ``global_bin_dsc``), 1 when both masks are empty
  (this project's rule, ``core.analysis.metrics``; brats-evaluation gives NaN there).

``lesionwise_scores(..., rule="brats2023")`` computes instead what the BraTS 2023 challenge's own lesion-wise
script (BraTS-2023-Metrics, ``get_lesion_wise_results`` with ``challenge_name="BraTS-GLI"``; read, not copied)
computes, in numpy, cc3d and scipy. panoptica has no rule that merges nearby reference lesions, and its matching
is one-to-one, so it cannot give these figures. Per region:

* lesions: 26-connected components. Reference lesions closer than the dilation are merged: the reference mask
  is dilated 3 times by the 18-connected element (``generate_binary_structure(3, 2)``), and each component of
  the dilated mask is one reference lesion made of the reference voxels it holds (the dilated voxels are not
  part of it). Predicted lesions are not merged.
* matching, many-to-many: the predicted lesions that touch a reference lesion dilated the same way (3 times) all
  belong to it; the lesion's Dice and HD95 are those of the lesion against the union of them (Dice 0 and HD95
  inf, then 374 mm, with none). A predicted lesion may belong to several reference lesions.
* threshold: reference lesions of at most 50 mm^3 (voxel count x the three voxel sizes; 50 voxels at 1 mm) are
  left out of the score, hit or missed. Predicted lesions are never thresholded: a false positive is a
  predicted lesion that touches no dilated reference lesion, small ones included; one that touches only a
  left-out small reference lesion is no false positive.
* HD95: the DeepMind surface-distance measure the script calls (``surfel_hd95_mm``): surface elements on the
  voxel corners weighted by their marching-cubes area, the first distance at which the area share reaches 95 %,
  the larger of the two directions, with the spacing.
* ``dice`` = sum of the kept lesions' Dice / (kept lesions + false positives); ``hd95_mm`` = (sum of their HD95
  + 374 mm x false positives) / the same; no kept lesion and no false positive (both masks empty, or only small
  reference lesions and no prediction away from them): Dice 1 and HD95 0 mm, as the script scores 0/0.
* ``LesionScore`` fields: ``tp`` = kept reference lesions with at least one predicted lesion (the script's
  Num_TP), ``fn`` = kept ones without (Num_FN), ``fp`` = false-positive predicted lesions (Num_FP); ``n_ref`` =
  kept reference lesions (tp + fn), ``n_pred`` = all predicted lesions; ``matched_dice``/``matched_hd95_mm`` and
  ``lesion_dice``/``lesion_hd95_mm``: over the tp lesions (zero tp: 0 and inf with lesions, NaN without, as for
  panoptica-gli); ``global_dice`` as above (the script's Legacy_Dice, 1 on two empty masks).

The figures are invariant under axis flips and permutations (the surface-area table is symmetric), so the RAS
grid gives the script's numbers on the file's grid. Checked equal to the script on synthetic and real BraTS
pairs (``tests/test_lesionwise.py`` holds hand-worked cases).

panoptica is imported when ``lesionwise_scores`` is first called with the default rule (about 1.5 s); the
brats2023 rule imports scipy.ndimage and, once, scikit-image's marching cubes; ``count_lesions`` needs only cc3d.
"""

from __future__ import annotations

import contextlib
import functools
import io
import logging
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from core.analysis.metrics import (
    REGION_ORDER,
    _check_labels,
    _check_spacing,
    _label_counts,
    bounding_box,
    label_components,
    region_mask,
)
from core.config import REGIONS
from core.data.io import voxel_volume_ml_from
from core.errors import BratsViewerError, CaseError, ImageContentError

LESION_MISS_HD95_MM: float = 374.0  # BraTS 2023: HD95 of a missed or spurious lesion
MATCH_THRESHOLD_DICE: float = 1e-6  # brats-evaluation config_gli.yaml: matching_threshold 0.000001 on DSC
PANOPTICA_INSTALL = "pip install --no-deps panoptica==2.1.7 (see requirements-nodeps.txt)"
LESION_RULES: tuple[str, ...] = ("panoptica-gli", "brats2023")  # lesionwise_scores(rule=...); the first is the default
BRATS2023_DILATION: int = 3  # BraTS 2023 script, BraTS-GLI: dilation iterations (18-connected element)
BRATS2023_MIN_LESION_MM3: float = 50.0  # BraTS-GLI: reference lesions of at most this volume are left out


@dataclass(frozen=True)
class LesionScore:
    """Lesion-wise scores of one region (see the module notes for the rules; under ``rule="brats2023"`` the
    counts and matched figures are over the merged reference lesions above 50 mm^3, as noted there).

    Attributes:
        dice: lesion-wise Dice in [0, 1], FN and FP lesions counting 0.
        hd95_mm: lesion-wise HD95 in mm, FN and FP lesions counting ``LESION_MISS_HD95_MM``.
        matched_dice: mean Dice of the matched lesions (brats-evaluation's ``lesionwise_dsc_mean``).
        matched_hd95_mm: mean HD95 of the matched lesions in mm (``lesionwise_hd95_mean``); inf or NaN as there.
        n_ref, n_pred: reference and predicted lesions (26-connected components of the region).
        tp, fp, fn: matched pairs, unmatched predicted lesions, unmatched reference lesions.
        global_dice: Dice of the whole region mask.
        lesion_dice, lesion_hd95_mm: per matched pair, in panoptica's order of matched reference lesions.
    """

    dice: float
    hd95_mm: float
    matched_dice: float
    matched_hd95_mm: float
    n_ref: int
    n_pred: int
    tp: int
    fp: int
    fn: int
    global_dice: float
    lesion_dice: tuple[float, ...] = ()
    lesion_hd95_mm: tuple[float, ...] = ()

    def to_dict(self) -> dict[str, float | int | None]:
        """JSON-able scalars (the per-lesion tuples left out); NaN and inf become None."""
        out: dict[str, float | int | None] = {}
        for key in ("dice", "hd95_mm", "matched_dice", "matched_hd95_mm", "n_ref", "n_pred", "tp", "fp", "fn",
                    "global_dice"):
            value = getattr(self, key)
            if isinstance(value, int):
                out[key] = value
            else:
                out[key] = float(value) if math.isfinite(value) else None
        return out


def flat_lesionwise(scores: Mapping[str, LesionScore]) -> dict[str, float | int | None]:
    """Flat dict ``<REGION>_lw_<field>`` (e.g. "WT_lw_dice", "ET_lw_hd95_mm", "TC_lw_n_ref") for CSV rows."""
    return {f"{region}_lw_{key}": value for region in REGION_ORDER if region in scores
            for key, value in scores[region].to_dict().items()}


# ------------------------------------------------------------------------------------------------ panoptica ---

@functools.lru_cache(maxsize=1)
def _evaluator() -> Any:
    """The panoptica evaluator of brats-evaluation's glioma configuration on this project's labels (built once)."""
    try:
        import panoptica
        from panoptica.utils.edge_case_handling import EdgeCaseHandler, EdgeCaseResult, MetricZeroTPEdgeCaseHandling
        from panoptica.utils.label_group import LabelMergeGroup
        from panoptica.utils.segmentation_class import SegmentationClassGroups
    except ImportError as err:
        raise BratsViewerError(f"expected the panoptica package for lesion-wise metrics ({PANOPTICA_INSTALL})") from err

    panoptica.disable_citation_reminder()  # it prints to stdout, where the command line writes its JSON
    log = logging.getLogger("panoptica")  # its rich handler writes to stdout too: warnings go to stderr instead
    for handler in list(log.handlers):
        log.removeHandler(handler)
    log.addHandler(logging.StreamHandler())
    log.setLevel(logging.WARNING)

    Metric, Result = panoptica.Metric, EdgeCaseResult  # noqa: N806 - panoptica's enum classes

    def zero_tp(value: Any) -> Any:
        return MetricZeroTPEdgeCaseHandling(empty_prediction_result=value, empty_reference_result=value,
                                            no_instances_result=Result.NAN, normal=value)

    with contextlib.redirect_stdout(io.StringIO()):  # it prints a notice that WT, TC and ET share labels
        groups = SegmentationClassGroups({name: LabelMergeGroup(list(REGIONS[name])) for name in REGION_ORDER})
    return panoptica.Panoptica_Evaluator(
        expected_input=panoptica.InputType.SEMANTIC,
        instance_approximator=panoptica.ConnectedComponentsInstanceApproximator(cca_backend=None),
        instance_matcher=panoptica.MaxBipartiteMatching(matching_metric=Metric.DSC,
                                                        matching_threshold=MATCH_THRESHOLD_DICE),
        edge_case_handler=EdgeCaseHandler(listmetric_zeroTP_handling={Metric.DSC: zero_tp(Result.ZERO),
                                                                      Metric.HD95: zero_tp(Result.INF)},
                                          empty_list_std=Result.NAN),
        segmentation_class_groups=groups,
        instance_metrics=[Metric.DSC, Metric.HD95],
        global_metrics=[Metric.DSC],
        decision_metric=None,
    )


def _score(result: Any) -> LesionScore:
    """A LesionScore from one panoptica group result."""
    from panoptica import Metric, MetricMode

    tp, fp, fn = int(result.tp), int(result.fp), int(result.fn)
    dices = tuple(float(v) for v in result.get_list_metric(Metric.DSC, MetricMode.ALL))
    hd95s = tuple(float(v) for v in result.get_list_metric(Metric.HD95, MetricMode.ALL))
    n = tp + fp + fn
    if n == 0:
        dice, hd95 = 1.0, 0.0
    else:
        dice = sum(dices) / n
        hd95 = (sum(hd95s) + LESION_MISS_HD95_MM * (fp + fn)) / n
    both_empty = result.global_bin_volume_pred == 0 and result.global_bin_volume_ref == 0
    return LesionScore(
        dice=float(dice), hd95_mm=float(hd95), matched_dice=float(result.sq_dsc),
        matched_hd95_mm=float(result.sq_hd95), n_ref=int(result.n_ref_instances),
        n_pred=int(result.n_pred_instances), tp=tp, fp=fp, fn=fn,
        global_dice=1.0 if both_empty else float(result.global_bin_dsc), lesion_dice=dices, lesion_hd95_mm=hd95s,
    )


def lesionwise_scores(pred_labels: np.ndarray, gt_labels: np.ndarray, spacing_mm: Sequence[float],
                      rule: str = "panoptica-gli") -> dict[str, LesionScore]:
    """BraTS lesion-wise Dice and HD95 of WT, TC and ET, with lesion counts and the global Dice (module notes).

    Args:
        pred_labels, gt_labels: label arrays 0/1/2/4, shape (X, Y, Z), same grid.
        spacing_mm: voxel size along X, Y, Z in mm.
        rule: "panoptica-gli" (brats-evaluation 0.0.10's glioma configuration through panoptica; the default) or
            "brats2023" (the BraTS 2023 challenge script's BraTS-GLI rule: nearby reference lesions merged,
            reference lesions of at most 50 mm^3 left out; numpy, cc3d and scipy, no panoptica).

    Returns:
        "WT", "TC", "ET" -> LesionScore.

    Raises:
        CaseError: shapes differ, not 3-D, or labels outside {0, 1, 2, 4}.
        ImageContentError: bad spacing.
        BratsViewerError: an unknown rule, or (panoptica-gli) panoptica is not installed.
    """
    if rule not in LESION_RULES:
        raise BratsViewerError(f"expected a lesion rule among {LESION_RULES}, got {rule!r}")
    _check_labels(pred_labels, gt_labels)
    spacing = _check_spacing(spacing_mm)
    if rule == "brats2023":
        return {name: _brats2023_region(region_mask(pred_labels, name), region_mask(gt_labels, name), spacing)
                for name in REGION_ORDER}
    pred = np.ascontiguousarray(pred_labels, dtype=np.uint8)  # labels checked: 0/1/2/4 survive the cast
    gt = np.ascontiguousarray(gt_labels, dtype=np.uint8)
    results = _evaluator().evaluate(pred, gt, voxelspacing=spacing, verbose=False)
    return {name: _score(results[name.lower()]) for name in REGION_ORDER}

# ------------------------------------------------------------------------------------------------ brats2023 ---

_CODE_KERNEL = np.array([[[128, 64], [32, 16]], [[8, 4], [2, 1]]])  # a 2 x 2 x 2 neighbourhood -> code 0..255


@functools.lru_cache(maxsize=1)
def _unit_surfel_vectors() -> tuple[np.ndarray, ...]:
    """Per neighbourhood code (0..255), the area vectors (k, 3) of its marching-cubes triangles on a 1 mm grid.

    The DeepMind surface-distance code that the BraTS 2023 script runs weights each surface element by the area of
    the marching-cubes triangles of its 2 x 2 x 2 neighbourhood, from a 256-entry table of triangle area vectors.
    The same areas come from scikit-image's classic (Lorensen) marching cubes on the neighbourhood, taking for a
    code with more than 4 corners inside the triangles of its complement (the table is complement-symmetric):
    equal to that table for every code at every spacing tried, to rounding (checked against it outside this
    project; it is not copied here). Vertices are edge midpoints, so the vectors are exact multiples of 1/8.
    """
    from skimage.measure import marching_cubes

    out: list[np.ndarray] = []
    for code in range(256):
        inside = code if bin(code).count("1") <= 4 else 255 - code
        block = ((inside & _CODE_KERNEL) != 0).astype(np.float64)
        if not block.any():
            out.append(np.zeros((0, 3)))
            continue
        verts, faces, _, _ = marching_cubes(block, 0.5, method="lorensen")
        tri = verts[faces].astype(np.float64)  # float32 there; the halves and quarters are exact either way
        out.append(np.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0]) / 2.0)
    return tuple(out)


@functools.lru_cache(maxsize=32)
def _surfel_areas_mm2(spacing: tuple[float, float, float]) -> np.ndarray:
    """Area in mm^2 of the surface element of each neighbourhood code (256,), as the DeepMind code scales them."""
    sx, sy, sz = spacing
    table = np.zeros(256)
    for code, vectors in enumerate(_unit_surfel_vectors()):
        total = 0.0
        for v in vectors:  # one vector at a time, as there (the same roundings)
            total += float(np.linalg.norm(np.array([v[0] * sy * sz, v[1] * sx * sz, v[2] * sx * sy],
                                                   dtype=np.float64)))
        table[code] = total
    table.flags.writeable = False
    return table


def _directed_percentile_mm(distances: np.ndarray, areas: np.ndarray, percent: float) -> float:
    """The area-weighted ``percent`` percentile of one directed set of surface distances (inf when empty)."""
    if distances.size == 0:
        return math.inf
    order = np.lexsort((areas, distances))  # sorted by distance, then area, as sorted(zip(d, a)) there
    d, a = distances[order], areas[order]
    idx = int(np.searchsorted(np.cumsum(a) / np.sum(a), percent / 100.0))
    return float(d[min(idx, d.size - 1)])


def surfel_hd95_mm(gt: np.ndarray, pred: np.ndarray, spacing_mm: Sequence[float]) -> float:
    """HD95 as the BraTS 2023 lesion-wise script computes it (DeepMind surface distances, area-weighted).

    Surface elements sit on the corners of the voxel grid: every 2 x 2 x 2 neighbourhood neither empty nor full;
    each direction's distances (Euclidean, in mm, to the nearest element of the other surface) are ranked, and
    the 95th percentile is the first distance whose cumulative share of surface area reaches 0.95; HD95 is the
    larger of the two directions. An empty mask: inf (both empty too).

    Args:
        gt, pred: boolean masks, shape (X, Y, Z), same grid.
        spacing_mm: voxel size along X, Y, Z in mm.

    Returns:
        HD95 in mm, or inf.
    """
    from scipy import ndimage

    spacing = _check_spacing(spacing_mm)
    both = gt | pred
    if not both.any():
        return math.inf
    box = bounding_box(both)
    shape = tuple(s.stop - s.start + 1 for s in box)  # one background voxel more at the far side of each axis
    dist: list[np.ndarray] = []
    borders: list[np.ndarray] = []
    codes: list[np.ndarray] = []
    for mask in (gt, pred):
        crop = np.zeros(shape, np.uint8)
        crop[:-1, :-1, :-1] = mask[box]
        code = ndimage.correlate(crop, _CODE_KERNEL, mode="constant", cval=0)
        border = (code != 0) & (code != 255)
        dist.append(ndimage.distance_transform_edt(~border, sampling=spacing) if border.any()
                    else np.full(shape, np.inf))
        borders.append(border)
        codes.append(code)
    areas = _surfel_areas_mm2(spacing)
    gt_to_pred = _directed_percentile_mm(dist[1][borders[0]], areas[codes[0][borders[0]]], 95.0)
    pred_to_gt = _directed_percentile_mm(dist[0][borders[1]], areas[codes[1][borders[1]]], 95.0)
    return max(gt_to_pred, pred_to_gt)


def _brats2023_region(pred: np.ndarray, gt: np.ndarray, spacing: tuple[float, float, float]) -> LesionScore:
    """The BraTS 2023 GLI lesion-wise figures of one region (boolean masks, same grid; module notes)."""
    from scipy import ndimage

    struct = ndimage.generate_binary_structure(3, 2)  # 18-connected, 3 iterations: as the script
    n_gt_vox, n_pred_vox = int(np.count_nonzero(gt)), int(np.count_nonzero(pred))
    if n_gt_vox + n_pred_vox == 0:  # no lesion on either side: 0/0 in the script, scored 1 and 0
        return LesionScore(dice=1.0, hd95_mm=0.0, matched_dice=math.nan, matched_hd95_mm=math.nan, n_ref=0,
                           n_pred=0, tp=0, fp=0, fn=0, global_dice=1.0)
    pad = BRATS2023_DILATION + 1
    box = bounding_box(gt | pred, pad=pad)  # everything below happens inside: dilations reach 3 voxels
    global_dice = 2.0 * np.count_nonzero(gt & pred) / (n_gt_vox + n_pred_vox)
    gt_c, pred_c = gt[box], pred[box]
    pred_cc, n_pred = label_components(pred_c)
    # reference lesions: components of the dilated reference, each keeping only its reference voxels
    merged = np.where(gt_c, label_components(
        ndimage.binary_dilation(gt_c, structure=struct, iterations=BRATS2023_DILATION))[0], 0)
    gt_boxes = ndimage.find_objects(merged)
    pred_boxes = ndimage.find_objects(pred_cc) if n_pred else []
    hit_pred: set[int] = set()
    kept: list[tuple[float, float, bool]] = []  # (Dice, HD95 mm, matched) of the lesions over the threshold
    for k, lesion_box in enumerate(gt_boxes, start=1):
        if lesion_box is None:
            continue
        near = tuple(slice(max(s.start - BRATS2023_DILATION, 0), min(s.stop + BRATS2023_DILATION, n))
                     for s, n in zip(lesion_box, merged.shape, strict=True))
        lesion = merged[near] == k
        reach = ndimage.binary_dilation(lesion, structure=struct, iterations=BRATS2023_DILATION)
        hits = np.unique(pred_cc[near][reach])
        hits = hits[hits != 0]
        hit_pred.update(int(h) for h in hits)
        n_lesion = int(np.count_nonzero(lesion))
        if not n_lesion * spacing[0] * spacing[1] * spacing[2] > BRATS2023_MIN_LESION_MM3:  # n sx sy sz
            continue  # at most 50 mm^3: left out (its predicted lesions are no false positives either)
        # the lesion against the union of the predicted lesions within its reach, in a box holding them all
        sub = _union_box([lesion_box, *(pred_boxes[h - 1] for h in hits)])
        g = merged[sub] == k
        p = np.isin(pred_cc[sub], hits)
        dice = float(2.0 * np.count_nonzero(g & p) / (np.count_nonzero(g) + np.count_nonzero(p)))
        hd = surfel_hd95_mm(g, p, spacing)
        kept.append((float(dice), LESION_MISS_HD95_MM if hd == math.inf else hd, hits.size > 0))
    fp = n_pred - len(hit_pred)
    tp = sum(m for _, _, m in kept)
    fn = len(kept) - tp
    n = len(kept) + fp
    if n == 0:
        dice, hd95 = 1.0, 0.0
    else:
        dice = float(np.sum(np.array([d for d, _, _ in kept], dtype=np.float64))) / n
        hd95 = (float(np.sum(np.array([h for _, h, _ in kept], dtype=np.float64))) + fp * LESION_MISS_HD95_MM) / n
    matched = [(d, h) for d, h, m in kept if m]
    if matched:
        matched_dice = float(np.mean([d for d, _ in matched]))
        matched_hd95 = float(np.mean([h for _, h in matched]))
    else:
        matched_dice, matched_hd95 = (0.0, math.inf) if n else (math.nan, math.nan)
    return LesionScore(
        dice=dice, hd95_mm=hd95, matched_dice=matched_dice, matched_hd95_mm=matched_hd95, n_ref=len(kept),
        n_pred=n_pred, tp=tp, fp=fp, fn=fn, global_dice=float(global_dice),
        lesion_dice=tuple(d for d, _ in matched), lesion_hd95_mm=tuple(h for _, h in matched),
    )


def _union_box(boxes: Sequence[tuple[slice, ...]]) -> tuple[slice, ...]:
    """The smallest box holding every box of ``boxes`` (one slice per axis)."""
    return tuple(slice(min(b[a].start for b in boxes), max(b[a].stop for b in boxes)) for a in range(len(boxes[0])))


# --------------------------------------------------------------------------------------------- lesion counts ---

def count_lesions(labels: np.ndarray, spacing_mm: Sequence[float], min_ml: float = 0.0, *,
                  voxel_volume_ml: float | None = None) -> dict[str, int]:
    """Number of lesions of each region: 26-connected components of its mask of at least ``min_ml`` mL.

    Args:
        labels: label array 0/1/2/4, shape (X, Y, Z).
        spacing_mm: voxel size along X, Y, Z in mm.
        min_ml: smallest lesion counted, in mL (1 mL = 1000 mm^3); 0 counts every component, however small,
            as the RANO-style measurement lists every enhancing component.
        voxel_volume_ml: one voxel's volume in mL (|det| of the affine); None: the product of ``spacing_mm``.

    Returns:
        "WT", "TC", "ET" -> number of lesions.

    Raises:
        CaseError: not 3-D or labels outside {0, 1, 2, 4}.
        ImageContentError: bad spacing or a negative or non-finite ``min_ml``.
    """
    arr = np.asarray(labels)
    if arr.ndim != 3:
        raise CaseError(f"expected labels of shape (X, Y, Z), got shape {arr.shape}")
    _label_counts(arr, "segmentation")
    spacing = _check_spacing(spacing_mm)
    if not (math.isfinite(min_ml) and min_ml >= 0):
        raise ImageContentError(f"expected a minimum lesion volume >= 0 mL, got {min_ml!r}")
    min_voxels = min_ml / (voxel_volume_ml_from(spacing) if voxel_volume_ml is None else float(voxel_volume_ml))
    tumour = arr[bounding_box(arr > 0)]  # every region lies inside the whole tumour's box: same components
    out: dict[str, int] = {}
    for name in REGION_ORDER:
        comps, n = label_components(region_mask(tumour, name))
        if n and min_ml > 0:
            sizes = np.bincount(comps.ravel(), minlength=n + 1)[1:]
            n = int(np.count_nonzero(sizes >= min_voxels - 1e-9))
        out[name] = int(n)
    return out
