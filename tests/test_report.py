"""Tests of core/analysis/report.py: volume table by hand with anisotropic voxels, CSV, and the PDF read back with pypdf."""

from __future__ import annotations

import csv
import io
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pypdf
import pytest
from conftest import make_case_dir

from core.analysis.measure import measure_rano
from core.analysis.metrics import score_case
from core.analysis.report import (
    IMAGE_MAX_PX,
    MEASURE_D1_COLOUR,
    MEASURE_D2_COLOUR,
    ReportInputs,
    build_pdf,
    latin1,
    library_versions,
    measurement_window,
    render_measurement,
    render_planes,
    report_file_name,
    round_ml,
    save_pdf,
    table_csv,
    tumour_core_slices,
    volume_table,
)
from core.config import DISCLAIMER, LABEL_COLOURS
from core.data.cases import assemble_case, load_case_folder
from core.data.io import volume_from_array
from core.errors import CaseError

SPACING = (0.5, 1.0, 3.0)  # 1.5 mm^3 per voxel = 0.0015 mL
MODEL_SHA = "0123456789abcdef" * 4


def _labels(n1: int = 340, n2: int = 1260, n4: int = 480, shape: tuple[int, int, int] = (20, 20, 20)) -> np.ndarray:
    lab = np.zeros(shape, np.uint8)
    flat = lab.ravel()
    flat[:n1] = 1
    flat[n1 : n1 + n2] = 2
    flat[n1 + n2 : n1 + n2 + n4] = 4
    return lab


def _flat(text: str) -> str:
    return " ".join(text.split())


# ------------------------------------------------------------------------------------------- volume table ---

def test_volume_table_by_hand_anisotropic() -> None:
    rows = volume_table(_labels(), SPACING)
    assert [r["structure"] for r in rows] == ["NCR", "ED", "ET", "TC", "WT"]
    assert [r["kind"] for r in rows] == ["label", "label", "label = region", "region", "region"]
    assert [r["labels"] for r in rows] == ["1", "2", "4", "1+4", "1+2+4"]
    assert [r["voxels"] for r in rows] == [340, 1260, 480, 820, 2080]
    # 340 x 0.0015 = 0.51; 1260 -> 1.89; 480 -> 0.72; 820 -> 1.23; 2080 -> 3.12 (mL), rounded to 0.1
    assert [r["volume_ml"] for r in rows] == [0.5, 1.9, 0.7, 1.2, 3.1]
    assert "gt_volume_ml" not in rows[0]
    iso = volume_table(_labels(), (1.0, 1.0, 1.0))  # spacing matters: 2080 mm^3 -> 2.1 mL
    assert iso[-1]["volume_ml"] == 2.1


def test_round_ml_half_up_from_decimal_value() -> None:
    assert round_ml(150.0) == 0.2  # 0.15 mL: binary 0.15 is just below, round() would give 0.1
    assert round_ml(250.0) == 0.3  # round() rounds half to even: 0.2
    assert round_ml(-150.0) == -0.2 and round_ml(149.9) == 0.1 and round_ml(0.0) == 0.0
    assert round_ml(12345.0, digits=2) == 12.35
    assert volume_table(_labels(50, 0, 0), (1.0, 1.0, 3.0))[0]["volume_ml"] == 0.2


def test_volume_table_with_reference() -> None:
    rows = volume_table(_labels(), SPACING, gt_labels=_labels(200, 0, 480))
    by = {r["structure"]: r for r in rows}
    assert by["NCR"]["gt_voxels"] == 200 and by["NCR"]["gt_volume_ml"] == 0.3  # 0.30 mL
    assert by["NCR"]["difference_ml"] == 0.2  # 140 x 0.0015 = 0.21
    assert by["ED"]["gt_volume_ml"] == 0.0 and by["ED"]["difference_ml"] == 1.9
    assert by["WT"]["gt_voxels"] == 680 and by["WT"]["gt_volume_ml"] == 1.0  # 1.02


def test_volume_table_rejects_bad_input() -> None:
    with pytest.raises(CaseError, match="reference labels of shape"):
        volume_table(_labels(), SPACING, gt_labels=np.zeros((2, 2, 2), np.uint8))
    with pytest.raises(CaseError, match="positive voxel sizes"):
        volume_table(_labels(), (1.0, 0.0, 1.0))
    with pytest.raises(CaseError, match=r"\(X, Y, Z\)"):
        volume_table(np.zeros((4, 4), np.uint8), SPACING)


def test_table_csv_content() -> None:
    rows = volume_table(_labels(), SPACING, gt_labels=_labels(200, 0, 480))
    data = table_csv(rows, case_id="Case-1")
    parsed = list(csv.DictReader(io.StringIO(data.decode("utf-8"))))
    assert list(parsed[0]) == ["case_id", "structure", "kind", "labels", "name", "voxels", "volume_ml",
                               "gt_voxels", "gt_volume_ml", "difference_ml"]
    assert [p["structure"] for p in parsed] == ["NCR", "ED", "ET", "TC", "WT"]
    assert parsed[4]["volume_ml"] == "3.1" and parsed[4]["gt_volume_ml"] == "1.0" and parsed[0]["case_id"] == "Case-1"
    plain = table_csv(volume_table(_labels(), SPACING)).decode()
    assert plain.splitlines()[0] == "structure,kind,labels,name,voxels,volume_ml"
    assert plain.splitlines()[1].endswith(",340,0.5") and len(plain.splitlines()) == 6


# ------------------------------------------------------------------------------------------------- images ---

def _synthetic_case(shape: tuple[int, int, int] = (16, 14, 10)) -> tuple:
    """A RAS case (spacing 1 x 1 x 2 mm) with a 3x3x3 tumour near the right-anterior-superior corner."""
    rng = np.random.default_rng(5)
    img = rng.integers(100, 800, size=shape).astype(np.int16)
    lab = np.zeros(shape, np.uint8)
    lab[11:14, 9:12, 6:9] = 2
    lab[12, 10, 7] = 4
    affine = np.diag([1.0, 1.0, 2.0, 1.0])
    case = assemble_case("SYN", {"flair": volume_from_array(img, affine, "flair.nii"),
                                 "t1": volume_from_array(img // 2, affine, "t1.nii")})
    return case, lab


def _coloured(png: bytes) -> np.ndarray:
    from PIL import Image

    rgb = np.asarray(Image.open(io.BytesIO(png)).convert("RGB")).astype(int)
    return np.argwhere((np.abs(rgb[..., 0] - rgb[..., 1]) > 20) | (np.abs(rgb[..., 1] - rgb[..., 2]) > 20))


def test_render_planes_radiological_orientation() -> None:
    case, lab = _synthetic_case()
    planes = render_planes(case, lab)
    assert [p.plane for p in planes] == ["axial", "coronal", "sagittal"]
    assert [p.index for p in planes] == [7, 10, 12]  # through the tumour core (the ET voxel), not the edema
    ax, cor, sag = planes
    assert (ax.left, ax.right, ax.top) == ("R", "L", "A") and (sag.left, sag.top) == ("A", "S")
    assert cor.aspect == pytest.approx(16 / 20)  # 16 x 1 mm wide, 10 x 2 mm tall
    for plane in planes:
        hits = _coloured(plane.png)
        assert hits.size > 0
        from PIL import Image

        w, h = Image.open(io.BytesIO(plane.png)).size
        # tumour is at high x (right), high y (anterior), high z (superior): top-left quadrant in every view
        assert hits[:, 0].mean() < h / 2 and hits[:, 1].mean() < w / 2
    with pytest.raises(CaseError, match="case grid"):
        render_planes(case, lab[:-1])
    with pytest.raises(CaseError, match="modality"):
        render_planes(case, lab, modality="t2")


def test_label_colours_used_in_overlay() -> None:
    case, lab = _synthetic_case()
    case = assemble_case("SYN", {"flair": volume_from_array(np.zeros(lab.shape, np.int16), np.eye(4), "f.nii")})
    from PIL import Image

    ax = render_planes(case, lab)[0]
    rgb = np.asarray(Image.open(io.BytesIO(ax.png)).convert("RGB"))
    colours = {tuple(int(v) for v in c) for c in rgb.reshape(-1, 3)}
    expected_ed = tuple(int(round(0.45 * c)) for c in LABEL_COLOURS[2])  # blended over black
    assert expected_ed in colours and (0, 0, 0) in colours


# -------------------------------------------------------------------------------------------------- PDF ---

@pytest.fixture
def real_case(tmp_path: Path):
    folder = make_case_dir(tmp_path, shape=(20, 18, 12), affine=np.diag([-0.5, -1.0, 3.0, 1.0]))
    return load_case_folder(folder)


def _pdf_text(pdf: bytes) -> tuple[pypdf.PdfReader, str]:
    reader = pypdf.PdfReader(io.BytesIO(pdf))
    return reader, "\n".join(page.extract_text() for page in reader.pages)


def test_pdf_contents(real_case) -> None:
    case = real_case
    pred = np.asarray(case.seg.data).copy()
    pred[pred == 1] = 2  # a different segmentation from the reference
    scores = score_case(pred, case.seg.data, case.spacing_mm)
    created = datetime(2024, 6, 1, 12, 30, tzinfo=UTC)
    inputs = ReportInputs(case=case, labels=pred, model_name="unet2d_test", model_sha256=MODEL_SHA, corrected=True,
                          gt_labels=np.asarray(case.seg.data), scores=scores, created_utc=created)
    pdf = build_pdf(inputs)
    assert pdf.startswith(b"%PDF")
    reader, text = _pdf_text(pdf)
    flat = _flat(text)
    assert len(reader.pages) == 3
    assert case.case_id in text and "unet2d_test" in text and MODEL_SHA in text
    for key, sha in case.input_hashes().items():
        assert sha in text, key
    assert flat.count(_flat(DISCLAIMER)) == 1 and flat.count("RESEARCH USE ONLY") == 1  # once, not on every page
    assert "2024-06-01 12:30:00 UTC" in text
    assert "Corrected by hand yes" in flat
    assert "LPS" in text and "0.5 x 1 x 3" in flat and "20 x 18 x 12" in flat
    for row in volume_table(pred, case.spacing_mm, case.seg.data):
        assert f"{row['name']} {row['voxels']} {row['volume_ml']:.1f} {row['gt_volume_ml']:.1f}" in flat
    assert f"WT {scores.regions['WT'].dice:.3f}" in flat and "Per-label Dice: NCR 0.000" in flat
    assert "radiological" in text and "Page 1 of 3" in text and "Page 3 of 3" in text
    for name in ("python", "numpy", "nibabel", "tensorflow", "fpdf2"):
        assert f"{name} {library_versions()[name]}" in flat
    assert len(reader.pages[0].images) == 0
    assert len(reader.pages[1].images) == 4  # axial, coronal, sagittal, the measurement
    assert len(reader.pages[2].images) == 0


def test_pdf_quality_flag_and_missing_modalities() -> None:
    case, lab = _synthetic_case()
    two = assemble_case(case.case_id, {"flair": case.images["flair"], "t1ce": case.images["t1"]})
    review = {"status": "review", "reasons": ["output: 93% of the tumour is mirrored across the midline"],
              "measures": {}, "missing_modalities": ["t1", "t2"]}
    text = _flat(_pdf_text(build_pdf(ReportInputs(case=two, labels=lab, model_name="m", model_sha256="n/a",
                                                   quality=review)))[1])
    assert "Quality check of the model's prediction" in text and "REVIEW" in text
    assert "93% of the tumour is mirrored" in text
    assert "Input sequences FLAIR, T1CE (missing: T1, T2 - segmented without them)" in text
    ok = {"status": "ok", "reasons": [], "measures": {}, "missing_modalities": []}
    text = _flat(_pdf_text(build_pdf(ReportInputs(case=case, labels=lab, model_name="m", model_sha256="n/a",
                                                  quality=ok, corrected=True)))[1])
    assert "OK - no warning sign found" in text and "REVIEW" not in text and "(before the corrections)" in text
    assert "Input sequences FLAIR, T1" in text and "missing:" not in text


def test_pdf_minimal_inputs_and_latin1(tmp_path: Path) -> None:
    case, lab = _synthetic_case()
    case = assemble_case("Fall-\u00fc-\u03bb", dict(case.images))  # latin-1 u-umlaut kept, Greek lambda replaced
    pdf = build_pdf(ReportInputs(case=case, labels=lab, model_name="m \u2013 external", model_sha256="n/a"))
    reader, text = _pdf_text(pdf)
    assert "Fall-\u00fc-?" in text and "m - external" in text and "Corrected by hand no" in _flat(text)
    assert "Reference" not in text and "Agreement" not in text  # no reference, no scores
    assert "Quality check" not in text  # no model flag given
    assert len(reader.pages[1].images) == 4
    assert latin1("a\u2264b \u00e9") == "a<=b \u00e9"
    with pytest.raises(CaseError, match="case grid"):
        build_pdf(ReportInputs(case=case, labels=lab[:, :, :-1], model_name="m", model_sha256="n/a"))


def test_pdf_names_the_runtime_that_ran_the_model() -> None:
    """Bug (issue 19.11): the PDF listed TensorFlow although inference ran in ONNX Runtime."""
    case, lab = _synthetic_case()
    onnx = _flat(_pdf_text(build_pdf(ReportInputs(case=case, labels=lab, model_name="m", model_sha256="n/a",
                                                  runtime="onnxruntime", description="Model prediction (model m)")))[1])
    assert f"Inference runtime ONNX Runtime {library_versions('onnxruntime')['onnxruntime']}" in onnx
    assert "tensorflow" not in onnx.lower() and "keras" not in onnx.lower()
    assert "Segmentation source Model prediction (model m)" in onnx
    tf = _flat(_pdf_text(build_pdf(ReportInputs(case=case, labels=lab, model_name="m", model_sha256="n/a",
                                                runtime="tensorflow")))[1])
    assert "Inference runtime TensorFlow" in tf and "onnxruntime" not in tf
    expert = _flat(_pdf_text(build_pdf(ReportInputs(case=case, labels=lab, model_name="file", model_sha256="n/a",
                                                    runtime="")))[1])
    assert "Inference runtime none (no model)" in expert and "tensorflow" not in expert.lower()


def test_save_pdf_atomic(tmp_path: Path) -> None:
    case, lab = _synthetic_case()
    out = save_pdf(tmp_path / "r" / "report.pdf", ReportInputs(case, lab, "m", MODEL_SHA))
    assert out.read_bytes().startswith(b"%PDF")
    assert [p.name for p in out.parent.iterdir()] == ["report.pdf"]
    assert report_file_name("../a b") == "a_b_report.pdf" and report_file_name("") == "case_report.pdf"


# ------------------------------------------------------------------ slices through the tumour core (issue 12) ---

def test_tumour_core_slices_ignore_larger_edema_elsewhere() -> None:
    lab = np.zeros((30, 30, 40), np.uint8)
    lab[2:28, 2:28, 3:8] = 2  # a large false edema low in the volume (3380 voxels, largest area on z = 3..7)
    lab[10:16, 12:20, 20:26] = 2  # edema around the core
    lab[11:14, 14:18, 22:24] = 1  # the core: NCR ...
    lab[12:15, 15:19, 24] = 4  # ... and ET touching it (one component)
    lab[25, 25, 35] = 4  # a one-voxel ET speck elsewhere: a smaller core component
    (x, y, z), basis = tumour_core_slices(lab)
    assert basis == "tumour core"
    assert 11 <= x <= 14 and 14 <= y <= 18 and z in (22, 23, 24)
    assert (x, y, z) == (12, 15, 22)  # most core voxels: x 12 and 13 tie (lowest wins), y 15..17, z 22 and 23


def test_tumour_core_slices_fall_back_to_whole_tumour_then_middle() -> None:
    lab = np.zeros((20, 22, 24), np.uint8)
    lab[2:4, 2:4, 2:4] = 2  # a small edema component
    lab[10:16, 12:15, 15:18] = 2  # the largest edema component
    assert tumour_core_slices(lab) == ((10, 12, 15), "whole tumour")
    assert tumour_core_slices(np.zeros((20, 22, 24), np.uint8)) == ((10, 11, 12), "middle")


def _images_on_page(page) -> list[tuple[str, int, float, float]]:
    """(name, pixel width, drawn width pt, drawn height pt) of every image drawn on a page (fpdf's 'cm Do')."""
    import re

    content = page.get_contents().get_data().decode("latin-1")
    xobjects = page["/Resources"]["/XObject"]
    out = []
    for w, h, _, _, name in re.findall(r"q ([\d.]+) 0 0 ([\d.]+) ([\d.]+) ([\d.]+) cm /(\w+) Do Q", content):
        out.append((name, int(xobjects[f"/{name}"].get_object()["/Width"]), float(w), float(h)))
    return out


def _case_with_lesion() -> tuple:
    """A RAS case 60 x 50 x 12 (1 x 1 x 2 mm) with a 24 x 14 mm ET block on z = 5 inside edema."""
    shape = (60, 50, 12)
    rng = np.random.default_rng(3)
    img = rng.integers(100, 800, size=shape).astype(np.int16)
    lab = np.zeros(shape, np.uint8)
    lab[10:50, 8:40, 3:8] = 2
    lab[20:44, 15:29, 5] = 4
    lab[20:44, 15:29, 4] = 1
    affine = np.diag([1.0, 1.0, 2.0, 1.0])
    case = assemble_case("LES", {"flair": volume_from_array(img, affine, "flair.nii")})
    return case, lab


def test_pdf_images_are_large_and_at_least_150_dpi() -> None:
    case, lab = _case_with_lesion()
    reader = pypdf.PdfReader(io.BytesIO(build_pdf(ReportInputs(case=case, labels=lab, model_name="m",
                                                               model_sha256="n/a"))))
    drawn = _images_on_page(reader.pages[1])
    assert len(drawn) == 4
    for name, px, w_pt, h_pt in drawn:
        dpi = px / (w_pt / 72.0)
        assert dpi >= 150.0, (name, dpi)
        assert max(w_pt, h_pt) >= 250.0, name  # 90 mm boxes (255 pt), against 59 mm (168 pt) before


def test_pdf_says_slices_count_from_0_and_draws_through_the_core() -> None:
    case, lab = _case_with_lesion()
    lab[30:40, 30:45, 10] = 2  # a larger edema-only area on z = 10 must not be pictured
    text = _flat(_pdf_text(build_pdf(ReportInputs(case=case, labels=lab, model_name="m", model_sha256="n/a")))[1])
    assert "Slice numbers count from 0 (the first slice is 0)" in text
    # the core (NCR on z = 4 + ET on z = 5, 336 voxels each: the tie goes to the lowest slice)
    assert "Axial slice z = 4 (slices 0-11)" in text
    assert "largest connected component of the tumour core" in text
    assert "Measurement: axial z = 5, lesion 1: " in text


def test_pdf_rano_section() -> None:
    case, lab = _case_with_lesion()
    lab[50:53, 40:43, 9] = 4  # a 3 x 3 mm speck: not measurable
    rano = measure_rano(lab, case.spacing_mm)
    big, speck = rano.lesions
    text = _flat(_pdf_text(build_pdf(ReportInputs(case=case, labels=lab, model_name="m", model_sha256="n/a")))[1])
    assert "Bidimensional measurement of enhancing tumour (RANO-style)" in text
    assert (f"1 5 {big.d1_mm:.1f} {big.d2_mm:.1f} {big.product_mm2:.0f} {big.volume_ml:.2f} yes yes") in text
    assert f"2 9 {speck.d1_mm:.1f} {speck.d2_mm:.1f} {speck.product_mm2:.0f} 0.02 no" in text  # 18 mm^3
    assert f"Sum of the products of the target lesions: {big.product_mm2:.0f} mm^2 = lesion 1" in text
    none = lab.copy()
    none[none == 4] = 1
    reader, text = _pdf_text(build_pdf(ReportInputs(case=case, labels=none, model_name="m", model_sha256="n/a")))
    assert "No enhancing tumour (label 4) in this segmentation: nothing to measure." in _flat(text)
    assert len(reader.pages[1].images) == 3  # no measurement picture


def test_pdf_lists_the_lesions_of_each_region() -> None:
    """The volume table counts the 26-connected components of WT, TC and ET beside the volumes (blank for the
    NCR and ED label rows), for the segmentation and, when given, the reference."""
    case, ref = _synthetic_case()  # one 3 x 3 x 3 edema cube holding one ET voxel: one lesion in each region
    lab = ref.copy()
    lab[1, 1, 1] = 2  # an edema speck far from the cube: a second WT lesion
    lab[3, 3, 3] = 4  # an enhancing speck: one more lesion in WT, TC and ET
    rows = {r["structure"]: r for r in volume_table(lab, case.spacing_mm, ref)}
    text = _flat(_pdf_text(build_pdf(ReportInputs(case=case, labels=lab, model_name="m", model_sha256="n/a",
                                                  gt_labels=ref)))[1])
    assert "Lesions Ref. lesions" in text
    for key, (n, n_ref) in {"WT": (3, 1), "TC": (2, 1), "ET": (2, 1)}.items():
        r = rows[key]
        assert (f"{r['name']} {r['voxels']} {r['volume_ml']:.1f} {r['gt_volume_ml']:.1f} {r['difference_ml']:+.1f} "
                f"{n} {n_ref}") in text, key
    ed = rows["ED"]  # label rows: no count; the next row's name follows the difference
    assert f"{ed['name']} {ed['voxels']} {ed['volume_ml']:.1f} {ed['gt_volume_ml']:.1f} {ed['difference_ml']:+.1f} ET" in text
    text = _flat(_pdf_text(build_pdf(ReportInputs(case=case, labels=lab, model_name="m", model_sha256="n/a")))[1])
    wt = rows["WT"]
    assert f"{wt['name']} {wt['voxels']} {wt['volume_ml']:.1f} 3 " in text and "Ref. lesions" not in text
    assert "26-connected" in text


def test_render_measurement_draws_both_diameters() -> None:
    from PIL import Image

    case, lab = _case_with_lesion()
    pic = render_measurement(case, lab)
    assert pic is not None and pic.plane == "axial" and pic.index == 5 and pic.aspect == pytest.approx(60 / 50)
    rgb = np.asarray(Image.open(io.BytesIO(pic.png)).convert("RGB")).astype(int)
    assert rgb.shape[1] == IMAGE_MAX_PX
    scale = IMAGE_MAX_PX / 60  # display pixels per voxel
    for colour in (MEASURE_D1_COLOUR, MEASURE_D2_COLOUR):
        hits = np.argwhere((np.abs(rgb - np.array(colour)) <= 2).all(-1))
        assert hits.size > 0, colour
        # inside the lesion's display box: columns 59-x for x 20..43 (radiological), rows 49-y for y 15..28
        cols, rows = hits[:, 1] / scale, hits[:, 0] / scale
        assert cols.min() >= 59 - 43 - 1 and cols.max() <= 59 - 20 + 2
        assert rows.min() >= 49 - 28 - 1 and rows.max() <= 49 - 15 + 2
    empty = np.where(lab == 4, 1, lab).astype(np.uint8)
    assert render_measurement(case, empty) is None
    with pytest.raises(CaseError, match="case grid"):
        render_measurement(case, lab[:, :, :-1])


def test_measurement_window_zooms_on_the_lesion() -> None:
    from core.analysis.measure import Lesion

    les = Lesion(index=1, slice_z=3, d1_endpoints=((90.0, 100.0), (110.0, 100.0)),
                 d2_endpoints=((100.0, 95.0), (100.0, 105.0)), d1_mm=20.0, d2_mm=10.0, product_mm2=200.0,
                 measurable=True, volume_ml=1.0)
    # a 60 mm square (more than 2.5 x 20 mm) centred on (100, 100)
    assert measurement_window(les, (240, 240), (1.0, 1.0)) == (70, 130, 70, 130)
    # anisotropic pixels: 60 mm = 120 voxels of 0.5 mm along x, 30 voxels of 2 mm along y; clipped to the slice
    assert measurement_window(les, (150, 240), (0.5, 2.0)) == (40, 149, 85, 115)
    big = Lesion(index=1, slice_z=3, d1_endpoints=((60.0, 100.0), (140.0, 100.0)),
                 d2_endpoints=((100.0, 80.0), (100.0, 120.0)), d1_mm=80.0, d2_mm=40.0, product_mm2=3200.0,
                 measurable=True, volume_ml=9.0)
    assert measurement_window(big, (240, 240), (1.0, 1.0)) == (0, 200, 0, 200)  # 2.5 x 80 = 200 mm


def test_render_measurement_of_a_small_lesion_is_zoomed() -> None:
    from PIL import Image

    shape = (120, 100, 4)
    img = np.full(shape, 400, np.int16)
    lab = np.zeros(shape, np.uint8)
    lab[40:52, 30:42, 2] = 4  # 12 x 12 mm: the picture shows 60 mm around it, not the 120 x 100 mm slice
    case = assemble_case("Z", {"flair": volume_from_array(img, np.eye(4), "f.nii")})
    pic = render_measurement(case, lab)
    assert pic is not None and pic.aspect == pytest.approx(1.0)
    rgb = np.asarray(Image.open(io.BytesIO(pic.png)).convert("RGB")).astype(int)
    d1 = np.argwhere((np.abs(rgb - np.array(MEASURE_D1_COLOUR)) <= 2).all(-1))
    # the diagonal of a 12 mm square spans about a fifth of a 61 mm wide picture
    extent = (d1[:, 1].max() - d1[:, 1].min()) / rgb.shape[1]
    assert 0.15 <= extent <= 0.25


def test_pdf_prints_the_disclaimer_once() -> None:
    case, lab = _case_with_lesion()
    reader, text = _pdf_text(build_pdf(ReportInputs(case=case, labels=lab, model_name="m", model_sha256="n/a")))
    flat = _flat(text)
    assert len(reader.pages) == 3
    assert flat.count(_flat(DISCLAIMER)) == 1 and flat.count("not a medical device") == 1
    assert flat.count("RESEARCH USE ONLY") == 1
    assert _flat(DISCLAIMER) in _flat(reader.pages[0].extract_text())  # on the first page, above everything else
