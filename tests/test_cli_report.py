"""Tests of ``python -m core report`` run in-process through core.__main__.main on a synthetic case folder."""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import pypdf
import pytest
from conftest import LPS_AFFINE, SHAPE, make_case_dir, write_nifti

from core.__main__ import main
from core.data.audit import read_events
from core.data.cases import load_case_folder

SHA = "f00d" * 16


@pytest.fixture
def work(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    folder = tmp_path / "work"
    monkeypatch.setenv("BRATS_VIEWER_WORK_DIR", str(folder))
    return folder


def _pred(shape: tuple[int, int, int] = SHAPE) -> np.ndarray:
    """Stored-order labels: 10 NCR, 50 ED, 25 ET voxels (3 mm^3 voxels with the affine below)."""
    lab = np.zeros(shape, np.uint8)
    flat = lab.ravel()
    flat[:10] = 1
    flat[10:60] = 2
    flat[60:85] = 4
    return lab


AFFINE = LPS_AFFINE @ np.diag([1.0, 1.0, 3.0, 1.0])  # 1 x 1 x 3 mm voxels


def _run(capsys: pytest.CaptureFixture[str], argv: list[str]) -> tuple[int, str, str]:
    code = main(["report", *argv])
    out = capsys.readouterr()
    return code, out.out, out.err


def test_report_from_case_folder(tmp_path: Path, work: Path, capsys: pytest.CaptureFixture[str]) -> None:
    case_dir = make_case_dir(tmp_path / "data", affine=AFFINE)
    seg = write_nifti(tmp_path / "pred" / "BraTS2021_00000_seg.nii.gz", _pred(), AFFINE)
    out_pdf = tmp_path / "out" / "report.pdf"
    code, out, err = _run(capsys, [str(case_dir), "--seg", str(seg), "--out", str(out_pdf),
                                   "--model-name", "unet-test", "--model-sha", SHA, "--corrected"])
    assert code == 0 and err == ""
    summary = json.loads(out)
    # voxel 3 mm^3: 10 -> 0.03 -> 0.0; 50 -> 0.15 -> 0.2 (half up); 25 -> 0.075 -> 0.1; TC 35 -> 0.105 -> 0.1;
    # WT 85 -> 0.255 -> 0.3
    assert summary["volumes_ml"] == {"NCR": 0.0, "ED": 0.2, "ET": 0.1, "TC": 0.1, "WT": 0.3}
    assert summary["out"] == str(out_pdf) and summary["model_sha256"] == SHA and summary["corrected"] is True
    assert summary["reference_volumes_ml"] is not None and 0 <= summary["scores"]["WT_dice"] <= 1
    reader = pypdf.PdfReader(io.BytesIO(out_pdf.read_bytes()))
    text = "\n".join(p.extract_text() for p in reader.pages)
    case = load_case_folder(case_dir)
    assert case.case_id in text and SHA in text and "unet-test" in text
    assert all(sha in text for sha in case.input_hashes().values())
    assert len(reader.pages[1].images) == 4  # the images page: three planes and the RANO measurement
    events = read_events(work / "audit.log.jsonl")
    assert len(events) == 1 and events[0]["action"] == "export_pdf" and events[0]["case_id"] == case.case_id
    assert events[0]["model_sha256"] == SHA and events[0]["input_hashes"]["flair"] == case.images["flair"].sha256
    assert events[0]["extra"]["pdf_sha256"] == summary["pdf_sha256"]


def test_report_with_the_quality_flag_of_segment(tmp_path: Path, work: Path,
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    case_dir = make_case_dir(tmp_path / "data", affine=AFFINE)
    seg = write_nifti(tmp_path / "pred" / "BraTS2021_00000_seg.nii.gz", _pred(), AFFINE)
    q = tmp_path / "pred" / "BraTS2021_00000_quality.json"
    q.write_text(json.dumps({"status": "review", "reasons": ["input: FLAIR intensities differ"],
                             "measures": {}, "missing_modalities": []}))
    out_pdf = tmp_path / "r.pdf"
    code, out, err = _run(capsys, [str(case_dir), "--seg", str(seg), "--out", str(out_pdf), "--quality", str(q)])
    assert code == 0 and json.loads(out)["quality"] == "review"
    text = "\n".join(p.extract_text() for p in pypdf.PdfReader(io.BytesIO(out_pdf.read_bytes())).pages)
    assert "REVIEW" in text and "FLAIR intensities differ" in text
    q.write_text('{"status": "maybe"}')
    code, out, err = _run(capsys, [str(case_dir), "--seg", str(seg), "--out", str(out_pdf), "--quality", str(q)])
    assert code == 2 and "quality flag" in err


def test_report_from_files_defaults(tmp_path: Path, work: Path, capsys: pytest.CaptureFixture[str]) -> None:
    case_dir = make_case_dir(tmp_path / "data", with_seg=False)
    files = sorted(str(p) for p in case_dir.iterdir())
    seg = write_nifti(tmp_path / "seg.nii.gz", _pred())
    out_pdf = tmp_path / "r.pdf"
    audit = tmp_path / "custom_audit.jsonl"
    code, out, _ = _run(capsys, [*files, "--seg", str(seg), "--out", str(out_pdf), "--audit-log", str(audit)])
    assert code == 0
    summary = json.loads(out)
    assert summary["model_name"] == "unknown (external segmentation)" and summary["model_sha256"] == "n/a"
    assert summary["scores"] is None and summary["reference_volumes_ml"] is None
    assert summary["volumes_ml"]["WT"] == 0.1  # 85 x 1 mm^3
    assert len(read_events(audit)) == 1 and not (work / "audit.log.jsonl").exists()
    assert out_pdf.read_bytes().startswith(b"%PDF")


def test_report_brats2023_labels(tmp_path: Path, work: Path, capsys: pytest.CaptureFixture[str]) -> None:
    case_dir = make_case_dir(tmp_path / "data", naming="2023", with_seg=False)
    pred = _pred()
    pred[pred == 4] = 3  # 2023 files store ET as 3
    seg = write_nifti(tmp_path / "BraTS-GLI-00000-000-seg.nii.gz", pred)
    code, out, _ = _run(capsys, [str(case_dir), "--seg", str(seg), "--out", str(tmp_path / "r.pdf")])
    assert code == 0 and json.loads(out)["volumes_ml"]["ET"] == 0.0  # 25 x 1 mm^3 = 0.025 -> 0.0


@pytest.mark.parametrize("kind", ["shape", "affine", "labels"])
def test_report_mismatched_seg_exit_2(tmp_path: Path, work: Path, capsys: pytest.CaptureFixture[str],
                                      kind: str) -> None:
    case_dir = make_case_dir(tmp_path / "data")
    if kind == "shape":
        seg = write_nifti(tmp_path / "seg.nii.gz", _pred((12, 10, 7)))
    elif kind == "affine":
        shifted = LPS_AFFINE.copy()
        shifted[0, 3] += 0.01
        seg = write_nifti(tmp_path / "seg.nii.gz", _pred(), shifted)
    else:
        bad = _pred()
        bad[0, 0, 0] = 7
        seg = write_nifti(tmp_path / "seg.nii.gz", bad)
    out_pdf = tmp_path / "r.pdf"
    code, out, err = _run(capsys, [str(case_dir), "--seg", str(seg), "--out", str(out_pdf)])
    assert code == 2 and out == ""
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: seg.nii.gz: ")
    assert {"shape": "shape", "affine": "affine", "labels": "labels"}[kind] in lines[0]
    assert not out_pdf.exists() and read_events(work / "audit.log.jsonl") == []


def test_report_missing_case_exit_2(tmp_path: Path, work: Path, capsys: pytest.CaptureFixture[str]) -> None:
    seg = write_nifti(tmp_path / "seg.nii.gz", _pred())
    code, _, err = _run(capsys, [str(tmp_path / "nope"), "--seg", str(seg), "--out", str(tmp_path / "r.pdf")])
    assert code == 2 and len(err.strip().splitlines()) == 1 and "nope" in err


def test_report_volumes_on_a_tilted_grid_come_from_the_determinant(tmp_path: Path, work: Path,
                                                                   capsys: pytest.CaptureFixture[str]) -> None:
    # 1 x 1 x 3 mm steps with the slices stepped 60 deg off the normal: 1.5 mm apart, 1.5 mm^3 voxels, not 3.
    tilt = np.radians(60.0)
    sheared = LPS_AFFINE @ np.array([[1.0, 0, 0, 0], [0, 1.0, 3.0 * np.sin(tilt), 0], [0, 0, 3.0 * np.cos(tilt), 0],
                                     [0, 0, 0, 1.0]])
    case_dir = make_case_dir(tmp_path / "data", with_seg=False, affine=sheared)
    lab = np.zeros(SHAPE, np.uint8)
    lab.ravel()[:200] = 2  # 200 x 1.5 mm^3 = 0.3 mL (the spacing product would say 0.6 mL)
    seg = write_nifti(tmp_path / "seg.nii.gz", lab, sheared)
    out_pdf = tmp_path / "r.pdf"
    code, out, _ = _run(capsys, [str(case_dir), "--seg", str(seg), "--out", str(out_pdf)])
    assert code == 0
    assert json.loads(out)["volumes_ml"]["WT"] == 0.3
    text = "".join(page.extract_text() for page in pypdf.PdfReader(io.BytesIO(out_pdf.read_bytes())).pages)
    assert "voxel volume 1.5 mm^3" in text
