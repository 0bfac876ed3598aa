"""core.data.dicom_seg, ``python -m core export-seg`` and the DICOM SEG download of the Volume report.

Small DICOM series are built in code (tests/dicom_factory.py). Every voxel of a factory series holds a value that
encodes its own (column i, row j, slice k) indices, so labels can be drawn by hand on the series' own voxels
(``src``: (columns, rows, slices), slices in position order), carried onto the case's RAS grid by decoding each
RAS voxel's value (independently of the code under test), exported, and the SEG read back with pydicom and
highdicom: each frame must reference the source image at its own position and hold exactly ``src == label``.
"""

from __future__ import annotations

import io
import zipfile
from pathlib import Path

import highdicom as hd
import numpy as np
import pydicom
import pytest
from dicom_factory import (
    AXIAL,
    FRAME_OF_REFERENCE_UID,
    PATIENT_ID,
    PHI_STRINGS,
    decode_value,
    oblique_iop,
    write_series,
)

from core.__main__ import main
from core.data import dicom, dicom_seg
from core.data.io import Volume, load_volume, nifti_bytes
from core.errors import CaseError, DicomError

SEG_STORAGE = "1.2.840.10008.5.1.4.1.1.66.4"


def hand_labels(shape: tuple[int, int, int]) -> np.ndarray:
    """Labels on a series' own voxels (columns, rows, slices): NCR, edema and ET blocks on different slices,
    one slice (0) and the last one without tumour."""
    ni, nj, nk = shape
    src = np.zeros(shape, dtype=np.uint8)
    src[1:3, 2:4, 1] = 1
    src[3:6, 1:5, 2:4] = 2
    src[4, 4, 2] = 4
    src[ni - 2, nj - 1, min(3, nk - 2)] = 4  # a corner voxel: axis directions matter
    return src


def case_volume(folder: Path) -> tuple[Volume, dicom.Study]:
    study = dicom.read_study(folder)
    (s,) = [s for s in study.series if s.usable]
    return dicom.series_volume(s, "t1ce"), study


def to_ras(vol: Volume, src: np.ndarray) -> np.ndarray:
    """``src`` (series voxels) carried onto the RAS grid of ``vol`` by decoding each voxel's own indices."""
    out = np.zeros(vol.shape, dtype=np.uint8)
    for x, y, z in np.ndindex(vol.shape):
        i, j, k = decode_value(vol.data[x, y, z])
        out[x, y, z] = src[i, j, k]
    return out


def source_by_uid(folder: Path) -> dict[str, pydicom.Dataset]:
    out = {}
    for p in folder.iterdir():
        ds = pydicom.dcmread(p, stop_before_pixels=True)
        out[str(ds.SOPInstanceUID)] = ds
    return out


def read_seg(blob: bytes) -> hd.seg.Segmentation:
    return hd.seg.segread(io.BytesIO(blob))


GEOMETRIES = {
    "axial": dict(iop=AXIAL),
    "oblique": dict(iop=oblique_iop(), pixel_spacing=(0.8, 1.1), rows=6, columns=9),
    "oblique+tilt": dict(iop=oblique_iop(25, -10), tilt_deg=12.0, slice_gap_mm=3.0),
    "sagittal": dict(iop=(0.0, 1.0, 0.0, 0.0, 0.0, -1.0), rows=7),
}


@pytest.mark.parametrize("geometry", list(GEOMETRIES), ids=list(GEOMETRIES))
def test_seg_reads_back_on_the_source_slices(tmp_path: Path, geometry: str) -> None:
    folder, series_uid, positions = write_series(tmp_path / "s", **GEOMETRIES[geometry])
    vol, _ = case_volume(folder)
    src = hand_labels(vol.original_shape)
    labels = to_ras(vol, src)
    series, same = dicom_seg.read_source_series(folder, match=vol)
    assert same
    blob, info = dicom_seg.seg_bytes(series, labels, vol.affine)
    assert info.exact and info.labels == (1, 2, 4) and not info.notes

    ds = pydicom.dcmread(io.BytesIO(blob))
    assert ds.SOPClassUID == SEG_STORAGE and ds.Modality == "SEG" and ds.SegmentationType == "BINARY"
    sources = source_by_uid(folder)
    first = next(iter(sources.values()))
    assert ds.StudyInstanceUID == first.StudyInstanceUID and ds.FrameOfReferenceUID == FRAME_OF_REFERENCE_UID
    assert ds.PatientID == PATIENT_ID  # the patient module is kept, as DICOM requires (for the user's PACS)
    assert ds.ContentQualification == "RESEARCH"
    (ref_series,) = ds.ReferencedSeriesSequence
    assert ref_series.SeriesInstanceUID == series_uid
    assert {r.ReferencedSOPInstanceUID for r in ref_series.ReferencedInstanceSequence} == set(sources)

    # each frame: the source image it references lies at the frame's position, which is a source slice
    slice_of = {uid: int(np.argmin([np.linalg.norm(np.asarray(d.ImagePositionPatient, float) - p)
                                     for p in positions])) for uid, d in sources.items()}
    frames = ds.PerFrameFunctionalGroupsSequence
    assert len(frames) == info.frames
    with_tumour = {k for k in range(src.shape[2]) for lab in (1, 2, 4) if (src[:, :, k] == lab).any()}
    referenced = set()
    for f in frames:
        ipp = np.asarray(f.PlanePositionSequence[0].ImagePositionPatient, float)
        uid = f.DerivationImageSequence[0].SourceImageSequence[0].ReferencedSOPInstanceUID
        np.testing.assert_allclose(ipp, np.asarray(sources[uid].ImagePositionPatient, float), atol=1e-4)
        assert min(np.linalg.norm(ipp - p) for p in positions) < 1e-4
        referenced.add(slice_of[uid])
    assert referenced == with_tumour  # frames without tumour are left out, every slice with tumour is there

    # decoded masks, per label, equal the hand-drawn labels on the series' own voxels
    seg = read_seg(blob)
    uids = list(series.sop_instance_uids)  # slice-position order
    assert [slice_of[u] for u in uids] == list(range(src.shape[2]))
    px = seg.get_pixels_by_source_instance(uids, segment_numbers=[1, 2, 3])  # (slices, rows, columns, segments)
    for n, lab in enumerate((1, 2, 4)):
        np.testing.assert_array_equal(px[..., n].astype(bool), (src == lab).transpose(2, 1, 0))


def test_segment_descriptions_codes_and_algorithm(tmp_path: Path) -> None:
    folder, _, _ = write_series(tmp_path / "s")
    vol, _ = case_volume(folder)
    labels = to_ras(vol, hand_labels(vol.original_shape))
    series = dicom_seg.series_headers(folder, dicom.read_study(folder, load_pixels=False).series[0].uid)
    expected = [("NCR/NET", "6574001", "SCT"), ("Edema", "79654002", "SCT"), ("Enhancing tumour", "C113842", "NCIt")]
    for algo in ("AUTOMATIC", "SEMIAUTOMATIC", "MANUAL"):
        seg = read_seg(dicom_seg.seg_bytes(series, labels, vol.affine, algorithm_type=algo.lower(),
                                           algorithm_name="tiny", algorithm_version="abc123")[0])
        got = [(s.SegmentLabel, s.SegmentedPropertyTypeCodeSequence[0].CodeValue,
                s.SegmentedPropertyTypeCodeSequence[0].CodingSchemeDesignator) for s in seg.SegmentSequence]
        assert got == expected
        for number, s in enumerate(seg.SegmentSequence, start=1):
            assert s.SegmentNumber == number and s.SegmentAlgorithmType == algo
            assert s.SegmentedPropertyCategoryCodeSequence[0].CodeValue == "49755003"
            assert s.AnatomicRegionSequence[0].CodeValue == "12738006"
            assert "BraTS label" in s.SegmentDescription
            if algo == "MANUAL":
                assert "SegmentationAlgorithmIdentificationSequence" not in s
            else:
                ident = s.SegmentationAlgorithmIdentificationSequence[0]
                assert (ident.AlgorithmName, ident.AlgorithmVersion) == ("tiny", "abc123")


def test_empty_and_partial_labels(tmp_path: Path) -> None:
    folder, _, _ = write_series(tmp_path / "s")
    vol, _ = case_volume(folder)
    series, _ = dicom_seg.read_source_series(folder, match=vol)
    with pytest.raises(DicomError, match="nothing to export: the segmentation holds no tumour label"):
        dicom_seg.seg_bytes(series, np.zeros(vol.shape, np.uint8), vol.affine)
    only_edema = np.zeros(vol.shape, np.uint8)
    only_edema[2, 3, 1] = 2
    blob, info = dicom_seg.seg_bytes(series, only_edema, vol.affine)
    seg = read_seg(blob)
    assert info.labels == (2,) and info.frames == 1
    assert [(s.SegmentNumber, s.SegmentLabel) for s in seg.SegmentSequence] == [(1, "Edema")]
    with pytest.raises(CaseError, match="expected labels within"):
        dicom_seg.seg_bytes(series, only_edema + 1, vol.affine)  # labels 1 and 3
    with pytest.raises(DicomError, match="algorithm type"):
        dicom_seg.seg_bytes(series, only_edema, vol.affine, algorithm_type="guessed")
    with pytest.raises(DicomError, match="3-D"):
        dicom_seg.seg_bytes(series, only_edema[..., 0], vol.affine)


def test_labels_on_another_grid_are_resampled_by_nearest_neighbour(tmp_path: Path) -> None:
    folder, _, _ = write_series(tmp_path / "s", iop=oblique_iop())
    vol, _ = case_volume(folder)
    src = hand_labels(vol.original_shape)
    series, _ = dicom_seg.read_source_series(folder, match=vol)
    # a grid three times finer along every axis of the series: voxel (3i + 1, 3j + 1, 3k + 1) is (i, j, k)'s centre
    fine = np.repeat(np.repeat(np.repeat(src, 3, axis=0), 3, axis=1), 3, axis=2)
    scale = np.diag([1 / 3, 1 / 3, 1 / 3, 1.0])
    scale[:3, 3] = -1 / 3
    fine_affine = series.affine @ scale
    mapped, exact = dicom_seg.labels_onto_series(fine, fine_affine, series)
    assert not exact
    np.testing.assert_array_equal(mapped, src.transpose(2, 1, 0))
    blob, info = dicom_seg.seg_bytes(series, fine, fine_affine)
    assert not info.exact and "resampled" in info.notes[0]
    # the case's own grid maps exactly
    mapped, exact = dicom_seg.labels_onto_series(to_ras(vol, src), vol.affine, series)
    assert exact
    np.testing.assert_array_equal(mapped, src.transpose(2, 1, 0))
    # labels entirely outside the series' slices: refused, one line
    far = vol.affine.copy()
    far[:3, 3] += 500.0
    with pytest.raises(DicomError, match="no tumour voxel falls on the source series"):
        dicom_seg.seg_bytes(series, to_ras(vol, src), far)


def test_zip_source_and_series_choice(tmp_path: Path) -> None:
    study = tmp_path / "study"
    _, uid_a, _ = write_series(study, description="AX FLAIR", series_number=2, prefix="a")
    _, uid_b, _ = write_series(study, description="AX T1 post gad", series_number=5, prefix="b", rows=6,
                               pixel_spacing=(1.0, 1.0))
    blob = io.BytesIO()
    with zipfile.ZipFile(blob, "w") as zf:
        for p in sorted(study.iterdir()):
            zf.write(p, f"dir/{p.name}")
    zip_bytes = blob.getvalue()
    (tmp_path / "study.zip").write_bytes(zip_bytes)
    read = dicom.read_study(study)
    vol_b = dicom.series_volume(next(s for s in read.series if s.uid == uid_b), "t1ce")
    for source in (zip_bytes, tmp_path / "study.zip", study):
        series, same = dicom_seg.read_source_series(source, match=vol_b)
        assert same and series.series_uid == uid_b and series.series_number == 5
    assert dicom_seg.series_headers(zip_bytes, uid_a).series_number == 2
    series, same = dicom_seg.read_source_series(study, key="2", match=vol_b)  # named: resampled onto it
    assert series.series_uid == uid_a and not same
    with pytest.raises(DicomError, match="expected one usable series or a series number"):
        dicom_seg.read_source_series(study)
    other = Volume(vol_b.data, vol_b.affine, vol_b.spacing_mm, vol_b.original_affine + 5.0, vol_b.original_axcodes,
                   vol_b.original_shape, vol_b.sha256)
    with pytest.raises(DicomError, match="--series"):
        dicom_seg.read_source_series(study, match=other)
    with pytest.raises(DicomError, match="found none"):
        dicom_seg.series_headers(study, "1.2.3.4")


def test_source_checks(tmp_path: Path) -> None:
    folder, _, _ = write_series(tmp_path / "s", n_slices=5)
    datasets = [pydicom.dcmread(p, stop_before_pixels=True) for p in sorted(folder.iterdir())]
    series = dicom_seg.source_series(datasets)
    zs = [float(ds.ImagePositionPatient[2]) for ds in series.datasets]
    assert zs == sorted(zs) and series.shape == (8, 8, 5)  # sorted by position, files were written in reverse
    with pytest.raises(DicomError, match="got none"):
        dicom_seg.source_series([])
    del datasets[0].FrameOfReferenceUID
    with pytest.raises(DicomError, match="FrameOfReferenceUID"):
        dicom_seg.source_series(datasets)
    gap = [pydicom.dcmread(p, stop_before_pixels=True) for p in sorted(folder.iterdir())]
    del gap[2]
    with pytest.raises(DicomError, match="cannot carry a segmentation: uneven slice spacing"):
        dicom_seg.source_series(gap)
    named, _, _ = write_series(tmp_path / "n", description="Doe T1 axial")
    headers = [pydicom.dcmread(p, stop_before_pixels=True) for p in named.iterdir()]
    assert "Doe" not in dicom_seg.source_series(headers).description


def test_patient_module_comes_from_the_source_and_held_headers_are_not_changed(tmp_path: Path) -> None:
    folder, _, _ = write_series(tmp_path / "s")  # no PatientSex, StudyID, StudyDate, StudyTime
    vol, _ = case_volume(folder)
    labels = np.zeros(vol.shape, np.uint8)
    labels[2, 2, 2] = 4
    series, _ = dicom_seg.read_source_series(folder, match=vol)
    ds = pydicom.dcmread(io.BytesIO(dicom_seg.seg_bytes(series, labels, vol.affine)[0]))
    assert ds.PatientSex == "" and ds.StudyID == ""  # type 2: present, empty (unknown)
    assert "PatientSex" not in series.datasets[0]  # the held header itself is left as read
    for held in series.datasets:
        held.PatientSex, held.StudyID, held.StudyDate, held.StudyTime = "F", "S1", "20240102", "101500"
        held.ReferringPhysicianName = ""
    ds = pydicom.dcmread(io.BytesIO(dicom_seg.seg_bytes(series, labels, vol.affine)[0]))
    assert (ds.PatientSex, ds.StudyID, ds.StudyDate, str(ds.PatientName)) == ("F", "S1", "20240102", "Doe^Janeth")
    for held in series.datasets:
        held.PatientSex = "FEMALE"  # not a DICOM value (M, F, O): written as unknown rather than refused
    ds = pydicom.dcmread(io.BytesIO(dicom_seg.seg_bytes(series, labels, vol.affine)[0]))
    assert ds.PatientSex == "" and series.datasets[0].PatientSex == "FEMALE"


# ---- command line --------------------------------------------------------------------------------------------

def _seg_file(tmp_path: Path, vol: Volume, labels: np.ndarray, name: str = "seg.nii.gz") -> Path:
    path = tmp_path / name
    path.write_bytes(nifti_bytes(vol, labels, np.uint8))  # written back in the series' own geometry
    return path


def test_cli_export_seg(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    study = tmp_path / "study"
    write_series(study, description="AX FLAIR", series_number=2, prefix="a", iop=oblique_iop())
    _, uid_b, _ = write_series(study, description="AX T1 post gad", series_number=5, prefix="b", rows=6)
    converted = tmp_path / "nifti"
    assert main(["convert", str(study), "--out", str(converted)]) == 0
    vol = load_volume(converted / "t1ce.nii.gz")
    src = hand_labels(vol.original_shape)
    labels = to_ras(vol, src)
    seg_path = _seg_file(tmp_path, vol, np.where(labels == 4, 3, labels))  # BraTS 2023 file: ET = 3
    out = tmp_path / "seg.dcm"
    capsys.readouterr()
    assert main(["export-seg", str(study), "--seg", str(seg_path), "--out", str(out),
                 "--algorithm-type", "semiautomatic"]) == 0
    printed = capsys.readouterr().out
    assert "3 segment(s) (NCR/NET, Edema, Enhancing tumour)" in printed and "references series 5" in printed
    assert "mapped exactly" in printed and dicom_seg.SEG_PHI_NOTE in printed
    assert not any(phi.lower() in printed.lower() for phi in PHI_STRINGS)
    seg = hd.seg.segread(out)
    assert seg.ReferencedSeriesSequence[0].SeriesInstanceUID == uid_b
    assert {s.SegmentAlgorithmType for s in seg.SegmentSequence} == {"SEMIAUTOMATIC"}
    series, _ = dicom_seg.read_source_series(study, key="5")
    px = seg.get_pixels_by_source_instance(list(series.sop_instance_uids), segment_numbers=[1, 2, 3])
    for n, lab in enumerate((1, 2, 4)):
        np.testing.assert_array_equal(px[..., n].astype(bool), (src == lab).transpose(2, 1, 0))


def test_cli_export_seg_errors_are_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    folder, _, _ = write_series(tmp_path / "s")
    vol, _ = case_volume(folder)
    empty = _seg_file(tmp_path, vol, np.zeros(vol.shape, np.uint8), "empty.nii.gz")
    out = tmp_path / "seg.dcm"
    cases = [
        (["export-seg", str(folder), "--seg", str(empty), "--out", str(out)], "nothing to export"),
        (["export-seg", str(tmp_path / "missing"), "--seg", str(empty), "--out", str(out)], "path that does not exist"),
        (["export-seg", str(folder), "--seg", str(empty), "--out", str(tmp_path)], "got a folder"),
    ]
    for argv, message in cases:
        capsys.readouterr()
        assert main(argv) == 2
        err = capsys.readouterr().err
        assert err.startswith("error: ") and message in err and err.count("\n") == 1
    assert not out.exists()
    one = np.zeros(vol.shape, np.uint8)
    one[1, 1, 1] = 1
    good = _seg_file(tmp_path, vol, one, "one.nii.gz")
    assert main(["export-seg", str(folder), "--seg", str(good), "--out", str(out)]) == 0
    assert main(["export-seg", str(folder), "--seg", str(good), "--out", str(out)]) == 2  # exists
    assert "--overwrite" in capsys.readouterr().err
    assert main(["export-seg", str(folder), "--seg", str(good), "--out", str(out), "--overwrite"]) == 0


# ---- the app: the DICOM tab keeps the source series, the Volume report offers the SEG ----------------------------

def test_case_opened_from_dicom_offers_a_dicom_seg_on_the_report(app_env: Path, tmp_path: Path,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    from conftest import run_page, texts
    from streamlit.runtime.media_file_manager import MediaFileManager

    from core.app import dicom_panel, ui
    from core.data import roots

    # The download buttons' deferred builds, as the server keeps them: called later, outside the script run.
    deferred: dict[str, object] = {}
    add_deferred = MediaFileManager.add_deferred

    def keep(self, data_callable, mimetype, coordinates, file_name=None, **kwargs):  # type: ignore[no-untyped-def]
        deferred[str(file_name)] = data_callable
        return add_deferred(self, data_callable, mimetype, coordinates, file_name, **kwargs)

    monkeypatch.setattr(MediaFileManager, "add_deferred", keep)
    root = tmp_path / "dicomroot"
    write_series(root / "study1", description="AX FLAIR", series_number=2, prefix="a")
    write_series(root / "study1", description="AX T1 post gad", series_number=5, prefix="b", rows=6,
                 iop=oblique_iop())
    monkeypatch.setenv(roots.ROOTS_ENV, str(root))
    at = run_page("pages/1_Case_browser.py", timeout=60)
    assert dicom_seg.SEG_PHI_NOTE in texts(at.caption)
    at.radio(key="dicom_source").set_value(dicom_panel.SOURCE_FOLDER).run()
    label = next(opt for opt in at.selectbox(key="dicom_root").options if opt.endswith("dicomroot"))
    at.selectbox(key="dicom_root").set_value(label).run()
    at.selectbox(key="dicom_sub").set_value("study1")
    at.button(key="dicom_read").click().run()
    at.button(key="dicom_open").click().run()
    assert not at.exception, at.exception
    case = at.session_state[ui.KEY_UPLOADED]
    key, series = at.session_state[dicom_panel.KEY_SEG_SOURCE]
    assert key == case.content_key and isinstance(series, dicom_seg.SourceSeries)
    assert series.series_number == 5 and series.matches(case.reference)  # the T1CE grid the case lies on

    vol = case.images["t1ce"]
    src = hand_labels(vol.original_shape)
    labels = to_ras(vol, src)
    at.switch_page("pages/4_Volume_report.py")
    at.session_state[ui.KEY_CORRECTED] = labels
    at.session_state[ui.KEY_CORRECTED_CASE] = case.content_key
    at.run()
    assert not at.exception, at.exception
    buttons = {el.proto.label for el in at.get("download_button")}
    assert "Segmentation (DICOM SEG)" in buttons
    captions = texts(at.caption)
    assert "references series 5 (AX T1 post gad, 6 images)" in captions and "semiautomatic" in captions
    assert dicom_seg.SEG_PHI_NOTE in captions
    page = "\n".join(texts(getattr(at, k)) for k in ("markdown", "caption", "info", "success", "warning", "error"))
    assert not any(phi.lower() in page.lower() for phi in PHI_STRINGS)
    # what the button builds: the labels on the series' own voxels, referencing it
    seg = read_seg(dicom_seg.seg_bytes(series, labels, case.reference.affine, algorithm_type="SEMIAUTOMATIC")[0])
    px = seg.get_pixels_by_source_instance(list(series.sop_instance_uids), segment_numbers=[1, 2, 3])
    for n, lab in enumerate((1, 2, 4)):
        np.testing.assert_array_equal(px[..., n].astype(bool), (src == lab).transpose(2, 1, 0))
    # ... and what the button really delivers: its build, run after the script run as the server does (issue 18:
    # it looked the source series up in the session state there and failed; nothing was delivered).
    (seg_name,) = [name for name in deferred if name.endswith("seg.dcm")]
    delivered = read_seg(deferred[seg_name]())  # type: ignore[operator]
    assert delivered.ReferencedSeriesSequence[0].SeriesInstanceUID == series.series_uid
    px = delivered.get_pixels_by_source_instance(list(series.sop_instance_uids), segment_numbers=[1, 2, 3])
    for n, lab in enumerate((1, 2, 4)):
        np.testing.assert_array_equal(px[..., n].astype(bool), (src == lab).transpose(2, 1, 0))
    assert delivered.SegmentSequence[0].SegmentAlgorithmType == "SEMIAUTOMATIC"

    at.session_state[ui.KEY_CORRECTED] = np.zeros_like(labels)  # nothing to export: said, no button
    at.run()
    assert not at.exception, at.exception
    assert "Segmentation (DICOM SEG)" not in {el.proto.label for el in at.get("download_button")}
    assert "holds no tumour label" in texts(at.caption)
