"""Walk the whole reader's flow in headless Chromium (1400 x 1000) and take a screenshot after every step.

Home -> Case browser (a BraTS case of ``../shared/data/brats``, then the bundled demo) -> Slice viewer (three
planes, window change, overlays, 2x2, plotly views, montage, 3-D) -> Segmentation (segment, probability maps,
one brush stroke, undo) -> Volume report (lesions, PDF saved and read back) -> Follow-up (compare) -> Case
browser's DICOM tab (one series of ``../shared/data/dicom`` converted) and raw-study tab -> Training (the form
only, no run), reloading every page on the way.

The app runs as the browser tests run it (``tests/e2e_util.py``: ``streamlit run serve.py`` on a free loopback
port, a temporary work folder), with ``../shared/data``'s brats, dicom and raw folders as labelled data roots.
Per step it records the page's console errors, failed requests and 4xx/5xx responses, and Streamlit exception
boxes, then prints a summary table. Screenshots go to ``--out`` (default: a new folder under /tmp; never commit
them). A step that fails is recorded (with its screenshot) and the walk goes on.

Usage::

    .venv/bin/python scripts/walk.py [--out /tmp/walk] [--case BraTS2021_00000] [--dicom ge_3d_ax_t1] [--no-raw]
"""

from __future__ import annotations

import argparse
import re
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

import e2e_util as e2e  # noqa: E402

PAGE_S = 120.0
LONG_S = 420.0  # a whole-volume prediction, a raw study's registration, on a loaded 2-core machine
UPSTREAM_HEALTH_404 = re.compile(r"/[A-Za-z_]+/_stcore/(health|host-config)$")  # streamlit/streamlit#7074


@dataclass
class Step:
    name: str
    shot: str
    console_errors: list[str] = field(default_factory=list)
    bad_responses: list[str] = field(default_factory=list)
    upstream_404: int = 0
    exceptions: list[str] = field(default_factory=list)
    failure: str = ""
    seconds: float = 0.0


class Walk:
    """One browser page, the events it records, and a screenshot per step."""

    def __init__(self, page: Any, out: Path) -> None:
        self.page, self.out = page, out
        self.steps: list[Step] = []
        self._console: list[str] = []
        self._responses: list[str] = []
        self._upstream = 0
        self._t0 = time.monotonic()
        page.on("console", self._console_message)
        page.on("pageerror", lambda e: self._console.append(f"pageerror: {str(e)[:300]}"))
        page.on("requestfailed", self._failed)
        page.on("response", self._response)

    def _console_message(self, message: Any) -> None:
        if message.type != "error":
            return
        url = str((message.location or {}).get("url", "")).split("?")[0]
        if UPSTREAM_HEALTH_404.search(url):  # counted with the 404 responses of the same requests
            return
        self._console.append(f"{message.text[:300]} ({url})" if url else message.text[:300])

    def _failed(self, request: Any) -> None:
        self._responses.append(f"failed {request.url} ({request.failure})")

    def _response(self, response: Any) -> None:
        if response.status < 400:
            return
        if response.status == 404 and UPSTREAM_HEALTH_404.search(response.url.split("?")[0]):
            self._upstream += 1
        else:
            self._responses.append(f"{response.status} {response.url}")

    def snap(self, name: str, failure: str = "") -> Step:
        """Wait for the page to settle, take the screenshot and close the step's record."""
        try:
            e2e.wait_idle(self.page, PAGE_S)
        except Exception as err:  # noqa: BLE001 (recorded, the walk goes on)
            failure = failure or f"not idle: {err}"
        path = self.out / f"{len(self.steps) + 1:02d}_{name}.png"
        try:
            e2e.full_page_screenshot(self.page, path)
        except Exception as err:  # noqa: BLE001
            failure = failure or f"no screenshot: {err}"
        step = Step(name, str(path), list(self._console), list(self._responses), self._upstream,
                    e2e.exception_texts(self.page), failure, time.monotonic() - self._t0)
        self.steps.append(step)
        print(f"[{step.seconds:6.0f} s] {name}: {'FAILED ' + failure if failure else 'ok'}"
              f"{' EXCEPTION' if step.exceptions else ''}", flush=True)
        self._console.clear()
        self._responses.clear()
        self._upstream = 0
        return step

    def run(self, name: str, action: Any) -> None:
        """Do ``action(page)`` and snap ``name``; a failure is recorded on the step."""
        try:
            action(self.page)
        except Exception as err:  # noqa: BLE001 (recorded, the walk goes on)
            self.snap(name, failure=f"{type(err).__name__}: {str(err).splitlines()[0][:300]}")
            return
        self.snap(name)

    def reload(self, name: str) -> None:
        def _reload(page: Any) -> None:
            page.reload()
            e2e.wait_idle(page, PAGE_S)
        self.run(f"{name}_reloaded", _reload)


# ---- actions ---------------------------------------------------------------------------------------------------

def pick(page: Any, label: str, option: str, scope: Any = None) -> None:
    """Choose ``option`` in the Streamlit selectbox labelled ``label``."""
    (scope or page).get_by_role("combobox", name=label).first.click()
    page.get_by_role("option", name=option, exact=True).first.click()
    e2e.wait_idle(page, PAGE_S)


def radio(page: Any, text: str, scope: Any = None) -> None:
    (scope or page).locator('[data-testid="stRadio"] label').filter(has_text=text).first.click()
    e2e.wait_idle(page, PAGE_S)


def tab(page: Any, name: str) -> None:
    page.get_by_role("tab", name=re.compile(name)).first.click()
    e2e.wait_idle(page, PAGE_S)


def goto(page: Any, link: str, heading: str | None = None) -> None:
    """The sidebar link ``link`` and wait for the page titled ``heading`` (default ``link``) to settle."""
    page.locator('[data-testid="stSidebarNav"] a').filter(has_text=link).first.click()
    page.wait_for_url(f"**/{link.replace(' ', '_')}*", timeout=PAGE_S * 1000)
    page.get_by_role("heading", name=heading or link).first.wait_for(timeout=PAGE_S * 1000)
    e2e.wait_idle(page, PAGE_S)


def viewer_frame(page: Any) -> Any:
    return e2e.viewer_frame(page, PAGE_S)


def open_case(page: Any, source: str, folder: str | None, case_id: str) -> None:
    e2e.goto_sidebar_page(page, "Case browser", PAGE_S)
    tab(page, "Cases in a folder")
    radio(page, source)
    if folder is not None:
        pick(page, "Data folder on the server", folder)
    pick(page, "Case", case_id)
    page.get_by_role("button", name="Open case").click()
    e2e.wait_text(page, f"Selected case: {case_id}", PAGE_S)
    e2e.wait_idle(page, PAGE_S)


def viewer_window(page: Any) -> None:
    frame = viewer_frame(page)
    presets = frame.locator("#preset option:not([disabled])")
    frame.locator("#preset").select_option(presets.nth(presets.count() - 1).get_attribute("value"))
    frame.locator("#outline").check()
    frame.wait_for_function("() => window.__viewer.outline === true")


def viewer_modality(page: Any, key: str) -> None:
    frame = viewer_frame(page)
    index = frame.evaluate("(k) => String(window.__viewer.data.images.findIndex(im => im.key === k))", key)
    frame.locator("#modality").select_option(index)
    frame.wait_for_function("(k) => window.__viewer.data.images[window.__viewer.mod].key === k", arg=key)


def sidebar_image(page: Any, option: str) -> None:
    pick(page, "Image", option, scope=page.locator('[data-testid="stSidebar"]'))


def brush_stroke(page: Any) -> None:
    """Paint ED across the tumour of the demo-like axial slice (upper middle of the canvas): NCR and ET voxels
    under the brush become edema, so the stroke changes voxels and Undo has something to undo."""
    radio(page, "ED (2)")
    canvas = page.frame_locator('iframe[title*="drawable_canvas"]').locator("canvas.upper-canvas").first \
        if page.locator('iframe[title*="drawable_canvas"]').count() else page.locator("canvas.upper-canvas").first
    e2e.press_and_drag(page, canvas, 0.5, 0.38, (4, 3))
    page.mouse.up()
    e2e.wait_text(page, "Corrected by hand", PAGE_S)


def undo(page: Any) -> None:
    page.get_by_role("button", name="Undo", exact=True).first.click()
    e2e.wait_idle(page, PAGE_S)


def download_pdf(page: Any, out: Path) -> str:
    from pypdf import PdfReader

    button = page.locator('[data-testid="stDownloadButton"]').filter(has_text="PDF summary").first
    path = e2e.download(page, button, out / "report.pdf", PAGE_S)
    text = re.sub(r"\s+", " ", "\n".join(p.extract_text() or "" for p in PdfReader(str(path)).pages))
    research = "research" in text.lower()
    return f"PDF {path.stat().st_size} bytes, {len(PdfReader(str(path)).pages)} page(s), says research: {research}"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", default="", help="folder for the screenshots (default: new folder under /tmp)")
    parser.add_argument("--shared", default=str(ROOT.parent / "shared" / "data"))
    parser.add_argument("--case", default="BraTS2021_00000", help="the BraTS case opened and segmented")
    parser.add_argument("--dicom", default="ge_3d_ax_t1", help="the DICOM series converted")
    parser.add_argument("--no-raw", action="store_true", help="read the raw study but do not preprocess it")
    args = parser.parse_args()
    from playwright.sync_api import sync_playwright

    shared = Path(args.shared).resolve()
    out = Path(args.out) if args.out else Path(tempfile.mkdtemp(prefix="walk-", dir="/tmp"))
    out.mkdir(parents=True, exist_ok=True)
    roots = ":".join(f"{label}={shared / sub}" for label, sub in
                     (("BraTS cases", "brats"), ("DICOM", "dicom"), ("Raw studies", "raw")))
    notes: list[str] = []
    with tempfile.TemporaryDirectory() as tmp, sync_playwright() as pw:
        server = e2e.start_server(Path(tmp) / "work", log_path=out / "server.log",
                                  extra_env={"BRATS_DATA_ROOTS": roots})
        browser = e2e.launch_chromium(pw)
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 1000}, accept_downloads=True)
            page.set_default_timeout(PAGE_S * 1000)
            walk = Walk(page, out)
            page.goto(server.url)
            walk.snap("home")
            walk.reload("home")

            walk.run("case_browser", lambda p: e2e.goto_sidebar_page(p, "Case browser", PAGE_S))
            walk.run("case_browser_folder", lambda p: (radio(p, "Data folder"),
                                                       pick(p, "Data folder on the server", "BraTS cases/train")))
            walk.run("case_opened_brats", lambda p: open_case(p, "Data folder", "BraTS cases/train", args.case))
            walk.reload("case_browser")

            walk.run("viewer", lambda p: (e2e.goto_sidebar_page(p, "Slice viewer", PAGE_S), viewer_frame(p)))
            walk.run("viewer_t1ce_window_outline", lambda p: (viewer_modality(p, "t1ce"), viewer_window(p)))
            walk.reload("viewer")
            walk.run("viewer_2x2", lambda p: sidebar_image(p, "All modalities (2x2)"))
            walk.run("viewer_2x2_sagittal", lambda p: radio(p, "Sagittal",
                                                            p.locator('[data-testid="stSidebar"]')))
            walk.run("viewer_flair_plotly", lambda p: (sidebar_image(p, "FLAIR"), radio(p, "On the server")))
            walk.run("viewer_plotly_outlines", lambda p: (p.get_by_text("Outlines only").first.click(),
                                                          e2e.wait_idle(p, PAGE_S)))
            walk.run("viewer_montage", lambda p: tab(p, "Montage"))
            walk.run("viewer_3d", lambda p: tab(p, "3-D"))
            walk.run("viewer_back_to_planes", lambda p: (tab(p, "Three planes"), radio(p, "In the browser")))
            walk.reload("viewer_planes")

            walk.run("segmentation", lambda p: e2e.goto_sidebar_page(p, "Segmentation", PAGE_S))

            def _segment(p: Any) -> None:
                p.get_by_role("button", name="Segment whole volume").click()
                e2e.wait_text(p, "Whole-volume prediction of model", LONG_S)
                e2e.wait_idle(p, LONG_S)
            walk.run("segmented", _segment)
            walk.run("brush_stroke", brush_stroke)
            walk.run("undo", undo)
            walk.reload("segmentation")
            walk.run("viewer_with_prediction", lambda p: (e2e.goto_sidebar_page(p, "Slice viewer", PAGE_S),
                                                          viewer_frame(p)))

            walk.run("volume_report", lambda p: e2e.goto_sidebar_page(p, "Volume report", PAGE_S))
            walk.run("pdf_downloaded", lambda p: notes.append(download_pdf(p, out)))
            walk.reload("volume_report")

            walk.run("follow_up", lambda p: goto(p, "Follow up", "Follow-up comparison"))

            def _compare(p: Any) -> None:
                segment = p.get_by_role("button", name=re.compile("^Segment"))
                for _ in range(2):  # the studies without a segmentation are offered a Segment button
                    if segment.count():
                        segment.first.click()
                        e2e.wait_idle(p, LONG_S)
                p.get_by_role("button", name="Compare").click()
                e2e.wait_idle(p, LONG_S)
            walk.run("follow_up_compared", _compare)
            walk.reload("follow_up")

            walk.run("demo_opened", lambda p: open_case(p, "Bundled demo", None, "TCIA-example"))
            walk.run("demo_viewer", lambda p: (e2e.goto_sidebar_page(p, "Slice viewer", PAGE_S), viewer_frame(p)))

            def _dicom(p: Any) -> None:
                e2e.goto_sidebar_page(p, "Case browser", PAGE_S)
                tab(p, "DICOM study")
                panel = p.locator('[role="tabpanel"]:visible')
                radio(p, "Folder in the data roots", panel)
                pick(p, "Data root", "DICOM", panel)
                pick(p, "Sub-folder with the DICOM files", args.dicom, panel)
                panel.get_by_role("button", name="Read folder").click()
                e2e.wait_idle(p, LONG_S)
            walk.run("dicom_read", _dicom)

            def _dicom_open(p: Any) -> None:
                p.get_by_role("button", name="Open as a case").click()
                e2e.wait_idle(p, LONG_S)
            walk.run("dicom_opened", _dicom_open)
            walk.run("dicom_case_viewer", lambda p: (e2e.goto_sidebar_page(p, "Slice viewer", PAGE_S),
                                                     viewer_frame(p)))
            walk.reload("dicom_case_viewer")  # a converted case is not kept over a reload: the page says why

            def _raw(p: Any) -> None:
                e2e.goto_sidebar_page(p, "Case browser", PAGE_S)
                tab(p, "Raw study")
                panel = p.locator('[role="tabpanel"]:visible')
                pick(p, "Data root", "Raw studies", panel)
                pick(p, "Sub-folder with the NIfTI series", "TCGA-FG-6692", panel)
                panel.get_by_role("button", name="Read folder").click()
                e2e.wait_idle(p, PAGE_S)
            walk.run("raw_read", _raw)
            if not args.no_raw:
                def _raw_open(p: Any) -> None:
                    p.get_by_role("button", name="Preprocess and open as a case").click()
                    e2e.wait_idle(p, LONG_S)
                walk.run("raw_opened", _raw_open)
                walk.run("raw_case_segmentation", lambda p: e2e.goto_sidebar_page(p, "Segmentation", PAGE_S))
                walk.run("raw_case_segmented", _segment)
                walk.run("raw_case_viewer", lambda p: (e2e.goto_sidebar_page(p, "Slice viewer", PAGE_S),
                                                       viewer_frame(p)))


                def _same_patient(p: Any) -> None:
                    """TCIA-example is this raw study after the BrainLes pipeline: the same patient, same day."""
                    goto(p, "Follow up", "Follow-up comparison")
                    for label, option in (("Baseline study", r"^TCIA-example \("), ("Follow-up study", r"raw study")):
                        p.get_by_role("combobox", name=label).first.click()
                        p.get_by_role("option", name=re.compile(option)).first.click()
                        e2e.wait_idle(p, PAGE_S)
                    _compare(p)
                walk.run("follow_up_same_patient", _same_patient)
                walk.reload("follow_up_same_patient")  # a converted case is not kept over a reload: said so

            walk.run("training", lambda p: e2e.goto_sidebar_page(p, "Training", PAGE_S))

            def _training_form(p: Any) -> None:
                name = p.get_by_role("textbox", name=re.compile("Output name"))
                name.fill("walk_model")
                name.blur()
                e2e.wait_idle(p, PAGE_S)
            walk.run("training_named", _training_form)
            walk.reload("training")
        finally:
            browser.close()
            e2e.stop_server(server)

    log = server.log_text()
    print(f"\n{'step':32} {'console':>7} {'4xx/5xx':>7} {'#7074':>5}  screenshot / problems")
    for s in walk.steps:
        print(f"{s.name:32} {len(s.console_errors):7d} {len(s.bad_responses):7d} {s.upstream_404:5d}  {s.shot}")
        for line in ([f"FAILED: {s.failure}"] if s.failure else []) + [f"console: {c}" for c in s.console_errors] \
                + [f"request: {r}" for r in s.bad_responses] + [f"EXCEPTION: {e[:400]}" for e in s.exceptions]:
            print(f"{'':32} {line}")
    print(f"\n{sum(s.upstream_404 for s in walk.steps)} console 404s of /<Page>/_stcore/health or host-config "
          "(streamlit/streamlit#7074, upstream)")
    for note in notes:
        print(note)
    tracebacks = log.count("Traceback")
    print(f"server log {out / 'server.log'}: {tracebacks} traceback(s)")
    return 1 if any(s.failure or s.exceptions for s in walk.steps) or tracebacks else 0


if __name__ == "__main__":
    sys.exit(main())
