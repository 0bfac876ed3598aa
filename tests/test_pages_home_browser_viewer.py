"""AppTest runs of Home, the case browser and the slice viewer: empty states, the demo case, folder choice,
uploads, cursor linking and overlays. Pages run through Home (``switch_page``) so page links resolve as in the app.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import DEMO_SELECTION, HOME, make_case_dir, run_page, texts
from streamlit.testing.v1 import AppTest

from core import config
from core.app import ui

ROOT = config.PROJECT_ROOT
BROWSER = "pages/1_Case_browser.py"
VIEWER = "pages/2_Slice_viewer.py"
PNG_BYTES = b"\x89PNG\r\n\x1a\n" + b"\x00" * 200


@pytest.fixture(autouse=True)
def _isolated(app_env: Path) -> Path:
    return app_env

def app(page: str | None = None, selection: dict | None = None, **state: object) -> AppTest:
    return run_page(page, selection, timeout=60, **state)


# --------------------------------------------------------------------------------------------------- Home

def test_home_shows_disclaimer_links_and_missing_card(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv(config.MODEL_ENV, str(tmp_path / "no_model"))
    at = app()
    assert not at.exception
    assert config.DISCLAIMER in texts(at.warning)
    links = [p.proto.page for p in at.get("page_link")]
    assert {"Case_browser", "Slice_viewer"} <= set(links)
    assert "No model card" in texts(at.info)
    assert "`demo` (bundled demo)" in texts(at.markdown)
    assert str(config.DEMO_DATA_DIR) not in texts(at.markdown)  # never a server path


def test_home_summarises_the_model_card(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    folder = tmp_path / "my_model"
    folder.mkdir()
    card = {"name": "my_model", "architecture": "2D U-Net", "split": {"train": ["a", "b", "c"], "val": ["d"]},
            "epochs_run": 7, "validation_mean_dice": {"WT": 0.812, "TC": 0.6, "ET": None},
            "small_data_warning": "Trained on 3 cases only"}
    (folder / "model_card.json").write_text(json.dumps(card), encoding="utf-8")
    monkeypatch.setenv(config.MODEL_ENV, str(folder))
    at = app()
    assert not at.exception
    metrics = {m.label: m.value for m in at.metric}
    assert metrics["Training cases"] == "3" and metrics["Validation cases"] == "1" and metrics["Epochs"] == "7"
    assert metrics["WT"] == "0.812" and metrics["TC"] == "0.600" and metrics["ET"] == "-"
    assert "Trained on 3 cases only" in texts(at.caption)


def test_home_prefers_the_cross_validation_dice(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    folder = tmp_path / "cv_model"
    folder.mkdir()
    card = {"name": "cv_model", "split": {"train": ["a"] * 12, "val": []}, "epochs_run": 20,
            "validation_mean_dice": {"WT": None, "TC": None, "ET": None},
            "cross_validation": {"folds": 3, "cases": 12, "mean_dice": {"WT": 0.85, "TC": 0.7, "ET": 0.65}}}
    (folder / "model_card.json").write_text(json.dumps(card), encoding="utf-8")
    monkeypatch.setenv(config.MODEL_ENV, str(folder))
    at = app()
    assert not at.exception
    metrics = {m.label: m.value for m in at.metric}
    assert metrics["WT"] == "0.850" and metrics["TC"] == "0.700" and metrics["ET"] == "0.650"
    assert "Cross-validation Dice** (mean over 12 held-out cases, 3 folds)" in texts(at.markdown)


def test_home_metric_labels_fit_and_say_how_the_model_was_validated(monkeypatch: pytest.MonkeyPatch,
                                                                    tmp_path: Path) -> None:
    """Bugs (walk of issue 19): the lesion-wise Dice labels ("WT lesion-wise") were cut to "WT lesion-..." in
    their third-width column, and a cross-validated model showed "Validation cases 0" (as if never validated)."""
    folder = tmp_path / "cv_model"
    folder.mkdir()
    card = {"name": "cv_model", "split": {"train": ["a"] * 12, "val": []}, "epochs_run": 20,
            "cross_validation": {"folds": 3, "cases": 12, "mean_dice": {"WT": 0.85, "TC": 0.7, "ET": 0.65},
                                 "lesionwise_brats2023_mean_dice": {"WT": 0.8, "TC": 0.6, "ET": 0.5}}}
    (folder / "model_card.json").write_text(json.dumps(card), encoding="utf-8")
    monkeypatch.setenv(config.MODEL_ENV, str(folder))
    at = app()
    assert not at.exception
    shown = [(m.label, m.value) for m in at.metric]
    assert shown == [("Training cases", "12"), ("CV folds", "3"), ("Epochs", "20"),
                     ("WT", "0.850"), ("TC", "0.700"), ("ET", "0.650"), ("WT", "0.800"), ("TC", "0.600"),
                     ("ET", "0.500")]
    assert "Lesion-wise Dice** (BraTS 2023 rule" in texts(at.markdown)


def test_home_does_not_import_tensorflow() -> None:
    code = ("import sys\nfrom streamlit.testing.v1 import AppTest\n"
            f"at = AppTest.from_file({HOME!r}, default_timeout=60).run()\n"
            "assert not at.exception, at.exception\n"
            "print('TF_LOADED' if 'tensorflow' in sys.modules or 'keras' in sys.modules else 'TF_ABSENT')\n")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120,
                         env={**__import__("os").environ, "PYTHONPATH": str(ROOT)})
    assert out.returncode == 0, out.stderr[-2000:]
    assert "TF_ABSENT" in out.stdout


# ------------------------------------------------------------------------------------------- case browser

def test_browser_empty_state_lists_the_demo_folder() -> None:
    at = app(BROWSER)
    assert not at.exception
    assert "No case selected yet" in texts(at.info)
    table = at.dataframe[0].value
    assert list(table["case_id"]) == ["TCIA-example"]
    assert {"modalities", "ground_truth", "shape", "voxel_mm"} <= set(table.columns)


def test_browser_with_demo_case_shows_thumbnails_geometry_volumes_and_notes() -> None:
    at = app(BROWSER, DEMO_SELECTION)
    assert not at.exception
    assert len(at.get("image")) == 4  # one thumbnail per modality
    geometry = at.dataframe[1].value
    assert dict(zip(geometry["Property"], geometry["Value"], strict=True))["Stored orientation"] == "LPS"
    labels = [m.label for m in at.metric]
    assert labels == ["NCR", "ED", "ET", "TC", "WT"]  # walk of issue 19: as in the report's and the PDF's tables
    assert all(m.value.replace(".", "", 1).isdigit() and "." in m.value for m in at.metric)  # mL, 1 decimal
    assert "pseudo-label" in texts(at.warning)


def test_browser_open_button_selects_a_case_of_a_chosen_folder(monkeypatch: pytest.MonkeyPatch,
                                                               tmp_path: Path) -> None:
    data = tmp_path / "data"
    make_case_dir(data, case_id="BraTS2021_00007")
    make_case_dir(data, case_id="BraTS2021_00008", with_seg=False)
    monkeypatch.setenv("BRATS_DATA_ROOTS", str(data))
    at = app(BROWSER)
    assert not [w for w in at.text_input if w.key == "browser_folder_text"]  # a picker, no free text
    assert list(at.selectbox(key="browser_folder_pick").options) == ["demo", "data"]
    at.selectbox(key="browser_folder_pick").set_value("data").run()
    assert not at.exception
    assert at.session_state[ui.KEY_DATA_DIR] == str(data.resolve())
    assert list(at.dataframe[0].value["case_id"]) == ["BraTS2021_00007", "BraTS2021_00008"]
    at.text_input(key="browser_search").set_value("0008").run()
    assert list(at.dataframe[0].value["case_id"]) == ["BraTS2021_00008"]
    at.selectbox(key="browser_pick").set_value("BraTS2021_00008/BraTS2021_00008").run()
    next(b for b in at.button if b.label == "Open case").click().run()
    assert not at.exception
    assert at.session_state[ui.KEY_CASE]["case_id"] == "BraTS2021_00008"
    assert "No ground-truth segmentation" in texts(at.info)


def click_table_cell(at: AppTest, row: int, column: str = "case_id") -> AppTest:
    """What the browser sends when a cell of the case table is clicked (AppTest has no dataframe clicks)."""
    from streamlit.proto.WidgetStates_pb2 import WidgetState

    table = next(d for d in at.dataframe if d.key == "browser_table")
    states = at._tree.get_widget_states()
    state = WidgetState(id=table.proto.id)
    state.string_value = json.dumps({"selection": {"rows": [], "columns": [], "cells": [[row, column]]}})
    states.widgets.append(state)
    return at._run(states)


def test_browser_a_click_on_a_cell_opens_its_case_and_the_dropdown_follows(monkeypatch: pytest.MonkeyPatch,
                                                                          tmp_path: Path) -> None:
    """Bug: the caption said "Click a row to open it" but a click on a cell only highlighted it (rows opened by
    their checkbox only), and after a row was opened the "Case" dropdown still named another case, which
    "Open case" would have opened."""
    data = tmp_path / "data"
    make_case_dir(data, case_id="BraTS2021_00007")
    make_case_dir(data, case_id="BraTS2021_00008", with_seg=False)
    monkeypatch.setenv("BRATS_DATA_ROOTS", str(data))
    at = app(BROWSER, **{ui.KEY_DATA_DIR: str(data)})
    assert at.selectbox(key="browser_pick").value == "BraTS2021_00007/BraTS2021_00007"
    click_table_cell(at, 1, "shape")
    assert not at.exception
    assert at.session_state[ui.KEY_CASE]["case_id"] == "BraTS2021_00008"
    assert at.selectbox(key="browser_pick").value == "BraTS2021_00008/BraTS2021_00008"
    assert "Selected case: BraTS2021_00008" in texts(at.subheader)
    # a case opened some other way (another page, the URL) is named by the dropdown too
    at.session_state[ui.KEY_CASE] = {"kind": "folder", "folder": str(data.resolve()), "case_id": "BraTS2021_00007",
                                     "key": "BraTS2021_00007/BraTS2021_00007"}
    at.run()
    assert at.selectbox(key="browser_pick").value == "BraTS2021_00007/BraTS2021_00007"
    caption = next(c.value for c in at.caption if "cases." in c.value)
    assert "Click any cell of a row" in caption


def test_browser_opens_the_chosen_one_of_cases_sharing_an_id(monkeypatch: pytest.MonkeyPatch,
                                                             tmp_path: Path) -> None:
    """Bug: two cases with one id in different folders; choosing the second opened the first."""
    data = tmp_path / "data"
    monkeypatch.setenv("BRATS_DATA_ROOTS", str(data))
    make_case_dir(data / "site_a", case_id="BraTS2021_00001", shape=(12, 10, 8))
    make_case_dir(data / "site_b", case_id="BraTS2021_00001", shape=(10, 8, 6), with_seg=False)
    at = app(BROWSER, **{ui.KEY_DATA_DIR: str(data)})
    assert not at.exception
    table = at.dataframe[0].value
    assert list(table["case_id"]) == ["BraTS2021_00001", "BraTS2021_00001"]
    assert list(table["location"]) == ["site_a/BraTS2021_00001", "site_b/BraTS2021_00001"]
    pick = at.selectbox(key="browser_pick")
    assert pick.options == ["BraTS2021_00001 (site_a/BraTS2021_00001)", "BraTS2021_00001 (site_b/BraTS2021_00001)"]
    pick.set_value("site_b/BraTS2021_00001/BraTS2021_00001").run()
    next(b for b in at.button if b.label == "Open case").click().run()
    assert not at.exception
    assert at.session_state[ui.KEY_CASE]["key"] == "site_b/BraTS2021_00001/BraTS2021_00001"
    geometry = dict(zip(at.dataframe[1].value["Property"], at.dataframe[1].value["Value"], strict=True))
    assert geometry["Grid (RAS, voxels)"] == "10 x 8 x 6"  # site_b's case, not site_a's 12 x 10 x 8
    assert "No ground-truth segmentation" in texts(at.info)


def test_a_reload_reopens_the_same_one_of_cases_sharing_an_id(monkeypatch: pytest.MonkeyPatch,
                                                              tmp_path: Path) -> None:
    data = tmp_path / "data"
    make_case_dir(data / "site_a", case_id="BraTS2021_00001", shape=(12, 10, 8))
    make_case_dir(data / "site_b", case_id="BraTS2021_00001", shape=(10, 8, 6))
    monkeypatch.setenv("BRATS_DATA_ROOTS", str(data))
    key = "site_b/BraTS2021_00001/BraTS2021_00001"
    at = app(BROWSER, {"kind": "folder", "folder": str(data.resolve()), "case_id": "BraTS2021_00001", "key": key})
    assert not at.exception
    assert at.query_params["key"] == key
    reload = AppTest.from_file(HOME, default_timeout=60)
    reload.switch_page(BROWSER)
    for name in ("case", "src", "key"):
        reload.query_params[name] = at.query_params[name]
    reload.run()
    assert not reload.exception
    assert reload.session_state[ui.KEY_CASE]["key"] == key
    assert "**Case**  \n`BraTS2021_00001` in `site_b/BraTS2021_00001`" in [m.value for m in reload.sidebar.markdown]
    geometry = dict(zip(reload.dataframe[1].value["Property"], reload.dataframe[1].value["Value"], strict=True))
    assert geometry["Grid (RAS, voxels)"] == "10 x 8 x 6"  # site_b's case


def test_sidebar_data_folder_follows_the_pick_in_the_same_run(monkeypatch: pytest.MonkeyPatch,
                                                             tmp_path: Path) -> None:
    """Bug: the sidebar's "Data folder" showed the previous choice until the next run."""
    first, second = tmp_path / "first", tmp_path / "second"
    make_case_dir(first, case_id="BraTS2021_00001")
    make_case_dir(second, case_id="BraTS2021_00002")
    monkeypatch.setenv("BRATS_DATA_ROOTS", f"{first}:{second}")
    at = app(BROWSER)
    for label, folder in (("second", second), ("first", first)):
        at.selectbox(key="browser_folder_pick").set_value(label).run()
        assert not at.exception
        assert at.session_state[ui.KEY_DATA_DIR] == str(folder.resolve())
        assert f"**Data folder**  \n`{label}`" in [m.value for m in at.sidebar.markdown]  # a label, not a path


def test_browser_says_how_a_case_with_missing_modalities_is_segmented(monkeypatch: pytest.MonkeyPatch,
                                                                      tmp_path: Path) -> None:
    data = tmp_path / "data"
    make_case_dir(data, case_id="BraTS2021_00009", modalities=("flair", "t1ce"))
    make_case_dir(data, case_id="BraTS2021_00010", modalities=("t1", "t2"))
    monkeypatch.setenv("BRATS_DATA_ROOTS", str(data))
    at = app(BROWSER)
    at.selectbox(key="browser_folder_pick").set_value("data").run()
    at.selectbox(key="browser_pick").set_value("BraTS2021_00009/BraTS2021_00009").run()
    next(b for b in at.button if b.label == "Open case").click().run()
    assert not at.exception
    assert "This case lacks T1, T2: the model segments it without them" in texts(at.info)
    at.selectbox(key="browser_pick").set_value("BraTS2021_00010/BraTS2021_00010").run()
    next(b for b in at.button if b.label == "Open case").click().run()
    assert "This case cannot be segmented: expected FLAIR or T1CE" in texts(at.warning)


def test_browser_demo_source_is_always_available(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("BRATS_DATA_ROOTS", str(tmp_path))
    at = app(BROWSER, **{ui.KEY_DATA_DIR: str(tmp_path)})
    assert not at.exception
    assert "No BraTS cases" in texts(at.info)
    at.radio(key="browser_source").set_value("Bundled demo").run()
    assert list(at.dataframe[0].value["case_id"]) == ["TCIA-example"]


def test_browser_search_without_match_says_so_and_keeps_the_demo_openable() -> None:
    """Bug: a search text left in the box filtered the demo list to nothing and hid the Open button."""
    at = app(BROWSER)
    at.radio(key="browser_source").set_value("Bundled demo").run()
    at.text_input(key="browser_search").set_value("xyz").run()
    assert not at.exception
    assert "No case matches 'xyz'" in texts(at.warning)
    assert list(at.dataframe[0].value["case_id"]) == ["TCIA-example"]  # the list is not emptied
    assert [b.label for b in at.button if b.label == "Open case"] == ["Open case"]
    next(b for b in at.button if b.label == "Clear search").click().run()
    assert not at.exception
    assert at.text_input(key="browser_search").value == ""
    assert "No case matches" not in texts(at.warning)
    next(b for b in at.button if b.label == "Open case").click().run()
    assert at.session_state[ui.KEY_CASE]["case_id"] == "TCIA-example"


def test_browser_upload_shows_errors_next_to_files_and_builds_a_case(tmp_path: Path) -> None:
    folder = make_case_dir(tmp_path, case_id="BraTS2021_00042")
    good = [(p.name, p.read_bytes(), "application/gzip") for p in sorted(folder.iterdir())]
    at = app(BROWSER)
    blob = good[0][1]
    at.file_uploader(key="browser_uploads").set_value(
        [good[0], ("photo_t1.nii", PNG_BYTES, "application/octet-stream"),
         ("cut_t2.nii.gz", blob[: len(blob) // 2], "application/gzip")]).run()
    assert not at.exception
    errors = texts(at.error)
    assert "photo_t1.nii:" in errors and "PNG" in errors
    assert "cut_t2.nii.gz:" in errors and "truncated" in errors
    assert len(at.success) == 1  # the good FLAIR
    build = next(b for b in at.button if b.label == "Use these files as the case")
    assert build.disabled

    at.file_uploader(key="browser_uploads").set_value(good).run()
    assert not at.exception and not at.error
    assert [s.value for s in at.selectbox if s.key and s.key.startswith("browser_upload_mod_")] == \
        ["flair", "seg", "t1", "t1ce", "t2"]
    next(b for b in at.button if b.label == "Use these files as the case").click().run()
    assert not at.exception
    sel = at.session_state[ui.KEY_CASE]
    assert (sel["kind"], sel["case_id"], sel["origin"]) == ("upload", "BraTS2021_00042", "upload")
    assert at.session_state[ui.KEY_UPLOADED].has_seg
    assert len(at.get("image")) == 4


def test_browser_names_a_converted_case_by_how_it_was_made(tmp_path: Path) -> None:
    """Bug (walk of issue 19): a case converted from DICOM showed "Source: upload" in its geometry table."""
    from core.app import session_cases
    from core.data.cases import load_case_folder

    case = load_case_folder(make_case_dir(tmp_path / "made", "BraTS2021_00043"))
    entry = session_cases.SessionCase("sid1", "dicom", case)
    at = app(BROWSER, {"kind": "upload", "case_id": case.case_id, "sid": "sid1", "origin": "dicom"},
             **{session_cases.KEY_SESSION_CASES: {"sid1": entry}, ui.KEY_UPLOADED: case})
    assert not at.exception
    geometry = next(df.value for df in at.dataframe if "Property" in df.value.columns)
    source = dict(zip(geometry["Property"], geometry["Value"], strict=True))["Source"]
    assert source == "DICOM series (this session)"


# -------------------------------------------------------------------------------------------- slice viewer

def test_viewer_empty_state() -> None:
    at = app(VIEWER)
    assert not at.exception
    assert "No case selected" in texts(at.info)
    assert not at.get("plotly_chart")


SERVER_VIEWS = {"viewer_engine": "On the server (plotly)"}  # the plotly views (the browser viewer is the default)


def client_args(at: AppTest) -> dict:
    """The arguments the page sent to the in-browser viewer (its only custom component)."""
    (el,) = [e for e in at.get("component_instance") if e.proto.component_name.endswith("brats_slice_client")]
    return json.loads(el.proto.json_args)


def test_viewer_draws_in_the_browser_by_default() -> None:
    at = app(VIEWER, DEMO_SELECTION)
    assert not at.exception
    assert not at.get("plotly_chart")  # no server-drawn views, no slice sliders
    assert not [s for s in at.slider if s.key and s.key.startswith("viewer_cursor_")]
    args = client_args(at)
    cursor = at.session_state[ui.KEY_CURSOR]
    assert args["cursor"] == cursor
    payload = args["payload"]
    assert payload["shape"] == [240, 240, 155]
    assert [im["key"] for im in payload["images"]] == ["flair", "t1", "t1ce", "t2"]
    assert [lab["name"] for lab in payload["labels"]] == ["Ground truth"]
    assert args["settings"] == {"modality": "flair", "plane": "axial", "show": ["Ground truth"], "radiological": True,
                                "opacity": 0.4, "outline": False, "hidden": []}
    # the readout: the demo's RAS grid has affine x = i - 239, y = j, z = k (LPS file of 240 columns, 1 mm)
    assert (f"Cursor voxel ({cursor['x']}, {cursor['y']}, {cursor['z']}), "
            f"RAS ({cursor['x'] - 239:.1f}, {cursor['y']:.1f}, {cursor['z']:.1f}) mm") in texts(at.caption)


TAB_VIEWS, TAB_MONTAGE = ":material/grid_view: Three planes", ":material/view_module: Montage"


def test_the_browser_viewers_choices_survive_a_trip_to_the_montage_tab() -> None:
    """Bug (issue 19.4): switching to Montage (or 3-D) and back reset the browser viewer (T1CE back to FLAIR,
    window, outlines, convention): the viewer's choices are kept under an explicit session key and sent back."""
    at = app(VIEWER, DEMO_SELECTION)
    view = {"modality": "t1ce", "plane": "axial", "radiological": False, "opacity": 0.6, "outline": True,
            "show": ["Ground truth"], "hidden": ["2"], "windows": {"t1ce": [12.5, 140.0], "evil": [0, 1]}}
    at.session_state["viewer_client"] = {"cursor": {"x": 100, "y": 120, "z": 50}, "seq": 1, "ruler": None,
                                          "view": view}
    at.run()
    at.session_state["viewer_tab"] = TAB_MONTAGE
    at.run()
    assert not at.exception and not [e for e in at.get("component_instance")]  # the viewer is unmounted
    at.session_state["viewer_tab"] = TAB_VIEWS
    at.run()
    assert not at.exception
    settings = client_args(at)["settings"]
    assert settings["modality"] == "t1ce" and settings["radiological"] is False and settings["outline"] is True
    assert settings["opacity"] == 0.6 and settings["hidden"] == ["2"]
    assert settings["windows"] == {"t1ce": [12.5, 140.0]}  # only the case's own modalities
    at.radio(key="viewer_convention").set_value("Neurological").run()  # unchanged from the browser's: kept
    at.selectbox(key="viewer_modality").set_value("all").run()  # a later change in the sidebar wins
    settings = client_args(at)["settings"]
    assert settings["modality"] == "all" and settings["outline"] is True


def test_the_2x2_choice_reaches_the_browser_viewer() -> None:
    """Bug (issue 19.4): "All modalities (2x2)" sent FLAIR to the browser viewer (which showed three planes)."""
    at = app(VIEWER, DEMO_SELECTION)
    at.selectbox(key="viewer_modality").set_value("all").run()
    at.radio(key="viewer_plane").set_value("coronal").run()
    settings = client_args(at)["settings"]
    assert settings["modality"] == "all" and settings["plane"] == "coronal"


def _raw_case_with_prediction(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[dict, object, dict]:
    """A case without an expert label (like a raw study) and a prediction with its tumour off-centre."""
    make_case_dir(tmp_path / "data", "BraTS2021_00050", with_seg=False, shape=(20, 18, 16))
    monkeypatch.setenv("BRATS_DATA_ROOTS", str(tmp_path / "data"))
    selection = {"kind": "folder", "folder": str(tmp_path / "data"), "case_id": "BraTS2021_00050"}

    class FakePrediction:
        labels = np.zeros((20, 18, 16), dtype=np.uint8)

    pred = FakePrediction()
    pred.labels[3, 3:6, 11:14] = 2  # slices x=3, y=4, z=12 hold the most tumour
    pred.labels[2:5, 4, 12] = 4
    return selection, pred, {"x": 3, "y": 4, "z": 12}


def test_most_tumour_uses_the_prediction_when_there_is_no_expert_label(tmp_path: Path,
                                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    """Bug (issue 19.2): with only a prediction, "Most tumour" was greyed out and the viewer opened mid-brain."""
    selection, pred, where = _raw_case_with_prediction(tmp_path, monkeypatch)
    at = app(VIEWER, selection, prediction=pred)
    assert not at.exception, at.exception
    assert at.session_state[ui.KEY_CURSOR] == where  # opens on the tumour
    assert client_args(at)["payload"]["cursors"]["tumour"] == where  # the browser's "Most tumour" button
    at.radio(key="viewer_engine").set_value("On the server (plotly)").run()
    button = next(b for b in at.button if b.label == "Most tumour")
    assert not button.disabled and "prediction" in button.help
    at.session_state[ui.KEY_CURSOR] = {"x": 10, "y": 9, "z": 2}
    at.run()
    next(b for b in at.button if b.label == "Most tumour").click().run()
    assert at.session_state[ui.KEY_CURSOR] == where


def test_no_class_choices_without_any_segmentation(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Bug (issue 19.11): NCR/ED/ET checkboxes showed on a case without labels or prediction."""
    selection, _, _ = _raw_case_with_prediction(tmp_path, monkeypatch)
    at = app(VIEWER, selection, **SERVER_VIEWS)
    assert not at.exception, at.exception
    assert not [c for c in at.checkbox if c.key and c.key.startswith("viewer_class_")]
    assert at.checkbox(key="viewer_contour").disabled


def test_the_viewer_names_each_overlays_segmentation() -> None:
    """Issue 19.6: the page says which segmentation each overlay is (expert label, model with its settings)."""
    class FakePrediction:
        labels = np.zeros((240, 240, 155), dtype=np.uint8)
        model_name, tta, runtime = "unet_x", True, "onnxruntime"

    at = app(VIEWER, DEMO_SELECTION, prediction=FakePrediction())
    captions = texts(at.caption)
    assert "Ground truth = Reference label: the case's own segmentation file" in captions
    assert "Prediction = Model prediction (model `unet_x`, TTA on, ONNX Runtime)" in captions


def test_viewer_click_in_the_browser_moves_the_shared_cursor_and_measures() -> None:
    at = app(VIEWER, DEMO_SELECTION)
    start = client_args(at)["cursor"]
    # what the component sends after a click, and after the second point of the ruler (x 100 -> 103, z 50 -> 54)
    at.session_state["viewer_client"] = {"cursor": {"x": 100, "y": 120, "z": 50}, "seq": 1,
                                          "ruler": [[100, 120, 50], [103, 120, 54]]}
    at.run()
    assert not at.exception
    assert at.session_state[ui.KEY_CURSOR] == {"x": 100, "y": 120, "z": 50}
    captions = texts(at.caption)
    assert "Cursor voxel (100, 120, 50), RAS (-139.0, 120.0, 50.0) mm" in captions
    assert "Ruler: 5.0 mm from voxel (100, 120, 50) to (103, 120, 54)" in captions  # 3-4-5 on 1 mm voxels
    assert client_args(at)["cursor"] == start  # the case is not re-sent with a new cursor: the client keeps its own
    # a malformed value (the browser is not trusted) changes nothing and breaks nothing
    at.session_state["viewer_client"] = {"cursor": "x", "seq": 2, "ruler": {"a": 1}}
    at.run()
    assert not at.exception
    assert at.session_state[ui.KEY_CURSOR] == {"x": 100, "y": 120, "z": 50}
    assert "Ruler:" not in texts(at.caption)


def test_viewer_demo_shows_three_linked_views_and_legend() -> None:
    at = app(VIEWER, DEMO_SELECTION, **SERVER_VIEWS)
    assert not at.exception
    charts = at.get("plotly_chart")
    assert len(charts) == 3
    figs = [json.loads(c.proto.spec) for c in charts]
    assert [f["layout"]["title"]["text"].split()[0] for f in figs] == ["Axial", "Coronal", "Sagittal"]
    assert all(len(f["layout"]["shapes"]) == 2 and len(f["layout"]["annotations"]) == 4 for f in figs)
    assert "NCR/NET" in texts(at.markdown) and "Enhancing tumour" in texts(at.markdown)
    cursor = at.session_state[ui.KEY_CURSOR]
    assert figs[0]["layout"]["title"]["text"] == f"Axial z={cursor['z']}"

    at.slider(key="viewer_cursor_z").set_value(20).run()
    assert at.session_state[ui.KEY_CURSOR]["z"] == 20
    figs = [json.loads(c.proto.spec) for c in at.get("plotly_chart")]
    assert figs[0]["layout"]["title"]["text"] == "Axial z=20"
    # the coronal view's horizontal cross-hair line moved to z=20 (155 slices, superior at the top)
    assert figs[1]["layout"]["shapes"][1]["y0"] == 155 - 1 - 20

    jump = next(b for b in at.button if b.label == "Most tumour")
    # bug (walk of issue 19): the help said "expert label"; the demo's ground truth is a pseudo-label
    assert jump.help == "Jump to the slices with most tumour (ground truth)"
    jump.click().run()
    assert at.session_state[ui.KEY_CURSOR]["z"] == cursor["z"]
    assert at.slider(key="viewer_cursor_z").value == cursor["z"]


def test_viewer_convention_and_four_up() -> None:
    at = app(VIEWER, DEMO_SELECTION, **SERVER_VIEWS)
    at.radio(key="viewer_convention").set_value("Neurological").run()
    fig = json.loads(at.get("plotly_chart")[0].proto.spec)
    letters = {a["text"] for a in fig["layout"]["annotations"]}
    assert letters == {"<b>A</b>", "<b>P</b>", "<b>L</b>", "<b>R</b>"}
    left = min(fig["layout"]["annotations"], key=lambda a: a["x"])
    assert left["text"] == "<b>L</b>"
    at.selectbox(key="viewer_modality").set_value("all").run()
    assert not at.exception
    charts = at.get("plotly_chart")
    assert len(charts) == 1
    assert len(json.loads(charts[0].proto.spec)["data"]) == 4


def test_viewer_prediction_overlay_and_errors() -> None:
    class FakePrediction:  # duck-typed like core.engine.inference.Prediction
        labels = np.zeros((240, 240, 155), dtype=np.uint8)

    pred = FakePrediction()
    pred.labels[100:140, 100:140, 60:90] = 2
    at = app(VIEWER, DEMO_SELECTION, prediction=pred)
    assert not at.exception
    assert [lab["name"] for lab in client_args(at)["payload"]["labels"]] == ["Ground truth", "Prediction"]
    at.radio(key="viewer_engine").set_value("On the server (plotly)").run()
    assert at.checkbox(key="viewer_show_pred").value is True
    assert not at.checkbox(key="viewer_show_err").disabled
    at.checkbox(key="viewer_show_err").check().run()
    assert not at.exception
    assert "False positive" in texts(at.markdown) and "False negative" in texts(at.markdown)
    at.checkbox(key="viewer_contour").check().run()
    at.checkbox(key="viewer_class_2").uncheck().run()
    assert not at.exception and len(at.get("plotly_chart")) == 3


def test_viewer_ignores_a_prediction_of_another_grid() -> None:
    class Other:
        labels = np.zeros((4, 4, 4), dtype=np.uint8)

    at = app(VIEWER, DEMO_SELECTION, prediction=Other())
    assert not at.exception
    assert at.checkbox(key="viewer_show_pred").disabled


def test_viewer_ignores_a_prediction_of_another_case() -> None:
    class FakePrediction:
        labels = np.ones((240, 240, 155), dtype=np.uint8)

    at = app(VIEWER, DEMO_SELECTION, prediction=FakePrediction(), prediction_case_key="some-other-case")
    assert not at.exception
    assert at.checkbox(key="viewer_show_pred").disabled


def reloaded(at: AppTest, page: str) -> AppTest:
    """A browser reload of ``at``'s page: a new session with the same URL query parameters only."""
    again = AppTest.from_file(HOME, default_timeout=60)
    again.switch_page(page)
    for name in at.query_params:
        again.query_params[name] = at.query_params[name]
    return again.run()


def test_a_reload_keeps_the_cursor_and_the_overlay_settings() -> None:
    """Bug: a reload kept the case but lost the cursor and the overlay settings."""
    at = app(VIEWER, DEMO_SELECTION, **{ui.KEY_CURSOR: {"x": 100, "y": 120, "z": 50}})
    at.radio(key="viewer_convention").set_value("Neurological").run()
    at.slider(key="viewer_opacity").set_value(0.7).run()
    at.checkbox(key="viewer_show_gt").uncheck().run()
    at.checkbox(key="viewer_contour").check().run()
    assert not at.exception
    assert at.query_params["cur"] == "100,120,50" and at.query_params["conv"] == "neuro"
    again = reloaded(at, VIEWER)
    assert not again.exception
    assert again.session_state[ui.KEY_CASE]["case_id"] == "TCIA-example"
    assert again.session_state[ui.KEY_CURSOR] == {"x": 100, "y": 120, "z": 50}
    assert again.radio(key="viewer_convention").value == "Neurological"
    assert again.slider(key="viewer_opacity").value == pytest.approx(0.7)
    assert again.checkbox(key="viewer_show_gt").value is False and again.checkbox(key="viewer_contour").value
    assert client_args(again)["settings"] == {"modality": "flair", "plane": "axial", "show": [], "radiological": False,
                                              "opacity": pytest.approx(0.7), "outline": True, "hidden": []}


def test_a_reload_ignores_bad_cursor_and_settings_in_the_url() -> None:
    at = AppTest.from_file(HOME, default_timeout=60)
    at.switch_page(VIEWER)
    for name, value in {"case": "TCIA-example", "src": "demo", "cur": "999,1,1", "op": "7", "conv": "x",
                        "img": "../etc", "ov": "gt.rm"}.items():
        at.query_params[name] = value
    at.run()
    assert not at.exception
    cursor = at.session_state[ui.KEY_CURSOR]
    assert cursor != {"x": 999, "y": 1, "z": 1} and cursor["x"] < 240  # out of the grid: the default cursor
    assert at.slider(key="viewer_opacity").value == pytest.approx(0.4)
    assert at.radio(key="viewer_convention").value == "Radiological"
    assert at.selectbox(key="viewer_modality").value == "flair"
    assert at.checkbox(key="viewer_show_gt").value is True


def test_a_url_case_that_cannot_be_opened_says_why(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Bug: a URL naming a case of a folder that is not allowed (or a case that is gone) showed "No case
    selected" with no explanation."""
    data = tmp_path / "data"
    make_case_dir(data, case_id="BraTS2021_00001")
    monkeypatch.setenv("BRATS_DATA_ROOTS", str(data))
    for params, why in (({"case": "BraTS2021_00001", "src": "elsewhere"}, "not one of the data folders"),
                        ({"case": "BraTS2021_00099", "src": "data"}, "no longer in the data folder `data`")):
        for page in (VIEWER, BROWSER):
            at = AppTest.from_file(HOME, default_timeout=60)
            at.switch_page(page)
            for name, value in params.items():
                at.query_params[name] = value
            at.run()
            assert not at.exception
            assert ui.KEY_CASE not in at.session_state or at.session_state[ui.KEY_CASE] is None
            warnings = [w.value for w in at.warning if why in w.value]
            assert len(warnings) == 1 and "\n" not in warnings[0], (page, texts(at.warning))
            assert (params["case"] in warnings[0]) == (params["src"] == "data")  # a foreign folder: no echo
