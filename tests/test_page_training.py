"""The Training page (pages/5_Training.py) under AppTest, with models, work and data folders in tmp_path."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
from conftest import make_case_dir
from streamlit.testing.v1 import AppTest

from core import config

PAGE = str(config.PROJECT_ROOT / "pages" / "5_Training.py")
HISTORY = ("epoch,accuracy,dice_coef,learning_rate,loss,val_accuracy,val_dice_coef,val_loss\n"
           "0,0.90,0.30,0.001,0.80,0.91,0.25,0.85\n"
           "1,0.95,0.50,0.001,0.50,0.94,0.40,0.60\n")


@pytest.fixture
def dirs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Empty models/work folders, no shared data, no data folder."""
    models = tmp_path / "models"
    models.mkdir()
    monkeypatch.setattr(config, "MODELS_DIR", models)
    monkeypatch.setenv(config.WORK_DIR_ENV, str(tmp_path / "work"))
    monkeypatch.setenv(config.SHARED_DATA_ENV, str(tmp_path / "no-shared"))
    monkeypatch.setenv(config.DATA_DIR_ENV, str(tmp_path / "no-data"))
    monkeypatch.delenv(config.MODEL_ENV, raising=False)
    return tmp_path


def run_page() -> AppTest:
    at = AppTest.from_file(PAGE, default_timeout=60)
    at.run()
    assert not at.exception, at.exception
    return at


def texts(at: AppTest) -> str:
    parts = [e.value for kind in ("markdown", "caption", "info", "warning", "error", "success")
             for e in getattr(at, kind)]
    return "\n".join(str(p) for p in parts)


def fake_finished_run(root: Path, name: str = "fake") -> Path:
    """A finished model folder (dummy weights, card, history, progress) recorded as the last job."""
    out = root / "models" / name
    out.mkdir(parents=True)
    started = time.time() - 60
    (out / "history.csv").write_text(HISTORY)
    (out / "progress.json").write_text(json.dumps({"status": "finished", "epoch": 2, "epochs": 2,
                                                   "updated": started + 30}))
    (out / "model.keras").write_bytes(b"not a real model")
    card = {"name": name, "split": {"train": ["a", "b", "c"], "val": ["d"], "test": []}, "epochs_run": 2,
            "epochs_requested": 2, "total_wall_time_s": 90.0, "parameters": 1234,
            "validation_mean_dice": {"WT": 0.8, "TC": 0.7, "ET": 0.6}, "weights_sha256": "ab" * 32}
    (out / "model_card.json").write_text(json.dumps(card))
    (out / "MODEL_CARD.md").write_text(f"# Model card: {name}\n")
    jobs_dir = root / "work" / "jobs"
    jobs_dir.mkdir(parents=True)
    (jobs_dir / "current.json").write_text(json.dumps(
        {"pid": 2**22 + 11, "create_time": 1.0, "out_dir": str(out), "log": str(out / "train.log"),
         "command": ["python", "-m", "core", "train"], "started": started}))
    return out


def test_empty_state_no_jobs_no_models_no_data(dirs: Path) -> None:
    at = run_page()
    body = texts(at)
    assert "not for clinical diagnosis" in "\n".join(w.value for w in at.warning)
    assert "No training run yet" in body
    # the start folder does not exist: only the bundled demo is offered, never a typed path
    assert list(next(w for w in at.selectbox if w.label.startswith("Data folder")).options) == ["demo"]
    assert "No trained models" in body
    assert len(at.get("plotly_chart")) == 0


def test_form_widgets_with_a_data_folder(dirs: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    data = dirs / "data"
    make_case_dir(data, "BraTS2021_00001", seed=1)
    make_case_dir(data, "BraTS2021_00002", seed=2)
    monkeypatch.setenv(config.DATA_DIR_ENV, str(data))
    at = run_page()
    labels = {w.label for w in [*at.number_input, *at.multiselect, *at.selectbox, *at.text_input, *at.radio,
                                *at.slider, *at.select_slider]}
    for label in ("Epochs", "Batch size", "Input channels", "Network width (base filters)", "Depth (poolings)",
                  "Loss", "Normalisation", "Crop", "Validation split", "Validation fraction", "Test fraction",
                  "Output name (letters, digits, - and _)", "Data folder (labelled BraTS cases)"):
        assert label in labels, label
    assert "2 labelled case(s) found" in texts(at)
    channels = next(w for w in at.multiselect if w.label == "Input channels")
    assert list(channels.options) == ["FLAIR", "T1", "T1CE", "T2"]


def test_form_defaults_are_the_shipped_recipe(dirs: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Bug: the form defaulted to FLAIR + T1CE with context 1 while the shipped model uses four channels and no
    context; the defaults now come from models/unet2d_default/config.json."""
    recipe = json.loads((config.PROJECT_ROOT / "models" / config.DEFAULT_MODEL_NAME / "config.json").read_text())
    data = dirs / "data"
    make_case_dir(data, "BraTS2021_00001", seed=1)
    make_case_dir(data, "BraTS2021_00002", seed=2)
    monkeypatch.setenv(config.DATA_DIR_ENV, str(data))
    at = run_page()
    channels = next(w for w in at.multiselect if w.label == "Input channels")
    assert channels.value == recipe["channels"] == ["flair", "t1ce", "t1", "t2"]
    assert next(w for w in at.selectbox if w.label == "Context slices each side").value == recipe["context"] == 0
    assert next(w for w in at.select_slider if w.label.startswith("Network width")).value == recipe["base_filters"]
    assert next(w for w in at.radio if w.label == "Loss").value == recipe["loss"]
    assert next(w for w in at.selectbox if w.label == "Normalisation").value == recipe["normalisation"]
    assert "recipe of the shipped model" in texts(at)


def test_form_shows_either_fractions_or_validation_cases(dirs: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Bug: both the fractions and the case picker were shown, and one of them was silently ignored."""
    from core.app import jobs

    data = dirs / "data"
    for i in (1, 2, 3):
        make_case_dir(data, f"BraTS2021_0000{i}", seed=i)
    monkeypatch.setenv(config.DATA_DIR_ENV, str(data))
    started: list[dict] = []
    monkeypatch.setattr(jobs, "start_training", lambda cfg, out: started.append(dict(cfg)))
    at = run_page()
    shown = {w.label for w in [*at.number_input, *at.multiselect]}
    assert {"Validation fraction", "Test fraction"} <= shown and "Validation cases" not in shown
    next(w for w in at.radio if w.label == "Validation split").set_value("Choose validation cases").run()
    shown = {w.label for w in [*at.number_input, *at.multiselect]}
    assert "Validation cases" in shown and not {"Validation fraction", "Test fraction"} & shown
    next(w for w in at.multiselect if w.label == "Validation cases").set_value(["BraTS2021_00002"])
    next(b for b in at.button if b.label == "Start training").click()
    at.run()
    assert not at.exception
    assert len(started) == 1
    assert started[0]["val_cases"] == ("BraTS2021_00002",) and "split" not in started[0]
    assert started[0]["channels"] == ("flair", "t1ce", "t1", "t2") and started[0]["context"] == 0


def test_bad_output_name_is_refused(dirs: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    data = dirs / "data"
    make_case_dir(data, "BraTS2021_00001", seed=1)
    make_case_dir(data, "BraTS2021_00002", seed=2)
    monkeypatch.setenv(config.DATA_DIR_ENV, str(data))
    at = run_page()
    next(w for w in at.text_input if w.label.startswith("Output name")).set_value("../escape")
    submit = next(b for b in at.button if b.label == "Start training")
    submit.click()
    at.run()
    assert not at.exception
    assert any("expected a model name" in e.value for e in at.error)
    assert not (dirs / "work" / "jobs" / "current.json").exists()
    assert not (dirs / "escape").exists()


def test_finished_run_shows_curves_and_models(dirs: Path) -> None:
    fake_finished_run(dirs)
    at = run_page()
    charts = at.get("plotly_chart")
    assert len(charts) == 3  # loss, Dice, accuracy
    figure = json.loads(charts[0].proto.spec)
    assert [t["name"] for t in figure["data"]] == ["train", "validation"]
    assert figure["data"][0]["y"] == [0.8, 0.5]
    assert any("Finished" in s.value for s in at.success)
    assert [e.label for e in at.expander if e.label.startswith("fake")] == ["fake"]
    body = texts(at)
    assert "WT 0.800" in body and "ab" * 32 in body


def test_make_active_writes_marker(dirs: Path) -> None:
    fake_finished_run(dirs)
    at = run_page()
    button = next(b for b in at.button if b.label == "Make this the active model")
    button.click()
    at.run()
    assert not at.exception
    assert (dirs / "models" / "ACTIVE").read_text().strip() == "fake"
    assert config.active_model_dir() == dirs / "models" / "fake"
    assert [e.label for e in at.expander if e.label.startswith("fake")] == ["fake (active)"]


def test_failed_run_shows_log(dirs: Path) -> None:
    out = fake_finished_run(dirs)
    (out / "progress.json").write_text(json.dumps({"status": "failed", "error": "expected labelled cases",
                                                   "updated": time.time()}))
    (out / "train.log").write_text("line one\nerror: expected labelled BraTS cases in 'x', found none\n")
    at = run_page()
    assert any("Training failed: expected labelled cases" in e.value for e in at.error)
    assert any("found none" in c.value for c in at.code)


def test_running_job_shows_progress_and_stop(dirs: Path) -> None:
    """A live job (this test process stands in for the trainer: same pid and start time) shows its progress."""
    import os

    import psutil

    out = fake_finished_run(dirs)
    (out / "progress.json").write_text(json.dumps({"status": "running", "epoch": 2, "epochs": 4, "batch": 5,
                                                   "batches": 10, "updated": time.time()}))
    job_path = dirs / "work" / "jobs" / "current.json"
    job = json.loads(job_path.read_text())
    job.update(pid=os.getpid(), create_time=psutil.Process().create_time())
    job_path.write_text(json.dumps(job))
    at = run_page()
    assert "**running**" in texts(at)
    bars = at.get("progress")
    assert len(bars) == 1
    assert bars[0].proto.value == 37  # (1 + 5/10) / 4 epochs
    assert "Epoch 2 of 4, batch 5 of 10" in bars[0].proto.text
    assert "Stop training" in [b.label for b in at.button if not b.disabled]
    assert "one run at a time" in texts(at)


def test_data_folder_is_picked_among_the_data_roots_only(dirs: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Confinement: the Training page offers the roots' folders only; a folder outside them cannot be chosen,
    and an output name cannot leave the models folder."""
    root, outside = dirs / "root", dirs / "outside"
    make_case_dir(root / "train", "BraTS2021_00001", seed=1)
    make_case_dir(root / "train", "BraTS2021_00002", seed=2)
    make_case_dir(outside, "BraTS2021_00003", seed=3)
    make_case_dir(outside, "BraTS2021_00004", seed=4)
    monkeypatch.setenv("BRATS_DATA_ROOTS", str(root))
    monkeypatch.setenv("BRATS_SERVER_CONFIG", str(dirs / "absent.toml"))
    at = run_page()
    pick = next(w for w in at.selectbox if w.label.startswith("Data folder"))
    assert list(pick.options) == ["demo", "root", "root/train"]
    with pytest.raises(ValueError, match="not in list"):  # a picker: a path is not one of its values
        pick.set_value(str(outside))
        at.run()
    at = AppTest.from_file(PAGE, default_timeout=60)
    at.session_state["data_dir"] = str(outside)  # a session's folder outside the roots is never used
    at.run()
    assert not at.exception
    assert "BraTS2021_00003" not in texts(at) and str(outside) not in texts(at)
    pick = next(w for w in at.selectbox if w.label.startswith("Data folder"))
    pick.set_value("root/train")
    at.run()
    assert not at.exception
    assert "2 labelled case(s) found" in texts(at)
    assert "BraTS2021_00003" not in texts(at)
    next(w for w in at.text_input if w.label.startswith("Output name")).set_value("%2e%2e")
    next(b for b in at.button if b.label == "Start training").click()
    at.run()
    assert any("expected a model name" in e.value for e in at.error)
    assert not (dirs / "work" / "jobs" / "current.json").exists()


def test_enter_in_a_box_does_not_start_and_the_typed_name_is_kept(dirs: Path,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    """Bug: the settings were an st.form, so Enter in the Epochs box submitted it and started a run; the output
    name's default held the current minute, so the typed name was replaced by a new default on a later run (and
    on changing the data folder). Now only a click on a plain button starts a run, and the name is kept."""
    from core.app import jobs

    root = dirs / "root"
    for sub in ("a", "b"):
        make_case_dir(root / sub, f"BraTS2021_0000{1 if sub == 'a' else 3}", seed=1)
        make_case_dir(root / sub, f"BraTS2021_0000{2 if sub == 'a' else 4}", seed=2)
    monkeypatch.setenv("BRATS_DATA_ROOTS", str(root))
    monkeypatch.setenv("BRATS_SERVER_CONFIG", str(dirs / "absent.toml"))
    started: list[dict] = []
    monkeypatch.setattr(jobs, "start_training", lambda cfg, out: started.append(dict(cfg)))
    minute = iter(f"20260101_{m:04d}" for m in range(1000))
    monkeypatch.setattr(time, "strftime", lambda fmt, *a: next(minute) if fmt == "%Y%m%d_%H%M" else "t")
    at = run_page()
    start = next(b for b in at.button if b.label == "Start training")
    assert not start.proto.is_form_submitter  # Enter in a form's box presses its submit button
    assert not at.get("form")
    name_box = next(w for w in at.text_input if w.label.startswith("Output name"))
    default = name_box.value
    at.run()  # a minute later: the default stays
    assert next(w for w in at.text_input if w.label.startswith("Output name")).value == default
    next(w for w in at.number_input if w.label == "Epochs").set_value(3).run()  # the box's value is committed
    assert not started
    next(w for w in at.text_input if w.label.startswith("Output name")).set_value("my_model").run()
    next(w for w in at.selectbox if w.label.startswith("Data folder")).set_value("root/b").run()
    assert not at.exception
    assert next(w for w in at.text_input if w.label.startswith("Output name")).value == "my_model"
    assert next(w for w in at.number_input if w.label == "Epochs").value == 3
    assert not started
    next(b for b in at.button if b.label == "Start training").click().run()
    assert not at.exception
    assert len(started) == 1 and started[0]["epochs"] == 3 and started[0]["data_dir"] == str((root / "b").resolve())
