"""Data confinement through the pages (AppTest): every way a web user can name a folder or a case (the Case
browser's picker, the session's folder, a selected case, the URL's ``?case=&src=``) reaches only the data roots.

Layout built per test: ``root/`` (the only allowed root besides the demo) with ``root/train/<case>`` and a
symbolic link ``root/train/escape -> outside/``; ``outside/`` holds a case no web user may see.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from conftest import HOME, make_case_dir, texts
from streamlit.testing.v1 import AppTest

from core import config
from core.app import ui

BROWSER = "pages/1_Case_browser.py"
INSIDE_ID, OUTSIDE_ID = "BraTS2021_00001", "BraTS2021_00666"


@pytest.fixture
def layout(app_env: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, Path]:
    root, outside = tmp_path / "root", tmp_path / "outside"
    make_case_dir(root / "train", case_id=INSIDE_ID)
    make_case_dir(outside, case_id=OUTSIDE_ID)
    (root / "train" / "escape").symlink_to(outside, target_is_directory=True)
    (root / "link_out").symlink_to(outside, target_is_directory=True)
    monkeypatch.setenv("BRATS_DATA_ROOTS", str(root))
    monkeypatch.setenv("BRATS_SERVER_CONFIG", str(tmp_path / "absent.toml"))
    return {"root": root.resolve(), "outside": outside.resolve()}


def browser(**state: object) -> AppTest:
    at = AppTest.from_file(HOME, default_timeout=60)
    at.switch_page(BROWSER)
    for key, value in state.items():
        at.session_state[key] = value
    return at


def everything(at: AppTest) -> str:
    """All the text of a run, tables included."""
    parts = [texts(getattr(at, kind)) for kind in ("markdown", "caption", "info", "warning", "error", "success")]
    parts += [df.value.to_string() for df in at.dataframe]
    parts += [" ".join(map(str, sb.options)) for sb in at.selectbox]
    return "\n".join(parts)


def test_picker_offers_only_folders_of_the_roots(layout: dict[str, Path]) -> None:
    at = browser().run()
    assert not at.exception
    pick = at.selectbox(key="browser_folder_pick")
    assert list(pick.options) == ["demo", "root", "root/train"]  # no link out, no outside folder, no free text
    assert not [w for w in at.text_input if "folder" in (w.label or "").lower()]
    pick.set_value("root/train").run()
    assert not at.exception
    assert list(at.dataframe[0].value["case_id"]) == [INSIDE_ID]  # the link to outside/ is not followed
    assert OUTSIDE_ID not in everything(at)


def test_a_session_folder_outside_the_roots_is_never_listed(layout: dict[str, Path]) -> None:
    for forged in (str(layout["outside"]), str(layout["root"] / "link_out"), f"{layout['root']}/../outside", "/"):
        at = browser(**{ui.KEY_DATA_DIR: forged}).run()
        assert not at.exception
        assert OUTSIDE_ID not in everything(at), forged
        assert str(layout["outside"]) not in everything(at), forged


def test_a_selected_case_outside_the_roots_is_not_opened(layout: dict[str, Path]) -> None:
    for folder in (str(layout["outside"]), str(layout["root"] / "train" / "escape")):
        at = browser(**{ui.KEY_CASE: {"kind": "folder", "folder": folder, "case_id": OUTSIDE_ID}}).run()
        assert not at.exception
        assert "inside the allowed data roots" in texts(at.error)
        assert not at.get("image")  # no thumbnail of the outside case
        assert not at.metric


@pytest.mark.parametrize("src", [
    "{outside}", "{root}/link_out", "{root}/train/escape", "../outside", "root/../../outside", "root/link_out",
    "root/train/escape", "%2e%2e/outside", "root%2F..%2F..%2Foutside", "data\x00", "/", "{outside}/..",
])
def test_the_url_cannot_open_a_case_outside_the_roots(layout: dict[str, Path], src: str) -> None:
    at = browser()
    at.query_params["case"] = OUTSIDE_ID
    at.query_params["src"] = src.format(root=layout["root"], outside=layout["outside"])
    at.run()
    assert not at.exception
    assert ui.KEY_CASE not in at.session_state
    assert OUTSIDE_ID not in everything(at)


@pytest.mark.parametrize("case", [
    f"../../outside/{OUTSIDE_ID}", f"escape/{OUTSIDE_ID}", f"%2e%2e/{OUTSIDE_ID}", f"/{OUTSIDE_ID}",
    "{outside}/" + OUTSIDE_ID,
])
def test_the_url_case_id_cannot_name_a_path(layout: dict[str, Path], case: str) -> None:
    at = browser()
    at.query_params["case"] = case.format(outside=layout["outside"])
    at.query_params["src"] = "root/train"
    at.run()
    assert not at.exception
    assert ui.KEY_CASE not in at.session_state


def test_the_url_opens_a_case_inside_the_roots(layout: dict[str, Path]) -> None:
    """The positive control: a reload of a page showing a case of a root reopens it."""
    at = browser()
    at.query_params["case"] = INSIDE_ID
    at.query_params["src"] = "root/train"
    at.run()
    assert not at.exception
    assert at.session_state[ui.KEY_CASE]["folder"] == str(layout["root"] / "train")
    assert f"Selected case: {INSIDE_ID}" in [h.value for h in at.subheader]
    assert at.query_params["src"] == "root/train"


def test_a_model_folder_outside_models_is_not_used(layout: dict[str, Path], tmp_path: Path) -> None:
    """A session's model folder is one of models/ (or the administrator's default), never another folder."""
    rogue = tmp_path / "rogue_model"
    rogue.mkdir()
    at = browser(**{ui.KEY_MODEL_DIR: str(rogue)}).run()
    assert not at.exception
    assert "rogue_model" not in texts(at.sidebar.markdown)
    assert config.active_model_dir().name in texts(at.sidebar.markdown)


def test_case_notes_behind_a_link_out_are_not_read(layout: dict[str, Path]) -> None:
    """CASE_NOTES.json of a data folder that is a link to a file outside the roots is ignored."""
    secret = layout["outside"] / "notes.json"
    secret.write_text(json.dumps({INSIDE_ID: "secret text from outside"}))
    (layout["root"] / "train" / "CASE_NOTES.json").symlink_to(secret)
    at = browser(**{ui.KEY_CASE: {"kind": "folder", "folder": str(layout["root"] / "train"),
                                  "case_id": INSIDE_ID}}).run()
    assert not at.exception
    assert f"Selected case: {INSIDE_ID}" in [h.value for h in at.subheader]
    assert "secret text from outside" not in everything(at)
