"""BraTS lesion-wise metrics (the figures BraTS has ranked by since 2023) through panoptica, and lesion counts.

Label arrays are 3-D, axes (X, Y, Z), one voxel grid, internal labels 0/1/2/4 (``core.config.VALID_LABELS``);
spacing is in mm. A lesion is a 26-connected component of a region mask: WT = labels 1+2+4, TC = 1+4, ET = 4.

``lesionwise_scores`` runs panoptica (Apache-2.0) configured as the official evaluator ``brats-evaluation``
0.0.10 configures it for glioma (``configs/config_gli.yaml``; AGPL-3.0, read and never imported here):

* semantic input, one merged label group per region (its wt/tc/et groups; its label 3 is ET and its label 4 is
  the BraTS 2024 resection cavity, kept out of WT and TC, so files with ET = 4 must be mapped to 3 before it);
* instances: connected components of each region mask (``ConnectedComponentsInstanceApproximator``, cc3d in
  3-D, 26-connected); no dilation of the reference, no merging of nearby lesions, no minimum lesion size (the
  BraTS 2023 scripts dilated the reference by 3 voxels and dropped glioma lesions under 50 voxels; the
  panoptica-based evaluator does neither);
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

panoptica is imported when ``lesionwise_scores`` is first called (about 1.5 s); ``count_lesions`` needs only cc3d.
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
from core.errors import BratsViewerError, CaseError, ImageContentError

LESION_MISS_HD95_MM: float = 374.0  # BraTS 2023: HD95 of a missed or spurious lesion
MATCH_THRESHOLD_DICE: float = 1e-6  # brats-evaluation config_gli.yaml: matching_threshold 0.000001 on DSC
PANOPTICA_INSTALL = "pip install --no-deps panoptica==2.1.7 (see requirements-nodeps.txt)"


@dataclass(frozen=True)
class LesionScore:
    """Lesion-wise scores of one region (see the module notes for the rules).

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


def lesionwise_scores(pred_labels: np.ndarray, gt_labels: np.ndarray,
                      spacing_mm: Sequence[float]) -> dict[str, LesionScore]:
    """BraTS lesion-wise Dice and HD95 of WT, TC and ET, with lesion counts and the global Dice (module notes).

    Args:
        pred_labels, gt_labels: label arrays 0/1/2/4, shape (X, Y, Z), same grid.
        spacing_mm: voxel size along X, Y, Z in mm.

    Returns:
        "WT", "TC", "ET" -> LesionScore.

    Raises:
        CaseError: shapes differ, not 3-D, or labels outside {0, 1, 2, 4}.
        ImageContentError: bad spacing.
        BratsViewerError: panoptica is not installed.
    """
    _check_labels(pred_labels, gt_labels)
    spacing = _check_spacing(spacing_mm)
    pred = np.ascontiguousarray(pred_labels, dtype=np.uint8)  # labels checked: 0/1/2/4 survive the cast
    gt = np.ascontiguousarray(gt_labels, dtype=np.uint8)
    results = _evaluator().evaluate(pred, gt, voxelspacing=spacing, verbose=False)
    return {name: _score(results[name.lower()]) for name in REGION_ORDER}


# --------------------------------------------------------------------------------------------- lesion counts ---

def count_lesions(labels: np.ndarray, spacing_mm: Sequence[float], min_ml: float = 0.0) -> dict[str, int]:
    """Number of lesions of each region: 26-connected components of its mask of at least ``min_ml`` mL.

    Args:
        labels: label array 0/1/2/4, shape (X, Y, Z).
        spacing_mm: voxel size along X, Y, Z in mm.
        min_ml: smallest lesion counted, in mL (1 mL = 1000 mm^3); 0 counts every component, however small,
            as the RANO-style measurement lists every enhancing component.

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
    min_voxels = min_ml * 1000.0 / float(np.prod(spacing))
    tumour = arr[bounding_box(arr > 0)]  # every region lies inside the whole tumour's box: same components
    out: dict[str, int] = {}
    for name in REGION_ORDER:
        comps, n = label_components(region_mask(tumour, name))
        if n and min_ml > 0:
            sizes = np.bincount(comps.ravel(), minlength=n + 1)[1:]
            n = int(np.count_nonzero(sizes >= min_voxels - 1e-9))
        out[name] = int(n)
    return out
