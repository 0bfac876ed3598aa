"""core/app/session_cases.py and the reload of a case this session made (upload, DICOM, raw study): the URL
carries only its kind, never its id or name, and a reload says plainly that it has to be made again instead of
silently showing no case or another one."""

from __future__ import annotations

from pathlib import Path

import pytest
from conftest import HOME, texts
from followup_phantom import followup_case
from streamlit.testing.v1 import AppTest

from core.app import session_cases, ui

VIEWER = "pages/2_Slice_viewer.py"
BROWSER = "pages/1_Case_browser.py"


@pytest.fixture(autouse=True)
def _isolated(app_env: Path) -> Path:
    return app_env


def test_reload_problem_names_the_kind_only() -> None:
    assert session_cases.reload_problem({}) is None
    assert session_cases.reload_problem({"sess": "../etc"}) is None  # not a known kind: nothing echoed
    text = session_cases.reload_problem({"sess": "dicom"})
    assert "converted from DICOM" in text and "convert the DICOM series again" in text


@pytest.mark.parametrize("origin", ["dicom", "study", "upload"])
def test_a_reload_of_a_case_made_in_the_session_says_why_it_is_gone(origin: str) -> None:
    """Bug: a reload lost a case opened from DICOM, a raw study or an upload without a word (the URL carried
    nothing), while folder cases came back."""
    case = followup_case()
    at = AppTest.from_file(HOME, default_timeout=60)
    at.switch_page(VIEWER)
    at.session_state[session_cases.KEY_SESSION_CASES] = {"abc": session_cases.SessionCase("abc", origin, case)}
    at.session_state[ui.KEY_UPLOADED] = case
    at.session_state[ui.KEY_CASE] = {"kind": "upload", "case_id": case.case_id, "sid": "abc", "origin": origin}
    at.run()
    assert not at.exception, at.exception
    assert at.query_params["sess"] in (origin, [origin]) and "case" not in at.query_params
    assert case.case_id not in str(at.query_params) and "abc" not in str(at.query_params)  # no id, no name
    for page in (VIEWER, BROWSER):
        again = AppTest.from_file(HOME, default_timeout=60)
        again.switch_page(page)
        again.query_params["sess"] = origin
        again.run()
        assert not again.exception, again.exception
        said = [w.value for w in again.warning if "kept only in the browser session that made it" in w.value]
        assert len(said) == 1, texts(again.warning)
        assert ui.KEY_CASE not in again.session_state or again.session_state[ui.KEY_CASE] is None


def test_the_session_keeps_its_last_cases_only(monkeypatch: pytest.MonkeyPatch) -> None:
    """A bounded memory per session: the oldest of the session's cases is forgotten, the same content added
    again replaces its earlier entry."""
    import streamlit as st
    from followup_phantom import make_case, phantom

    monkeypatch.setattr(st, "session_state", {})
    cases = [make_case(f"c{i}", phantom(shift=(i, 0, 0))) for i in range(session_cases.MAX_KEPT + 1)]
    entries = [session_cases.add(c, "upload") for c in cases]
    kept = session_cases.all_cases()
    assert [e.case.case_id for e in kept] == [c.case_id for c in cases[1:]]
    assert session_cases.get(entries[0].sid) is None and session_cases.get(entries[-1].sid) is not None
    again = session_cases.add(cases[-1], "dicom")
    assert [e.sid for e in session_cases.all_cases()][-1] == again.sid and len(session_cases.all_cases()) == len(kept)
    with pytest.raises(ValueError, match="origin"):
        session_cases.add(cases[0], "elsewhere")
