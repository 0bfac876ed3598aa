"""AppTest runs of the Volume report page (pages/4_Volume_report.py): the empty state, which segmentation is
reported (prediction, hand-corrected labels from the session or from disk, the ground truth on request), the
volume table, the bar chart and the three downloads, and the PDF the download builds.

The page runs through Home (``switch_page``) so page links resolve as in the app.
"""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pypdf
import pytest
from conftest import DEMO_SELECTION, run_page, texts
from streamlit.testing.v1 import AppTest

from core import config
from core.analysis.edits import EditStore
from core.analysis.lesionwise import count_lesions
from core.analysis.report import volume_table
from core.app import private_store, segstate, ui
from core.app.audit import read_events
from core.data.cases import load_case_folder

PAGE = "pages/4_Volume_report.py"


@pytest.fixture(scope="module")
def demo_case():
    return load_case_folder(config.DEMO_DATA_DIR / "TCIA-example")


@pytest.fixture(scope="module")
def prediction(tiny_model: Path, demo_case):
    from core.engine.inference import predict_case
    from core.engine.model import load_model

    return predict_case(load_model(tiny_model), demo_case)


@pytest.fixture(autouse=True)
def _isolated(app_env: Path) -> Path:
    return app_env


def app(model: Path | None = None, selection: dict | None = DEMO_SELECTION, **state: object) -> AppTest:
    at = run_page(PAGE, selection, model, **state)
    assert not at.exception, at.exception
    return at


def downloads(at: AppTest) -> dict[str, str]:
    """Label -> key of the page's download buttons."""
    return {el.proto.label: el.proto.id for el in at.get("download_button")}


def volume_frame(at: AppTest):
    return next(d.value for d in at.dataframe if "Structure" in d.value.columns)


def bars(at: AppTest) -> list[dict]:
    return [t for el in at.get("plotly_chart") for t in json.loads(el.proto.spec)["data"] if t.get("type") == "bar"]


def with_prediction(prediction, case) -> dict:
    return {ui.KEY_PREDICTION: prediction, ui.KEY_PREDICTION_CASE: case.content_key}


def test_empty_state_without_a_case() -> None:
    at = app(selection=None)
    assert "No case selected" in texts(at.info)
    assert config.DISCLAIMER in texts(at.warning)
    assert not at.get("download_button")


def test_without_a_segmentation_offers_to_run_or_show_the_ground_truth(tiny_model: Path, demo_case) -> None:
    at = app(tiny_model)
    assert "No segmentation of this case yet" in texts(at.info)
    assert [b.label for b in at.button] == ["Segment whole volume"]
    assert not at.get("download_button") and not at.dataframe
    at.toggle(key="report_use_gt").set_value(True).run()
    assert not at.exception, at.exception
    df = volume_frame(at)
    expected = [r["volume_ml"] for r in volume_table(demo_case.seg.data, demo_case.spacing_mm)]
    assert list(df["Reference label (mL)"]) == expected and "Difference (mL)" not in df.columns
    assert segstate.describe_segmentation(segstate.SOURCE_GROUND_TRUTH) in texts(at.markdown)
    assert len(downloads(at)) == 3 and len(bars(at)) == 1


def test_a_prediction_is_reported_with_table_chart_and_downloads(tiny_model: Path, demo_case, prediction,
                                                                 _isolated: Path) -> None:
    at = app(tiny_model, **with_prediction(prediction, demo_case))
    assert config.DISCLAIMER in texts(at.warning)
    assert f"Model prediction (model `tiny`, TTA off, {segstate.runtime_name(prediction.runtime)})" in texts(
        at.markdown) and prediction.model_sha256 in texts(at.markdown)
    assert not at.success  # not corrected
    df = volume_frame(at)
    rows = volume_table(prediction.labels, demo_case.spacing_mm, demo_case.seg.data)
    assert list(df["Model prediction (mL)"]) == [r["volume_ml"] for r in rows]
    assert list(df["Ground truth (mL)"]) == [r["gt_volume_ml"] for r in rows]
    assert list(df["Difference (mL)"]) == [r["difference_ml"] for r in rows]
    assert [b["name"] for b in bars(at)] == ["Model prediction", "Ground truth"]
    assert set(downloads(at)) == {"PDF summary", "Volume table (CSV)", "Segmentation (NIfTI)"}
    scores = next(d.value for d in at.dataframe if "Region" in d.value.columns)
    assert list(scores["Region"]) == ["WT", "TC", "ET"]
    # the PDF the download builds (same function, same inputs as the page)
    source = segstate.choose_report_source(demo_case.content_key, demo_case.shape, prediction=prediction,
                                           prediction_key=demo_case.content_key, ground_truth=demo_case.seg.data)
    pdf = segstate.report_pdf_bytes(demo_case, source, ui.cached_scores(demo_case, source.labels))
    text = " ".join("\n".join(p.extract_text() for p in pypdf.PdfReader(io.BytesIO(pdf)).pages).split())
    assert "TCIA-example" in text and " ".join(config.DISCLAIMER.split()) in text
    assert prediction.model_sha256 in text and "Corrected by hand no" in text
    assert not read_events(_isolated / "audit.log.jsonl")  # nothing exported yet


def test_scores_of_a_case_the_model_was_trained_on_say_so(tiny_model: Path, demo_case, prediction,
                                                           tmp_path: Path) -> None:
    """Bug (walk of issue 19): a BraTS training case scored Dice 0.91 on the report with nothing saying the model
    had been trained on it; a reader took it for the model's accuracy on new cases."""
    import shutil

    trained = tmp_path / "trained_on_demo"
    shutil.copytree(tiny_model, trained)
    (trained / "model_card.json").write_text(json.dumps({"split": {"train": ["TCIA-example"], "val": []}}))
    at = app(trained, **with_prediction(prediction, demo_case))
    assert "one of the model's training cases: these scores overstate" in texts(at.warning)
    at = app(tiny_model, **with_prediction(prediction, demo_case))  # no card: nothing to say
    assert "overstate" not in texts(at.warning)


def test_a_prediction_of_another_case_is_not_reported(tiny_model: Path, prediction) -> None:
    at = app(tiny_model, **{ui.KEY_PREDICTION: prediction, ui.KEY_PREDICTION_CASE: "0" * 32})
    assert "No segmentation of this case yet" in texts(at.info)
    assert not at.get("download_button")


def test_corrected_labels_in_the_session_are_reported(tiny_model: Path, demo_case, prediction) -> None:
    corrected = np.asarray(demo_case.seg.data).copy()  # "corrected" to the reference, for a known answer
    at = app(tiny_model, **with_prediction(prediction, demo_case),
             **{ui.KEY_CORRECTED: corrected, ui.KEY_CORRECTED_CASE: demo_case.content_key})
    assert "Corrected by hand" in texts(at.success) and "corrected by hand" in texts(at.markdown)
    df = volume_frame(at)
    assert list(df["Corrected (mL)"]) == list(df["Ground truth (mL)"])
    assert set(df["Difference (mL)"]) == {0.0}
    scores = next(d.value for d in at.dataframe if "Region" in d.value.columns)
    assert list(scores["Dice"]) == [1.0, 1.0, 1.0]
    assert [b["name"] for b in bars(at)] == ["Corrected", "Ground truth"]


def test_lesions_of_each_region_beside_the_volumes(tiny_model: Path, demo_case, prediction) -> None:
    """Corrected labels = the reference plus one edema speck away from the tumour: one more WT lesion than the
    reference, the same TC and ET lesions; the NCR and ED label rows have no count."""
    ref = np.asarray(demo_case.seg.data)
    corrected = ref.copy()
    corrected[2, 2, 2] = 2  # the demo tumour is far from the volume's corner
    expected_ref = count_lesions(ref, demo_case.spacing_mm)
    assert expected_ref["WT"] >= 1
    at = app(tiny_model, **with_prediction(prediction, demo_case),
             **{ui.KEY_CORRECTED: corrected, ui.KEY_CORRECTED_CASE: demo_case.content_key})
    df = volume_frame(at)

    def counts(column: str) -> list[int | None]:
        return [None if v == "\u2013" else int(v) for v in df[column]]

    assert list(df["Structure"])[:2] == ["NCR/NET (label 1)", "ED (label 2)"]
    assert counts("Lesions") == [None, None, expected_ref["ET"], expected_ref["TC"], expected_ref["WT"] + 1]
    assert counts("Ground-truth lesions") == [None, None, expected_ref["ET"], expected_ref["TC"], expected_ref["WT"]]
    # bug (walk of issue 19): the rows without a count showed the word "None"; they show a dash
    assert not any(pd.isna(v) for v in [*df["Lesions"], *df["Ground-truth lesions"]])
    assert "26-connected" in texts(at.caption)


def test_corrections_saved_on_disk_are_found(tiny_model: Path, demo_case, prediction) -> None:
    """The session's own saved edit session is reported (nothing in session state but its private token)."""
    token = private_store.new_token()
    store = EditStore(private_store.session_dir(token, create=True) / "corrections")
    store.start(demo_case.content_key, prediction.labels, prediction.model_sha256)
    mask = np.zeros(demo_case.shape[:2], dtype=bool)
    mask[100:110, 100:110] = True
    labels = store.apply(demo_case.content_key, 60, mask, 0)  # erase
    labels = store.apply(demo_case.content_key, 61, mask, 2, inside_tumour_only=False)
    at = app(tiny_model, **{ui.KEY_PRIVATE: token})
    assert "Corrected by hand" in texts(at.success)
    expected = [r["volume_ml"] for r in volume_table(labels, demo_case.spacing_mm)]
    assert list(volume_frame(at)["Corrected (mL)"]) == expected
    assert prediction.model_sha256 in texts(at.markdown)
    assert len(downloads(at)) == 3


def test_another_sessions_corrections_are_never_shown(tiny_model: Path, demo_case, prediction,
                                                      _isolated: Path) -> None:
    """Bug (issue 19.7): corrections of a data-folder case were saved in one shared folder, so a fresh session (any
    other user) opening the case was shown them. Two sessions: the second sees only the model's prediction."""
    first = app(tiny_model, **with_prediction(prediction, demo_case))
    token = first.session_state[ui.KEY_PRIVATE]
    store = EditStore(private_store.session_dir(token, create=True) / "corrections")
    store.start(demo_case.content_key, prediction.labels, prediction.model_sha256)
    mask = np.zeros(demo_case.shape[:2], dtype=bool)
    mask[100:120, 100:120] = True
    store.apply(demo_case.content_key, 61, mask, 2, inside_tumour_only=False)
    first.run()
    assert "Corrected by hand" in texts(first.success)
    EditStore().start(demo_case.content_key, prediction.labels, prediction.model_sha256)  # the old shared folder
    EditStore().apply(demo_case.content_key, 61, mask, 2, inside_tumour_only=False)
    second = app(tiny_model, **with_prediction(prediction, demo_case))
    assert second.session_state[ui.KEY_PRIVATE] != token
    assert not second.success and "Corrected (mL)" not in volume_frame(second).columns
    assert "Model prediction (mL)" in volume_frame(second).columns


def test_segment_from_the_report_page(tiny_model: Path, demo_case, _isolated: Path) -> None:
    at = app(tiny_model)
    at.button[0].click().run()
    assert not at.exception, at.exception
    assert at.session_state[ui.KEY_PREDICTION_CASE] == demo_case.content_key
    assert "Model prediction (mL)" in volume_frame(at).columns and len(downloads(at)) == 3
    events = read_events(_isolated / "audit.log.jsonl", action="segment")
    assert len(events) == 1 and events[0]["extra"]["page"] == "report"


# ---- the RANO-style measurement (issue 12) ---------------------------------------------------------------------

def rano_frame(at: AppTest):
    return next(d.value for d in at.dataframe if "Lesion" in d.value.columns)


def rano_traces(at: AppTest) -> tuple[str, list[dict]]:
    """(title, scatter traces) of the measurement figure."""
    for el in at.get("plotly_chart"):
        spec = json.loads(el.proto.spec)
        title = ((spec.get("layout") or {}).get("title") or {}).get("text", "")
        if "counted from 0" in title:
            return title, [t for t in spec["data"] if t.get("type") == "scatter"]
    raise AssertionError("no measurement figure on the page")


def test_the_measurement_is_listed_and_drawn(tiny_model: Path, demo_case) -> None:
    from core.analysis.measure import measure_rano
    from core.views.figures_measure import lesion_rows

    at = app(tiny_model, report_use_gt=True)  # the demo's reference: two enhancing lesions, one measurable
    rano = measure_rano(np.asarray(demo_case.seg.data), demo_case.spacing_mm)
    assert len(rano.lesions) >= 2 and rano.targets
    assert any("bidimensional measurement" in s.value for s in at.subheader)
    df = rano_frame(at)
    expected = lesion_rows(rano)
    assert list(df["Lesion"]) == [r["Lesion"] for r in expected]
    assert list(df["Axial slice z"]) == [r["Axial slice z"] for r in expected]
    assert list(df["Longest (mm)"]) == [r["Longest (mm)"] for r in expected]
    assert list(df["Target"]) == [r["Target"] for r in expected]
    assert f"{rano.sum_products_mm2:.0f} mm²" in texts(at.markdown)
    title, traces = rano_traces(at)
    first = rano.targets[0]
    assert f"z = {first.slice_z} (counted from 0)" in title
    assert traces[0]["name"].startswith(f"Lesion {first.index}: longest {first.d1_mm:.1f} mm")
    assert "Slices count from 0" in texts(at.caption)
    # another lesion: its own slice is drawn
    other = rano.lesions[1]
    at.selectbox(key="report_rano_lesion").set_value(other.index).run()
    assert not at.exception, at.exception
    title, traces = rano_traces(at)
    assert f"z = {other.slice_z} (counted from 0)" in title and f"lesion {other.index}," in title
    assert any(t["name"].startswith(f"Lesion {other.index}: ") for t in traces)


def test_no_enhancing_tumour_nothing_to_measure(tiny_model: Path, demo_case, prediction) -> None:
    corrected = np.asarray(demo_case.seg.data).copy()
    corrected[corrected == 4] = 1
    at = app(tiny_model, **with_prediction(prediction, demo_case),
             **{ui.KEY_CORRECTED: corrected, ui.KEY_CORRECTED_CASE: demo_case.content_key})
    assert "No enhancing tumour (label 4) in this segmentation: nothing to measure." in texts(at.info)
    assert not [d for d in at.dataframe if "Lesion" in d.value.columns]
    assert len(downloads(at)) == 3
