"""Tests of core/views/viewer.py: the shared cursor, per-case display statistics and per-file upload checks."""

from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np
import pytest
from conftest import SHAPE, make_case_dir, write_nifti

from core.data.cases import guess_modality, load_case_folder
from core.errors import BratsViewerError
from core.views import viewer

PNG_BYTES = b"\x89PNG\r\n\x1a\n" + b"\x00" * 200


def test_clamp_cursor() -> None:
    assert viewer.clamp_cursor({"x": -3, "y": 4, "z": 99}, (5, 6, 7)) == {"x": 0, "y": 4, "z": 6}
    assert viewer.clamp_cursor(None, (5, 6, 7)) is None
    assert viewer.clamp_cursor({"x": 1}, (5, 6, 7)) is None
    assert viewer.clamp_cursor({"x": "a", "y": 0, "z": 0}, (5, 6, 7)) is None


def test_move_cursor() -> None:
    cur = {"x": 1, "y": 2, "z": 3}
    assert viewer.move_cursor(cur, "z", 5, (5, 6, 7)) == {"x": 1, "y": 2, "z": 5}
    assert viewer.move_cursor(cur, "x", 50, (5, 6, 7)) == {"x": 4, "y": 2, "z": 3}
    assert cur == {"x": 1, "y": 2, "z": 3}  # not modified in place
    with pytest.raises(BratsViewerError, match="axis"):
        viewer.move_cursor(cur, "w", 0, (5, 6, 7))


def test_default_cursor_prefers_tumour_then_brain_centre() -> None:
    image = np.zeros((5, 6, 7))
    image[1:4, 1:4, 1:4] = 1.0
    labels = np.zeros((5, 6, 7), dtype=np.uint8)
    labels[4, 5, 6] = 1
    assert viewer.default_cursor(image, labels) == {"x": 4, "y": 5, "z": 6}
    assert viewer.default_cursor(image, np.zeros_like(labels)) == {"x": 2, "y": 2, "z": 2}
    assert viewer.default_cursor(image) == {"x": 2, "y": 2, "z": 2}


def test_display_stats_of_a_case(tmp_path: Path) -> None:
    case = load_case_folder(make_case_dir(tmp_path))
    stats = viewer.display_stats(case)
    assert set(stats.percentiles) == {"flair", "t1", "t1ce", "t2"}
    assert stats.tumour_cursor is not None and set(stats.tumour_cursor) == {"x", "y", "z"}
    lo, hi = stats.value_range["flair"]
    assert 0 <= lo < hi < 1000
    assert all(0 <= stats.centre[n] < s for n, s in zip("xyz", case.shape, strict=True))


# ------------------------------------------------------------------------------------------------- uploads

def case_files(tmp_path: Path) -> dict[str, Path]:
    folder = make_case_dir(tmp_path, case_id="BraTS2021_00042")
    return {p.name: p for p in sorted(folder.iterdir())}


def test_check_upload_good_and_bad_files(tmp_path: Path) -> None:
    files = case_files(tmp_path)
    good = viewer.check_upload("BraTS2021_00042_t1ce.nii.gz", files["BraTS2021_00042_t1ce.nii.gz"].read_bytes())
    assert good.ok and good.guess == "t1ce" and good.shape == SHAPE
    assert "voxels" in good.message
    png = viewer.check_upload("scan_flair.nii", PNG_BYTES)
    assert not png.ok and png.guess == "flair"
    assert png.message.startswith("scan_flair.nii:") and "PNG" in png.message
    blob = files["BraTS2021_00042_t2.nii.gz"].read_bytes()
    truncated = viewer.check_upload("cut_t2.nii.gz", blob[: len(blob) // 2])
    assert not truncated.ok and "truncated" in truncated.message
    assert not viewer.check_upload("text.nii.gz", gzip.compress(b"hello" * 50)).ok


def test_build_upload_case_from_good_files(tmp_path: Path) -> None:
    files = case_files(tmp_path)
    items = [(name, p.read_bytes(), guess_modality(name)) for name, p in files.items()]
    result = viewer.build_upload_case(items)
    assert result.error is None and result.file_errors == {}
    assert result.case is not None
    assert result.case.modalities == ("flair", "t1", "t1ce", "t2") and result.case.has_seg
    assert result.case.case_id == "BraTS2021_00042"
    assert result.case.source == "upload"


def test_build_upload_case_reports_errors_per_file(tmp_path: Path) -> None:
    files = case_files(tmp_path)
    flair = files["BraTS2021_00042_flair.nii.gz"].read_bytes()
    t1 = files["BraTS2021_00042_t1.nii.gz"].read_bytes()
    items = [
        ("a_flair.nii.gz", flair, "flair"),
        ("photo.nii", PNG_BYTES, "t1ce"),  # unreadable
        ("b_flair.nii.gz", flair, "flair"),  # flair chosen twice
        ("mystery.nii.gz", t1, None),  # no modality chosen
        ("half.nii.gz", flair[: len(flair) // 3], "t2"),  # truncated gzip
    ]
    result = viewer.build_upload_case(items)
    assert result.case is None
    assert set(result.file_errors) == {1, 2, 3, 4}
    assert "PNG" in result.file_errors[1] and result.file_errors[1].startswith("photo.nii")
    assert "second FLAIR" in result.file_errors[2] and "a_flair.nii.gz" in result.file_errors[2]
    assert "none chosen" in result.file_errors[3]
    assert "truncated" in result.file_errors[4]
    assert "4 of 5" in (result.error or "")


def test_build_upload_case_reports_mismatched_grids(tmp_path: Path) -> None:
    a = write_nifti(tmp_path / "a_flair.nii.gz", np.ones(SHAPE, dtype=np.int16))
    b = write_nifti(tmp_path / "b_t1.nii.gz", np.ones((4, 4, 4), dtype=np.int16))
    result = viewer.build_upload_case([("a_flair.nii.gz", a.read_bytes(), "flair"),
                                       ("b_t1.nii.gz", b.read_bytes(), "t1")])
    assert result.case is None and result.file_errors == {}
    assert "shape" in (result.error or "")


def test_build_upload_case_needs_an_image(tmp_path: Path) -> None:
    seg = write_nifti(tmp_path / "x_seg.nii.gz", np.zeros(SHAPE, dtype=np.uint8))
    only_seg = viewer.build_upload_case([("x_seg.nii.gz", seg.read_bytes(), "seg")])
    assert only_seg.case is None and "besides the segmentation" in (only_seg.error or "")
    assert viewer.build_upload_case([]).error is not None


def test_upload_file_errors_needs_matching_lengths() -> None:
    with pytest.raises(BratsViewerError, match="one check per upload"):
        viewer.upload_file_errors([("a", "flair")], [])


# --------------------------------------------------------------------- the browser viewer's own view ---

def test_parse_client_view_keeps_only_what_is_valid() -> None:
    """The browser is not trusted: unknown modalities, planes, overlays, labels and odd windows are left out."""
    view = {"modality": "t1ce", "plane": "coronal", "radiological": False, "opacity": 0.55, "outline": True,
            "show": ["Ground truth"], "hidden": ["2", "4", "2"],
            "windows": {"t1ce": [10, 200.456], "flair": [5, 5], "evil": [0, 1], "t2": ["a", 3]}}
    out = viewer.parse_client_view(view, ["flair", "t1ce", "t2"], ["Ground truth", "Prediction"])
    assert out == {"modality": "t1ce", "plane": "coronal", "radiological": False, "opacity": 0.55, "outline": True,
                   "show": ["Ground truth"], "hidden": ["2", "4"], "windows": {"t1ce": [10.0, 200.46]}}
    bad = {"modality": "../x", "plane": "oblique", "radiological": "yes", "opacity": 3, "outline": 1,
           "show": ["Someone's"], "hidden": ["3"], "windows": []}
    assert viewer.parse_client_view(bad, ["flair"], ["Ground truth"]) == {}
    assert viewer.parse_client_view("not a dict", ["flair"], []) == {}
    assert viewer.parse_client_view({"modality": "all"}, ["flair"], []) == {}  # no 2x2 of one image
    assert viewer.parse_client_view({"modality": "all"}, ["flair", "t2"], []) == {"modality": "all"}


def test_client_settings_keep_the_browsers_choices_until_the_sidebar_changes() -> None:
    sidebar = {"modality": "flair", "radiological": True, "outline": False}
    browser = {"modality": "t1ce", "outline": True, "windows": {"t1ce": [1.0, 2.0]}}
    assert viewer.client_settings(sidebar, None, None) == sidebar
    kept = viewer.client_settings(sidebar, browser, seed=sidebar)
    assert kept == {"modality": "t1ce", "radiological": True, "outline": True, "windows": {"t1ce": [1.0, 2.0]}}
    changed = viewer.client_settings({**sidebar, "modality": "t2"}, browser, seed=sidebar)
    assert changed["modality"] == "t2" and changed["outline"] is True  # the sidebar's new choice wins
