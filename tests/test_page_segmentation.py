"""AppTest runs of the Segmentation page (pages/3_Segmentation.py): the empty state, whole-volume and
single-slice segmentation with a tiny untrained model on the demo case, scores against the ground truth, the
audit log, and corrections made through the edit store (AppTest cannot draw on the canvas).

The page runs through Home (``switch_page``) so page links resolve as in the app.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import DEMO_SELECTION, HOME, run_page, texts
from streamlit.testing.v1 import AppTest

from core import config
from core.analysis.edits import EditStore, apply_stroke
from core.analysis.metrics import score_case
from core.analysis.report import volume_table
from core.app import ui
from core.app.audit import read_events
from core.data.cases import load_case_folder

PAGE = "pages/3_Segmentation.py"


@pytest.fixture(autouse=True)
def _isolated(app_env: Path) -> Path:
    return app_env


def app(model: Path | None = None, selection: dict | None = DEMO_SELECTION, **state: object) -> AppTest:
    at = run_page(PAGE, selection, model, **state)
    assert not at.exception, at.exception
    return at


def charts(at: AppTest) -> list[dict]:
    """The plotly figures of the page as JSON dicts."""
    return [json.loads(el.proto.spec) for el in at.get("plotly_chart")]


def heatmap_count(at: AppTest) -> int:
    return sum(1 for fig in charts(at) for t in fig.get("data", []) if t.get("type") == "heatmap")


def button(at: AppTest, label: str):
    matches = [b for b in at.button if b.label == label]
    assert matches, f"no button {label!r} among {[b.label for b in at.button]}"
    return matches[0]


def volumes(at: AppTest) -> dict[str, float]:
    """Structure -> volume (mL) of the page's volume table."""
    df = next(d.value for d in at.dataframe if "Structure" in d.value.columns and "Volume (mL)" in d.value.columns)
    return dict(zip(df["Structure"], df["Volume (mL)"], strict=True))


def test_empty_state_without_a_case() -> None:
    at = app(selection=None)
    assert "No case selected" in texts(at.info)
    assert config.DISCLAIMER in texts(at.warning)
    assert not at.get("plotly_chart")


def test_before_segmenting_nothing_is_predicted(tiny_model: Path) -> None:
    at = app(tiny_model)
    assert "No segmentation of this case yet" in texts(at.info)
    assert heatmap_count(at) == 0 and not at.metric
    assert ui.KEY_PREDICTION not in at.session_state
    assert not button(at, "Segment whole volume").disabled


def test_missing_model_disables_segmentation(tmp_path: Path) -> None:
    at = app(tmp_path / "no_model")
    assert button(at, "Segment whole volume").disabled and button(at, "Segment this slice").disabled
    assert "does not exist" in texts(at.warning)


def test_segment_whole_volume_scores_audits_and_caches(tiny_model: Path, _isolated: Path) -> None:
    at = app(tiny_model)
    button(at, "Segment whole volume").click().run()
    assert not at.exception, at.exception
    assert not at.error, texts(at.error)
    pred = at.session_state[ui.KEY_PREDICTION]
    case_key = at.session_state[ui.KEY_PREDICTION_CASE]
    assert pred.labels.shape == (240, 240, 155) and len(case_key) == 32
    assert heatmap_count(at) == 3  # NCR, ED, ET probability maps (no uncertainty without TTA)
    metrics = {m.label: m.value for m in at.metric}
    assert set(metrics) == {f"{r} {m}" for r in ("WT", "TC", "ET") for m in ("Dice", "HD95")}
    case = load_case_folder(config.DEMO_DATA_DIR / "TCIA-example")
    expected = score_case(pred.labels, case.seg.data, case.spacing_mm)  # on the full grid
    for region in ("WT", "TC", "ET"):
        assert metrics[f"{region} Dice"] == f"{expected.regions[region].dice:.3f}"
        assert metrics[f"{region} HD95"] == f"{expected.regions[region].hd95_mm:.1f} mm"
    events = read_events(_isolated / "audit.log.jsonl", action="segment")
    assert len(events) == 1 and events[0]["case_id"] == "TCIA-example"
    assert events[0]["model_sha256"] == pred.model_sha256 and events[0]["extra"]["tta"] is False
    assert events[0]["extra"]["from_cache"] is False and "flair" in events[0]["input_hashes"]
    # the error overlay of the slice with its legend
    assert any("False negative" in str(m.value) for m in at.markdown)
    # the quality flag next to the result: ok (green) or review (orange) with the prediction's own reasons
    assert pred.quality is not None
    if pred.quality.status == "review":
        shown = texts(at.warning)
        assert "Quality check: review" in shown and all(r[:30] in shown for r in pred.quality.reasons)
    else:
        assert "Quality check: ok" in texts(at.success)
    # a second request is served from the cache: the same object, an audit line saying so
    button(at, "Segment whole volume").click().run()
    assert at.session_state[ui.KEY_PREDICTION] is pred
    events = read_events(_isolated / "audit.log.jsonl", action="segment")
    assert len(events) == 2 and events[1]["extra"]["from_cache"] is True


def test_scores_of_a_case_the_model_was_trained_on_say_so(tiny_model: Path, tmp_path: Path) -> None:
    """Bug (walk of issue 19): a training case scored Dice 0.91 with nothing saying the model was trained on it."""
    import shutil

    trained = tmp_path / "trained_on_demo"
    shutil.copytree(tiny_model, trained)
    (trained / "model_card.json").write_text(json.dumps({"split": {"train": [], "val": ["TCIA-example"]}}))
    at = app(trained)
    assert "overstate" not in texts(at.warning)  # no scores yet, nothing to qualify
    button(at, "Segment whole volume").click().run()
    assert not at.exception, at.exception
    assert "one of the model's validation cases: these scores overstate" in texts(at.warning)


def test_a_reload_brings_the_prediction_and_the_slice_back(tiny_model: Path) -> None:
    """Bug: a browser reload (a new session) lost the prediction although it was still cached; it now comes back
    for the same case and model, with the slice (the URL's cursor), on this page and in the viewer."""
    at = app(tiny_model, **{ui.KEY_CURSOR: {"x": 120, "y": 120, "z": 80}})
    button(at, "Segment whole volume").click().run()
    pred = at.session_state[ui.KEY_PREDICTION]
    assert at.query_params["cur"] == "120,120,80"
    for page in (PAGE, "pages/2_Slice_viewer.py"):
        again = AppTest.from_file(HOME, default_timeout=120)
        again.switch_page(page)
        again.session_state[ui.KEY_MODEL_DIR] = str(tiny_model)
        for name in at.query_params:
            again.query_params[name] = at.query_params[name]
        again.run()
        assert not again.exception, again.exception
        assert again.session_state[ui.KEY_PREDICTION] is pred  # the cached object, not a new segmentation
        assert again.session_state[ui.KEY_CURSOR] == {"x": 120, "y": 120, "z": 80}
        if page == PAGE:
            assert "Whole-volume prediction of model" in texts(again.caption)
            assert again.slider(key="seg_z").value == 80
    other = tiny_model.parent / "other"  # another model: its prediction is not this one
    if not other.exists():
        import shutil

        shutil.copytree(tiny_model, other)
    again = run_page(PAGE, DEMO_SELECTION, other)
    assert ui.KEY_PREDICTION not in again.session_state
    assert "No segmentation of this case yet" in texts(again.info)


def test_a_flair_t1ce_case_is_segmented_and_labelled_as_such(tiny_model: Path, tmp_path: Path,
                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    from conftest import make_case_dir

    make_case_dir(tmp_path / "data", "BraTS2021_00077", modalities=("flair", "t1ce"), shape=(40, 36, 12))
    monkeypatch.setenv("BRATS_DATA_ROOTS", str(tmp_path / "data"))  # a case folder must lie in the data roots
    at = app(tiny_model, {"kind": "folder", "folder": str(tmp_path / "data"), "case_id": "BraTS2021_00077"})
    button(at, "Segment whole volume").click().run()
    assert not at.exception, at.exception
    assert not at.error, texts(at.error)
    pred = at.session_state[ui.KEY_PREDICTION]
    assert pred.missing == ("t1", "t2")
    assert "Segmented without T1, T2" in texts(at.info)
    # this untrained model was not trained with modality dropout: the flag says so
    assert "T1, T2 missing and zero-filled" in texts(at.warning)


def test_tta_adds_the_uncertainty_map(tiny_model: Path) -> None:
    at = app(tiny_model, **{ui.KEY_TTA: True})
    button(at, "Segment whole volume").click().run()
    assert not at.exception, at.exception
    assert at.session_state[ui.KEY_PREDICTION].tta is True
    assert heatmap_count(at) == 4
    assert "Uncertainty" in texts(at.caption)
    # bug: the maps had no anatomy under them; each map now lies over the greyscale slice
    prob, unc = (next(f for f in charts(at) if f["data"][-1].get("name") == n) for n in ("ET", "uncertainty"))
    assert [t["type"] for t in prob["data"]] == ["image", "heatmap"] * 3
    assert [t["type"] for t in unc["data"]] == ["image", "heatmap"]


def test_tta_setting_survives_a_visit_to_another_page(tiny_model: Path) -> None:
    """Bug: the toggle reset to off after another page, so the next segmentation silently ran without TTA (the
    report page's segment button reads the same setting)."""
    at = app(tiny_model)
    toggle = next(t for t in at.toggle if t.label == "Test-time augmentation (flips)")
    assert toggle.value is False
    toggle.set_value(True).run()
    assert at.session_state[ui.KEY_TTA] is True
    at.switch_page("pages/2_Slice_viewer.py").run()
    assert not at.exception
    assert at.session_state[ui.KEY_TTA] is True
    at.switch_page("pages/4_Volume_report.py").run()
    assert not at.exception
    assert next(b for b in at.button if b.label == "Segment whole volume").help.startswith(
        "Test-time augmentation on")
    at.switch_page(PAGE).run()
    assert not at.exception
    assert next(t for t in at.toggle if t.label == "Test-time augmentation (flips)").value is True
    button(at, "Segment whole volume").click().run()
    assert at.session_state[ui.KEY_PREDICTION].tta is True


def test_segment_this_slice_only(tiny_model: Path, _isolated: Path) -> None:
    at = app(tiny_model, **{ui.KEY_CURSOR: {"x": 120, "y": 120, "z": 80}})
    assert at.slider(key="seg_z").value == 80
    button(at, "Segment this slice").click().run()
    assert not at.exception, at.exception
    assert heatmap_count(at) == 3
    assert ui.KEY_PREDICTION not in at.session_state
    assert at.session_state["slice_prediction"]["z"] == 80
    events = read_events(_isolated / "audit.log.jsonl", action="segment")
    assert len(events) == 1 and events[0]["extra"]["scope"] == "slice" and events[0]["extra"]["z"] == 80
    # another slice: the single-slice result does not apply there
    at.slider(key="seg_z").set_value(81).run()
    assert heatmap_count(at) == 0 and at.session_state[ui.KEY_CURSOR]["z"] == 81


def test_jump_to_most_tumour_moves_the_shared_cursor(tiny_model: Path) -> None:
    at = app(tiny_model, **{ui.KEY_CURSOR: {"x": 10, "y": 10, "z": 5}})
    button(at, "Most tumour").click().run()
    gt = np.asarray(load_case_folder(config.DEMO_DATA_DIR / "TCIA-example").seg.data)
    expected_z = int(np.argmax(np.count_nonzero(gt, axis=(0, 1))))
    assert at.session_state[ui.KEY_CURSOR]["z"] == expected_z
    assert at.slider(key="seg_z").value == expected_z


def test_corrections_show_update_volumes_and_stay_in_the_session(tiny_model: Path, _isolated: Path) -> None:
    at = app(tiny_model)
    button(at, "Segment whole volume").click().run()
    pred = at.session_state[ui.KEY_PREDICTION]
    case_key = at.session_state[ui.KEY_PREDICTION_CASE]
    spacing = (1.0, 1.0, 1.0)
    as_dict = lambda labels: {r["structure"]: r["volume_ml"] for r in volume_table(labels, spacing)}  # noqa: E731
    assert volumes(at) == as_dict(pred.labels) and ui.KEY_CORRECTED not in at.session_state
    assert "Model prediction (model `tiny`, TTA off, TensorFlow)" in texts(at.markdown)  # which segmentation
    assert not [b for b in at.button if b.label == "Undo" and not b.disabled]
    # a stroke through the core API (as the canvas does): 60 x 60 voxels on slice 70 painted with the label least
    # present there, so that at least 2400 voxels (2.4 mL) change whatever the untrained model says; the store is
    # the session's private one
    store = EditStore(_isolated / "sessions" / at.session_state[ui.KEY_PRIVATE] / "corrections")
    store.start(case_key, pred.labels, pred.model_sha256)
    mask = np.zeros((240, 240), dtype=bool)
    mask[90:150, 90:150] = True
    region = pred.labels[90:150, 90:150, 70]
    label = min((1, 2, 4), key=lambda v: int(np.count_nonzero(region == v)))
    store.apply(case_key, 70, mask, label, inside_tumour_only=False)
    expected = apply_stroke(pred.labels, 70, mask, label, inside_tumour_only=False)
    name = {1: "NCR", 2: "ED", 4: "ET"}[label]
    at.run()
    assert not at.exception, at.exception
    assert "Corrected by hand: 1 stroke(s)" in texts(at.success)
    assert "Model prediction corrected by hand (model `tiny`, TTA off, TensorFlow)" in texts(at.markdown)
    after = volumes(at)
    assert after == as_dict(expected)
    # bug (walk of issue 19): with the model's column added, "Model (mL)" ran off the narrow column (a horizontal
    # scroll hid it); the headers are short, mL is in the title
    table = next(d for d in at.dataframe if "Model (mL)" in d.value.columns)
    config = json.loads(table.proto.columns)
    assert [config.get(c, {}).get("label", c) for c in table.value.columns] == ["Structure", "Corrected",
                                                                               "Ground truth", "Model"]
    assert "**Volumes (mL)**" in texts(at.markdown)
    assert after[name] >= as_dict(pred.labels)[name] + 2.4
    assert at.session_state[ui.KEY_CORRECTED_CASE] == case_key
    np.testing.assert_array_equal(at.session_state[ui.KEY_CORRECTED], expected)
    # undo from the page: back to the model's labels, audited; one Undo only (the canvas applies each stroke)
    assert [b.label for b in at.button].count("Undo") == 1 and "Apply stroke" not in [b.label for b in at.button]
    button(at, "Undo").click().run()
    assert not at.exception, at.exception
    assert volumes(at) == as_dict(pred.labels) and ui.KEY_CORRECTED not in at.session_state
    events = read_events(_isolated / "audit.log.jsonl", action="correct")
    assert [e["extra"]["action"] for e in events] == ["undo"]


def test_another_session_sees_neither_the_corrections_nor_a_silent_prediction(tiny_model: Path,
                                                                              _isolated: Path) -> None:
    """Bug (issue 19.7): a fresh session opening a shared case was shown a prediction someone else computed, with
    only "The TTA setting has changed since: segment again", and the other user's hand corrections. Two sessions:
    the second is told plainly that the prediction was computed earlier by the same model, with which settings
    and when; the first's corrections are not shown to it."""
    first = app(tiny_model)
    button(first, "Segment whole volume").click().run()
    pred = first.session_state[ui.KEY_PREDICTION]
    case_key = first.session_state[ui.KEY_PREDICTION_CASE]
    store = EditStore(_isolated / "sessions" / first.session_state[ui.KEY_PRIVATE] / "corrections")
    store.start(case_key, pred.labels, pred.model_sha256)
    mask = np.zeros((240, 240), dtype=bool)
    mask[90:150, 90:150] = True
    store.apply(case_key, 70, mask, 2, inside_tumour_only=False)
    first.run()
    assert "Corrected by hand" in texts(first.success) and "computed earlier" not in texts(first.info)
    second = app(tiny_model, **{ui.KEY_TTA: True})  # another user, who works with TTA on
    assert not second.exception, second.exception
    assert second.session_state[ui.KEY_PREDICTION] is pred
    note = texts(second.info)
    assert "computed earlier on this server at " in note and pred.created_utc[:10] in note
    assert "by the same model, `tiny`, with TTA off (TensorFlow)" in note
    assert "Your TTA setting is on" in note
    assert "The TTA setting has changed since" not in texts(second.caption)
    assert "Corrected by hand" not in texts(second.success) and ui.KEY_CORRECTED not in second.session_state
    assert volumes(second) == {r["structure"]: r["volume_ml"] for r in volume_table(pred.labels, (1.0, 1.0, 1.0))}
    assert second.session_state[ui.KEY_PRIVATE] != first.session_state[ui.KEY_PRIVATE]
    button(second, "Segment whole volume").click().run()  # asked for here: no longer "computed earlier"
    assert "computed earlier" not in texts(second.info)


def test_the_image_is_shown_before_segmenting(tiny_model: Path) -> None:
    """Bug (issue 19.10): the page showed no image until the case was segmented."""
    at = app(tiny_model)
    figs = charts(at)
    assert heatmap_count(at) == 0 and len(figs) == 1
    assert [t["type"] for t in figs[0]["data"]] == ["image"]
    assert figs[0]["layout"]["title"]["text"].startswith("FLAIR z=")
    # bug (walk of issue 19): the title said "expert label outlined"; the demo's ground truth is a pseudo-label
    assert figs[0]["layout"]["title"]["text"].endswith("(ground truth outlined)")


def test_without_an_expert_label_segmenting_opens_on_the_models_tumour(tiny_model: Path, tmp_path: Path,
                                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    """Bug (issue 19.2): a case with no expert label (a raw study) stayed on a mid-brain slice without tumour after
    segmenting; the cursor now moves to the slices of most predicted tumour (and so does the viewer, which opens at
    the shared cursor)."""
    from types import SimpleNamespace

    from conftest import make_case_dir

    make_case_dir(tmp_path / "data", "BraTS2021_00051", with_seg=False, shape=(20, 18, 16))
    monkeypatch.setenv("BRATS_DATA_ROOTS", str(tmp_path / "data"))
    labels = np.zeros((20, 18, 16), dtype=np.uint8)
    labels[3, 3:6, 11:14] = 2
    labels[2:5, 4, 12] = 4
    probs = np.zeros((20, 18, 16, 4), dtype=np.float16)
    probs[..., 0] = 1.0
    fake = SimpleNamespace(labels=labels, probabilities=probs, uncertainty=None, model_name="fake",
                           model_sha256="f" * 64, tta=False, elapsed_s=0.1, quality=None, missing=(),
                           runtime="onnxruntime", created_utc="2026-01-01T00:00:00+00:00")

    def segment_volume(case, tta, page):
        ui.store_prediction(case, fake)
        return fake

    monkeypatch.setattr(ui, "segment_volume", segment_volume)
    at = app(tiny_model, {"kind": "folder", "folder": str(tmp_path / "data"), "case_id": "BraTS2021_00051"})
    start = dict(at.session_state[ui.KEY_CURSOR])
    assert start["z"] != 12
    button(at, "Segment whole volume").click().run()
    assert not at.exception, at.exception
    assert at.session_state[ui.KEY_CURSOR] == {"x": 3, "y": 4, "z": 12}
    assert at.slider(key="seg_z").value == 12


def test_pages_open_without_importing_tensorflow(tmp_path: Path) -> None:
    """Segmentation and report pages render a selected case without TensorFlow (it loads on demand only)."""
    script = (
        "import sys\n"
        "from streamlit.testing.v1 import AppTest\n"
        "from core import config\n"
        "from core.app import ui\n"
        "for page in ('pages/3_Segmentation.py', 'pages/4_Volume_report.py'):\n"
        f"    at = AppTest.from_file({HOME!r}, default_timeout=120)\n"
        "    at.switch_page(page)\n"
        f"    at.session_state[ui.KEY_CASE] = {DEMO_SELECTION!r}\n"
        "    at.run()\n"
        "    assert not at.exception, at.exception\n"
        "print('tensorflow' in sys.modules, 'keras' in sys.modules)\n"
    )
    env = {**os.environ, config.WORK_DIR_ENV: str(tmp_path / "work")}
    out = subprocess.run([sys.executable, "-c", script], cwd=config.PROJECT_ROOT, env=env, capture_output=True,
                         text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip().splitlines()[-1] == "False False"


def test_first_segmentation_runs_without_tensorflow_when_the_model_is_exported(tmp_path: Path) -> None:
    """A fresh server segments with the model's ONNX export: TensorFlow is never imported (issue: fast inference)."""
    from core.engine.export import export_model_folder
    from core.engine.model import build_unet, save_for_inference
    from core.engine.preprocess import PreprocessSpec

    folder = tmp_path / "models" / "tiny_onnx"
    spec = PreprocessSpec(channels=("flair", "t1ce", "t1", "t2"), input_size=32, normalisation="zscore_brain",
                          crop="brain_bbox")
    save_for_inference(build_unet(32, 4, 4, 2, seed=2), folder, spec)
    (folder / "model_card.json").write_text("{}")
    export_model_folder(folder)
    script = (
        "import sys\n"
        "from streamlit.testing.v1 import AppTest\n"
        "from core.app import ui\n"
        f"at = AppTest.from_file({HOME!r}, default_timeout=240)\n"
        "at.switch_page('pages/3_Segmentation.py')\n"
        f"at.session_state[ui.KEY_CASE] = {DEMO_SELECTION!r}\n"
        f"at.session_state[ui.KEY_MODEL_DIR] = {str(folder)!r}\n"
        "at.run()\n"
        "next(b for b in at.button if b.label == 'Segment whole volume').click().run()\n"
        "assert not at.exception, at.exception\n"
        "pred = at.session_state[ui.KEY_PREDICTION]\n"
        "print(pred.labels.shape, 'tensorflow' in sys.modules, 'keras' in sys.modules)\n"
    )
    env = {**os.environ, config.WORK_DIR_ENV: str(tmp_path / "work"), "BRATS_MODEL_ROOTS": str(folder.parent)}
    out = subprocess.run([sys.executable, "-c", script], cwd=config.PROJECT_ROOT, env=env, capture_output=True,
                         text=True, timeout=400)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip().splitlines()[-1] == "(240, 240, 155) False False"


# ---- speed: what a rerun and a click do not repeat (issue 19, "Slow where the viewer is fast") -----------------

def test_a_rerun_on_the_same_slice_does_not_rebuild_the_probability_maps(tiny_model: Path,
                                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    """The probability figure (about 0.2-0.3 s to build on 2 cores) was rebuilt on every page run, a stroke's and
    an undo's included, although the maps do not change; it is now built once per (prediction, slice, underlay)."""
    from core.views import figures_seg

    built: list[int] = []
    original = figures_seg.probability_figure

    def counting(*args: object, **kwargs: object):
        built.append(int(args[1]))
        return original(*args, **kwargs)

    monkeypatch.setattr(figures_seg, "probability_figure", counting)
    at = app(tiny_model, **{ui.KEY_CURSOR: {"x": 120, "y": 120, "z": 80}})
    button(at, "Segment whole volume").click().run()
    assert not at.exception, at.exception
    assert built == [80] and heatmap_count(at) == 3
    at.run()  # a rerun that keeps the slice (as after a stroke or an undo)
    assert not at.exception, at.exception
    assert built == [80] and heatmap_count(at) == 3  # the same maps, not built again
    at.slider(key="seg_z").set_value(81).run()  # another slice: its maps are built
    assert built == [80, 81]


def _warmups(monkeypatch: pytest.MonkeyPatch) -> tuple[list, list]:
    """Records the warm-up threads the page starts and the case preparations made (``prepare_case`` calls)."""
    from core.engine import preprocess

    threads: list = []
    prepared: list = []
    original_warm, original_prepare = ui.warm_segmentation, preprocess.prepare_case

    def warm(case):
        thread = original_warm(case)
        threads.append(thread)
        return thread

    def prepare(*args: object, **kwargs: object):
        prepared.append(1)
        return original_prepare(*args, **kwargs)

    monkeypatch.setattr(ui, "warm_segmentation", warm)
    monkeypatch.setattr(preprocess, "prepare_case", prepare)
    return threads, prepared


def test_opening_the_page_prepares_the_case_so_that_the_click_pays_for_the_model_alone(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Loading the model and preparing the case (about 0.8 s of a 3.7 s click on 2 cores) were paid on the
    *Segment* click; a model that runs in ONNX Runtime is now loaded and the case prepared in the background
    when the page opens, once per session and case, and the click reuses them."""
    from conftest import save_tiny_unet

    model = save_tiny_unet(tmp_path / "models" / "tiny_onnx", onnx=True)
    threads, prepared = _warmups(monkeypatch)
    at = app(model)
    assert len(threads) == 1 and threads[0] is not None
    threads[0].join(timeout=120)
    assert prepared == [1]  # prepared before any click
    at.run()
    assert threads[1:] == [None]  # once per session and case
    button(at, "Segment whole volume").click().run()
    assert not at.exception, at.exception
    assert ui.KEY_PREDICTION in at.session_state and prepared == [1]  # the click did not prepare it again


def test_a_model_that_needs_tensorflow_is_not_loaded_in_advance(tiny_model: Path,
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    """The warm-up never imports TensorFlow: a Keras-only model is left to the click (pages open without it)."""
    threads, prepared = _warmups(monkeypatch)
    app(tiny_model)
    assert len(threads) == 1 and threads[0] is not None
    threads[0].join(timeout=60)
    assert prepared == []
