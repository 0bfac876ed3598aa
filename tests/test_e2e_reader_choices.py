"""Browser checks of state that lives in the page (headless chromium through Playwright, a real server):

- the in-browser slice viewer keeps the reader's choices made in its own toolbar (image, window, outlines,
  convention) over a reload of the page, for the same case;
- the raw-study tab's table toolbar (shown on hover) does not cover its "Read folder" button;
- a click on any cell of the case table opens that row's case.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import e2e_util as e2e
import numpy as np
import pytest
from conftest import write_nifti

pytestmark = [pytest.mark.browser, pytest.mark.slow]

SKIP_REASON = e2e.browser_skip_reason()
PAGE_TIMEOUT_S = 90.0


def _viewer_frame(page: Any, timeout_s: float = PAGE_TIMEOUT_S) -> Any:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        for frame in page.frames:
            try:
                if frame.evaluate("() => !!(window.__viewer && window.__viewer.ready)"):
                    return frame
            except Exception:  # noqa: BLE001 (frames come and go while the page runs)
                continue
        page.wait_for_timeout(100)
    raise TimeoutError("the slice viewer drew no image")


def _choices(frame: Any) -> dict[str, Any]:
    return frame.evaluate("""() => { const S = window.__viewer;
        return {mod: S.data.images[S.mod].key, win: S.win[S.mod], outline: S.outline,
                radiological: S.radiological}; }""")


@pytest.mark.skipif(SKIP_REASON is not None, reason=SKIP_REASON or "")
@pytest.mark.timeout(300)
def test_the_viewers_own_choices_survive_a_reload(tmp_path: Path) -> None:
    """Bug: a reload lost the image, window, outlines and convention chosen in the viewer's toolbar."""
    from playwright.sync_api import sync_playwright

    with e2e.running_server(tmp_path / "work") as server, sync_playwright() as p:
        browser = e2e.launch_chromium(p)
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 1000})
            page.goto(f"{server.url}/Slice_viewer?case=TCIA-example&src=demo")
            e2e.wait_idle(page, PAGE_TIMEOUT_S)
            frame = _viewer_frame(page)
            before = _choices(frame)
            assert before["mod"] == "flair" and before["outline"] is False and before["radiological"] is True
            t1ce = frame.evaluate("() => String(window.__viewer.data.images.findIndex(im => im.key === 't1ce'))")
            frame.locator("#modality").select_option(t1ce)
            presets = frame.locator("#preset option:not([disabled])")
            frame.locator("#preset").select_option(presets.nth(presets.count() - 1).get_attribute("value"))
            frame.locator("#outline").check()
            frame.locator("#neuro").check()
            page.wait_for_timeout(300)  # one animation frame draws and stores the choices
            chosen = _choices(frame)
            assert chosen["mod"] == "t1ce" and chosen["outline"] and not chosen["radiological"]
            page.reload()
            e2e.wait_idle(page, PAGE_TIMEOUT_S)
            again = _choices(_viewer_frame(page))
            assert again == chosen
        finally:
            browser.close()


@pytest.mark.skipif(SKIP_REASON is not None, reason=SKIP_REASON or "")
@pytest.mark.timeout(300)
def test_the_table_toolbar_does_not_cover_read_folder(tmp_path: Path) -> None:
    from playwright.sync_api import sync_playwright

    from core.data.registration import BRATS_AFFINE

    root = tmp_path / "studyroot"
    arr = np.zeros((24, 24, 16), dtype=np.int16)
    arr[4:20, 4:20, 4:12] = 300
    for name in ("AX_FLAIR_fla.nii.gz", "T1_POST_GAD_t1c.nii.gz"):
        write_nifti(root / "ready" / name, arr, BRATS_AFFINE)
    with e2e.running_server(tmp_path / "work", extra_env={"BRATS_DATA_ROOTS": str(root)}) as server, \
            sync_playwright() as p:
        browser = e2e.launch_chromium(p)
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 1000})
            page.goto(f"{server.url}/Case_browser")
            e2e.wait_idle(page, PAGE_TIMEOUT_S)
            page.get_by_role("tab", name="Raw study to BraTS").click()
            e2e.wait_idle(page, PAGE_TIMEOUT_S)
            panel = page.locator('[role="tabpanel"]:visible')
            panel.locator('[data-testid="stSelectbox"]').first.click()
            page.get_by_role("option", name="studyroot").click()
            e2e.wait_idle(page, PAGE_TIMEOUT_S)
            panel.locator('[data-testid="stSelectbox"]').nth(1).click()
            page.get_by_role("option", name="ready").click()
            e2e.wait_idle(page, PAGE_TIMEOUT_S)
            button = panel.get_by_role("button", name="Read folder")
            button.click()
            e2e.wait_idle(page, PAGE_TIMEOUT_S)
            table = panel.locator('[data-testid="stDataFrame"]').first
            table.hover()
            toolbar = panel.locator('[data-testid="stElementToolbar"]').first
            toolbar.wait_for(state="visible", timeout=10_000)
            page.wait_for_timeout(300)
            a, b = toolbar.bounding_box(), button.bounding_box()
            overlap_x = min(a["x"] + a["width"], b["x"] + b["width"]) - max(a["x"], b["x"])
            overlap_y = min(a["y"] + a["height"], b["y"] + b["height"]) - max(a["y"], b["y"])
            assert overlap_x <= 0 or overlap_y <= 0, (a, b)
        finally:
            browser.close()


@pytest.mark.skipif(SKIP_REASON is not None, reason=SKIP_REASON or "")
@pytest.mark.timeout(300)
def test_a_click_on_a_table_cell_opens_the_case(tmp_path: Path) -> None:
    """Bug: the caption said "Click a row to open it" but a click on a cell only highlighted the cell."""
    from playwright.sync_api import sync_playwright

    with e2e.running_server(tmp_path / "work") as server, sync_playwright() as p:
        browser = e2e.launch_chromium(p)
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 1000})
            page.goto(f"{server.url}/Case_browser")
            e2e.wait_idle(page, PAGE_TIMEOUT_S)
            table = page.locator('[data-testid="stDataFrame"]').first
            table.scroll_into_view_if_needed()
            box = table.bounding_box()
            page.mouse.click(box["x"] + 0.55 * box["width"], box["y"] + box["height"] - 18)  # the demo's row
            e2e.wait_idle(page, PAGE_TIMEOUT_S)
            e2e.wait_text(page, "Selected case: TCIA-example", timeout_s=30)
        finally:
            browser.close()
