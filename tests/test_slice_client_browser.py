"""The in-browser slice viewer (``core/app/slice_client/index.html``) alone in headless Chromium: its state lives in
the page, so it is driven here by the messages Streamlit would send (``streamlit:render`` with a ``pack_case``
payload of a tiny synthetic case) and checked through what it draws and sends back (``setComponentValue``).

No Streamlit server: the file is opened from disk, which makes each test a second or two.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import e2e_util as e2e
import numpy as np
import pytest

from core.views import client_volume as cv
from core.views import figures

pytestmark = pytest.mark.browser
SKIP_REASON = e2e.browser_skip_reason()
INDEX = Path(__file__).resolve().parent.parent / "core" / "app" / "slice_client" / "index.html"
SHAPE = (16, 14, 10)
MODS = ("flair", "t1", "t1ce", "t2")


def tiny_payload(with_labels: bool = True, tumour: dict[str, int] | None = None) -> tuple[dict[str, Any], bytes]:
    """A 16 x 14 x 10 case of four modalities (a bright block inside a grey brain) and one label map."""
    images = {}
    for i, key in enumerate(MODS):
        data = np.zeros(SHAPE, np.float32)
        data[2:14, 2:12, 1:9] = 100.0 + 10 * i
        data[6:10, 5:9, 3:7] = 300.0
        images[key] = data
    seg = np.zeros(SHAPE, np.uint8)
    seg[6:10, 5:9, 3:7] = 2
    seg[7:9, 6:8, 4:6] = 4
    labels = {"Ground truth": seg} if with_labels else {}
    pct = {k: figures.brain_percentiles(v) for k, v in images.items()}
    return cv.pack_case(images, pct, labels, np.eye(4), (1.0, 1.0, 1.0),
                        cursors={"tumour": tumour, "centre": {"x": 8, "y": 7, "z": 5}})


@pytest.fixture(scope="module")
def browser():
    if SKIP_REASON:
        pytest.skip(SKIP_REASON)
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        chromium = e2e.launch_chromium(pw)
        try:
            yield chromium
        finally:
            chromium.close()


@pytest.fixture
def page(browser):
    pg = browser.new_page(viewport={"width": 1200, "height": 900})
    pg.goto(INDEX.as_uri())
    pg.evaluate("""() => { window.__sent = [];
        window.addEventListener('message', (e) => {
            if (e.data && e.data.type === 'streamlit:setComponentValue') window.__sent.push(e.data.value); }); }""")
    yield pg
    pg.close()


def render(pg, payload: tuple[dict[str, Any], bytes], settings: dict[str, Any], cursor: dict | None = None) -> None:
    """Send one ``streamlit:render`` as Streamlit would and wait until the viewer has drawn."""
    meta, blob = payload
    frames = pg.evaluate("() => window.__viewer.frames")
    pg.evaluate("""([meta, blob, cursor, settings]) => window.postMessage({type: 'streamlit:render', args: {
        payload: meta, blob: new Uint8Array(blob), cursor, settings, height: 620}}, '*')""",
                [meta, list(blob), cursor, settings])
    pg.wait_for_function("(n) => window.__viewer.ready && window.__viewer.frames > n", arg=frames, timeout=15000)
    pg.wait_for_function("() => document.body.dataset.all === '1'", timeout=15000)


BOXES_JS = "[...document.querySelectorAll('#views .view')].map(b => [b.dataset.plane, b.dataset.mod || null])"


def view_boxes(pg) -> list[tuple[str, str | None]]:
    return [tuple(x) for x in pg.evaluate(f"() => {BOXES_JS}")]


SIDEBAR = {"modality": "flair", "plane": "axial", "show": ["Ground truth"], "radiological": True, "opacity": 0.4,
           "outline": False, "hidden": []}


def test_the_2x2_layout_shows_every_modality_of_one_plane(page) -> None:
    """Bug (issue 19.4): "All modalities (2x2)" did nothing in the browser viewer (three planes of FLAIR stayed)."""
    payload = tiny_payload()
    render(page, payload, {**SIDEBAR, "modality": "all", "plane": "coronal"})
    assert view_boxes(page) == [("coronal", k) for k in MODS]
    assert page.evaluate("() => document.body.dataset.layout") == "four"
    render(page, payload, {**SIDEBAR, "modality": "all", "plane": "sagittal"})  # the sidebar's plane
    assert {p for p, _ in view_boxes(page)} == {"sagittal"}
    # bug (walk of issue 19): the viewer's own Plane and Image selectors kept naming the old choice
    assert page.evaluate("() => [document.getElementById('plane').value, "
                         "document.getElementById('modality').value]") == ["sagittal", "all"]
    render(page, payload, {**SIDEBAR, "modality": "flair", "plane": "coronal"})  # the sidebar back to one image
    assert view_boxes(page) == [("axial", None), ("coronal", None), ("sagittal", None)]
    assert page.evaluate("() => document.getElementById('modality').value") == "0"  # FLAIR
    page.select_option("#modality", "all")  # the viewer's own control
    page.wait_for_function(f"() => {BOXES_JS}.map(b => b[1]).join() === {','.join(MODS)!r}", timeout=5000)
    assert [m for _, m in view_boxes(page)] == list(MODS)
    page.select_option("#plane", "sagittal")
    page.wait_for_function(f"() => {BOXES_JS}.every(b => b[0] === 'sagittal')", timeout=5000)
    assert {p for p, _ in view_boxes(page)} == {"sagittal"}
    page.wait_for_function("() => { const s = window.__sent; const v = s.length && s[s.length - 1].view; "
                           "return v && v.plane === 'sagittal'; }", timeout=5000)
    sent = page.evaluate("() => window.__sent")
    assert sent[-1]["view"]["modality"] == "all" and sent[-1]["view"]["plane"] == "sagittal"


def test_the_readers_choices_are_sent_back_and_a_rerun_does_not_undo_them(page) -> None:
    """Bug (issue 19.4): the viewer's own choices (T1CE, window, outlines, convention) were lost on a tab switch;
    they now go back to the page (which keeps them) and a rerun with unchanged sidebar settings keeps them."""
    payload = tiny_payload()
    render(page, payload, SIDEBAR)
    page.select_option("#modality", "2")  # T1CE
    page.check("#outline")
    page.check("#neuro")
    # postMessage is delivered on a later turn of the event loop: wait for the last choice to arrive (times out if not)
    page.wait_for_function("() => { const s = window.__sent; const v = s.length && s[s.length - 1].view; "
                           "return v && v.radiological === false; }", timeout=5000)
    view = page.evaluate("() => window.__sent")[-1]["view"]
    assert view["modality"] == "t1ce" and view["outline"] is True and view["radiological"] is False
    assert set(view["windows"]) == set(MODS) and view["show"] == ["Ground truth"]
    render(page, payload, SIDEBAR)  # a rerun of the page: the same settings as before
    state = page.evaluate("() => ({mod: window.__viewer.mod, outline: window.__viewer.outline, "
                          "rad: window.__viewer.radiological})")
    assert state == {"mod": 2, "outline": True, "rad": False}
    render(page, payload, {**SIDEBAR, "radiological": False, "modality": "t2"})  # the sidebar changed: it wins
    assert page.evaluate("() => window.__viewer.mod") == 3


def test_a_new_viewer_opens_with_the_kept_choices(page) -> None:
    """What the page sends back after a tab switch (the kept view) is what the viewer opens with."""
    render(page, tiny_payload(), {**SIDEBAR, "modality": "t1ce", "outline": True, "radiological": False,
                                  "hidden": ["2"], "windows": {"t1ce": [10.0, 90.0]}})
    state = page.evaluate("() => ({mod: window.__viewer.mod, outline: window.__viewer.outline, "
                          "rad: window.__viewer.radiological, hidden: window.__viewer.hidden, "
                          "win: window.__viewer.win[2]})")
    assert state == {"mod": 2, "outline": True, "rad": False, "hidden": {"2": True}, "win": [10, 90]}


def test_no_label_controls_without_a_segmentation(page) -> None:
    """Bug (issue 19.11): NCR/ED/ET checkboxes showed on a case without labels or prediction."""
    render(page, tiny_payload(with_labels=False), {**SIDEBAR, "show": []})
    hidden = page.evaluate("() => ['classes', 'overlays', 'opacity-box', 'outline-box'].map("
                           "id => getComputedStyle(document.getElementById(id)).display)")
    assert hidden == ["none"] * 4
    assert page.evaluate("() => document.querySelectorAll('#classes input').length") == 0
    assert page.is_disabled("#tumour")


def test_most_tumour_follows_the_cursor_the_page_gives(page) -> None:
    """Bug (issue 19.2): a case with only a prediction had "Most tumour" greyed out; the page now passes the
    prediction's cursor, which enables the button and jumps there."""
    render(page, tiny_payload(tumour={"x": 7, "y": 6, "z": 4}), SIDEBAR, cursor={"x": 8, "y": 7, "z": 5})
    assert not page.is_disabled("#tumour")
    page.click("#tumour")
    page.wait_for_function("() => window.__viewer.cursor.join() === '7,6,4'", timeout=5000)
    assert page.evaluate("() => window.__viewer.cursor") == [7, 6, 4]
    page.wait_for_function("() => { const s = window.__sent; return s.length && s[s.length - 1].cursor "
                           "&& s[s.length - 1].cursor.x === 7; }", timeout=5000)
    assert page.evaluate("() => window.__sent")[-1]["cursor"] == {"x": 7, "y": 6, "z": 4}


def test_the_ruler_length_sits_on_a_dark_box(page) -> None:
    """Bug (issue 19.11): the ruler's cyan label was low-contrast on grey brain; it is now white on a dark box."""
    render(page, tiny_payload(), {**SIDEBAR, "show": []})
    page.evaluate("""() => { const S = window.__viewer; S.cursor = [8, 7, 5];
        S.ruler = {plane: 'axial', pts: [[4, 4, 5], [12, 10, 5]]}; }""")
    page.evaluate("() => window.dispatchEvent(new Event('resize'))")
    page.wait_for_function("() => window.__viewer.rulerLabel !== null", timeout=5000)  # drawn with the ruler
    box = page.evaluate("() => window.__viewer.rulerLabel")
    assert box and box["text"] == "10.0 mm"
    rgba = page.evaluate("""(b) => Array.from(document.querySelector('.view[data-plane="axial"] canvas')
        .getContext('2d').getImageData(Math.round(b.x + 1), Math.round(b.y + 1), 1, 1).data)""", box)
    assert max(rgba[:3]) <= 60, json.dumps(rgba)  # the box's corner: dark whatever the brain under it
