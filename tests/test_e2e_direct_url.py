"""End-to-end, in a real browser: every page opened by its own URL (and reloaded) from ``serve.py`` loads with no
failed request and no console error (issue 19, bug 11).

Under ``streamlit run Home.py`` a page opened by its URL makes Streamlit's frontend request
``/<Page>/_stcore/health`` and ``/<Page>/_stcore/host-config`` first and get two 404s (streamlit/streamlit#7074);
``serve.py`` writes the server's root into the page (``core.app.base_url``), so the frontend asks ``/`` at once.
Screenshots go to ``test-artifacts/e2e-direct-url/`` (gitignored).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import e2e_util as e2e
import pytest

pytestmark = [pytest.mark.browser, pytest.mark.slow]

SKIP_REASON = e2e.browser_skip_reason()
# URL path -> the page's title (its st.title)
PAGES = {"": "Brain tumour MRI viewer", "Case_browser": "Case browser", "Slice_viewer": "Slice viewer",
         "Segmentation": "Segmentation", "Volume_report": "Volume report", "Training": "Training",
         "Follow_up": "Follow-up"}
PAGE_TIMEOUT_S = 90.0


@pytest.mark.skipif(SKIP_REASON is not None, reason=SKIP_REASON or "")
@pytest.mark.timeout(600)
def test_every_page_by_its_url_loads_without_a_failed_request(tmp_path: Path) -> None:
    from playwright.sync_api import sync_playwright

    out = e2e.clean_artifacts(e2e.ARTIFACTS_DIR.parent / "e2e-direct-url")
    server = e2e.start_server(tmp_path / "work", log_path=out / "server.log", entry="serve.py")
    failed: list[str] = []
    console_errors: list[str] = []
    try:
        with sync_playwright() as pw:
            browser = e2e.launch_chromium(pw)
            page = browser.new_page(viewport={"width": 1400, "height": 1000})

            def on_response(response: Any) -> None:
                if response.status >= 400:
                    failed.append(f"{response.status} {response.url}")

            page.on("response", on_response)
            page.on("console", lambda msg: console_errors.append(msg.text) if msg.type == "error" else None)
            for path, title in PAGES.items():
                for visit in ("open", "reload"):
                    if visit == "open":
                        page.goto(f"{server.url}/{path}")
                    else:
                        page.reload()
                    e2e.wait_idle(page, timeout_s=PAGE_TIMEOUT_S)
                    heading = page.locator("h1").first
                    heading.wait_for(timeout=PAGE_TIMEOUT_S * 1000)
                    assert title in heading.inner_text(), (path, visit, heading.inner_text())
                    assert page.get_by_text("Research software", exact=False).count() >= 1, (path, visit)
                    assert page.locator(e2e.EXCEPTION).count() == 0, (path, visit)
                    page.screenshot(path=str(out / f"{path or 'Home'}-{visit}.png"))
            # the app still works over its websocket: a page link in the sidebar navigates
            page.goto(f"{server.url}/Slice_viewer")
            e2e.wait_idle(page, timeout_s=PAGE_TIMEOUT_S)
            page.locator('[data-testid="stSidebarNav"] a', has_text="Volume report").first.click()
            page.wait_for_url("**/Volume_report", timeout=PAGE_TIMEOUT_S * 1000)
            e2e.wait_idle(page, timeout_s=PAGE_TIMEOUT_S)
            assert "Volume report" in page.locator("h1").first.inner_text()
            browser.close()
    finally:
        e2e.stop_server(server)
    assert failed == [], failed
    assert console_errors == [], console_errors
