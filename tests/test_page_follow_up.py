"""AppTest runs of the Follow-up comparison page (pages/6_Follow_up.py) on the synthetic patient of
tests/followup_phantom.py written as two cases of a data folder: choosing the studies, the comparison, the linked
views with one slice control, the table, the suggested category with its caveat, the PDF download, and the
refusals shown in one line."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from conftest import HOME, run_page, texts
from followup_phantom import (
    FOLLOWUP_HALVES,
    SHAPE,
    SHIFT_VOXELS,
    followup_case,
    make_case,
    phantom,
    write_case,
    write_pair,
)
from streamlit.testing.v1 import AppTest

from core import config
from core.analysis.compare import CAVEAT
from core.app import followup, ui

PAGE = "pages/6_Follow_up.py"


@pytest.fixture(autouse=True)
def _isolated(app_env: Path) -> Path:
    return app_env


@pytest.fixture
def data(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    folder = tmp_path / "data"
    write_pair(folder)
    monkeypatch.setenv("BRATS_DATA_ROOTS", str(folder))
    return folder


def app(folder: Path | None = None, **state: object) -> AppTest:
    if folder is not None:
        state[ui.KEY_DATA_DIR] = str(folder.resolve())
    at = run_page(PAGE, None, **state)
    assert not at.exception, at.exception
    return at


def option_labels(at: AppTest, key: str) -> list[str]:
    return [str(o) for o in at.selectbox(key=key).options]


def test_needs_two_studies() -> None:
    at = app()  # only the bundled demo: one study
    assert "Two studies are needed" in texts(at.info)
    assert config.DISCLAIMER in texts(at.warning)
    assert not at.button


def test_compare_shows_linked_views_table_category_and_pdf(data: Path) -> None:
    at = app(data)
    assert option_labels(at, "followup_baseline")[:2] == ["FU_Baseline (data folder: FU_Baseline)",
                                                          "FU_Followup (data folder: FU_Followup)"]
    assert at.selectbox(key="followup_followup").value != at.selectbox(key="followup_baseline").value
    assert "Press **Compare**" in texts(at.info)
    at.button(key="followup_run").click().run()
    assert not at.exception, at.exception
    assert not at.error
    # registration summary: the shift of (3, -2, 1) voxels of 2 mm
    metrics = {m.label: m.value for m in at.metric}
    assert metrics["Registered on"] == "T1CE"
    shift = [float(v) for v in metrics["Translation (mm)"].split(",")]
    np.testing.assert_allclose(shift, [6.0, -4.0, 2.0], atol=2.0)
    assert "Final Mattes mutual information -" in texts(at.caption)
    # one slice control drives both views, opened through the centre of the baseline's tumour core
    assert len(at.get("image")) == 2
    slider = at.slider(key="followup_slice_axial")
    assert slider.value == 26  # the centre of the tumour core (axial slices 21..30)
    slider.set_value(5).run()
    assert not at.exception
    captions = [img.proto.imgs[0].caption for img in at.get("image")]
    assert captions[0] == "Baseline FU_Baseline - axial 5 (R on the left, A at the top)"  # radiological
    assert captions[1].startswith("Follow-up FU_Followup (registered) - axial 5")
    # the table: WT 13.82 -> 4.10 mL, -70.4 %
    frame = at.dataframe[0].value
    wt = frame[frame["Structure"].str.startswith("WT")].iloc[0]
    assert (wt["Baseline"], wt["Follow-up"], wt["Change (%)"]) == (13.82, 4.1, "-70.4 %")
    assert "Sum of products" in " ".join(frame["Structure"])
    assert "PR - partial response" in texts(at.info)
    assert CAVEAT in texts(at.warning)
    assert [d.proto.label for d in at.get("download_button")] == ["Download the follow-up report (PDF)"]


def test_plane_switch_keeps_both_views(data: Path) -> None:
    at = app(data)
    at.button(key="followup_run").click().run()
    at.radio(key="followup_plane").set_value("coronal").run()
    assert not at.exception
    slider = at.slider(key="followup_slice_coronal")
    assert slider.max == SHAPE[1] - 1
    assert len(at.get("image")) == 2


def test_same_study_twice_is_refused(data: Path) -> None:
    at = app(data)
    at.selectbox(key="followup_followup").set_value(at.selectbox(key="followup_baseline").value).run()
    assert "Choose two different studies." in texts(at.warning)
    assert not at.button and not at.get("image")


def test_a_study_without_segmentation_is_offered_the_model(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Bug: a study without a segmentation made the first Compare fail ("expected a segmentation... got none")
    and nothing offered to segment it. Now each such study has a one-line warning and a Segment button, and
    Compare is offered once both have labels."""
    folder = tmp_path / "data"
    write_pair(folder, with_seg=False)
    monkeypatch.setenv("BRATS_DATA_ROOTS", str(folder))
    at = app(folder)
    warnings = [w.value for w in at.warning if "has no segmentation of its own" in w.value]
    assert len(warnings) == 2 and all("\n" not in w for w in warnings)
    assert "`FU_Baseline`" in warnings[0] and "`FU_Followup`" in warnings[1]
    assert {b.label for b in at.button} == {"Segment the baseline study", "Segment the follow-up study"}
    assert not at.error


def test_the_model_segments_a_study_without_labels_and_the_comparison_names_it(
        monkeypatch: pytest.MonkeyPatch, tmp_path: Path, tiny_model: Path) -> None:
    folder = tmp_path / "data"
    write_case(folder, "FU_Baseline", phantom())
    write_case(folder, "FU_Followup", phantom(FOLLOWUP_HALVES, SHIFT_VOXELS), with_seg=False)
    monkeypatch.setenv("BRATS_DATA_ROOTS", str(folder))
    at = run_page(PAGE, None, model=tiny_model, **{ui.KEY_DATA_DIR: str(folder.resolve())})
    assert not at.exception, at.exception
    assert [b.label for b in at.button] == ["Segment the follow-up study"]
    at.button(key="followup_segment_b").click().run()
    assert not at.exception, at.exception
    assert "from the model tiny" in texts(at.caption)
    at.button(key="followup_run").click().run()
    assert not at.exception, at.exception
    comparison = at.session_state[followup.KEY_RESULT]["comparison"]
    assert comparison.label_sources["followup"] == "model tiny"
    assert comparison.label_sources["baseline"].startswith("expert segmentation")
    assert "follow-up - model tiny" in texts(at.caption)  # the page says where each study's volumes come from


def test_the_default_follow_up_has_a_segmentation(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    folder = tmp_path / "data"
    write_case(folder, "FU_A", phantom())
    write_case(folder, "FU_B", phantom(), with_seg=False)
    write_case(folder, "FU_C", phantom(FOLLOWUP_HALVES, SHIFT_VOXELS))
    monkeypatch.setenv("BRATS_DATA_ROOTS", str(folder))
    at = app(folder)
    assert at.selectbox(key="followup_baseline").value.endswith("FU_A/FU_A")
    assert at.selectbox(key="followup_followup").value.endswith("FU_C/FU_C")  # not FU_B, which has no labels


def test_every_case_made_in_the_session_is_offered(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Bug: only the last upload was offered; cases converted from DICOM or a raw study were not."""
    from core.app import session_cases

    folder = tmp_path / "data"
    write_case(folder, "FU_Baseline", phantom())
    monkeypatch.setenv("BRATS_DATA_ROOTS", str(folder))
    at = AppTest.from_file(HOME, default_timeout=60)
    at.switch_page(PAGE)
    at.session_state[ui.KEY_DATA_DIR] = str(folder.resolve())
    made = {"dicom": followup_case(), "study": make_case("FU_Study", phantom())}
    at.session_state[session_cases.KEY_SESSION_CASES] = {
        f"id{i}": session_cases.SessionCase(f"id{i}", origin, case) for i, (origin, case) in enumerate(made.items())}
    at.run()
    assert not at.exception, at.exception
    labels = option_labels(at, "followup_baseline")
    assert "FU_Followup (converted from DICOM in this session)" in labels
    assert "FU_Study (converted from a raw study in this session)" in labels
    at.selectbox(key="followup_baseline").set_value("folder:" + str(folder.resolve()) + ":FU_Baseline/FU_Baseline")
    at.selectbox(key="followup_followup").set_value("session:id0").run()
    at.button(key="followup_run").click().run()
    assert not at.exception and not at.error
    assert "PR - partial response" in texts(at.info)


def test_poor_alignment_is_refused(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    folder = tmp_path / "data"
    write_case(folder, "FU_Baseline", phantom())
    write_case(folder, "Other", phantom(pattern=True))
    monkeypatch.setenv("BRATS_DATA_ROOTS", str(folder))
    at = app(folder)
    at.button(key="followup_run").click().run()
    assert not at.exception
    assert "expected the follow-up to align with the baseline" in texts(at.error)
    assert followup.KEY_RESULT not in at.session_state


def test_the_sessions_upload_is_offered_as_a_study(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    folder = tmp_path / "data"
    write_case(folder, "FU_Baseline", phantom())
    monkeypatch.setenv("BRATS_DATA_ROOTS", str(folder))
    uploaded = followup_case()  # in memory, as the Case browser keeps an upload
    at = app(folder, **{ui.KEY_UPLOADED: uploaded, ui.KEY_CASE: {"kind": "upload", "case_id": uploaded.case_id}})
    labels = option_labels(at, "followup_baseline")
    assert labels == ["FU_Baseline (data folder: FU_Baseline)", "TCIA-example (demo: TCIA-example)",
                      "FU_Followup (uploaded in this session)"]
    # the selected case (the upload) is the default baseline; choose the folder case as baseline instead
    assert at.selectbox(key="followup_baseline").value == followup.UPLOAD_OPTION
    at.selectbox(key="followup_baseline").select_index(0)
    at.selectbox(key="followup_followup").select_index(2).run()
    assert at.selectbox(key="followup_followup").value == followup.UPLOAD_OPTION
    at.button(key="followup_run").click().run()
    assert not at.exception and not at.error
    assert "PR - partial response" in texts(at.info)


def test_the_open_case_is_offered_when_the_data_folder_is_another(monkeypatch: pytest.MonkeyPatch,
                                                                  tmp_path: Path) -> None:
    """Bug (walk of issue 19): with a case open from one folder and the data folder set to another (the demo
    here), the open case was not offered: "Two studies are needed" although the demo and the open case make two."""
    folder = tmp_path / "data"
    write_case(folder, "FU_Baseline", phantom())
    monkeypatch.setenv("BRATS_DATA_ROOTS", f"Trial={folder}")
    selection = {"kind": "folder", "folder": str(folder.resolve()), "case_id": "FU_Baseline"}
    at = app(config.DEMO_DATA_DIR, **{ui.KEY_CASE: selection})
    assert "Two studies are needed" not in texts(at.info)
    labels = option_labels(at, "followup_baseline")
    assert at.selectbox(key="followup_baseline").value == f"folder:{folder.resolve()}:FU_Baseline/FU_Baseline"
    assert "FU_Baseline (Trial: FU_Baseline)" in labels, labels  # its folder named by its label
