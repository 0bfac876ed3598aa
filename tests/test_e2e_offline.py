"""Offline deployment in a real browser: every page, with the demo case open, requests nothing from a host other
than the app's own (on a network with no internet such a request fails: the Material-icon favicon Streamlit
fetches from fonts.gstatic.com did), and the health check the deployment recipe uses answers.

Runs ``streamlit run Home.py`` on a free localhost port and Debian's chromium through Playwright (see
``tests/e2e_util.py``); requests to other hosts are aborted, as offline, and recorded.
"""

from __future__ import annotations

import urllib.request
from pathlib import Path

import e2e_util as e2e
import pytest

pytestmark = [pytest.mark.browser]

SKIP_REASON = e2e.browser_skip_reason()
CASE_ID = "TCIA-example"
PAGE_TIMEOUT_S = 90.0
# sidebar link -> page title
PAGES: dict[str, str] = {"Case browser": "Case browser", "Slice viewer": "Slice viewer", "Segmentation": "Segmentation",
                         "Volume report": "Volume report", "Training": "Training",
                         "Follow up": "Follow-up comparison"}


def test_foreign_requests_tells_the_app_s_origin_from_other_hosts() -> None:
    origin = "http://127.0.0.1:8501"
    urls = [f"{origin}/", "ws://127.0.0.1:8501/_stcore/stream", "data:image/svg+xml,<svg/>",
            "https://fonts.gstatic.com/s/i/x.svg", "http://127.0.0.1:9999/", "http://localhost:8501/"]
    assert e2e.foreign_requests(urls, origin) == urls[3:]


@pytest.mark.skipif(SKIP_REASON is not None, reason=SKIP_REASON or "")
@pytest.mark.timeout(300)
def test_every_page_works_offline_and_requests_only_its_own_origin(tmp_path: Path) -> None:
    """Each page with the demo case open, on a browser whose requests to any other host fail (as on a network
    with no internet): no such request is made, and the health check the deployment recipe uses answers."""
    from playwright.sync_api import sync_playwright

    server = e2e.start_server(tmp_path / "work")
    try:
        with urllib.request.urlopen(f"{server.url}/_stcore/health", timeout=10) as resp:  # noqa: S310 (localhost)
            assert resp.status == 200 and resp.read().strip() == b"ok"
        with sync_playwright() as pw:
            browser = e2e.launch_chromium(pw)
            try:
                page = browser.new_page(viewport={"width": 1400, "height": 1000})
                page.set_default_timeout(PAGE_TIMEOUT_S * 1000)
                requested = e2e.record_requests(page, server.url, block_foreign=True)
                page.goto(f"{server.url}/?case={CASE_ID}&src=demo")
                e2e.wait_idle(page, PAGE_TIMEOUT_S)
                for label, title in PAGES.items():
                    page.locator('[data-testid="stSidebarNav"] a').filter(has_text=label).first.click()
                    page.wait_for_url(f"**/{label.replace(' ', '_')}*")
                    page.get_by_role("heading", name=title).first.wait_for()
                    e2e.wait_idle(page, PAGE_TIMEOUT_S)
                    assert e2e.exception_texts(page) == [], label
                assert any(u.startswith(server.url) for u in requested)  # the recorder saw the app's own requests
                foreign = e2e.foreign_requests(requested, server.url)
            finally:
                browser.close()
    finally:
        e2e.stop_server(server)
    assert foreign == [], foreign
