"""Tests of ``core.data.atlas_fit`` (brain-only detection, the acceptance checks and their one-line refusal) and of
the shipped atlas's midline constant against the atlas itself; synthetic volumes built here."""

from __future__ import annotations

import numpy as np
import pytest
from phantom_grid import AFFINE, SHAPE
from phantom_grid import ellipsoid as _ellipsoid

from core.data import atlas_fit
from core.data.atlas_fit import AtlasCheck, brain_only_measures, is_brain_only, refusal_line
from core.data.io import volume_from_array
from core.data.pose import midsagittal_plane
from core.data.registration import to_sitk


def test_head_and_brain_only_are_told_apart() -> None:
    """A head (skull and scalp: a 100 x 115 x 100 mm half-axes ellipsoid, 4.8 L) on a noisy background, the same head
    with its background zeroed, and its brain alone (70 x 85 x 60 mm, 1.5 L, zeros around): only the last is
    brain-only."""
    gen = np.random.default_rng(18)
    head = _ellipsoid((100.0, 115.0, 100.0))
    brain = _ellipsoid((70.0, 85.0, 60.0))
    image = np.where(brain, 400.0, np.where(head, 900.0, 0.0))
    noisy = (image + gen.integers(1, 20, SHAPE)).astype(np.int16)
    zeroed = image.astype(np.int16)
    brain_only = np.where(brain, image, 0.0).astype(np.int16)
    for arr, expected in ((noisy, False), (zeroed, False), (brain_only, True)):
        measures = brain_only_measures(volume_from_array(arr, AFFINE))
        assert is_brain_only(measures) is expected, measures
    m = brain_only_measures(volume_from_array(brain_only, AFFINE))
    assert m["nonzero_ml"] == pytest.approx(4 / 3 * np.pi * 70 * 85 * 60 / 1000, rel=0.05)
    assert m["zero_fraction"] == pytest.approx(1 - np.count_nonzero(brain) / brain.size, abs=1e-4)


def test_a_small_blob_is_not_a_brain() -> None:
    """Zeros around a 30 mm ball (110 mL): brain-extracted perhaps, but no brain to register."""
    ball = _ellipsoid((30.0, 30.0, 30.0)).astype(np.int16) * 300
    assert not is_brain_only(brain_only_measures(volume_from_array(ball, AFFINE)))


def test_acceptance_passes_a_good_registration_and_refuses_each_bad_measure_in_one_line() -> None:
    good = AtlasCheck(atlas_ncc=0.41, midline_tilt_deg=0.5, midline_offset_mm=0.1, symmetry=0.33, mask_dice=0.97,
                      pose_margin=0.048, fine_pose_margin=0.009)
    assert good.failures() == [] and refusal_line(good, atlas_fit.PATH_HEAD) is None
    assert good.record()["accepted"] is True
    assert good.record()["thresholds"]["max_midline_tilt_deg"] == atlas_fit.MAX_MIDLINE_TILT_DEG
    bad = {
        "atlas_ncc": (0.01, "correlation with the atlas 0.010"),
        "midline_tilt_deg": (12.0, "midline tilted 12.0 deg"),
        "midline_offset_mm": (9.0, "midline 9.0 mm off"),
        "symmetry": (0.05, "left-right symmetry 0.05"),
        "mask_dice": (0.7, "brain mask Dice with the atlas's 0.700"),
        "pose_margin": (-0.03, "a pose 10 deg or 10 mm away fits the atlas better (margin -0.0300"),
        "fine_pose_margin": (-0.0076, "a pose 4 deg or 4 mm away fits the atlas better (margin -0.0076"),
    }
    for name, (value, phrase) in bad.items():
        check = AtlasCheck(**{**good.__dict__, name: value})
        line = refusal_line(check, atlas_fit.PATH_BRAIN_ONLY)
        assert line is not None and "\n" not in line, name
        assert line.startswith("registration of the T1CE to the atlas refused (brain-only input): ")
        assert phrase in line and len(check.failures()) == 1, (name, line)
        assert check.record()["accepted"] is False
    nan = AtlasCheck(**{**good.__dict__, "atlas_ncc": float("nan")})
    assert nan.failures(), "a measure that could not be taken refuses"
    two = AtlasCheck(**{**good.__dict__, "midline_tilt_deg": 20.0, "mask_dice": 0.5})
    assert "; " in refusal_line(two, atlas_fit.PATH_HEAD)
    # a brain-extracted study's own brain is held to a lower mask Dice than the atlas mask warped onto a head
    own = AtlasCheck(**{**good.__dict__, "mask_dice": 0.8, "path": atlas_fit.PATH_BRAIN_ONLY})
    assert own.failures() == [] and AtlasCheck(**{**own.__dict__, "path": atlas_fit.PATH_HEAD}).failures()


@pytest.mark.slow
def test_atlas_midline_constant_matches_the_shipped_atlas() -> None:
    """ATLAS_MIDLINE_NORMAL (the x plane through the brain's centre) is what midsagittal_plane finds on the atlas."""
    from core.data.brainmask import atlas_brain_mask
    from core.data.registration import centroid
    from core.data.study import load_atlas

    image = to_sitk(load_atlas())
    brain = atlas_brain_mask(image)
    plane = midsagittal_plane(image, brain)
    angle = np.rad2deg(np.arccos(min(1.0, abs(float(plane.normal @ np.array(atlas_fit.ATLAS_MIDLINE_NORMAL))))))
    assert angle < 1.0
    assert abs(float(plane.normal @ (np.array(centroid(image, brain)) - plane.point))) < 1.0
