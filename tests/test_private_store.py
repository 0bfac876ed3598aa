"""core/app/private_store.py and its Streamlit glue (ui.private_dir, ui.edit_store, ui.expire_idle_uploads):
an upload and its corrections belong to the session that made them and leave no trace on disk after it."""

from __future__ import annotations

import os
import time
from pathlib import Path

import numpy as np
import pytest
from conftest import HOME, make_case_dir, texts
from streamlit.runtime import caching
from streamlit.testing.v1 import AppTest

from core.analysis.edits import EditStore
from core.app import private_store, ui
from core.errors import BratsViewerError

TOKEN_A, TOKEN_B = "a" * 32, "b" * 32
APPTEST_SESSION_ID = "test session id"  # the id every AppTest session runs under (streamlit 1.67)


# ------------------------------------------------------------------------------------------------- unit ---

@pytest.mark.parametrize("token", ["../x", "A" * 32, "a" * 31, "", "/tmp", "a" * 31 + "/"])
def test_tokens_are_never_paths(tmp_path: Path, token: str) -> None:
    with pytest.raises(BratsViewerError, match="32 hex"):
        private_store.session_dir(token, tmp_path)


def test_new_tokens_are_valid_and_distinct(tmp_path: Path) -> None:
    tokens = {private_store.new_token() for _ in range(50)}
    assert len(tokens) == 50
    assert all(private_store.session_dir(t, tmp_path).parent == tmp_path for t in tokens)


def test_touch_and_remove(tmp_path: Path) -> None:
    folder = private_store.touch(TOKEN_A, tmp_path)
    (folder / "corrections").mkdir()
    (folder / "corrections" / "labels.npy").write_bytes(b"x")
    assert private_store.remove(TOKEN_A, tmp_path)
    assert not folder.exists()
    assert not private_store.remove(TOKEN_A, tmp_path)  # already gone


def test_sweep_removes_only_idle_session_folders(tmp_path: Path) -> None:
    old = private_store.touch(TOKEN_A, tmp_path)
    fresh = private_store.touch(TOKEN_B, tmp_path)
    (tmp_path / "not-a-session").mkdir()
    now = time.time()
    os.utime(old / private_store.LAST_USED_FILE, (now - 3600, now - 3600))  # idle for an hour
    assert private_store.sweep(30, tmp_path, now=now) == [TOKEN_A]
    assert not old.exists() and fresh.exists() and (tmp_path / "not-a-session").exists()
    assert private_store.sweep(30, tmp_path / "absent") == []


# ---------------------------------------------------------------------------------------- through pages ---

@pytest.fixture
def work(app_env: Path, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    monkeypatch.setenv("BRATS_SERVER_CONFIG", str(tmp_path / "absent.toml"))
    monkeypatch.delenv("BRATS_UPLOAD_TTL_MINUTES", raising=False)
    return app_env


def upload_session(folder: Path) -> AppTest:
    """A session that uploads the files of ``folder`` on the Case browser and opens the Segmentation page."""
    files = [(p.name, p.read_bytes(), "application/gzip") for p in sorted(folder.iterdir())]
    at = AppTest.from_file(HOME, default_timeout=60)
    at.switch_page("pages/1_Case_browser.py")
    at.run()
    at.file_uploader(key="browser_uploads").set_value(files).run()
    next(b for b in at.button if b.label == "Use these files as the case").click().run()
    assert not at.exception, at.exception
    assert at.session_state[ui.KEY_CASE]["kind"] == "upload"
    at.switch_page("pages/3_Segmentation.py")
    at.run()
    assert not at.exception, at.exception
    return at


def correct(at: AppTest) -> np.ndarray:
    """Corrections of the session's uploaded case, written where the Segmentation page keeps them."""
    case = at.session_state[ui.KEY_UPLOADED]
    store = EditStore(private_store.session_dir(at.session_state[ui.KEY_PRIVATE]) / "corrections")
    labels = np.zeros(case.shape, dtype=np.uint8)
    store.start(case.content_key, labels, "")
    mask = np.zeros(case.shape[:2], dtype=bool)
    mask[2:6, 2:6] = True
    return store.apply(case.content_key, 3, mask, 2, inside_tumour_only=False)


def files_under(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if p.is_file()) if folder.exists() else []


def test_an_upload_and_its_corrections_are_private_and_gone_when_the_session_ends(work: Path,
                                                                                  tmp_path: Path) -> None:
    up = make_case_dir(tmp_path / "up", "BraTS2021_05555")
    a = upload_session(up)
    token_a = a.session_state[ui.KEY_PRIVATE]
    correct(a)
    a.run()
    assert "Corrected by hand: 1 stroke(s)" in texts(a.success)
    assert (work / "sessions" / token_a / "corrections").is_dir()
    assert not (work / "corrections").exists()  # nothing of the upload in the shared store

    # another session with the very same files does not see A's corrections
    b = upload_session(up)
    assert b.session_state[ui.KEY_PRIVATE] != token_a
    assert "Corrected by hand" not in texts(b.success)

    # the sessions end (what Streamlit does on disconnect and shutdown): their folders go
    caching.clear_session_resource_cache(APPTEST_SESSION_ID)
    assert files_under(work / "sessions") == []
    leftovers = [p for p in files_under(work) if p.name != "audit.log.jsonl"]
    assert leftovers == []


def test_an_idle_session_loses_its_upload_after_the_time_limit(work: Path, tmp_path: Path,
                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BRATS_UPLOAD_TTL_MINUTES", "5")
    a = upload_session(make_case_dir(tmp_path / "up", "BraTS2021_05556"))
    token = a.session_state[ui.KEY_PRIVATE]
    correct(a)
    a.session_state[ui.KEY_LAST_ACTIVE] = time.time() - 6 * 60  # six minutes without a page run
    a.run()
    assert not a.exception
    assert "removed after 5 minutes without activity" in texts(a.info)
    assert ui.KEY_UPLOADED not in a.session_state and ui.KEY_CASE not in a.session_state
    assert not (work / "sessions" / token).exists()
    assert [p for p in files_under(work) if p.name != "audit.log.jsonl"] == []
    a.session_state[ui.KEY_LAST_ACTIVE] = time.time() - 6 * 60
    a.run()  # idle again with nothing left to remove: no second notice
    assert "without activity" not in texts(a.info)


def test_folders_of_sessions_gone_without_their_hook_are_swept(work: Path, tmp_path: Path) -> None:
    """A server killed before the release hooks ran leaves folders: the next page run past the limit sweeps them."""
    stale = private_store.touch(TOKEN_A)
    (stale / "corrections").mkdir()
    past = time.time() - 3 * 3600
    os.utime(stale / private_store.LAST_USED_FILE, (past, past))
    ui._last_sweep["at"] = 0.0
    at = AppTest.from_file(HOME, default_timeout=60)
    at.run()
    assert not at.exception
    assert not stale.exists()
