"""core/data/cases.py: BraTS discovery on every naming scheme, label conventions, case consistency, modality
guessing and uploads."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import numpy as np
import pytest
from conftest import EXAMPLE_IDS, LPS_AFFINE, SHAPE, make_case_dir, random_image, random_seg, write_nifti

from core.config import MODALITIES
from core.data.cases import (
    Case,
    assemble_case,
    case_from_uploads,
    check_labels,
    discover_cases,
    guess_modality,
    labels_for_disk,
    load_case,
    load_case_files,
    load_case_folder,
    normalise_labels,
    parse_brats_name,
    safe_case_ref,
    upload_case_id,
)
from core.data.io import load_volume, volume_from_array
from core.errors import CaseError, DataFolderError, ImageFormatError

# ------------------------------------------------------------------------------------------ names -----------


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("BraTS20_Training_001_flair.nii", ("BraTS20_Training_001", "flair")),
        ("BraTS20_Training_001_t1ce.nii", ("BraTS20_Training_001", "t1ce")),
        ("BraTS2021_00000_t1.nii.gz", ("BraTS2021_00000", "t1")),
        ("BraTS2021_00000_seg.nii.gz", ("BraTS2021_00000", "seg")),
        ("BraTS19_TCIA10_311_1_t2.nii.gz", ("BraTS19_TCIA10_311_1", "t2")),
        ("BraTS-GLI-00000-000-t2f.nii.gz", ("BraTS-GLI-00000-000", "flair")),
        ("BraTS-GLI-00000-000-t1n.nii.gz", ("BraTS-GLI-00000-000", "t1")),
        ("BraTS-GLI-00000-000-t1c.nii.gz", ("BraTS-GLI-00000-000", "t1ce")),
        ("BraTS-GLI-00000-000-t2w.nii.gz", ("BraTS-GLI-00000-000", "t2")),
        ("BraTS-GLI-00000-000-seg.nii.gz", ("BraTS-GLI-00000-000", "seg")),
        ("BraTS2021_00000_FLAIR.NII.GZ", ("BraTS2021_00000", "flair")),
        ("BraTS2021_00000_flair.nii.gz.bak", None),
        ("BraTS2021_00000_flair.png", None),
        ("readme.txt", None),
    ],
)
def test_parse_brats_name(name: str, expected: tuple[str, str] | None) -> None:
    assert parse_brats_name(name) == expected


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("BraTS2021_00000_flair.nii.gz", "flair"),
        ("BraTS-GLI-00000-000-t1c.nii.gz", "t1ce"),
        ("T1CE.nii.gz", "t1ce"),
        ("t1ce.nii", "t1ce"),
        ("brain_t1c.nii.gz", "t1ce"),
        ("t1_gd.nii.gz", "t1ce"),
        ("T1-post.nii", "t1ce"),
        ("FLAIR.NII.GZ", "flair"),
        ("T2-FLAIR.nii.gz", "flair"),
        ("sub-01_T1w.nii.gz", "t1"),
        ("patient_T1.nii", "t1"),
        ("T2.nii.gz", "t2"),
        ("scan_t2w.nii.gz", "t2"),
        ("mask.nii", "seg"),
        ("tumour_label.nii.gz", "seg"),
        ("brain_t1ce_mask.nii.gz", "seg"),
        ("seg.nii.gz", "seg"),
        ("C:\\Users\\me\\t2.nii", "t2"),
        ("../uploads/flair.nii.gz", "flair"),
        ("image.nii.gz", None),
        ("brain.nii", None),
    ],
)
def test_guess_modality(name: str, expected: str | None) -> None:
    assert guess_modality(name) == expected


# ------------------------------------------------------------------------------------------ discovery -------

@pytest.mark.parametrize("naming", ["2020", "2021", "2023"])
@pytest.mark.parametrize("gz", [True, False])
def test_discovery_and_loading_per_naming_scheme(tmp_path: Path, naming: str, gz: bool) -> None:
    make_case_dir(tmp_path, naming=naming, gz=gz)
    refs = discover_cases(tmp_path)
    assert [r.case_id for r in refs] == [EXAMPLE_IDS[naming]]
    ref = refs[0]
    assert ref.modalities == MODALITIES and ref.has_seg
    assert all(p.name.endswith(".nii.gz" if gz else ".nii") for p in ref.files.values())
    case = load_case(ref, required=MODALITIES)
    assert case.case_id == EXAMPLE_IDS[naming]
    assert case.modalities == MODALITIES
    assert case.shape == SHAPE  # LPS -> RAS flips axes, keeps the shape
    assert case.seg is not None and case.seg.data.dtype == np.uint8
    assert set(np.unique(case.seg.data)) == {0, 1, 2, 4}
    assert case.label_convention == ("2023" if naming == "2023" else "2021")
    assert ref.header_summary() == {"shape": "12x10x8", "voxel_mm": "1x1x1"}


def test_nested_training_and_validation_folders(tmp_path: Path) -> None:
    make_case_dir(tmp_path / "data" / "training", "BraTS2021_00001")
    make_case_dir(tmp_path / "data" / "training", "BraTS2021_00002")
    make_case_dir(tmp_path / "data" / "validation", "BraTS-GLI-00005-000", naming="2023", with_seg=False)
    make_case_dir(tmp_path / "data" / "validation" / "old", "BraTS20_Validation_001", naming="2020",
                  with_seg=False, gz=False)
    refs = discover_cases(tmp_path)
    assert [r.case_id for r in refs] == sorted(
        ["BraTS-GLI-00005-000", "BraTS20_Validation_001", "BraTS2021_00001", "BraTS2021_00002"])
    assert {r.case_id: r.has_seg for r in refs} == {"BraTS-GLI-00005-000": False, "BraTS20_Validation_001": False,
                                                    "BraTS2021_00001": True, "BraTS2021_00002": True}
    assert refs[-1].folder == tmp_path / "data" / "validation" / "old" / "BraTS20_Validation_001"
    assert refs[0].folder == tmp_path / "data" / "validation" / "BraTS-GLI-00005-000"


def test_files_without_a_modality_or_in_hidden_places_are_ignored(tmp_path: Path) -> None:
    folder = make_case_dir(tmp_path, "BraTS2021_00001")
    (folder / "notes.txt").write_text("x")
    (folder / "BraTS2021_00001_flair.json").write_text("{}")
    # macOS resource forks beside each image and hidden folders must not form cases of their own
    (folder / "._BraTS2021_00001_flair.nii.gz").write_bytes(b"\x00\x05\x16\x07")
    make_case_dir(tmp_path / ".cache", "BraTS2021_00009")
    # a seg alone is no case
    write_nifti(tmp_path / "lonely" / "BraTS2021_00007_seg.nii.gz", random_seg())
    refs = discover_cases(tmp_path)
    assert [r.case_id for r in refs] == ["BraTS2021_00001"]
    load_case(refs[0], required=MODALITIES)


def test_symlink_outside_root_is_ignored(tmp_path: Path) -> None:
    outside = make_case_dir(tmp_path / "outside", "BraTS2021_00099")
    root = tmp_path / "root"
    make_case_dir(root, "BraTS2021_00001")
    leak = root / "BraTS2021_00066"
    leak.mkdir()
    for p in outside.iterdir():
        (leak / p.name.replace("00099", "00066")).symlink_to(p)
    (root / "linked_dir").symlink_to(outside, target_is_directory=True)
    refs = discover_cases(root)
    assert [r.case_id for r in refs] == ["BraTS2021_00001"]


def test_symlink_inside_root_is_followed(tmp_path: Path) -> None:
    make_case_dir(tmp_path, "BraTS2021_00001")
    other = tmp_path / "mirror"
    other.mkdir()
    for p in (tmp_path / "BraTS2021_00001").iterdir():
        (other / p.name.replace("00001", "00002")).symlink_to(p)
    assert [r.case_id for r in discover_cases(tmp_path)] == ["BraTS2021_00001", "BraTS2021_00002"]


def test_discovery_of_a_non_folder_is_refused(tmp_path: Path) -> None:
    with pytest.raises(DataFolderError, match="not a folder"):
        discover_cases(tmp_path / "absent")
    (tmp_path / "file.nii").write_bytes(b"")
    with pytest.raises(DataFolderError, match="not a folder"):
        discover_cases(tmp_path / "file.nii")


def test_discovery_of_400_cases_reads_headers_only(tmp_path: Path) -> None:
    """Discovery finds every case; header_summary reads headers. (Timing lives in benchmarks/bench_load.py.)"""
    template = write_nifti(tmp_path / "t.nii.gz", random_image()).read_bytes()
    root = tmp_path / "many"
    for i in range(400):
        folder = root / f"BraTS2021_{i:05d}"
        folder.mkdir(parents=True)
        (folder / f"BraTS2021_{i:05d}_flair.nii.gz").write_bytes(template)
        for key in ("t1", "t1ce", "t2"):  # discovery reads no file: empty files are enough
            (folder / f"BraTS2021_{i:05d}_{key}.nii.gz").write_bytes(b"")
    refs = discover_cases(root)
    assert len(refs) == 400
    assert {r.case_id for r in refs} == {f"BraTS2021_{i:05d}" for i in range(400)}
    assert refs[123].header_summary() == {"shape": "12x10x8", "voxel_mm": "1x1x1"}


def test_header_summary_reports_a_bad_file_without_raising(tmp_path: Path) -> None:
    folder = tmp_path / "BraTS2021_00001"
    folder.mkdir()
    (folder / "BraTS2021_00001_flair.nii.gz").write_bytes(b"\x1f\x8bnot really gzip")
    (folder / "BraTS2021_00001_t1.nii.gz").write_bytes(b"\x1f\x8bnot really gzip either")
    summary = discover_cases(tmp_path)[0].header_summary()
    assert summary["shape"] == "?" and "gzip" in str(summary["error"])


def test_safe_case_ref_refuses_unknown_and_path_like_ids(case_dir: Path) -> None:
    root = case_dir.parent
    assert safe_case_ref(root, "BraTS2021_00000").folder == case_dir
    for bad in ("BraTS2021_99999", "../BraTS2021_00000", "/etc/passwd"):
        with pytest.raises(DataFolderError, match="unknown case id"):
            safe_case_ref(root, bad)


def test_load_case_folder_and_files(case_dir: Path) -> None:
    case = load_case_folder(case_dir, required=MODALITIES)
    assert case.case_id == "BraTS2021_00000" and case.has_seg
    files = sorted(case_dir.iterdir())
    from_files = load_case_files(files)
    assert from_files.case_id == "BraTS2021_00000"
    np.testing.assert_array_equal(from_files.images["t2"].data, case.images["t2"].data)
    empty = case_dir.parent / "empty"
    empty.mkdir()
    with pytest.raises(DataFolderError, match="found none"):
        load_case_folder(empty)
    make_case_dir(case_dir.parent / "two", "BraTS2021_00001", subfolder=False)
    make_case_dir(case_dir.parent / "two", "BraTS2021_00002", subfolder=False)
    with pytest.raises(DataFolderError, match="found 2"):
        load_case_folder(case_dir.parent / "two")


def test_load_case_names_the_bad_file(case_dir: Path) -> None:
    bad = case_dir / "BraTS2021_00000_t1.nii.gz"
    bad.write_bytes(bad.read_bytes()[:200])
    with pytest.raises(ImageFormatError) as excinfo:
        load_case(discover_cases(case_dir.parent)[0])
    assert str(excinfo.value).startswith("BraTS2021_00000_t1.nii.gz: ")
    assert str(excinfo.value).count("BraTS2021_00000_t1.nii.gz") == 1


# ------------------------------------------------------------------------------------------ labels ----------

def _seg_volume(labels: np.ndarray) -> object:
    return volume_from_array(labels, LPS_AFFINE, "seg.nii.gz")


def test_brats2023_labels_map_3_to_4_and_back(tmp_path: Path) -> None:
    folder = make_case_dir(tmp_path, naming="2023")
    stored = random_seg(et_label=3)
    case = load_case(discover_cases(tmp_path)[0])
    assert case.label_convention == "2023"
    internal = case.seg.data
    assert set(np.unique(internal)) == {0, 1, 2, 4}
    assert np.count_nonzero(internal == 4) == np.count_nonzero(stored == 3)
    on_disk = case.seg.to_original(labels_for_disk(internal, case.label_convention))
    np.testing.assert_array_equal(on_disk, stored)
    np.testing.assert_array_equal(labels_for_disk(internal, "2021"), internal)
    assert (folder / "BraTS-GLI-00000-000-seg.nii.gz").is_file()


def test_label_convention_without_et_follows_the_file_naming(tmp_path: Path) -> None:
    folder = make_case_dir(tmp_path, naming="2023", with_seg=False)
    labels = random_seg(et_label=2)  # only 0, 1, 2: the labels alone cannot tell the convention
    write_nifti(folder / "BraTS-GLI-00000-000-seg.nii.gz", labels)
    assert load_case(discover_cases(tmp_path)[0]).label_convention == "2023"
    seg, convention = normalise_labels(_seg_volume(labels))
    assert convention == "2021"


@pytest.mark.parametrize("bad", [5, 255, -1])
def test_invalid_label_values_are_refused(bad: int) -> None:
    labels = random_seg().astype(np.int16)
    labels[5, 5, 5] = bad
    with pytest.raises(CaseError) as excinfo:
        normalise_labels(_seg_volume(labels))
    assert str(bad) in str(excinfo.value) and "expected segmentation labels" in str(excinfo.value)


def test_fractional_labels_are_refused() -> None:
    labels = random_seg().astype(np.float32)
    labels[2, 2, 2] = 1.5
    with pytest.raises(CaseError, match="fractional"):
        normalise_labels(_seg_volume(labels))


def test_integral_float_labels_are_accepted() -> None:
    labels = random_seg()
    seg, convention = normalise_labels(_seg_volume(labels.astype(np.float32)))
    assert seg.data.dtype == np.uint8 and convention == "2021"
    np.testing.assert_array_equal(seg.to_original(seg.data), labels)


def test_both_3_and_4_are_refused() -> None:
    labels = random_seg()
    labels[6, 6, 6] = 3
    with pytest.raises(CaseError, match="both 3 and 4"):
        normalise_labels(_seg_volume(labels))


def test_check_labels() -> None:
    check_labels(np.array([0, 1, 2, 4]))
    with pytest.raises(CaseError, match=r"\[0, 3\]"):
        check_labels(np.array([0, 3]))


# ------------------------------------------------------------------------------------------ consistency -----

def _images(shape: tuple[int, int, int] = SHAPE, affine: np.ndarray = LPS_AFFINE) -> dict[str, object]:
    return {k: volume_from_array(random_image(shape, seed=i), affine, k) for i, k in enumerate(MODALITIES)}


def test_mismatched_modality_shapes_are_refused() -> None:
    images = _images()
    images["t2"] = volume_from_array(random_image((12, 10, 9)), LPS_AFFINE, "t2")
    with pytest.raises(CaseError) as excinfo:
        assemble_case("c", images)
    assert "T2" in str(excinfo.value) and "(12, 10, 9)" in str(excinfo.value) and "(12, 10, 8)" in str(excinfo.value)


def test_mismatched_affines_are_refused() -> None:
    images = _images()
    shifted = LPS_AFFINE.copy()
    shifted[0, 3] += 2.0
    images["t1ce"] = volume_from_array(random_image(), shifted, "t1ce")
    with pytest.raises(CaseError, match="T1CE.*affine"):
        assemble_case("c", images)


def test_seg_on_another_grid_is_refused() -> None:
    seg = volume_from_array(random_seg((12, 10, 7)), LPS_AFFINE, "seg")
    with pytest.raises(CaseError, match="segmentation"):
        assemble_case("c", _images(), seg)


def test_missing_required_and_unknown_modalities_are_refused() -> None:
    images = _images()
    del images["flair"]
    with pytest.raises(CaseError, match="missing.*FLAIR"):
        assemble_case("c", images, required=MODALITIES)
    with pytest.raises(CaseError, match="pd"):
        assemble_case("c", {**images, "pd": images["t1"]})
    with pytest.raises(CaseError, match="none"):
        assemble_case("c", {})


def test_case_reference_and_hashes() -> None:
    images = _images()
    case = assemble_case("c", {k: images[k] for k in ("t2", "t1ce")})
    assert isinstance(case, Case)
    assert case.reference is images["t1ce"]  # first in MODALITIES order
    assert case.modalities == ("t1ce", "t2")
    other = assemble_case("c", {k: images[k] for k in ("t2", "t1")})
    assert case.content_key != other.content_key
    assert set(case.input_hashes()) == {"t1ce", "t2"}


# ------------------------------------------------------------------------------------------ uploads ---------

def _upload_items(case_dir: Path, with_seg: bool = True) -> list[tuple[str, bytes, str]]:
    items = []
    for path in sorted(case_dir.iterdir()):
        key = guess_modality(path.name)
        if key == "seg" and not with_seg:
            continue
        items.append((path.name, path.read_bytes(), key))
    return items


def _temp_listing() -> set[str]:
    return set(os.listdir(tempfile.gettempdir()))


def test_case_from_uploads_matches_the_folder(case_dir: Path) -> None:
    before = _temp_listing()
    case = case_from_uploads(_upload_items(case_dir), required=MODALITIES)
    assert _temp_listing() - before == set()
    assert case.case_id == "BraTS2021_00000" and case.source == "upload"
    from_disk = load_case_folder(case_dir)
    for key in MODALITIES:
        np.testing.assert_array_equal(case.images[key].data, from_disk.images[key].data)
    np.testing.assert_array_equal(case.seg.data, from_disk.seg.data)


def test_upload_missing_required_modality_is_refused(case_dir: Path) -> None:
    items = [i for i in _upload_items(case_dir) if i[2] != "t1ce"]
    with pytest.raises(CaseError, match="missing.*T1CE"):
        case_from_uploads(items, required=MODALITIES)


def test_upload_duplicate_modality_is_refused(case_dir: Path) -> None:
    items = _upload_items(case_dir)
    flair = next(i for i in items if i[2] == "flair")
    with pytest.raises(CaseError) as excinfo:
        case_from_uploads([*items, ("copy_of_flair.nii.gz", flair[1], "flair")])
    assert "copy_of_flair.nii.gz" in str(excinfo.value) and "second 'flair'" in str(excinfo.value)


def test_upload_unknown_modality_key_is_refused(case_dir: Path) -> None:
    with pytest.raises(CaseError, match="'pd'"):
        case_from_uploads([("x.nii.gz", b"", "pd")])


def test_bad_upload_names_the_file_and_leaves_no_temp_files(case_dir: Path) -> None:
    items = _upload_items(case_dir)
    before = _temp_listing()
    with pytest.raises(ImageFormatError) as excinfo:
        case_from_uploads([*items[:2], ("my scan.nii.gz", items[2][1][:300], items[2][2])])
    assert str(excinfo.value).startswith("my scan.nii.gz: ")
    assert _temp_listing() - before == set()


@pytest.mark.parametrize(
    "name",
    [
        "../../etc/BraTS2021_00001_flair.nii.gz",
        "..\\..\\windows\\BraTS2021_00001_flair.nii.gz",
        "/abs/path/BraTS2021_00001_flair.nii.gz",
        "a/b/../../c/../flair.nii.gz",
        "..",
        "BraTS2021_00001\x00/evil_flair.nii.gz",
    ],
)
def test_upload_ids_never_contain_path_separators(tmp_path: Path, name: str) -> None:
    blob = write_nifti(tmp_path / "f.nii.gz", random_image()).read_bytes()
    case = case_from_uploads([(name, blob, "flair")])
    assert "/" not in case.case_id and "\\" not in case.case_id and "\x00" not in case.case_id
    assert case.case_id not in {"", ".", ".."}
    assert not case.case_id.startswith(".")
    if "BraTS2021_00001_flair" in name:
        assert case.case_id == "BraTS2021_00001"


def test_upload_case_id_falls_back_to_hash() -> None:
    assert upload_case_id("", "abcd1234") == "upload-abcd1234"
    assert upload_case_id("../..", "abcd1234") == "upload-abcd1234"
    assert upload_case_id("x" * 500, "h") == "x" * 64


def test_uploaded_volume_round_trips_through_disk(tmp_path: Path) -> None:
    stored = random_image()
    blob = write_nifti(tmp_path / "s.nii.gz", stored).read_bytes()
    case = case_from_uploads([("s_flair.nii.gz", blob, "flair")])
    vol = case.images["flair"]
    np.testing.assert_array_equal(vol.to_original(vol.data), load_volume(tmp_path / "s.nii.gz").to_original(vol.data))
    np.testing.assert_array_equal(vol.to_original(vol.data), stored)


def test_case_key_tells_apart_cases_sharing_an_id(tmp_path: Path) -> None:
    from core.data.cases import case_key

    make_case_dir(tmp_path / "a", case_id="BraTS2021_00001")
    make_case_dir(tmp_path / "b", case_id="BraTS2021_00001")
    make_case_dir(tmp_path, case_id="BraTS2021_00002", subfolder=False)
    refs = discover_cases(tmp_path)
    keys = [case_key(r, tmp_path) for r in refs]
    assert keys == ["a/BraTS2021_00001/BraTS2021_00001", "b/BraTS2021_00001/BraTS2021_00001", "BraTS2021_00002"]
    assert refs[1].folder == tmp_path / "b" / "BraTS2021_00001"


def test_load_case_without_labels_leaves_the_seg_file_unread(tmp_path: Path) -> None:
    """Segmenting needs no reference labels: labels=False neither loads nor validates the seg file."""
    folder = make_case_dir(tmp_path)
    seg_file = next(folder.glob("*_seg.nii.gz"))
    full = load_case_folder(folder)
    assert full.seg is not None and "seg" in full.input_hashes()
    seg_file.write_bytes(b"not a gzip stream")  # a broken label file
    with pytest.raises(ImageFormatError, match="seg"):
        load_case_folder(folder)
    case = load_case_folder(folder, labels=False)
    assert case.seg is None and "seg" not in case.input_hashes() and "seg" not in case.files
    assert case.modalities == full.modalities
    for key in case.modalities:
        np.testing.assert_array_equal(case.images[key].data, full.images[key].data)


def test_a_bad_file_among_a_case_names_that_file(tmp_path: Path) -> None:
    """Files load two at a time; the error still names the file that failed."""
    folder = make_case_dir(tmp_path)
    bad = next(folder.glob("*_t1ce.nii.gz"))
    bad.write_bytes(b"\x89PNG\r\n\x1a\n" + b"0" * 400)
    with pytest.raises(ImageFormatError, match=bad.name):
        load_case_folder(folder)
