"""Background training jobs (core/app/jobs.py): real tiny runs on synthetic cases, stop, stale job files, and the
active-model marker. Everything is written under ``tmp_path`` (work folder via BRATS_VIEWER_WORK_DIR)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest
from conftest import make_case_dir

from core import config
from core.app import jobs
from core.engine.training import read_history, read_progress

TINY = ["--input-size", "32", "--base-filters", "4", "--depth", "2", "--batch-size", "4", "--no-augment"]
THREADS = {"TF_NUM_INTRAOP_THREADS": "1", "TF_NUM_INTEROP_THREADS": "1", "OMP_NUM_THREADS": "1"}
TIMEOUT_S = 180.0


@pytest.fixture
def work(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv(config.WORK_DIR_ENV, str(tmp_path / "work"))
    return tmp_path


@pytest.fixture
def data(tmp_path: Path) -> Path:
    root = tmp_path / "data"
    make_case_dir(root, "BraTS2021_00001", seed=1)
    make_case_dir(root, "BraTS2021_00002", seed=2)
    return root


@pytest.fixture
def cleanup():
    """Kill (by pid) any job a test leaves running."""
    yield
    job = jobs.read_job()
    if job and jobs.is_alive(job):
        try:
            os.killpg(int(job["pid"]), 9)
        except OSError:
            pass


def wait_for(predicate, timeout_s: float = TIMEOUT_S, step_s: float = 0.5) -> dict:
    deadline = time.monotonic() + timeout_s
    status = jobs.job_status()
    while time.monotonic() < deadline:
        status = jobs.job_status()
        if predicate(status):
            return status
        time.sleep(step_s)
    pytest.fail(f"timed out waiting; last status {status['state']}, log:\n{status.get('log_tail', '')}")


def test_no_job_is_idle(work: Path) -> None:
    status = jobs.job_status()
    assert status["state"] == "idle"
    assert status["alive"] is False


def test_tiny_job_finishes_and_second_is_refused(work: Path, data: Path, cleanup: None) -> None:
    out = work / "models" / "tiny"
    args = ["--data", str(data), *TINY, "--epochs", "2", "--steps-per-epoch", "2"]
    job = jobs.start_training(args, out, env=THREADS)
    assert job["pid"] > 0 and job["out_dir"] == str(out.resolve())
    recorded = json.loads((work / "work" / "jobs" / "current.json").read_text())
    assert recorded["pid"] == job["pid"] and recorded["command"][1:4] == ["-m", "core", "train"]
    # One at a time: refused while the first is alive.
    if jobs.is_alive(job):
        with pytest.raises(jobs.JobError, match="no training running"):
            jobs.start_training(args, work / "models" / "other", env=THREADS)
    status = wait_for(lambda s: not s["alive"])
    assert status["state"] == "finished", status["log_tail"]
    assert status["returncode"] == 0
    assert (out / "model.keras").is_file()
    assert (out / "model_card.json").is_file()
    assert len(read_history(out)) == 2
    models = jobs.list_models(work / "models")
    assert [m["name"] for m in models] == ["tiny"]
    assert models[0]["card"]["epochs_run"] == 2
    assert "Model card: tiny" in models[0]["card_markdown"]
    assert not (work / "models" / "other").exists()


def test_stop_running_job(work: Path, data: Path, cleanup: None) -> None:
    out = work / "models" / "long"
    args = ["--data", str(data), *TINY, "--epochs", "500", "--steps-per-epoch", "2", "--patience", "1000"]
    jobs.start_training(args, out, env=THREADS)
    # Wait until one epoch has ended, so a checkpoint and a CSV row exist.
    running = wait_for(lambda s: s["state"] == "running" and int(s["progress"].get("epoch", 0)) >= 2
                       or not s["alive"])
    assert running["alive"], running["log_tail"]
    pid = running["pid"]
    status = jobs.stop_training()
    assert status["state"] == "stopped"
    assert status["alive"] is False
    assert status["returncode"] not in (None, 0)
    assert not psutil.pid_exists(pid) or psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    assert read_progress(out)["status"] == "stopped"
    assert (out / "checkpoints" / "last.keras").is_file()
    assert len(read_history(out)) >= 1
    with pytest.raises(jobs.JobError, match="running training job"):
        jobs.stop_training()


def test_stale_job_file_is_not_running(work: Path) -> None:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    out = work / "models" / "stale"
    out.mkdir(parents=True)
    started = time.time()
    (out / "progress.json").write_text(json.dumps({"status": "running", "epoch": 3, "epochs": 9,
                                                   "updated": started + 5}))
    job = {"pid": proc.pid, "create_time": started - 100, "out_dir": str(out), "log": str(out / "train.log"),
           "command": ["python"], "started": started}
    jobs.jobs_dir()
    (work / "work" / "jobs" / "current.json").write_text(json.dumps(job))
    status = jobs.job_status()
    assert status["alive"] is False
    assert status["state"] == "stopped (process ended)"
    with pytest.raises(jobs.JobError):
        jobs.stop_training()


def test_live_pid_with_other_start_time_is_not_alive(work: Path) -> None:
    me = psutil.Process()
    assert jobs.is_alive({"pid": me.pid, "create_time": me.create_time()})
    assert not jobs.is_alive({"pid": me.pid, "create_time": me.create_time() - 3600})


def test_stale_job_without_progress_is_failed(work: Path) -> None:
    jobs.jobs_dir()
    (work / "work" / "jobs" / "current.json").write_text(json.dumps(
        {"pid": 2**22 + 7, "create_time": 1.0, "out_dir": str(work / "none"), "started": time.time()}))
    status = jobs.job_status()
    assert status["state"] == "failed" and status["alive"] is False


def test_out_argument_refused(work: Path) -> None:
    with pytest.raises(jobs.JobError, match="--out"):
        jobs.start_training(["--data", "x", "--out", "y"], work / "m")


def test_train_args_from_dict() -> None:
    args = jobs.train_args({"data_dir": "/d", "channels": ("flair", "t1ce"), "epochs": 3,
                            "split": (0.8, 0.2, 0.0), "val_cases": (), "augment": False, "early_stopping_patience": 4})
    assert args == ["--data", "/d", "--channels", "flair,t1ce", "--epochs", "3", "--split", "0.8,0.2,0.0",
                    "--patience", "4", "--no-augment"]
    robust = jobs.train_args({"data_dir": "/d", "context": 1, "modality_dropout": 0.3, "strong_augment": True})
    assert robust == ["--data", "/d", "--context", "1", "--modality-dropout", "0.3", "--strong-augment"]
    # every flag it writes is one the train command accepts
    from core.__main__ import build_parser

    parsed = build_parser().parse_args(["train", *robust, "--out", "/o"])
    assert parsed.context == 1 and parsed.modality_dropout == 0.3 and parsed.strong_augment
    with pytest.raises(jobs.JobError):
        jobs.train_args({"data_dir": "/d", "bogus": 1})
    with pytest.raises(jobs.JobError):
        jobs.train_args({"epochs": 1})


@pytest.mark.parametrize("name", ["", "..", "../x", "a/b", "a\\b", "a b", ".hidden", "x" * 65])
def test_set_active_model_refuses_bad_names(tmp_path: Path, name: str) -> None:
    (tmp_path / "good").mkdir()
    with pytest.raises(jobs.JobError):
        jobs.set_active_model(name, tmp_path)
    assert not (tmp_path / "ACTIVE").exists()


def test_set_active_model_refuses_missing_folder(tmp_path: Path) -> None:
    with pytest.raises(jobs.JobError, match="existing model folder"):
        jobs.set_active_model("absent", tmp_path)


def test_set_active_model_writes_marker(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(config, "MODELS_DIR", tmp_path)
    monkeypatch.delenv(config.MODEL_ENV, raising=False)
    (tmp_path / "mine-2").mkdir()
    folder = jobs.set_active_model("mine-2")
    assert folder == tmp_path / "mine-2"
    assert (tmp_path / "ACTIVE").read_text().strip() == "mine-2"
    assert config.active_model_dir() == tmp_path / "mine-2"
    assert jobs.active_model_name() == "mine-2"


def test_recipe_defaults_read_config_json_then_the_card(tmp_path: Path) -> None:
    folder = tmp_path / "m"
    folder.mkdir()
    assert jobs.recipe_defaults(folder) == {}  # nothing there
    (folder / "model_card.json").write_text(json.dumps({"preprocess": {"channels": ["t2", "flair"], "context": 1}}))
    assert jobs.recipe_defaults(folder) == {"channels": ("t2", "flair"), "context": 1}
    (folder / "config.json").write_text(json.dumps({
        "channels": ["flair", "t1ce", "t1", "t2"], "context": 0, "epochs": 20, "max_minutes": 50,
        "strong_augment": True, "depth": True, "loss": 3, "data_dir": "/elsewhere"}))
    got = jobs.recipe_defaults(folder)
    assert got == {"channels": ("flair", "t1ce", "t1", "t2"), "context": 0, "epochs": 20, "max_minutes": 50.0,
                   "strong_augment": True}  # wrong types (depth=True, loss=3) and non-form fields are dropped


def test_recipe_defaults_refuse_unknown_channels(tmp_path: Path) -> None:
    (tmp_path / "config.json").write_text(json.dumps({"channels": ["flair", "dwi"], "context": 2}))
    assert jobs.recipe_defaults(tmp_path) == {"context": 2}
    (tmp_path / "config.json").write_text("{not json")
    assert jobs.recipe_defaults(tmp_path) == {}


def test_recipe_defaults_of_the_shipped_model() -> None:
    shipped = json.loads((config.PROJECT_ROOT / "models" / config.DEFAULT_MODEL_NAME / "config.json").read_text())
    got = jobs.recipe_defaults()
    assert got["channels"] == tuple(shipped["channels"]) and got["context"] == shipped["context"]
