"""The real BraTS cases in ``../shared/data`` load through the same code as the app (skipped when absent)."""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from conftest import SKIP_SHARED

from core.config import VALID_LABELS, shared_data_dir
from core.data.cases import CaseRef, discover_cases, load_case
from core.data.io import load_volume

pytestmark = pytest.mark.shared

_ROOT = shared_data_dir()
_ALL: list[CaseRef] = discover_cases(_ROOT / "brats") if _ROOT and (_ROOT / "brats").is_dir() else []
_REFS = [r for r in _ALL if "partial" not in r.folder.parts]
_PARTIAL = [r for r in _ALL if "partial" in r.folder.parts]
_PARTIAL_PARAMS = [pytest.param(r, id=r.case_id) for r in _PARTIAL] or [
    pytest.param(None, id="no-shared-data", marks=pytest.mark.skip(reason=SKIP_SHARED))]
_CASE_PARAMS = [pytest.param(r, id=r.case_id) for r in _REFS] or [
    pytest.param(None, id="no-shared-data", marks=pytest.mark.skip(reason=SKIP_SHARED))]


def test_shared_data_present(shared_data: Path) -> None:
    """As the data README lists: 7 complete labelled cases (one with BraTS 2018 naming), 5 partial (FLAIR + T1c,
    BraTS 2013 layout), 3 unlabelled validation cases (one BraTS 2023), 1 TCIA example with a pseudo-label."""
    refs = discover_cases(shared_data / "brats")
    ids = {r.case_id for r in refs}
    assert {"BraTS2021_00000", "Brats18_2013_21_1", "BraTS19_TCIA10_311_1", "BraTS-GLI-00001-000",
            "TCIA-example", "brats_2013_pat0001_1"} <= ids
    assert len(ids) == len(refs) == 16
    complete = [r for r in refs if r.has_seg and r.modalities == ("flair", "t1", "t1ce", "t2")]
    assert len(complete) == 8  # 7 expert-labelled + TCIA's pseudo-label
    partial = [r for r in refs if r.layout == "brats2013"]
    assert len(partial) == 5 and all(r.modalities == ("flair", "t1ce") and r.has_seg for r in partial)
    assert sum(not r.has_seg for r in refs) == 3


def test_raw_study_is_not_mistaken_for_cases(shared_data: Path) -> None:
    """The raw converter names (``..._t1.nii.gz``, ``..._t2.nii.gz``) hold one modality each: no case."""
    assert discover_cases(shared_data / "raw") == []


@pytest.mark.parametrize("ref", _PARTIAL_PARAMS)
def test_partial_case_loads(shared_data: Path, ref: CaseRef) -> None:
    """BraTS 2013 labels (3 = non-enhancing core) become NCR/NET; background outside the brain mask is 0."""
    case = load_case(ref)
    assert case.modalities == ("flair", "t1ce") and case.label_convention == "2013"
    stored = np.asarray(nib.load(ref.files["seg"]).dataobj)
    labels = np.asarray(case.seg.data)
    assert set(np.unique(labels).tolist()) <= VALID_LABELS
    np.testing.assert_array_equal(labels == 1, np.isin(stored, (1, 3))[::-1, ::-1, :])
    np.testing.assert_array_equal(labels == 4, (stored == 4)[::-1, ::-1, :])
    brain = np.asarray(nib.load(ref.files["mask"]).dataobj)[::-1, ::-1, :] > 0.5
    flair = np.asarray(case.images["flair"].data)
    assert not np.any(flair[~brain]) and np.count_nonzero(flair[brain]) > 0.99 * brain.sum()


@pytest.mark.parametrize("ref", _CASE_PARAMS)
def test_case_loads(shared_data: Path, ref: CaseRef) -> None:
    case = load_case(ref, required=("flair", "t1", "t1ce", "t2"))
    assert case.case_id == ref.case_id
    for key, vol in case.images.items():
        assert vol.shape == (240, 240, 155), key
        assert vol.spacing_mm == pytest.approx((1.0, 1.0, 1.0), abs=1e-4), key
        assert vol.original_axcodes == ("L", "P", "S"), key
        assert vol.axcodes == ("R", "A", "S"), key
        assert vol.stored_dtype == "int16", key
        assert not vol.is_oblique
    assert case.has_seg == ("validation" not in ref.folder.parts)
    if case.seg is not None:
        labels = np.asarray(case.seg.data)
        present = set(np.unique(labels).tolist())
        assert present <= VALID_LABELS
        assert present - {0}, "a training label map holds some tumour"
        # Volume in mL = voxel count x voxel volume from the header (1 mm^3 = 0.001 mL here).
        header = nib.load(ref.files["seg"]).header
        voxel_ml = float(np.prod(header.get_zooms()[:3])) / 1000.0
        assert case.seg.voxel_volume_ml == pytest.approx(voxel_ml, rel=1e-6)
        n_wt = int(np.count_nonzero(labels))
        assert n_wt * case.seg.voxel_volume_ml == pytest.approx(n_wt * 0.001, rel=1e-6)
        # The RAS grid holds the same labels as the file, mirrored into place.
        stored = np.asarray(nib.load(ref.files["seg"]).dataobj)
        np.testing.assert_array_equal(case.seg.to_original(labels), stored)
        np.testing.assert_array_equal(labels, stored[::-1, ::-1, :])


def test_atlas_loads(shared_data: Path) -> None:
    vol = load_volume(shared_data / "atlas" / "t1_skullstripped_brats_space.nii.gz")
    assert vol.shape == (240, 240, 155)
    assert vol.axcodes == ("R", "A", "S")
