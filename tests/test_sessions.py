"""Two sessions on two different cases never see each other's data.

Both AppTest sessions run in one process, so they share ``st.cache_resource`` exactly as two browser sessions
of one server do; what differs is their session state.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from conftest import DEMO_SELECTION, HOME, make_case_dir
from streamlit.testing.v1 import AppTest

from core.app import ui
from core.data.cases import load_case_folder

DEMO = DEMO_SELECTION


@pytest.fixture(autouse=True)
def _isolated(app_env: Path) -> Path:
    return app_env

def _sidebar_text(at: AppTest) -> str:
    return "\n".join(str(m.value) for m in at.sidebar.markdown)


class _FakePrediction:
    """Stands in for core.engine.inference.Prediction on the viewer (it reads ``.labels`` only)."""

    def __init__(self, labels: np.ndarray) -> None:
        self.labels = labels


def test_two_sessions_keep_their_own_case_upload_and_prediction(tmp_path: Path) -> None:
    upload = load_case_folder(make_case_dir(tmp_path / "up", "BraTS2021_07777"))
    b_pred = _FakePrediction(np.full(upload.shape, 2, dtype=np.uint8))

    a = AppTest.from_file(HOME, default_timeout=60)
    a.switch_page("pages/2_Slice_viewer.py")
    a.session_state[ui.KEY_CASE] = dict(DEMO)
    b = AppTest.from_file(HOME, default_timeout=60)
    b.switch_page("pages/2_Slice_viewer.py")
    b.session_state[ui.KEY_UPLOADED] = upload
    b.session_state[ui.KEY_CASE] = {"kind": "upload", "case_id": upload.case_id}
    b.session_state["prediction"] = b_pred
    b.session_state["prediction_case_key"] = upload.content_key

    # interleave the two sessions as a server does
    a.run()
    b.run()
    a.run()
    assert not a.exception and not b.exception
    assert "TCIA-example" in _sidebar_text(a) and "BraTS2021_07777" not in _sidebar_text(a)
    assert "BraTS2021_07777" in _sidebar_text(b) and "TCIA-example" not in _sidebar_text(b)
    assert ui.KEY_UPLOADED not in a.session_state
    assert "prediction" not in a.session_state
    # each session's views are of its own case: the demo is 240x240x155, the upload 12x10x8
    a_cursor, b_cursor = a.session_state[ui.KEY_CURSOR], b.session_state[ui.KEY_CURSOR]
    assert max(a_cursor.values()) > 12
    assert all(0 <= b_cursor[k] < n for k, n in zip("xyz", upload.shape, strict=True))


def test_a_prediction_of_another_case_is_not_shown(tmp_path: Path) -> None:
    """A session that switches case does not carry the old case's prediction onto the new one."""
    other = load_case_folder(make_case_dir(tmp_path / "other", "BraTS2021_08888"))
    at = AppTest.from_file(HOME, default_timeout=60)
    at.switch_page("pages/2_Slice_viewer.py")
    at.session_state[ui.KEY_CASE] = dict(DEMO)
    at.session_state["prediction"] = _FakePrediction(np.full((240, 240, 155), 2, dtype=np.uint8))
    at.session_state["prediction_case_key"] = other.content_key
    at.run()
    assert not at.exception
    pred_box = [c for c in at.checkbox if c.label == "Prediction"]
    assert pred_box and pred_box[0].disabled


def test_reload_reopens_the_case_named_in_the_url() -> None:
    """A fresh session (a browser reload) with ?case=...&src=demo reopens that case; an unknown id is ignored."""
    at = AppTest.from_file(HOME, default_timeout=60)
    at.switch_page("pages/1_Case_browser.py")
    at.query_params["case"] = "TCIA-example"
    at.query_params["src"] = "demo"
    at.run()
    assert not at.exception
    assert at.session_state[ui.KEY_CASE] == DEMO
    bad = AppTest.from_file(HOME, default_timeout=60)
    bad.query_params["case"] = "../../etc/passwd"
    bad.query_params["src"] = "demo"
    bad.run()
    assert not bad.exception and ui.KEY_CASE not in bad.session_state


def test_selecting_a_case_puts_it_in_the_url() -> None:
    at = AppTest.from_file(HOME, default_timeout=60)
    at.session_state[ui.KEY_CASE] = dict(DEMO)
    at.run()
    assert at.query_params["case"] == "TCIA-example" and at.query_params["src"] == "demo"


def test_a_reload_keeps_the_data_folder_of_the_case_in_the_url(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Bug (walk of issue 19): a reload of the Case browser reopened the URL's case but showed the default data
    folder (the demo) in the sidebar and the folder picker, and the "Case" dropdown named the demo's case, which
    "Open case" would have opened instead."""
    root = tmp_path / "trial"
    make_case_dir(root / "BraTS2021_01234", "BraTS2021_01234")
    make_case_dir(root / "BraTS2021_05678", "BraTS2021_05678")
    monkeypatch.setenv("BRATS_DATA_ROOTS", f"Trial cases={root}")
    monkeypatch.setenv("BRATS_SERVER_CONFIG", str(tmp_path / "absent.toml"))
    at = AppTest.from_file(HOME, default_timeout=60)
    at.switch_page("pages/1_Case_browser.py")
    at.query_params["case"] = "BraTS2021_05678"
    at.query_params["src"] = "Trial cases"
    at.run()
    assert not at.exception
    assert at.session_state[ui.KEY_CASE]["case_id"] == "BraTS2021_05678"
    assert "`Trial cases`" in _sidebar_text(at)
    assert at.selectbox(key="browser_folder_pick").value == "Trial cases"
    pick = at.selectbox(key="browser_pick")
    assert pick.format_func(pick.value) == "BraTS2021_05678"
