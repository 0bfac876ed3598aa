"""Tests of ``python -m core segment``: outputs in the input's geometry, folder mode, errors."""

from __future__ import annotations

import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from conftest import LPS_AFFINE, make_case_dir

import core.cli.segment as segment_cli
from core.__main__ import main

SHAPE = (24, 20, 6)


pytestmark = pytest.mark.usefixtures("work_in_tmp")


def _lines(text: str) -> list[dict]:
    return [json.loads(line) for line in text.splitlines() if line.strip()]


def test_segment_one_lps_case(tmp_path: Path, tiny_unet: Path, capsys: pytest.CaptureFixture[str]) -> None:
    case = make_case_dir(tmp_path / "data", "BraTS2021_00042", shape=SHAPE, affine=LPS_AFFINE, with_seg=False)
    out = tmp_path / "out"
    code = main(["segment", str(case), "--out", str(out), "--model", str(tiny_unet), "--tta", "--probabilities",
                 "--batch-size", "4"])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    (summary,) = _lines(captured.out)
    assert summary["case_id"] == "BraTS2021_00042"
    assert summary["model"]["name"] == "tiny_unet" and len(summary["model"]["sha256"]) == 64
    assert set(summary["volumes_ml"]) == {"NCR", "ED", "ET", "WT", "TC"}
    assert set(summary["time_s"]) >= {"load", "predict", "write", "model_load"}
    assert "not for clinical diagnosis" in summary["disclaimer"]
    # a 24 x 20 x 6 mm "brain" is far below a whole brain (900-2100 mL): the flag asks for review and says why
    assert summary["quality"]["status"] == "review"
    assert any(r.startswith("input: brain volume") and "outside 900-2100 mL" in r for r in summary["quality"]["reasons"])
    assert summary["missing_modalities"] == [] and summary["postprocess"] == "argmax"

    src = nib.load(str(case / "BraTS2021_00042_flair.nii.gz"))
    seg_path = out / "BraTS2021_00042_seg.nii.gz"
    assert summary["outputs"]["seg"] == str(seg_path)
    seg = nib.load(str(seg_path))
    assert seg.shape == src.shape == SHAPE
    np.testing.assert_array_equal(seg.affine, src.affine)  # exactly the input's geometry (LPS)
    assert seg.get_data_dtype() == np.uint8
    labels = np.asarray(seg.dataobj)
    assert set(np.unique(labels).tolist()) <= {0, 1, 2, 4}

    prob = nib.load(str(out / "BraTS2021_00042_prob.nii.gz"))
    # 8-bit on disk with the NIfTI scale factor 1/255: readers get probabilities within 0.002
    assert prob.shape == (*SHAPE, 4) and prob.get_data_dtype() == np.uint8
    assert float(prob.dataobj.slope) == pytest.approx(1 / 255)
    np.testing.assert_array_equal(prob.affine, src.affine)
    p = prob.get_fdata()
    np.testing.assert_allclose(p.sum(axis=-1), 1.0, atol=4 * 0.5 / 255 + 5e-3)
    # the labels are the argmax of the written probabilities wherever the stored maximum is unique (rounding
    # keeps the order of two values, it can only make them equal), in the stored voxel order
    top = np.sort(p, axis=-1)
    unique = top[..., -1] > top[..., -2]
    assert unique.mean() > 0.9
    np.testing.assert_array_equal(np.array([0, 1, 2, 4])[p.argmax(axis=-1)][unique], labels[unique])

    unc = nib.load(str(out / "BraTS2021_00042_uncertainty.nii.gz"))
    assert unc.shape == SHAPE and unc.get_data_dtype() == np.uint8
    u = unc.get_fdata()
    assert u.min() >= 0.0 and u.max() <= 1.0 + 1e-6
    # volumes agree with the written labels (voxels are 1 mm^3)
    assert summary["volumes_ml"]["WT"] == pytest.approx(np.count_nonzero(labels) / 1000.0, abs=1e-3)
    # one audit event, with the input files' hashes and the model's hash
    from core.data.audit import read_events

    (event,) = read_events(action="segment")
    assert event["case_id"] == "BraTS2021_00042" and event["model_sha256"] == summary["model"]["sha256"]
    assert set(event["input_hashes"]) == {"flair", "t1", "t1ce", "t2"}
    assert event["extra"]["outputs"]["seg"] == str(seg_path)


def test_segment_a_folder_of_cases(tmp_path: Path, tiny_unet: Path, capsys: pytest.CaptureFixture[str]) -> None:
    data = tmp_path / "data"
    make_case_dir(data, "BraTS2021_00001", shape=SHAPE, seed=1)
    make_case_dir(data, "BraTS-GLI-00002-000", naming="2023", shape=SHAPE, seed=2, with_seg=False)
    out = tmp_path / "out"
    assert main(["segment", str(data), "--out", str(out), "--model", str(tiny_unet)]) == 0
    summaries = _lines(capsys.readouterr().out)
    assert sorted(s["case_id"] for s in summaries) == ["BraTS-GLI-00002-000", "BraTS2021_00001"]
    names = sorted(p.name for p in out.iterdir())
    # labels always; probabilities only with --probabilities; a manifest per case and summary.csv in folder mode
    assert names == ["BraTS-GLI-00002-000_manifest.json", "BraTS-GLI-00002-000_quality.json",
                     "BraTS-GLI-00002-000_seg.nii.gz", "BraTS2021_00001_manifest.json", "BraTS2021_00001_quality.json",
                     "BraTS2021_00001_seg.nii.gz", "summary.csv"]
    assert all(set(s["outputs"]) == {"seg", "quality"} for s in summaries)


def test_folder_mode_reports_a_bad_case_and_segments_the_rest(tmp_path: Path, tiny_unet: Path,
                                                              capsys: pytest.CaptureFixture[str]) -> None:
    data = tmp_path / "data"
    make_case_dir(data, "BraTS2021_00001", shape=SHAPE, seed=1)
    make_case_dir(data, "BraTS2021_00002", shape=SHAPE, seed=2, modalities=("t1", "t2"))
    code = main(["segment", str(data), "--out", str(tmp_path / "out"), "--model", str(tiny_unet)])
    captured = capsys.readouterr()
    assert code == 1
    assert [s["case_id"] for s in _lines(captured.out)] == ["BraTS2021_00001"]
    errors = [line for line in captured.err.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and errors[0].startswith("error: BraTS2021_00002:") and "FLAIR or T1CE" in errors[0]
    progress = [line for line in captured.err.splitlines() if line.startswith("[")]
    assert [line.split(" in ")[0] for line in progress] == ["[1/2] BraTS2021_00001: ok", "[2/2] BraTS2021_00002: error"]


def _one_error_line(err: str) -> str:
    lines = [line for line in err.strip().splitlines() if line.strip()]
    assert len(lines) == 1, err
    assert lines[0].startswith("error: ")
    return lines[0]


def test_n4_before_segmenting(tmp_path: Path, tiny_unet: Path, capsys: pytest.CaptureFixture[str]) -> None:
    case = make_case_dir(tmp_path, "BraTS2021_00005", shape=SHAPE, affine=LPS_AFFINE, with_seg=False)
    out = tmp_path / "out"
    assert main(["segment", str(case), "--out", str(out), "--model", str(tiny_unet), "--n4"]) == 0
    (summary,) = _lines(capsys.readouterr().out)
    assert summary["n4"] is True and summary["time_s"]["n4"] > 0
    seg = nib.load(str(out / "BraTS2021_00005_seg.nii.gz"))
    np.testing.assert_array_equal(seg.affine, nib.load(str(case / "BraTS2021_00005_flair.nii.gz")).affine)


def test_too_few_modalities_exits_2(tmp_path: Path, tiny_unet: Path, capsys: pytest.CaptureFixture[str]) -> None:
    case = make_case_dir(tmp_path, "BraTS2021_00003", shape=SHAPE, modalities=("t1", "t2"))
    out = tmp_path / "out"
    code = main(["segment", str(case), "--out", str(out), "--model", str(tiny_unet)])
    captured = capsys.readouterr()
    assert code == 2 and captured.out == ""
    line = _one_error_line(captured.err)
    assert "FLAIR or T1CE" in line and "missing FLAIR, T1CE)" in line
    assert not out.exists() or not any(out.iterdir())


def test_flair_and_t1ce_only_segments_and_says_so(tmp_path: Path, tiny_unet: Path,
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    case = make_case_dir(tmp_path, "BraTS2021_00004", shape=SHAPE, modalities=("flair", "t1ce"))
    out = tmp_path / "out"
    assert main(["segment", str(case), "--out", str(out), "--model", str(tiny_unet)]) == 0
    (summary,) = _lines(capsys.readouterr().out)
    assert summary["modalities"] == ["flair", "t1ce"]
    assert summary["missing_modalities"] == ["t1", "t2"]
    # the tiny model was not trained with modality dropout: the flag asks for review and says why
    assert summary["quality"]["status"] == "review"
    assert any("T1, T2 missing" in r for r in summary["quality"]["reasons"])
    written = json.loads((out / "BraTS2021_00004_quality.json").read_text())
    assert written["status"] == "review" and written["missing_modalities"] == ["t1", "t2"]
    assert set(written["measures"]) >= {"wt_ml", "symmetry", "islands", "mean_entropy", "brain_ml"}


def test_missing_model_folder_exits_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    case = make_case_dir(tmp_path, shape=SHAPE)
    code = main(["segment", str(case), "--out", str(tmp_path / "out"), "--model", str(tmp_path / "no_such_model")])
    assert code == 2
    assert "does not exist" in _one_error_line(capsys.readouterr().err)


def test_not_a_case_folder_exits_2(tmp_path: Path, tiny_unet: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "empty").mkdir()
    assert main(["segment", str(tmp_path / "empty"), "--out", str(tmp_path / "o"), "--model", str(tiny_unet)]) == 2
    assert "found none" in _one_error_line(capsys.readouterr().err)
    assert main(["segment", str(tmp_path / "nowhere"), "--out", str(tmp_path / "o"), "--model", str(tiny_unet)]) == 2
    assert "not a folder" in _one_error_line(capsys.readouterr().err)


def test_bad_batch_size_exits_2(tmp_path: Path, tiny_unet: Path, capsys: pytest.CaptureFixture[str]) -> None:
    case = make_case_dir(tmp_path, shape=SHAPE)
    assert main(["segment", str(case), "--out", str(tmp_path / "o"), "--model", str(tiny_unet),
                 "--batch-size", "0"]) == 2
    assert "batch-size" in _one_error_line(capsys.readouterr().err)


def test_model_by_name_and_default(tmp_path: Path, tiny_unet: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(segment_cli, "MODELS_DIR", tiny_unet.parent)
    assert segment_cli.resolve_model_path("tiny_unet") == tiny_unet
    assert segment_cli.resolve_model_path(str(tiny_unet)) == tiny_unet
    monkeypatch.setenv("BRATS_MODEL", str(tiny_unet))
    assert segment_cli.resolve_model_path(None) == tiny_unet
    with pytest.raises(ValueError, match="does not exist"):
        segment_cli.resolve_model_path("../tiny_unet_missing")


def test_a_command_imports_only_its_own_module() -> None:
    """``python -m core segment`` builds only the segment subparser: the other commands' modules (and
    TensorFlow) stay unimported, which keeps a segmentation process short; ``--help`` still lists them all."""
    import subprocess
    import sys

    code = ("import sys; from core.__main__ import build_parser; p = build_parser('segment'); "
            "p.parse_args(['segment', 'CASE', '--out', 'DIR']); "
            "print(sorted(m for m in sys.modules if m.startswith('core.cli.')), 'tensorflow' in sys.modules); "
            "print(build_parser().format_usage().replace(chr(10), ' '))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         cwd=Path(__file__).resolve().parent.parent).stdout.splitlines()
    assert out[0] == "['core.cli.common', 'core.cli.segment'] False"  # its own module and the shared one
    for name in ("segment", "train", "report", "export-seg"):
        assert name in out[1]


def test_shipped_model_segments_a_real_case_where_the_tumour_is(tmp_path: Path, shared_data: Path,
                                                                capsys: pytest.CaptureFixture[str]) -> None:
    """End to end on a real BraTS case with the shipped model (2-D + 3-D networks, its own post-processing): the
    labels written in the file's own (LPS) geometry lie on the expert's tumour, not on its mirror image. The case
    was in the shipped model's training set: a check of orientation and of the whole path, not an accuracy figure
    (those come from the cross-validation in the model card)."""
    case = shared_data / "brats" / "train" / "BraTS2021_00000"
    out = tmp_path / "out"
    code = main(["segment", str(case), "--out", str(out)])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    (summary,) = _lines(captured.out)
    assert summary["postprocess"].startswith("2-D + 3-D networks")
    from core.config import DEFAULT_MODEL_NAME, MODELS_DIR
    from core.engine.postprocess import PostprocessSpec

    shipped_rules = PostprocessSpec.load(MODELS_DIR / DEFAULT_MODEL_NAME).label.partition(", ")[2]
    assert shipped_rules and summary["postprocess"].endswith(shipped_rules)  # the model's own rules were applied
    seg_img = nib.load(str(out / "BraTS2021_00000_seg.nii.gz"))
    gt_img = nib.load(str(case / "BraTS2021_00000_seg.nii.gz"))
    assert np.allclose(seg_img.affine, gt_img.affine)  # written back in the input's own geometry
    pred, gt = np.asarray(seg_img.dataobj), np.asarray(gt_img.dataobj)
    assert set(np.unique(pred).tolist()) <= {0, 1, 2, 4}

    def dice(a: np.ndarray, b: np.ndarray) -> float:
        return float(2 * np.count_nonzero(a & b) / (np.count_nonzero(a) + np.count_nonzero(b)))

    wt_pred, wt_gt = pred > 0, gt > 0
    assert dice(wt_pred, wt_gt) > 0.85
    assert dice(wt_pred[::-1], wt_gt) < 0.1  # the tumour is lateral: a left-right mirrored output would miss it
    assert dice(np.isin(pred, (1, 4)), np.isin(gt, (1, 4))) > 0.8 and dice(pred == 4, gt == 4) > 0.75


def test_segment_puts_each_label_on_its_marker_voxels(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A known network (class = bright channel) on an LPS marker case through ``segment``: the written labels,
    and the argmax of the written probabilities, lie on the very voxels of their markers (a mirrored output fails)."""
    from test_inference import ALL4, assert_labels_at, bright_channel_model, expected_stored_labels, write_marker_case

    from core.engine.model import save_for_inference
    from core.engine.preprocess import PreprocessSpec

    folder = tmp_path / "models" / "bright"
    save_for_inference(bright_channel_model(), folder,
                       PreprocessSpec(channels=ALL4, input_size=32, normalisation="slice_max", crop="none"))
    case = write_marker_case(tmp_path / "Marker_001")
    out = tmp_path / "out"
    assert main(["segment", str(case), "--out", str(out), "--model", str(folder), "--probabilities"]) == 0
    (summary,) = _lines(capsys.readouterr().out)
    seg = nib.load(summary["outputs"]["seg"])
    assert nib.aff2axcodes(seg.affine) == ("L", "P", "S")
    assert_labels_at(np.asarray(seg.dataobj), expected_stored_labels())
    prob = nib.load(summary["outputs"]["prob"]).get_fdata()
    assert_labels_at(np.array([0, 1, 2, 4], dtype=np.uint8)[prob.argmax(axis=-1)], expected_stored_labels())
