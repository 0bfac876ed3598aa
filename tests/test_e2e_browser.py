"""End-to-end test of the main flow in a real browser: Home -> Case browser (open the bundled demo case) -> Slice
viewer (move the axial slider with the keyboard) -> Segmentation (segment the whole volume) -> Volume report
(download the PDF and read it back).

Runs ``streamlit run Home.py`` on a free localhost port (work folder in ``tmp_path``) and drives Debian's chromium
through Playwright. Screenshots of every step and the PDF go to ``test-artifacts/e2e/`` (gitignored). The active
model is the shipped ``models/unet2d_default``; when its weights are absent a tiny untrained U-Net is built and
used instead (the flow and the report do not depend on its quality).
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import e2e_util as e2e
import pytest

from core import config

pytestmark = [pytest.mark.browser, pytest.mark.slow]

SKIP_REASON = e2e.browser_skip_reason()
CASE_ID = e2e.DEMO_CASE_ID
SHIPPED_MODEL = config.MODELS_DIR / "unet2d_default"
SEGMENT_TIMEOUT_S = 150.0  # whole-volume prediction on a slow, loaded 2-core machine (measured ~10-40 s)
PAGE_TIMEOUT_S = 90.0


def _model_dir_and_sha(tmp_path: Path) -> tuple[Path, str]:
    """The model the app will use and its identity: the SHA-256 of its weights file, or for a model with a 3-D
    context network the hash over both networks' weight hashes and the fusion settings."""
    import hashlib

    from core.engine.model import file_sha256

    weights = SHIPPED_MODEL / "model.keras"
    if weights.is_file():
        card = json.loads((SHIPPED_MODEL / "model_card.json").read_text(encoding="utf-8")) \
            if (SHIPPED_MODEL / "model_card.json").is_file() else {}
        sha = str(card.get("weights_sha256") or file_sha256(weights))
        assert sha == file_sha256(weights), "the shipped model card's weights_sha256 does not match model.keras"
        volume = SHIPPED_MODEL / "volume3d" / "model.keras"
        if volume.is_file():
            assert card["volume3d"]["keras_sha256"] == file_sha256(volume), "the card's 3-D network hash is stale"
            fusion = json.dumps(json.loads((volume.parent / "volume3d.json").read_text())["fusion"], sort_keys=True)
            sha = hashlib.sha256(f"2d:{sha}|3d:{file_sha256(volume)}|fusion:{fusion}".encode()).hexdigest()
        return SHIPPED_MODEL, sha
    from core.engine.model import build_unet, save_for_inference
    from core.engine.preprocess import PreprocessSpec

    spec = PreprocessSpec(channels=("flair", "t1ce", "t1", "t2"), input_size=32, normalisation="zscore_brain",
                          crop="brain_bbox")
    path = save_for_inference(build_unet(32, 4, 4, 2), tmp_path / "tiny_model", spec)
    return path.parent, file_sha256(path)


class Flow:
    """Screenshots and checks shared by the steps of one browser session."""

    def __init__(self, page: Any, out: Path) -> None:
        self.page, self.out, self.n = page, out, 0
        self.exceptions: list[str] = []

    def shot(self, step: str) -> None:
        """Full-page screenshot ``NN_step.png`` and a record of any exception box on the page."""
        self.n += 1
        e2e.full_page_screenshot(self.page, self.out / f"{self.n:02d}_{step}.png")
        self.exceptions += [f"{step}: {t}" for t in e2e.exception_texts(self.page)]

    def check_page(self, title: str) -> None:
        """The page's title and the research-use disclaimer are shown, and no exception."""
        self.page.get_by_role("heading", name=title).first.wait_for(timeout=PAGE_TIMEOUT_S * 1000)
        e2e.wait_text(self.page, config.DISCLAIMER, timeout_s=10)
        assert e2e.exception_texts(self.page) == [], f"exception on {title}"


def _click_view(page: Any, frame: Any, plane: str, fx: float, fy: float) -> None:
    """Click at (fx, fy) (fractions of width and height) of a plane's canvas in the slice viewer."""
    box = frame.locator(f'.view[data-plane="{plane}"] canvas').bounding_box()
    page.mouse.click(box["x"] + fx * box["width"], box["y"] + fy * box["height"])


@pytest.mark.skipif(SKIP_REASON is not None, reason=SKIP_REASON or "")
@pytest.mark.timeout(420)
def test_main_flow_home_to_pdf_report(tmp_path: Path) -> None:
    from playwright.sync_api import sync_playwright
    from pypdf import PdfReader

    out = e2e.clean_artifacts()
    model_dir, model_sha = _model_dir_and_sha(tmp_path)
    work = tmp_path / "work"
    env = {} if model_dir == SHIPPED_MODEL else {"BRATS_MODEL": str(model_dir)}
    server = e2e.start_server(work, log_path=out / "server.log", extra_env=env)
    try:
        with sync_playwright() as pw:
            browser = e2e.launch_chromium(pw)
            try:
                page = browser.new_page(viewport={"width": 1400, "height": 1000}, accept_downloads=True)
                page.set_default_timeout(PAGE_TIMEOUT_S * 1000)
                flow = Flow(page, out)

                # ---- Home
                page.goto(server.url)
                e2e.wait_idle(page, PAGE_TIMEOUT_S)
                flow.check_page("Brain tumour MRI viewer")
                e2e.wait_text(page, "Active model")
                flow.shot("home")

                # ---- Case browser: open the demo case
                def before_open(page: Any) -> None:
                    flow.check_page("Case browser")
                    assert page.get_by_role("combobox", name="Case").input_value() == CASE_ID  # the only demo case
                    flow.shot("case_browser")

                e2e.open_demo_case(page, PAGE_TIMEOUT_S, before_open=before_open)
                assert CASE_ID in page.locator('[data-testid="stSidebar"]').inner_text()
                flow.shot("case_opened")

                # ---- Slice viewer (drawn in the browser): page with the keyboard, click, measure
                e2e.goto_sidebar_page(page, "Slice viewer", PAGE_TIMEOUT_S)
                flow.check_page("Slice viewer")
                frame = e2e.viewer_frame(page, PAGE_TIMEOUT_S)
                flow.shot("slice_viewer")
                _click_view(page, frame, "axial", 0.5, 0.5)  # a click gives the viewer the keyboard
                e2e.wait_idle(page, PAGE_TIMEOUT_S)
                start = frame.evaluate("() => window.__viewer.cursor.slice()")
                for _ in range(5):
                    page.keyboard.press("ArrowUp")
                frame.evaluate("() => new Promise(r => requestAnimationFrame(() => requestAnimationFrame(r)))")
                assert frame.evaluate("() => window.__viewer.cursor[2]") == start[2] + 5
                _click_view(page, frame, "sagittal", 0.5, 0.4)  # moves y and z in all three views
                e2e.wait_idle(page, PAGE_TIMEOUT_S)
                x, y, z = frame.evaluate("() => window.__viewer.cursor.slice()")
                assert x == start[0] and (y, z) != (start[1], start[2] + 5)
                e2e.wait_text(page, f"Cursor voxel ({x}, {y}, {z}), RAS ({x - 239:.1f}, {y:.1f}, {z:.1f}) mm")
                frame.get_by_role("button", name="Ruler").click()
                _click_view(page, frame, "axial", 0.35, 0.4)
                _click_view(page, frame, "axial", 0.65, 0.6)
                e2e.wait_idle(page, PAGE_TIMEOUT_S)
                e2e.wait_text(page, "Ruler: ")
                client_mm = re.search(r"Ruler (\d+\.\d) mm", frame.locator("#readout").inner_text()).group(1)
                server_text = page.get_by_text("Ruler: ").first.inner_text()
                assert f"Ruler: {client_mm} mm" in server_text, (client_mm, server_text)  # browser and core agree
                flow.shot("slice_clicked_and_measured")

                # ---- Segmentation: whole volume, then the probability maps
                e2e.goto_sidebar_page(page, "Segmentation", PAGE_TIMEOUT_S)
                flow.check_page("Segmentation")
                e2e.wait_text(page, "No segmentation of this case yet")
                e2e.segment_whole_volume(page, SEGMENT_TIMEOUT_S)
                maps = page.locator('[data-testid="stPlotlyChart"]')
                assert maps.count() >= 1, "no probability map after segmenting"
                assert page.get_by_text("to see the per-class probabilities").count() == 0
                e2e.wait_text(page, "Agreement with the ground truth")
                assert page.get_by_text("WT Dice").count() >= 1
                e2e.wait_text(page, "Quality check: review")  # the demo is flagged (docs/model.md)
                flow.shot("segmented")

                # ---- Volume report: the PDF
                e2e.goto_sidebar_page(page, "Volume report", PAGE_TIMEOUT_S)
                flow.check_page("Volume report")
                button = page.locator('[data-testid="stDownloadButton"]').filter(has_text="PDF summary").first
                button.wait_for()
                flow.shot("volume_report")
                pdf_path = e2e.download(page, button, out / "report.pdf", PAGE_TIMEOUT_S)
                e2e.wait_idle(page, PAGE_TIMEOUT_S)
                flow.shot("pdf_downloaded")
            finally:
                browser.close()
    finally:
        e2e.stop_server(server)

    assert flow.exceptions == []
    log = server.log_text()
    assert "Traceback" not in log and "Uncaught app" not in log, log[-3000:]

    # ---- the PDF
    assert pdf_path.read_bytes()[:5] == b"%PDF-"
    text = "\n".join(p.extract_text() or "" for p in PdfReader(str(pdf_path)).pages)
    flat = re.sub(r"\s+", " ", text)
    assert CASE_ID in flat
    assert "not a medical device" in flat.lower() or "not for diagnosis" in flat.lower(), flat[:800]
    assert re.search(r"\d+(\.\d+)?\s*mL", flat), "no volume in mL in the PDF"
    assert model_sha in re.sub(r"\s+", "", text), "the model's weights SHA-256 is not in the PDF"
    assert "Quality check of the model's prediction" in flat and "REVIEW - check this segmentation" in flat
    assert "OK - no warning" not in flat

    # ---- the audit log went to the temporary work folder
    events = [json.loads(line) for line in (work / "audit.log.jsonl").read_text(encoding="utf-8").splitlines()]
    actions = [e["action"] for e in events]
    assert "segment" in actions and "export_pdf" in actions, actions
    assert all(e["case_id"] == CASE_ID for e in events)
    assert {e["model_sha256"] for e in events} == {model_sha}
