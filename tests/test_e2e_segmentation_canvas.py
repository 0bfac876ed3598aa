"""The Segmentation page in a real browser (issue 19, "Slow where the viewer is fast"): the correction canvas keeps
one key for the page's life (a new key after every stroke, undo and slice remounted it) and is cleared by a new
empty drawing instead; it keeps sending its last drawing until the cleared one arrives, so this checks that each
stroke is applied exactly once. The whole-tumour error view, whose pixels now travel as a PNG, still shows the
voxel and its intensity on hover.

Runs ``streamlit run Home.py`` with the shipped model on the bundled demo case (skipped without a browser or
without the shipped model's ONNX export) and drives Debian's chromium through Playwright.
"""

from __future__ import annotations

from pathlib import Path

import e2e_util as e2e
import pytest

from core import config

pytestmark = [pytest.mark.browser, pytest.mark.slow]

SKIP_REASON = e2e.browser_skip_reason()
SHIPPED_ONNX = config.MODELS_DIR / "unet2d_default" / "model.onnx"


def _draw(page, fx: float, fy: float) -> None:
    e2e.press_and_drag(page, page.locator("canvas.upper-canvas").first, fx, fy, (6, 4))
    page.mouse.up()


def _strokes(work: Path) -> list[dict]:
    """The strokes in the audit log (one event per stroke applied)."""
    from core.app.audit import read_events

    return [e for e in read_events(work / "audit.log.jsonl", action="correct")
            if e["extra"].get("action") in ("paint", "erase")]


@pytest.mark.skipif(SKIP_REASON is not None, reason=SKIP_REASON or "")
@pytest.mark.skipif(not SHIPPED_ONNX.is_file(), reason="the shipped model's ONNX export is absent")
def test_strokes_are_applied_once_on_one_canvas(tmp_path: Path) -> None:
    from playwright.sync_api import sync_playwright

    work = tmp_path / "work"
    with e2e.running_server(work) as server, sync_playwright() as pw:
        browser = e2e.launch_chromium(pw)
        page = browser.new_page(viewport={"width": 1400, "height": 1000})
        page.goto(f"{server.url}/Segmentation?case=TCIA-example&src=demo")
        page.get_by_role("button", name="Segment whole volume").wait_for(timeout=120_000)
        e2e.wait_idle(page, timeout_s=120)
        page.get_by_role("button", name="Segment whole volume").click()
        page.locator("canvas.upper-canvas").first.wait_for(timeout=300_000)
        e2e.wait_idle(page, timeout_s=300)
        # the whole-tumour error view shows the voxel and its intensity on hover (its pixels travel as a PNG)
        err = page.locator('[data-testid="stPlotlyChart"]').filter(has_text="Whole-tumour errors").first
        drag = err.locator(".nsewdrag").first
        drag.scroll_into_view_if_needed()
        box = drag.bounding_box()
        page.mouse.move(box["x"] + box["width"] / 2, box["y"] + box["height"] / 2)
        page.wait_for_timeout(500)
        hover = page.evaluate("() => Array.from(document.querySelectorAll('.hovertext')).map(e => e.textContent)")
        assert any("intensity" in h and "voxel x=" in h for h in hover), hover

        page.get_by_text("ED (2)").first.click()  # edema may grow the tumour: a stroke changes voxels
        e2e.wait_idle(page, timeout_s=60)
        _draw(page, 0.4, 0.4)  # a stroke: applied once, the canvas kept and cleared
        page.wait_for_timeout(300)
        e2e.wait_idle(page, timeout_s=120)
        page.get_by_text("Corrected by hand: 1 stroke(s)").first.wait_for(timeout=60_000)
        assert len(_strokes(work)) == 1
        _draw(page, 0.55, 0.45)  # a second stroke elsewhere: one more, not the first applied again
        page.wait_for_timeout(300)
        e2e.wait_idle(page, timeout_s=120)
        page.get_by_text("Corrected by hand: 2 stroke(s)").first.wait_for(timeout=60_000)
        assert len(_strokes(work)) == 2
        page.get_by_role("button", name="Undo").first.click()
        page.wait_for_timeout(300)
        e2e.wait_idle(page, timeout_s=120)
        page.get_by_text("Corrected by hand: 2 stroke(s)").first.wait_for(timeout=60_000)  # history counts strokes
        page.wait_for_timeout(1500)  # late canvas messages (its cleared drawing) apply nothing
        e2e.wait_idle(page, timeout_s=60)
        assert len(_strokes(work)) == 2
        assert not e2e.exception_texts(page)
        browser.close()
