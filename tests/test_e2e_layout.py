"""Browser check of the layout at the walk's window size (1400 x 1000): no text of a page is cut with an ellipsis.

Found by walking the app (``scripts/walk.py``): Home's lesion-wise Dice labels read "WT lesion-..." and the Training
form's "Strong intensity augmenta..." in their narrow columns. A label cut this way hides what a number or a
switch means, so every page is opened on the bundled demo case and checked.
"""

from __future__ import annotations

from pathlib import Path

import e2e_util as e2e
import pytest

pytestmark = [pytest.mark.browser, pytest.mark.slow]

SKIP_REASON = e2e.browser_skip_reason()
PAGE_TIMEOUT_S = 90.0
# pages opened by the sidebar (label of the link, title of the page)
PAGES = (("Case browser", "Case browser"), ("Slice viewer", "Slice viewer"), ("Segmentation", "Segmentation"),
         ("Volume report", "Volume report"), ("Training", "Training"), ("Follow up", "Follow-up comparison"))
CUT_TEXT_JS = """() => [...document.querySelectorAll('[data-testid="stMain"] *')].filter(el => {
    if (!el.innerText || !el.innerText.trim() || el.offsetParent === null) return false;
    const cs = getComputedStyle(el);
    return cs.textOverflow === 'ellipsis' && cs.overflow !== 'visible' && el.scrollWidth > el.clientWidth + 1;
}).map(el => el.innerText.trim())"""


def cut_texts(page) -> list[str]:
    """Texts of the main area shown cut with an ellipsis (wider than their box)."""
    return sorted(set(page.evaluate(CUT_TEXT_JS)))


@pytest.mark.skipif(SKIP_REASON is not None, reason=SKIP_REASON or "")
@pytest.mark.timeout(420)
def test_no_page_cuts_a_label(tmp_path: Path) -> None:
    with e2e.app_page(tmp_path / "work", f"/?case={e2e.DEMO_CASE_ID}&src=demo", PAGE_TIMEOUT_S) as (_, page):
        cut = {"Home": cut_texts(page)}
        for link, title in PAGES:
            page.locator('[data-testid="stSidebarNav"] a').filter(has_text=link).first.click()
            page.get_by_role("heading", name=title).first.wait_for(timeout=PAGE_TIMEOUT_S * 1000)
            e2e.wait_idle(page, PAGE_TIMEOUT_S)
            cut[link] = cut_texts(page)
    assert {name: texts for name, texts in cut.items() if texts} == {}


@pytest.mark.skipif(SKIP_REASON is not None, reason=SKIP_REASON or "")
@pytest.mark.timeout(300)
def test_the_case_tables_toolbar_does_not_cover_its_caption(tmp_path: Path) -> None:
    """Bug (walk of issue 19): the case table's hover toolbar covered the end of the caption above it."""
    with e2e.app_page(tmp_path / "work", "/Case_browser", PAGE_TIMEOUT_S) as (_, page):
        caption = page.locator('[data-testid="stCaptionContainer"]').filter(has_text="Click any cell of a row").first
        page.locator('[data-testid="stDataFrame"]').first.hover()
        toolbar = page.locator('[data-testid="stElementToolbar"]').first
        toolbar.wait_for(state="visible", timeout=10_000)
        a, b = e2e.stable_box(toolbar), e2e.stable_box(caption)
        overlap_x = min(a["x"] + a["width"], b["x"] + b["width"]) - max(a["x"], b["x"])
        overlap_y = min(a["y"] + a["height"], b["y"] + b["height"]) - max(a["y"], b["y"])
        assert overlap_x <= 0 or overlap_y <= 0, (a, b)
