"""core/engine/batch.py: resumable folder runs, failure isolation, worker processes and a local Dask cluster
(loopback only), on small synthetic cases and a tiny ONNX-exported U-Net."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from conftest import make_case_dir, save_tiny_unet

from core.__main__ import main
from core.data.cases import discover_cases
from core.engine import batch
from core.engine.batch import SUMMARY_FIELDS, SegmentOptions, run_batch
from core.errors import BratsViewerError

SHAPE = (24, 20, 6)


pytestmark = pytest.mark.usefixtures("work_in_tmp")


def make_data(root: Path, bad: bool = False) -> Path:
    for i in (1, 2, 3):
        make_case_dir(root, f"BraTS2021_0000{i}", shape=SHAPE, seed=i, with_seg=False)
    if bad:  # too few modalities: refused with a one-line reason
        make_case_dir(root, "BraTS2021_00009", shape=SHAPE, seed=9, modalities=("t1", "t2"), with_seg=False)
    return root


def read_summary(out: Path) -> dict[str, dict[str, str]]:
    with open(out / "summary.csv", newline="") as fh:
        reader = csv.DictReader(fh)
        assert tuple(reader.fieldnames or ()) == SUMMARY_FIELDS
        return {r["case_id"]: r for r in reader}


def labels(out: Path, case_id: str) -> np.ndarray:
    return np.asarray(nib.load(str(out / f"{case_id}_seg.nii.gz")).dataobj)


def test_resume_skips_unchanged_cases_and_redoes_changed_ones(tmp_path: Path, tiny_onnx: Path) -> None:
    data, out = make_data(tmp_path / "data"), tmp_path / "out"
    opts = SegmentOptions(str(tiny_onnx))
    refs = discover_cases(data)
    first = run_batch(refs, out, opts)
    assert sorted(r["status"] for r in first) == ["ok"] * 3
    assert all(r["summary"]["model"]["runtime"] == "onnxruntime" for r in first)
    summary = read_summary(out)
    assert set(summary) == {"BraTS2021_00001", "BraTS2021_00002", "BraTS2021_00003"}
    row = next(r for r in first if r["case_id"] == "BraTS2021_00002")
    assert float(summary["BraTS2021_00002"]["WT_ml"]) == pytest.approx(row["summary"]["volumes_ml"]["WT"])
    assert summary["BraTS2021_00002"]["quality"] == "review"  # a 3 mL "brain": never a whole brain

    again = run_batch(refs, out, opts)
    assert sorted(r["status"] for r in again) == ["skipped"] * 3
    assert read_summary(out)["BraTS2021_00002"]["WT_ml"] == summary["BraTS2021_00002"]["WT_ml"]

    # one input changes: only that case runs again
    make_case_dir(data, "BraTS2021_00002", shape=SHAPE, seed=42, with_seg=False)
    third = {r["case_id"]: r["status"] for r in run_batch(discover_cases(data), out, opts)}
    assert third == {"BraTS2021_00001": "skipped", "BraTS2021_00002": "ok", "BraTS2021_00003": "skipped"}

    # other outputs asked for: every case runs again; a deleted output also makes its case run again
    (out / "BraTS2021_00003_seg.nii.gz").unlink()
    fourth = {r["case_id"]: r["status"] for r in run_batch(refs, out, SegmentOptions(str(tiny_onnx)))}
    assert fourth["BraTS2021_00003"] == "ok" and fourth["BraTS2021_00001"] == "skipped"
    fifth = run_batch(refs, out, SegmentOptions(str(tiny_onnx), probabilities=True))
    assert sorted(r["status"] for r in fifth) == ["ok"] * 3 and (out / "BraTS2021_00001_prob.nii.gz").is_file()


def test_workers_isolate_a_bad_case_and_match_one_process(tmp_path: Path, tiny_onnx: Path) -> None:
    data = make_data(tmp_path / "data", bad=True)
    one, two = tmp_path / "one", tmp_path / "two"
    seen: list[tuple[str, int, int]] = []
    rows = run_batch(discover_cases(data), two, SegmentOptions(str(tiny_onnx)), workers=2,
                     on_row=lambda row, done, total: seen.append((row["status"], done, total)))
    status = {r["case_id"]: r for r in rows}
    assert status["BraTS2021_00009"]["status"] == "error"
    assert "FLAIR or T1CE" in status["BraTS2021_00009"]["error"]
    assert [s for s in status.values() if s["status"] == "ok"].__len__() == 3
    assert [d for _, d, _ in seen] == [1, 2, 3, 4] and {t for _, _, t in seen} == {4}
    assert "FLAIR or T1CE" in read_summary(two)["BraTS2021_00009"]["error"]
    run_batch(discover_cases(data), one, SegmentOptions(str(tiny_onnx)))
    for i in (1, 2, 3):
        np.testing.assert_array_equal(labels(one, f"BraTS2021_0000{i}"), labels(two, f"BraTS2021_0000{i}"))


def test_workers_below_one_are_refused(tmp_path: Path, tiny_onnx: Path) -> None:
    with pytest.raises(BratsViewerError, match="expected --workers >= 1, got 0"):
        run_batch([], tmp_path, SegmentOptions(str(tiny_onnx)), workers=0)


def test_cli_on_a_local_dask_cluster(tmp_path: Path, tiny_onnx: Path, capsys: pytest.CaptureFixture[str]) -> None:
    distributed = pytest.importorskip("distributed")
    data = make_data(tmp_path / "data", bad=True)
    out, ref = tmp_path / "dask", tmp_path / "ref"
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True, host="127.0.0.1",
                                  dashboard_address=None) as cluster:
        assert cluster.scheduler_address.startswith("tcp://127.0.0.1:")
        code = main(["segment", str(data), "--out", str(out), "--model", str(tiny_onnx), "--dask",
                     cluster.scheduler_address])
    captured = capsys.readouterr()
    assert code == 1  # the bad case failed, the others were segmented
    summaries = [json.loads(line) for line in captured.out.splitlines() if line.strip()]
    assert sorted(s["case_id"] for s in summaries) == ["BraTS2021_00001", "BraTS2021_00002", "BraTS2021_00003"]
    assert any(line.startswith("error: BraTS2021_00009:") for line in captured.err.splitlines())
    assert main(["segment", str(data), "--out", str(ref), "--model", str(tiny_onnx)]) == 1
    for i in (1, 2, 3):
        np.testing.assert_array_equal(labels(out, f"BraTS2021_0000{i}"), labels(ref, f"BraTS2021_0000{i}"))


def test_dask_address_that_does_not_answer_is_one_error_line(tmp_path: Path, tiny_onnx: Path,
                                                             capsys: pytest.CaptureFixture[str]) -> None:
    pytest.importorskip("distributed")
    data = make_data(tmp_path / "data")
    code = main(["segment", str(data), "--out", str(tmp_path / "out"), "--model", str(tiny_onnx), "--dask",
                 "tcp://127.0.0.1:9"])
    captured = capsys.readouterr()
    assert code == 2 and captured.err.strip().startswith("error: expected a Dask scheduler at 'tcp://127.0.0.1:9'")


def test_resume_redoes_every_case_when_the_model_changes(tmp_path: Path) -> None:
    """Same folder, same options, other weights in the model folder: nothing is skipped, the manifests name the
    new model."""
    data, out = make_data(tmp_path / "data"), tmp_path / "out"
    model = save_tiny_unet(tmp_path / "models" / "swapped", seed=1)
    refs = discover_cases(data)
    first = run_batch(refs, out, SegmentOptions(str(model)))
    assert sorted(r["status"] for r in first) == ["ok"] * 3
    assert sorted(r["status"] for r in run_batch(refs, out, SegmentOptions(str(model)))) == ["skipped"] * 3
    save_tiny_unet(model, seed=2)  # the model is swapped in place
    batch._LOADED.clear()  # each `segment` run is a new process: nothing of the old model is held
    again = run_batch(refs, out, SegmentOptions(str(model)))
    assert sorted(r["status"] for r in again) == ["ok"] * 3
    new_sha = again[0]["summary"]["model"]["sha256"]
    assert new_sha != first[0]["summary"]["model"]["sha256"]
    assert all(json.loads((out / f"{r['case_id']}_manifest.json").read_text())["model_sha256"] == new_sha
               for r in again)
