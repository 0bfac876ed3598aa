"""core.data.dicom and ``python -m core convert``: DICOM series built in code with known geometry.

Every voxel of the factory's series holds a value that encodes its (column, row, slice) indices, so the check of
a converted image is exact and by hand: for each voxel of the image as ``core.data.io`` loads it (RAS), decode
which DICOM pixel it came from, compute that pixel's scanner position from ImagePositionPatient,
ImageOrientationPatient and PixelSpacing, and compare it with the affine's mapping of the voxel.
"""

from __future__ import annotations

import io
import json
import re
import zipfile
from pathlib import Path

import numpy as np
import pytest
from dicom_factory import (
    AXIAL,
    PHI_STRINGS,
    decode_value,
    expected_world_ras,
    oblique_iop,
    write_series,
)

from core.__main__ import main
from core.data import dicom
from core.data.io import Volume, load_volume
from core.errors import DicomError

TOL_MM = 1e-3  # positions are written with 6 decimals


def _max_error_mm(vol: Volume, iop, pixel_spacing, positions) -> float:
    """Largest distance (mm) between the affine's position of a voxel and the DICOM position of its pixel,
    over every voxel (corners included) of the loaded RAS volume."""
    data = np.asarray(vol.data)
    idx = np.argwhere(np.ones(data.shape, dtype=bool))
    world = (vol.affine @ np.c_[idx, np.ones(len(idx))].T).T[:, :3]
    worst = 0.0
    for (x, y, z), w in zip(idx, world, strict=True):
        i, j, k = decode_value(int(data[x, y, z]))
        expected = expected_world_ras(iop, pixel_spacing, positions[k], i, j)
        worst = max(worst, float(np.linalg.norm(w - expected)))
    return worst


def _convert_one(tmp_path: Path, **kwargs) -> tuple[Volume, list[np.ndarray], dicom.Conversion]:
    folder, _, positions = write_series(tmp_path / "dcm", **kwargs)
    conv = dicom.convert(folder, tmp_path / "out")
    (path,) = conv.files.values()
    return load_volume(path), positions, conv


# ---- geometry ---------------------------------------------------------------------------------------------------

def test_axial_series_affine_maps_every_voxel_to_its_dicom_position(tmp_path: Path) -> None:
    vol, positions, _ = _convert_one(tmp_path, pixel_spacing=(1.2, 0.9), slice_gap_mm=2.5)
    assert vol.original_shape == (8, 8, 6)
    assert _max_error_mm(vol, AXIAL, (1.2, 0.9), positions) < TOL_MM
    # Spacing from the positions (2.5 mm), not SliceThickness (99 in the factory's headers).
    assert sorted(vol.spacing_mm) == pytest.approx([0.9, 1.2, 2.5], abs=1e-5)
    assert "".join(vol.original_axcodes) == "LPS"  # DICOM axial: columns toward L, rows toward P
    corner = vol.original_affine @ np.array([7, 7, 5, 1.0])  # last column, last row, last slice
    last = expected_world_ras(AXIAL, (1.2, 0.9), positions[5], 7, 7)
    np.testing.assert_allclose(corner[:3], last, atol=TOL_MM)
    np.testing.assert_allclose(vol.original_affine @ np.array([0, 0, 0, 1.0]),
                               [*expected_world_ras(AXIAL, (1.2, 0.9), positions[0], 0, 0), 1], atol=TOL_MM)


def test_oblique_series_affine(tmp_path: Path) -> None:
    iop = oblique_iop(20, 15)
    vol, positions, conv = _convert_one(tmp_path, iop=iop, pixel_spacing=(1.0, 0.8), slice_gap_mm=3.0)
    assert _max_error_mm(vol, iop, (1.0, 0.8), positions) < TOL_MM
    assert vol.is_oblique
    assert "warnings" not in conv.listing["series"][0]  # oblique is not a tilt


def test_gantry_tilt_is_kept_exactly_as_a_sheared_affine(tmp_path: Path) -> None:
    vol, positions, conv = _convert_one(tmp_path, tilt_deg=15.0, slice_gap_mm=2.0)
    assert _max_error_mm(vol, AXIAL, (1.2, 0.9), positions) < TOL_MM
    rzs = vol.original_affine[:3, :3]
    cos = rzs[:, 1] @ rzs[:, 2] / (np.linalg.norm(rzs[:, 1]) * np.linalg.norm(rzs[:, 2]))
    assert np.degrees(np.arccos(cos)) == pytest.approx(90 - 15, abs=1e-3)  # slice axis leans 15 degrees
    (warning,) = conv.listing["series"][0]["warnings"]
    assert "tilt" in warning and "15.0 degrees" in warning


def test_oblique_and_tilted_together(tmp_path: Path) -> None:
    iop = oblique_iop(-10, 25)
    vol, positions, _ = _convert_one(tmp_path, iop=iop, tilt_deg=-8.0, pixel_spacing=(0.7, 0.7))
    assert _max_error_mm(vol, iop, (0.7, 0.7), positions) < TOL_MM


def test_rescale_is_applied(tmp_path: Path) -> None:
    vol, _, _ = _convert_one(tmp_path, rescale=(0.5, -3.0))
    data = np.asarray(vol.data)
    assert data.dtype == np.float32
    assert data.min() == pytest.approx(1 * 0.5 - 3.0) and data.max() == pytest.approx((100 * 5 + 77 + 1) * 0.5 - 3)


def test_rle_compressed_series(tmp_path: Path) -> None:
    vol, positions, _ = _convert_one(tmp_path, rle=True)
    assert _max_error_mm(vol, AXIAL, (1.2, 0.9), positions) < TOL_MM


# ---- refusals ---------------------------------------------------------------------------------------------------

def _only_series(tmp_path: Path, **kwargs) -> dicom.Series:
    folder, _, _ = write_series(tmp_path / "dcm", **kwargs)
    (s,) = dicom.read_study(folder).series
    return s


@pytest.mark.parametrize(("kwargs", "words"), [
    ({"image_type": "ORIGINAL\\PRIMARY\\LOCALIZER", "description": "3-plane"}, "localiser"),
    ({"n_slices": 2}, "only 2 slice"),
    ({"n_slices": 1}, "only 1 slice"),
    ({"n_slices": 3, "slice_iops": {1: (0, 1, 0, 0, 0, -1), 2: (1, 0, 0, 0, 0, -1)}}, "mixed slice orientations"),
    ({"drop": (3,)}, "uneven slice spacing"),
    ({"slice_shapes": {2: (6, 8)}}, "mixed matrix sizes"),
])
def test_refusals_have_a_clear_one_line_reason(tmp_path: Path, kwargs: dict, words: str) -> None:
    s = _only_series(tmp_path, **kwargs)
    assert not s.usable and s.refusal is not None
    assert words in s.refusal and "\n" not in s.refusal


def test_duplicate_positions_are_refused(tmp_path: Path) -> None:
    folder, uid, _ = write_series(tmp_path / "dcm", prefix="e1_")
    write_series(folder, series_uid=uid, prefix="e2_")  # a second echo at the same positions
    (s,) = dicom.read_study(folder).series
    assert "share a slice position" in (s.refusal or "")


def test_no_usable_series_is_an_error(tmp_path: Path) -> None:
    folder, _, _ = write_series(tmp_path / "dcm", n_slices=1)
    with pytest.raises(DicomError, match="no series to convert.*only 1 slice"):
        dicom.convert(folder, tmp_path / "out")


def test_folder_without_dicom(tmp_path: Path) -> None:
    (tmp_path / "notes.txt").write_text("hello")
    with pytest.raises(DicomError, match="expected DICOM files, found none"):
        dicom.read_study(tmp_path)


def test_non_dicom_files_are_skipped_and_counted(tmp_path: Path) -> None:
    folder, _, _ = write_series(tmp_path / "dcm")
    (folder / "README.txt").write_text("exported by a viewer")
    study = dicom.read_study(folder)
    assert study.skipped_files == 1 and study.dicom_files == 6 and study.series[0].usable


# ---- sequence guess ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize(("description", "protocol", "expected"), [
    ("MRHR_FLAIR_AX_SE_IR", "", "flair"),
    ("AX T2 FLAIR", "", "flair"),
    ("t2_tirm_tra_dark-fluid", "", "flair"),
    ("MRHR_T1_AX_POST_GAD", "", "t1ce"),
    ("AX T1 +C", "", "t1ce"),
    ("T1 C+ axial", "", "t1ce"),
    ("T1W_SE_GD", "", "t1ce"),
    ("MPRAGE post", "", "t1ce"),
    ("t1_mprage_sag contrast", "", "t1ce"),
    ("Ax T1 FLAIR +C", "", "t1ce"),
    ("T1_AX_SE", "", "t1"),
    ("AX T1 PRE", "", "t1"),
    ("T1 pre-contrast", "", "t1"),
    ("sag MPRAGE", "", "t1"),
    ("Ax T1 FLAIR", "", "t1"),
    ("MRHR_T2_AX_SE", "", "t2"),
    ("t2_tse_tra", "", "t2"),
    ("", "T2W_TSE", "t2"),
    ("Series 4", "AX FLAIR", "flair"),
    ("ep2d_diff_3scan_trace", "", None),
    ("ADC", "", None),
    ("AX T2* GRE", "", None),
    ("SWI_Images", "", None),
    ("perfusion DSC", "", None),
    ("3-plane localizer", "", None),
    ("Series 4", "", None),
    ("T1 posterior fossa", "", "t1"),
])
def test_guess_sequence(description: str, protocol: str, expected: str | None) -> None:
    guess, reason = dicom.guess_sequence(description, protocol)
    assert guess == expected, reason


def _study_folder(tmp_path: Path) -> Path:
    folder = tmp_path / "study"
    write_series(folder, description="AX FLAIR", series_number=2, prefix="a")
    write_series(folder, description="AX T1 post gad", series_number=5, prefix="b")
    write_series(folder, description="AX T1 +C", series_number=6, prefix="c", iop=oblique_iop())
    write_series(folder, description="ADC map", series_number=9, prefix="d")
    write_series(folder, description="3-plane loc", series_number=1, prefix="e",
                 image_type="ORIGINAL\\PRIMARY\\LOCALIZER", n_slices=3)
    return folder


def test_names_guesses_conflicts_and_overrides(tmp_path: Path) -> None:
    study = dicom.read_study(_study_folder(tmp_path))
    assert [s.index for s in study.series] == [1, 2, 3, 4, 5]
    assert sorted(s.uid for s in study.series) == [s.uid for s in study.series]  # sorted by SeriesInstanceUID
    by_n = {s.n: s for s in study.series}
    names = {by_n_: name for by_n_, (name, _) in
             ((next(s.n for s in study.series if s.index == i), v) for i, v in dicom.resolve_names(study).items())}
    # Two series guessed t1ce: neither takes the name; the ADC has no sequence; the localiser is refused.
    assert names == {2: "flair", 5: "series-5", 6: "series-6", 9: "series-9"}
    assert not by_n[1].usable
    over = dicom.resolve_names(study, dicom.parse_overrides(["6=t1ce", f"{by_n[9].uid}=skip", "2=t2"]))
    assert over[by_n[6].index][0] == "t1ce" and over[by_n[5].index][0] == "series-5"
    assert over[by_n[9].index][0] is None and over[by_n[2].index][0] == "t2"


@pytest.mark.parametrize(("items", "message"), [
    (["6=t1ce", "5=t1ce"], "one series per sequence"),
    (["7=t1"], "expected a series number"),
    (["1=t1"], "cannot be converted"),
    (["5=pd"], "expected a sequence among"),
    (["flair"], "expected SERIES=SEQUENCE"),
])
def test_bad_overrides(tmp_path: Path, items: list[str], message: str) -> None:
    study = dicom.read_study(_study_folder(tmp_path), load_pixels=False)
    with pytest.raises(DicomError, match=message):
        dicom.resolve_names(study, dicom.parse_overrides(items))


# ---- archives -----------------------------------------------------------------------------------------------------

def _zip_of(folder: Path, names=None) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        for i, p in enumerate(sorted(folder.iterdir())):
            # ZipInfo keeps the name as given (ZipFile.write would strip a leading "/").
            info = zipfile.ZipInfo((names or (lambda i, p: f"DOE_JANETH/{p.name}"))(i, p))
            info.compress_type = zipfile.ZIP_DEFLATED
            zf.writestr(info, p.read_bytes())
    return buf.getvalue()


def test_zip_is_extracted_under_generated_names(tmp_path: Path) -> None:
    folder, _, _ = write_series(tmp_path / "dcm")
    n = dicom.safe_extract_zip(_zip_of(folder), tmp_path / "x")
    assert n == 6
    assert sorted(p.name for p in (tmp_path / "x").iterdir()) == [f"{i:06d}.dcm" for i in range(1, 7)]


@pytest.mark.parametrize("evil", ["../escape.dcm", "/etc/evil.dcm", "a/../../escape.dcm", "C:/evil.dcm",
                                  "..\\evil.dcm"])
def test_zip_slip_is_refused_and_nothing_escapes(tmp_path: Path, evil: str) -> None:
    folder, _, _ = write_series(tmp_path / "dcm")
    blob = _zip_of(folder, lambda i, p: evil if i == 3 else p.name)
    dest = tmp_path / "deep" / "x"
    with pytest.raises(DicomError, match="climbs out of the archive"):
        dicom.safe_extract_zip(blob, dest)
    assert not (tmp_path / "deep" / "escape.dcm").exists() and not (tmp_path / "escape.dcm").exists()
    assert not any(dest.iterdir())


def test_zip_bomb_is_refused(tmp_path: Path) -> None:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("zeros.dcm", b"\0" * (8 * 1024 * 1024))  # ~1000:1
    with pytest.raises(DicomError, match="zip bomb"):
        dicom.safe_extract_zip(buf.getvalue(), tmp_path / "x")
    assert not any((tmp_path / "x").iterdir())


def test_zip_limits_on_count_and_total(tmp_path: Path) -> None:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_STORED) as zf:
        for i in range(5):
            zf.writestr(f"f{i}", b"x" * 1000)
    with pytest.raises(DicomError, match="at most 4 files"):
        dicom.safe_extract_zip(buf.getvalue(), tmp_path / "a", max_files=4)
    with pytest.raises(DicomError, match="MB once extracted"):
        dicom.safe_extract_zip(buf.getvalue(), tmp_path / "b", max_total_bytes=3000)


def test_not_a_zip(tmp_path: Path) -> None:
    with pytest.raises(DicomError, match="unreadable archive"):
        dicom.safe_extract_zip(b"PK\x03\x04 not really", tmp_path / "x")


# ---- identifiers ------------------------------------------------------------------------------------------------

def _assert_no_phi(folder: Path) -> None:
    for p in folder.rglob("*"):
        assert not any(s.lower() in p.name.lower() for s in PHI_STRINGS), p.name
        if p.is_file():
            raw = p.read_bytes()
            if p.suffix == ".gz":
                import gzip

                raw = gzip.decompress(raw)
            for s in PHI_STRINGS:
                assert s.lower().encode() not in raw.lower(), f"{s!r} found in {p.name}"


def test_no_patient_identifier_in_any_output(tmp_path: Path) -> None:
    folder = _study_folder(tmp_path)
    # A scanner that put the patient's name into a description: it is scrubbed from the listing.
    write_series(folder, description="T2 ax Doe Janeth", series_number=11, prefix="z")
    blob = _zip_of(folder)
    (tmp_path / "study.zip").write_bytes(blob)
    conv = dicom.convert(tmp_path / "study.zip", tmp_path / "out", {"6": "t1ce"})
    assert set(conv.files) == {"flair", "t1ce", "series-5", "series-9", "t2"}
    _assert_no_phi(tmp_path / "out")
    listing = json.loads(conv.listing_path.read_text())
    assert "identifiers" in listing["note"]
    descriptions = [s["description"] for s in listing["series"]]
    assert "T2 ax [removed] [removed]" in descriptions
    assert all("uid" not in k.lower() for s in listing["series"] for k in s)


# ---- the written files load like any other ----------------------------------------------------------------------

def test_study_volumes_and_resampling(tmp_path: Path) -> None:
    study = dicom.read_study(_study_folder(tmp_path))
    vols = dicom.study_volumes(study, {"6": "t1ce"})
    assert set(vols) == {"flair", "t1ce"}
    same = dicom.resample_onto(vols["flair"], vols["flair"])
    np.testing.assert_allclose(np.asarray(same.data), np.asarray(vols["flair"].data), atol=1e-3)


def test_open_as_case_volumes_puts_every_series_on_the_reference_grid(tmp_path: Path) -> None:
    folder = tmp_path / "study"
    write_series(folder, description="AX FLAIR", series_number=2, prefix="a")
    write_series(folder, description="AX T1 +C", series_number=5, prefix="b", rows=6, pixel_spacing=(1.0, 1.0))
    study = dicom.read_study(folder)
    vols, note = dicom.open_as_case_volumes(study)
    assert set(vols) == {"flair", "t1ce"}
    assert vols["flair"].shape == vols["t1ce"].shape and np.allclose(vols["flair"].affine, vols["t1ce"].affine)
    assert "FLAIR resampled onto the T1CE grid" in note and "not BraTS space" in note
    # Same origin, same slices: the FLAIR voxel at the T1CE grid's corner is the FLAIR pixel at that position.
    t1ce_orig = vols["t1ce"].original_affine
    corner = t1ce_orig @ np.array([0, 0, 0, 1.0])
    flair_native = dicom.series_volume(next(s for s in study.series if s.n == 2))
    ijk = np.linalg.solve(flair_native.affine, corner)[:3]
    expected = np.asarray(flair_native.data)[tuple(np.round(ijk).astype(int))]
    got = np.asarray(vols["flair"].data)[tuple(np.round(np.linalg.solve(vols["flair"].affine, corner)[:3]).astype(int))]
    assert got == pytest.approx(float(expected), abs=1e-3)
    with pytest.raises(DicomError, match="at least one series set to flair"):
        dicom.open_as_case_volumes(study, {"2": "none", "5": "skip"})


def test_conversion_zip_holds_the_files_and_no_identifier(tmp_path: Path) -> None:
    study = dicom.read_study(_study_folder(tmp_path))
    blob = dicom.conversion_zip(study, {"6": "t1ce"})
    with zipfile.ZipFile(io.BytesIO(blob)) as zf:
        names = sorted(zf.namelist())
        zf.extractall(tmp_path / "unzipped")
    assert names == ["dicom_series.json", "flair.nii.gz", "series-5.nii.gz", "series-9.nii.gz", "t1ce.nii.gz"]
    _assert_no_phi(tmp_path / "unzipped")


# ---- CLI --------------------------------------------------------------------------------------------------------

def test_cli_convert(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    folder = _study_folder(tmp_path)
    out = tmp_path / "out"
    assert main(["convert", str(folder), "--out", str(out), "--sequence", "6=t1ce", "--sequence", "5=skip"]) == 0
    printed = capsys.readouterr().out
    assert "flair.nii.gz" in printed and "refused" in printed
    assert sorted(p.name for p in out.iterdir()) == ["dicom_series.json", "flair.nii.gz", "series-9.nii.gz",
                                                     "t1ce.nii.gz"]
    _assert_no_phi(out)


def test_cli_convert_list_only_writes_nothing(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    folder = _study_folder(tmp_path)
    assert main(["convert", str(folder), "--out", str(tmp_path / "out"), "--list"]) == 0
    assert not (tmp_path / "out").exists()
    out = capsys.readouterr().out
    assert re.search(r"series +5 .*would write series-5\.nii\.gz", out) and "refused: a localiser" in out


def test_cli_convert_errors_are_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "junk.bin").write_bytes(b"\0" * 10)
    assert main(["convert", str(tmp_path / "junk.bin"), "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: expected a folder of DICOM files or a zip") and err.count("\n") == 1
    folder = _study_folder(tmp_path)
    assert main(["convert", str(folder), "--out", str(tmp_path / "o2"), "--sequence", "5=t1ce",
                 "--sequence", "6=t1ce"]) == 2
    assert "one series per sequence" in capsys.readouterr().err
    (tmp_path / "o3").mkdir()
    (tmp_path / "o3" / "x.txt").write_text("x")
    assert main(["convert", str(folder), "--out", str(tmp_path / "o3")]) == 2
    assert "--overwrite" in capsys.readouterr().err


# ---- folders as real scanners and PACS exports make them (issue 18) -----------------------------------------------

@pytest.mark.parametrize(("patient_id", "kwargs"), [
    ("130", {"series_number": 130}),  # a patient id that is also a number of the listing
    ("4.375", {"pixel_spacing": (4.375, 4.375)}),
    ("dicom", {}),  # a patient id that is a word of the listing's keys ("dicom_files")
])
def test_identifiers_are_scrubbed_field_by_field_never_as_json_text(
        tmp_path: Path, capsys: pytest.CaptureFixture[str], patient_id: str, kwargs: dict) -> None:
    folder, _, _ = write_series(tmp_path / "dcm", patient_id=patient_id, description=f"AX T1 {patient_id}",
                                **kwargs)
    assert main(["convert", str(folder), "--out", str(tmp_path / "out")]) == 0
    listing = json.loads((tmp_path / "out" / dicom.LISTING_NAME).read_text())
    assert listing["dicom_files"] == 6 and listing["skipped_files"] == 0
    (row,) = listing["series"]
    assert row["description"] == "AX T1 [removed]" and row["file"] == "t1.nii.gz"
    if "series_number" in kwargs:
        assert row["n"] == row["series_number"] == 130
    if "pixel_spacing" in kwargs:
        assert row["spacing_mm"][:2] == [4.375, 4.375]
    capsys.readouterr()
    assert main(["convert", str(folder), "--out", str(tmp_path / "o2"), "--list"]) == 0
    assert "'AX T1 [removed]'" in capsys.readouterr().out


def test_scrubbing_takes_whole_words_and_does_not_change_the_guess(tmp_path: Path) -> None:
    # A name part ("Ann") inside a word ("Planning") is not an identifier; the name part alone is.
    folder, _, _ = write_series(tmp_path / "dcm", patient_name="Ann^Flair", description="Planning T1 Ann",
                                protocol="ann_t1")
    (s,) = dicom.read_study(folder).series
    assert s.description == "Planning T1 [removed]" and s.protocol == "[removed]_t1"
    # The patient is called "Flair": the T1 is still guessed T1 (from the header, in memory), never FLAIR.
    folder2, _, _ = write_series(tmp_path / "dcm2", patient_name="Flair^Tom", description="Flair T1")
    (s2,) = dicom.read_study(folder2).series
    assert s2.guess == "t1" and s2.description == "[removed] T1"
    assert dicom.scrub_text("Planning ann_T1 ANN", ["Ann"]) == "Planning [removed]_T1 [removed]"


def test_clashing_series_numbers_get_uid_derived_names_and_nothing_is_overwritten(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    folder = tmp_path / "dcm"
    # Two series numbered 2 sort first and second by UID; a third is really number 1: the old fallback
    # (the series' position) named the first clashing one series-1 too, and one file overwrote the other.
    for uid, number, prefix in (("1.2.3.1", 2, "a"), ("1.2.3.2", 2, "b"), ("1.2.3.3", 1, "c")):
        write_series(folder, description="AX PD", series_number=number, series_uid=uid, prefix=prefix)
    study = dicom.read_study(folder, load_pixels=False)
    names = [s.n for s in study.series]
    assert names[2] == 1 and len(set(map(str, names))) == 3
    assert all(re.fullmatch(r"2-[0-9a-f]{6}", str(n)) for n in names[:2])
    assert all("1.2.3" not in str(n) for n in names)  # derived from the UID, not the UID
    assert main(["convert", str(folder), "--out", str(tmp_path / "out"), "--sequence", "1=none",
                 "--sequence", f"series-{names[0]}=t2"]) == 0
    printed = capsys.readouterr().out
    assert "wrote 3 NIfTI file(s)" in printed
    assert sorted(p.name for p in (tmp_path / "out").glob("*.nii.gz")) == sorted(
        ["t2.nii.gz", f"series-{names[1]}.nii.gz", "series-1.nii.gz"])
    listing = json.loads((tmp_path / "out" / dicom.LISTING_NAME).read_text())
    assert sorted(r["file"] for r in listing["series"]) == sorted(p.name for p in (tmp_path / "out").glob("*.gz"))


def test_resolve_names_never_gives_one_file_name_to_two_series(tmp_path: Path) -> None:
    folder = tmp_path / "dcm"
    write_series(folder, description="AX PD", series_number=2, prefix="a")
    write_series(folder, description="AX PD", series_number=5, prefix="b")
    study = dicom.read_study(folder, load_pixels=False)
    study.series[1].n = study.series[0].n  # what the old fallback numbering could do
    with pytest.raises(DicomError, match="one file name per series"):
        dicom.resolve_names(study)


def test_a_folder_of_several_patients_and_studies_is_split_and_says_so(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    folder = tmp_path / "dcm"
    write_series(folder, description="AX FLAIR", series_number=2, prefix="a", patient_id="P-1111",
                 study_uid="1.2.3.10")
    write_series(folder, description="AX T1 +C", series_number=3, prefix="b", patient_id="P-1111",
                 study_uid="1.2.3.10")
    write_series(folder, description="AX FLAIR", series_number=4, prefix="c", patient_id="P-1111",
                 study_uid="1.2.3.11")  # the same patient's follow-up study
    write_series(folder, description="AX FLAIR", series_number=5, prefix="d", patient_id="P-2222",
                 patient_name="Roe^Richard", study_uid="1.2.3.12")  # another patient
    study = dicom.read_study(folder)
    assert (study.n_studies, study.n_patients) == (3, 2)
    assert "3 studies of 2 patient(s)" in study.studies_note()
    out = tmp_path / "out"
    assert main(["convert", str(folder), "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "3 studies of 2 patient(s)" in printed and "wrote 4 NIfTI file(s)" in printed
    written = sorted(str(p.relative_to(out)) for p in out.rglob("*.nii.gz"))
    assert written == ["study-1/flair.nii.gz", "study-1/t1ce.nii.gz", "study-2/flair.nii.gz",
                       "study-3/flair.nii.gz"]
    listing = json.loads((out / dicom.LISTING_NAME).read_text())
    assert listing["studies"] == 3 and listing["patients"] == 2 and "split" in listing
    assert "P-1111" not in (out / dicom.LISTING_NAME).read_text()
    with pytest.raises(DicomError, match="several"):
        dicom.open_as_case_volumes(study)
    vols, _ = dicom.open_as_case_volumes(study, {"4": "skip", "5": "skip"})
    assert set(vols) == {"flair", "t1ce"}
    with zipfile.ZipFile(io.BytesIO(dicom.conversion_zip(study))) as zf:
        assert "study-3/flair.nii.gz" in zf.namelist()


@pytest.mark.parametrize("kwargs", [{"image_type": "ORIGINAL\\PRIMARY\\M\\ND\\MOSAIC"}, {"mosaic_tiles": 36}])
def test_a_siemens_mosaic_is_named_a_mosaic(tmp_path: Path, kwargs: dict) -> None:
    s = _only_series(tmp_path, n_slices=2, description="ep2d_bold", **kwargs)
    assert "Siemens mosaic" in (s.refusal or "") and "localiser" not in (s.refusal or "")
    if "mosaic_tiles" in kwargs:
        assert "36 slices" in (s.refusal or "")


def test_an_exact_duplicate_file_is_dropped_with_a_note(tmp_path: Path) -> None:
    folder, _, positions = write_series(tmp_path / "dcm")
    first = sorted(folder.iterdir())[0]
    (folder / "copy_of_one.dcm").write_bytes(first.read_bytes())
    study = dicom.read_study(folder)
    (s,) = study.series
    assert s.usable and s.n_files == 6 and study.duplicate_files == 1
    assert any("1 exact duplicate" in w for w in s.warnings)
    conv = dicom.convert(folder, tmp_path / "out")
    assert _max_error_mm(load_volume(conv.files["t1"]), AXIAL, (1.2, 0.9), positions) < TOL_MM
    assert conv.listing["duplicate_files_dropped"] == 1


def test_files_sharing_a_sop_instance_uid_but_differing_refuse_the_series(tmp_path: Path) -> None:
    import pydicom

    folder, _, _ = write_series(tmp_path / "dcm")
    ds = pydicom.dcmread(sorted(folder.iterdir())[0])
    ds.PixelData = bytes(len(ds.PixelData))
    ds.save_as(folder / "altered.dcm", enforce_file_format=True)
    (s,) = dicom.read_study(folder).series
    assert "share a SOPInstanceUID" in (s.refusal or "")


def test_the_listing_is_written_when_every_series_is_refused_and_the_error_line_is_whole(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    folder = tmp_path / "dcm"
    for k in range(12):
        write_series(folder, n_slices=1, series_number=10 + k, prefix=f"s{k}_")
    out = tmp_path / "out"
    assert main(["convert", str(folder), "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.rstrip().endswith(f"every series is listed in {dicom.LISTING_NAME}")
    listing = json.loads((out / dicom.LISTING_NAME).read_text())
    refusals = {r["refusal"] for r in listing["series"]}
    assert len(listing["series"]) == 12 and not list(out.glob("*.nii.gz"))
    parts = err.split("(", 1)[1].rsplit(")", 1)[0].split("; ")
    assert re.fullmatch(r"and \d+ more refused series", parts[-1])
    for part in parts[:-1]:  # every reason shown is a whole one
        assert re.sub(r"^series \d+: ", "", part) in refusals
