"""``python -m core info``: JSON description of a case; bad input exits 2 with one ``error:`` line."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from conftest import LPS_AFFINE, SHAPE, make_case_dir, random_seg, write_nifti

from core.__main__ import main
from core.config import PROJECT_ROOT


def _info(capsys: pytest.CaptureFixture[str], *args: str) -> dict:
    code = main(["info", *args])
    out, err = capsys.readouterr()
    assert code == 0, err
    assert err == ""
    return json.loads(out)


def _fails(capsys: pytest.CaptureFixture[str], *args: str) -> str:
    code = main(["info", *args])
    out, err = capsys.readouterr()
    assert code == 2
    assert out == ""
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    assert "Traceback" not in err
    return lines[0]


def test_case_folder(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    folder = make_case_dir(tmp_path)
    info = _info(capsys, str(folder))
    assert info["case_id"] == "BraTS2021_00000"
    assert list(info["modalities"]) == ["flair", "t1", "t1ce", "t2"]
    flair = info["modalities"]["flair"]
    assert flair["file"] == "BraTS2021_00000_flair.nii.gz"
    assert flair["shape"] == list(SHAPE)
    assert flair["dtype"] == "int16"
    assert flair["spacing_mm"] == [1.0, 1.0, 1.0]
    assert flair["orientation"] == "LPS"
    stored = np.asarray(nib.load(folder / flair["file"]).dataobj)
    assert (flair["intensity_min"], flair["intensity_max"]) == (int(stored.min()), int(stored.max()))

    seg = info["segmentation"]
    labels = random_seg()
    assert seg["label_convention"] == "2021"
    assert sorted(seg["labels"]) == ["0", "1", "2", "4"]
    for label, entry in seg["labels"].items():
        count = int(np.count_nonzero(labels == int(label)))
        assert entry["voxels"] == count
        assert entry["volume_ml"] == pytest.approx(count * 0.001, abs=1e-9)
    assert seg["labels"]["4"]["name"] == "ET"
    assert seg["tumour_volume_ml"] == pytest.approx(np.count_nonzero(labels) * 0.001, abs=1e-9)


def test_anisotropic_spacing_gives_volumes_from_the_header(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    affine = np.diag([-0.5, -0.8, 2.5, 1.0])
    labels = random_seg()
    path = write_nifti(tmp_path / "lesion_seg.nii.gz", labels.astype(np.float32), affine)
    seg = _info(capsys, str(path))["segmentation"]
    assert seg["spacing_mm"] == pytest.approx([0.5, 0.8, 2.5])
    assert seg["dtype"] == "float32"  # as stored, although labels load as uint8
    voxel_ml = 0.5 * 0.8 * 2.5 / 1000
    assert seg["voxel_volume_ml"] == pytest.approx(voxel_ml)
    n_et = int(np.count_nonzero(labels == 4))
    assert seg["labels"]["4"]["voxels"] == n_et
    assert seg["labels"]["4"]["volume_ml"] == pytest.approx(n_et * voxel_ml, abs=1e-6)


def test_brats2023_files_report_label_on_disk(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    folder = make_case_dir(tmp_path, naming="2023")
    files = sorted(str(p) for p in folder.iterdir())
    info = _info(capsys, *files)
    assert info["case_id"] == "BraTS-GLI-00000-000" and info["source"] == "files"
    assert set(info["modalities"]) == {"flair", "t1", "t1ce", "t2"}
    seg = info["segmentation"]
    assert seg["label_convention"] == "2023"
    assert seg["labels"]["4"]["label_on_disk"] == 3
    assert "3" not in seg["labels"]
    assert seg["labels"]["4"]["voxels"] == int(np.count_nonzero(random_seg(et_label=3) == 3))


def test_permuted_axes_report_stored_geometry(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    affine = np.array([[0, 0, 1.0, 0], [-2.0, 0, 0, 0], [0, 3.0, 0, 0], [0, 0, 0, 1]])
    path = write_nifti(tmp_path / "scan_t1.nii.gz", np.zeros((4, 5, 6), np.uint8), affine)
    t1 = _info(capsys, str(path))["modalities"]["t1"]
    assert t1["shape"] == [4, 5, 6]
    assert t1["orientation"] == "PSR"
    assert t1["spacing_mm"] == [2.0, 3.0, 1.0]
    assert t1["dtype"] == "uint8"
    assert t1["intensity_min"] == 0 and t1["intensity_max"] == 0


def test_unknown_names_are_listed_apart(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = write_nifti(tmp_path / "brain.nii", np.ones(SHAPE, np.float32) * 2.5)
    info = _info(capsys, str(path))
    assert info["modalities"] == {}
    assert info["other_images"]["brain.nii"]["intensity_max"] == 2.5


def test_nonexistent_path(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    line = _fails(capsys, str(tmp_path / "nowhere"))
    assert "nowhere" in line and "does not exist" in line


def test_bad_file_names_it(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    folder = make_case_dir(tmp_path)
    bad = folder / "BraTS2021_00000_t2.nii.gz"
    bad.write_bytes(bad.read_bytes()[:400])
    line = _fails(capsys, str(folder))
    assert "BraTS2021_00000_t2.nii.gz" in line and "gzip" in line


def test_folder_without_cases_and_with_several(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "empty").mkdir()
    assert "found none" in _fails(capsys, str(tmp_path / "empty"))
    make_case_dir(tmp_path / "many", "BraTS2021_00001", subfolder=False)
    make_case_dir(tmp_path / "many", "BraTS2021_00002", subfolder=False)
    assert "found 2" in _fails(capsys, str(tmp_path / "many"))


def test_mixed_folder_and_files_and_non_nifti(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    folder = make_case_dir(tmp_path)
    assert "one case folder" in _fails(capsys, str(folder), str(next(folder.iterdir())))
    text = tmp_path / "notes.txt"
    text.write_text("hello")
    assert "notes.txt" in _fails(capsys, str(text))
    fake = tmp_path / "x_flair.nii"
    fake.write_text("hello, I am not an image\n" * 20)
    assert "text file" in _fails(capsys, str(fake))


def test_inconsistent_case_is_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    folder = make_case_dir(tmp_path)
    write_nifti(folder / "BraTS2021_00000_t1.nii.gz", np.zeros((12, 10, 9), np.int16), LPS_AFFINE)
    line = _fails(capsys, str(folder))
    assert "T1" in line and "shape" in line


def test_bad_labels_are_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    folder = make_case_dir(tmp_path, with_seg=False)
    labels = random_seg()
    labels[0, 0, 1] = 7
    write_nifti(folder / "BraTS2021_00000_seg.nii.gz", labels)
    assert "7" in _fails(capsys, str(folder))


def test_subprocess(tmp_path: Path) -> None:
    folder = make_case_dir(tmp_path, naming="2020", gz=False)
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}
    ok = subprocess.run([sys.executable, "-m", "core", "info", str(folder)], cwd=PROJECT_ROOT, env=env,
                        capture_output=True, text=True, timeout=120, check=False)
    assert ok.returncode == 0, ok.stderr
    assert json.loads(ok.stdout)["case_id"] == "BraTS20_Training_001"
    bad = subprocess.run([sys.executable, "-m", "core", "info", str(tmp_path / "missing")], cwd=PROJECT_ROOT,
                         env=env, capture_output=True, text=True, timeout=120, check=False)
    assert bad.returncode == 2
    assert bad.stdout == ""
    assert bad.stderr.strip().startswith("error: ") and len(bad.stderr.strip().splitlines()) == 1
