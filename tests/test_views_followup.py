"""Tests of core.views.followup: square display pixels for anisotropic voxels and the linked pair of views."""

from __future__ import annotations

import numpy as np
import pytest
from followup_phantom import SHAPE, baseline_case, followup_case

from core.analysis.compare import Comparison, compare_studies
from core.errors import BratsViewerError
from core.views.followup import common_modalities, linked_pair, square_pixels


def test_square_pixels_repeats_rows_or_columns_by_the_voxel_aspect() -> None:
    rgb = np.arange(2 * 3 * 3, dtype=np.uint8).reshape(2, 3, 3)
    # axial: rows along Y, columns along X; Y voxels twice as long -> every row shown twice
    tall = square_pixels(rgb, "axial", (1.0, 2.0, 1.0))
    assert tall.shape == (4, 3, 3)
    np.testing.assert_array_equal(tall[::2], rgb)
    np.testing.assert_array_equal(tall[1::2], rgb)
    # X voxels twice as long -> every column shown twice
    wide = square_pixels(rgb, "axial", (2.0, 1.0, 1.0))
    assert wide.shape == (2, 6, 3)
    np.testing.assert_array_equal(wide[:, ::2], rgb)
    assert square_pixels(rgb, "axial", (1.0, 1.0, 3.0)) is rgb  # the axial plane does not show Z


@pytest.fixture(scope="module")
def comparison() -> Comparison:
    return compare_studies(baseline_case(), followup_case())


def test_linked_pair_cuts_both_studies_through_the_same_slice(comparison: Comparison) -> None:
    assert common_modalities(comparison) == ("t1ce", "flair")
    left, right = linked_pair(comparison, "axial", 26, "t1ce", windows=((0.0, 255.0), (0.0, 255.0)))
    assert left.shape == right.shape == (SHAPE[1], SHAPE[0], 3) and left.dtype == np.uint8
    bare_left, bare_right = linked_pair(comparison, "axial", 26, "t1ce", overlay=False,
                                        windows=((0.0, 255.0), (0.0, 255.0)))
    # the overlay colours exactly the whole tumour's cross-section of each study on the shared slice
    changed_base = np.any(left != bare_left, axis=-1).sum()
    changed_follow = np.any(right != bare_right, axis=-1).sum()
    assert changed_base == 144  # the 12 x 12 voxel cross-section of the baseline's whole tumour
    assert changed_follow == 64  # the registered follow-up: 8 x 8 voxels
    with pytest.raises(BratsViewerError):
        linked_pair(comparison, "axial", SHAPE[2], "t1ce")
