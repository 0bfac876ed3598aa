"""No page shows a server path (AppTest over every page): the data folder's path holds a marker string, and no
element of any page (sidebar included, tables, picker options, captions, errors) may contain it. Web users see
the label the administrator chose for a root, or the folder's own name."""

from __future__ import annotations

from pathlib import Path

import pytest
from conftest import HOME, make_case_dir
from streamlit.testing.v1 import AppTest

from core import config
from core.app import ui

MARKER = "SRVPATHMARKER7q"
PAGES = (None, "pages/1_Case_browser.py", "pages/2_Slice_viewer.py", "pages/3_Segmentation.py",
         "pages/4_Volume_report.py", "pages/5_Training.py", "pages/6_Follow_up.py")


def rendered(at: AppTest) -> str:
    """The serialised protobuf of every element and block of the last run (what the browser receives)."""
    return "\n".join(str(node.proto) for node in at._tree if getattr(node, "proto", None) is not None)


@pytest.fixture
def marked(app_env: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A data folder ``<tmp>/SRVPATHMARKER7q/data`` with two cases, as the start folder and a data root."""
    data = tmp_path / MARKER / "data"
    make_case_dir(data, case_id="BraTS2021_00001", seed=1)
    make_case_dir(data, case_id="BraTS2021_00002", seed=2, with_seg=False)
    monkeypatch.setenv(config.DATA_DIR_ENV, str(data))
    monkeypatch.setenv("BRATS_DATA_ROOTS", str(data))
    monkeypatch.setenv("BRATS_SERVER_CONFIG", str(tmp_path / "absent.toml"))
    return data.resolve()


@pytest.mark.parametrize("page", PAGES, ids=lambda p: Path(p).stem if p else "Home")
def test_no_page_shows_the_data_folders_server_path(marked: Path, page: str | None) -> None:
    """Bug: every page's sidebar showed the data folder's absolute path on the server."""
    at = AppTest.from_file(HOME, default_timeout=90)
    if page:
        at.switch_page(page)
    at.session_state[ui.KEY_DATA_DIR] = str(marked)
    at.session_state[ui.KEY_CASE] = {"kind": "folder", "folder": str(marked), "case_id": "BraTS2021_00001",
                                     "key": "BraTS2021_00001/BraTS2021_00001"}
    at.run()
    assert not at.exception, at.exception
    body = rendered(at)
    assert "BraTS2021_00001" in body  # the page did draw the case
    assert MARKER not in body
    assert all(MARKER not in str(v) for v in at.query_params.values())
    assert "**Data folder**  \n`data`" in [m.value for m in at.sidebar.markdown]


def test_two_roots_of_one_name_are_told_apart_and_labels_come_from_the_administrator(
        app_env: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Bug: two roots named ``data`` were offered as "data" and "data-2"; an administrator's label wins."""
    from core.data import roots

    first, second = tmp_path / "site_a" / "data", tmp_path / "site_b" / "data"
    make_case_dir(first, case_id="BraTS2021_00001")
    make_case_dir(second, case_id="BraTS2021_00002")
    monkeypatch.delenv(config.DATA_DIR_ENV, raising=False)
    monkeypatch.setenv("BRATS_SERVER_CONFIG", str(tmp_path / "absent.toml"))
    monkeypatch.setenv("BRATS_DATA_ROOTS", f"{first}:{second}")
    assert list(roots.picker_folders()) == ["demo", "data", "data (in site_b)"]
    settings = tmp_path / "server.toml"
    settings.write_text(f'data_roots = [{{path = "{second}", label = "Held-out/2024 cases"}}]\n'
                        f'[root_labels]\n"{first}" = "Training cases"\n')
    monkeypatch.setenv("BRATS_SERVER_CONFIG", str(settings))
    monkeypatch.setenv("BRATS_DATA_ROOTS", "")
    assert list(roots.picker_folders()) == ["demo", "Held-out-2024 cases"]  # first is labelled but not a root
    monkeypatch.setenv("BRATS_DATA_ROOTS", f"{first}")
    assert list(roots.picker_folders()) == ["demo", "Training cases", "Held-out-2024 cases"]
    monkeypatch.setenv("BRATS_DATA_ROOTS", f"Site A={first}")
    monkeypatch.setenv("BRATS_SERVER_CONFIG", str(tmp_path / "absent.toml"))
    assert list(roots.picker_folders()) == ["demo", "Site A"]
    assert roots.display_name(first) == "Site A"
    assert roots.display_name(tmp_path) == tmp_path.name  # outside the roots: its own name, not its path
