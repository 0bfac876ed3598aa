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

from core.analysis.metrics import score_case
from core.analysis.report import (
    ReportInputs,
    build_pdf,
    latin1,
    library_versions,
    render_planes,
    report_file_name,
    round_ml,
    save_pdf,
    table_csv,
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
    assert [p.index for p in planes] == [6, 9, 11]  # first slice of largest tumour area along z, y, x
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
    assert len(reader.pages) == 2
    assert case.case_id in text and "unet2d_test" in text and MODEL_SHA in text
    for key, sha in case.input_hashes().items():
        assert sha in text, key
    assert _flat(DISCLAIMER) in flat and "RESEARCH USE ONLY" in text
    assert "2024-06-01 12:30:00 UTC" in text
    assert "Corrected by hand yes" in flat
    assert "LPS" in text and "0.5 x 1 x 3" in flat and "20 x 18 x 12" in flat
    for row in volume_table(pred, case.spacing_mm, case.seg.data):
        assert f"{row['name']} {row['voxels']} {row['volume_ml']:.1f} {row['gt_volume_ml']:.1f}" in flat
    assert f"WT {scores.regions['WT'].dice:.3f}" in flat and "Per-label Dice: NCR 0.000" in flat
    assert "radiological" in text and "Page 1 of 2" in text and "Page 2 of 2" in text
    for name in ("python", "numpy", "nibabel", "tensorflow", "fpdf2"):
        assert f"{name} {library_versions()[name]}" in flat
    assert len(reader.pages[0].images) == 3  # axial, coronal, sagittal
    assert len(reader.pages[1].images) == 0


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
    assert len(reader.pages[0].images) == 3
    assert latin1("a\u2264b \u00e9") == "a<=b \u00e9"
    with pytest.raises(CaseError, match="case grid"):
        build_pdf(ReportInputs(case=case, labels=lab[:, :, :-1], model_name="m", model_sha256="n/a"))


def test_save_pdf_atomic(tmp_path: Path) -> None:
    case, lab = _synthetic_case()
    out = save_pdf(tmp_path / "r" / "report.pdf", ReportInputs(case, lab, "m", MODEL_SHA))
    assert out.read_bytes().startswith(b"%PDF")
    assert [p.name for p in out.parent.iterdir()] == ["report.pdf"]
    assert report_file_name("../a b") == "a_b_report.pdf" and report_file_name("") == "case_report.pdf"
