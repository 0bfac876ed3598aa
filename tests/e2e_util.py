"""Helpers to run the app in a real server and drive it with headless chromium (Playwright).

Used by ``tests/test_e2e_browser.py`` and ``benchmarks/load_test.py``. Nothing here imports the app: the server
is a ``streamlit run serve.py`` subprocess (what ``scripts/run_app.sh`` starts; ``entry="Home.py"`` for Streamlit's
own server) on a free localhost port, with ``$BRATS_VIEWER_WORK_DIR`` pointing to a
temporary folder so corrections and the audit log never touch the project's ``work/``.

Waits poll the page (no fixed sleeps): a Streamlit page has finished a run when its status widget no longer says
"Running" and no spinner or progress bar is shown.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

PROJECT_ROOT = Path(__file__).resolve().parent.parent
CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS: tuple[str, ...] = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                                  "--disable-component-update")
ARTIFACTS_DIR = PROJECT_ROOT / "test-artifacts" / "e2e"

# Streamlit's test ids (streamlit 1.67 frontend)
STATUS_WIDGET = '[data-testid="stStatusWidget"]'
EXCEPTION = '[data-testid="stException"]'
BUSY = ('[data-testid="stSpinner"], [data-testid="stProgress"], [data-testid="stSkeleton"]')


def browser_skip_reason() -> str | None:
    """Why a browser test cannot run here (None when it can)."""
    if not CHROMIUM.is_file():
        return f"no chromium at {CHROMIUM} (install Debian's chromium package)"
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        return "the playwright Python package is not importable"
    return None


def free_port() -> int:
    """A TCP port free on 127.0.0.1 right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class AppServer:
    """A running ``streamlit run Home.py``: its process, URL, work folder and log file."""

    process: subprocess.Popen[bytes]
    port: int
    work_dir: Path
    log_path: Path

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def log_text(self) -> str:
        try:
            return self.log_path.read_text(encoding="utf-8", errors="replace")
        except OSError:
            return ""


def _healthy(url: str) -> bool:
    try:
        with urllib.request.urlopen(f"{url}/_stcore/health", timeout=2) as resp:  # noqa: S310 (localhost)
            return resp.status == 200 and resp.read().strip() == b"ok"
    except (urllib.error.URLError, OSError, TimeoutError):
        return False


def start_server(work_dir: Path, log_path: Path | None = None, timeout_s: float = 90.0,
                 extra_env: dict[str, str] | None = None, entry: str = "serve.py") -> AppServer:
    """Start the app on a free port and wait until ``/_stcore/health`` answers "ok".

    Args:
        work_dir: writable folder for ``$BRATS_VIEWER_WORK_DIR`` (corrections, audit log).
        log_path: where the server's stdout and stderr go (default ``work_dir / "server.log"``).
        timeout_s: how long to wait for the health check.
        extra_env: more environment variables for the server.
        entry: the script ``streamlit run`` starts: ``Home.py`` (Streamlit's own server) or ``serve.py`` (the ASGI
            app with ``core.app.base_url.BaseUrlMiddleware``, what ``scripts/run_app.sh`` starts).

    Raises:
        RuntimeError: the server exited or did not become healthy in time (the log's tail is in the message).
    """
    work_dir.mkdir(parents=True, exist_ok=True)
    log_path = log_path or work_dir / "server.log"
    port = free_port()
    env = dict(os.environ)
    env.pop("BRATS_DATA_DIR", None)  # the bundled demo is the data folder
    env.pop("BRATS_MODEL", None)  # the shipped default model is the active model
    env.update({"BRATS_VIEWER_WORK_DIR": str(work_dir), "TF_CPP_MIN_LOG_LEVEL": "2", "PYTHONUNBUFFERED": "1"})
    env.update(extra_env or {})
    cmd = [sys.executable, "-m", "streamlit", "run", entry, "--server.port", str(port),
           "--server.address", "127.0.0.1", "--server.headless", "true", "--browser.gatherUsageStats", "false"]
    with open(log_path, "wb") as log:  # the child keeps its own handle
        proc = subprocess.Popen(cmd, cwd=PROJECT_ROOT, env=env, stdout=log, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL)
    server = AppServer(proc, port, work_dir, log_path)
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"streamlit exited with {proc.returncode}: {server.log_text()[-2000:]}")
        if _healthy(server.url):
            return server
        time.sleep(0.25)
    stop_server(server)
    raise RuntimeError(f"streamlit not healthy after {timeout_s:.0f} s: {server.log_text()[-2000:]}")


def stop_server(server: AppServer, grace_s: float = 10.0) -> None:
    """Terminate the server, then kill it if it has not exited within ``grace_s``."""
    proc = server.process
    if proc.poll() is not None:
        return
    proc.terminate()
    try:
        proc.wait(timeout=grace_s)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout=grace_s)


@contextmanager
def running_server(work_dir: Path, **kwargs: Any) -> Iterator[AppServer]:
    """``start_server`` ... ``stop_server`` as a context manager."""
    server = start_server(work_dir, **kwargs)
    try:
        yield server
    finally:
        stop_server(server)


def launch_chromium(playwright: Any) -> Any:
    """Debian's chromium, headless, through a Playwright instance (sync or async API)."""
    return playwright.chromium.launch(executable_path=str(CHROMIUM), args=list(CHROMIUM_ARGS), headless=True)


@contextmanager
def app_page(work_dir: Path, path: str = "", timeout_s: float = 90.0, accept_downloads: bool = False,
             **server_kwargs: Any) -> Iterator[tuple[AppServer, Any]]:
    """A server (``start_server(work_dir, **server_kwargs)``) and one chromium page (1400 x 1000, sync API)
    opened at ``path`` (e.g. ``"/Slice_viewer?case=..."``) and idle; browser and server are closed after."""
    from playwright.sync_api import sync_playwright

    with running_server(work_dir, **server_kwargs) as server, sync_playwright() as pw:
        browser = launch_chromium(pw)
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 1000}, accept_downloads=accept_downloads)
            page.set_default_timeout(timeout_s * 1000)
            page.goto(f"{server.url}{path}")
            wait_idle(page, timeout_s)
            yield server, page
        finally:
            browser.close()


def clean_artifacts(folder: Path = ARTIFACTS_DIR) -> Path:
    """An empty ``folder`` (created; old screenshots removed)."""
    if folder.exists():
        shutil.rmtree(folder)
    folder.mkdir(parents=True)
    return folder


# ---- waits (sync API) --------------------------------------------------------------------------------------

IDLE_JS = """([statusSel, busySel]) => {
    if (!document.querySelector('[data-testid="stApp"]')) return false;
    // a page just loaded is idle until its first run starts: wait for something the script drew
    if (!document.querySelector('[data-testid="stMain"] [data-testid="stElementContainer"]')) return false;
    const status = document.querySelector(statusSel);
    if (status && (/Running|Connecting/i.test(status.innerText)
                   || status.querySelector('[data-testid="stStatusWidgetRunningIcon"], [aria-label^="Running"]')))
        return false;
    if (document.querySelector('[data-stale="true"]')) return false;
    return document.querySelectorAll(busySel).length === 0;
}"""


def streamlit_idle(page: Any) -> bool:
    """True when the app is connected and not running: the script has drawn something in the main area (a page
    just loaded is idle before its first run starts), no running icon or "Running"/"Connecting" status, no
    stale element (left from the previous run, not yet re-sent), no spinner, no progress bar."""
    return bool(page.evaluate(IDLE_JS, [STATUS_WIDGET, BUSY]))


def wait_idle(page: Any, timeout_s: float = 60.0, settle_s: float = 0.5, poll_s: float = 0.1) -> None:
    """Wait until the app has been idle (``streamlit_idle``) for ``settle_s`` in a row.

    A rerun can take a moment to start after a click, so one idle sample is not enough; ``settle_s`` of
    consecutive idle samples is. Raises TimeoutError with the page's status text after ``timeout_s``.
    """
    deadline = time.monotonic() + timeout_s
    idle_since: float | None = None
    while time.monotonic() < deadline:
        if streamlit_idle(page):
            idle_since = idle_since or time.monotonic()
            if time.monotonic() - idle_since >= settle_s:
                return
        else:
            idle_since = None
        page.wait_for_timeout(int(poll_s * 1000))
    status = page.locator(STATUS_WIDGET)
    text = status.first.inner_text() if status.count() else "(no status widget)"
    raise TimeoutError(f"Streamlit still busy after {timeout_s:.0f} s: {text!r}")


def wait_text(page: Any, text: str, timeout_s: float = 60.0) -> None:
    """Wait until ``text`` is visible somewhere on the page."""
    page.get_by_text(text).first.wait_for(state="visible", timeout=timeout_s * 1000)


def goto_sidebar_page(page: Any, label: str, timeout_s: float = 60.0) -> None:
    """Click the sidebar navigation link whose text is ``label`` and wait for the page (titled ``label``) to
    finish running."""
    page.locator('[data-testid="stSidebarNav"] a').filter(has_text=label).first.click()
    page.wait_for_url(f"**/{label.replace(' ', '_')}*", timeout=timeout_s * 1000)
    page.get_by_role("heading", name=label).first.wait_for(timeout=timeout_s * 1000)  # pages are titled so
    wait_idle(page, timeout_s)


def stable_box(locator: Any, timeout_s: float = 10.0, poll_s: float = 0.05) -> dict[str, float]:
    """The bounding box of ``locator`` once two samples in a row agree (a toolbar fading or sliding in has
    stopped moving)."""
    deadline = time.monotonic() + timeout_s
    last = None
    while time.monotonic() < deadline:
        box = locator.bounding_box()
        if box is not None and box == last:
            return box
        last = box
        time.sleep(poll_s)
    raise TimeoutError(f"the element's box kept changing for {timeout_s:.0f} s: {last}")


def press_and_drag(page: Any, canvas: Any, fx: float, fy: float, step_px: tuple[float, float], steps: int = 10) -> None:
    """Press the mouse at (``fx``, ``fy``) of ``canvas``'s box (fractions of its width and height; scrolled into
    view first) and drag it ``steps`` times by ``step_px`` (x, y); the button is left down (the caller releases)."""
    canvas.scroll_into_view_if_needed()
    box = canvas.bounding_box()
    x0, y0 = box["x"] + box["width"] * fx, box["y"] + box["height"] * fy
    page.mouse.move(x0, y0)
    page.mouse.down()
    for i in range(1, steps + 1):
        page.mouse.move(x0 + i * step_px[0], y0 + i * step_px[1])


def exception_texts(page: Any) -> list[str]:
    """Texts of the Streamlit exception boxes on the page (empty when none)."""
    boxes = page.locator(EXCEPTION)
    return [boxes.nth(i).inner_text() for i in range(boxes.count())]


def process_tree_rss_bytes(pid: int) -> int:
    """Resident memory of a process and all its children, in bytes (0 when it is gone)."""
    import psutil

    try:
        root = psutil.Process(pid)
        procs = [root, *root.children(recursive=True)]
    except psutil.NoSuchProcess:
        return 0
    total = 0
    for p in procs:
        try:
            total += p.memory_info().rss
        except psutil.NoSuchProcess:
            continue
    return total


def full_page_screenshot(page: Any, path: str | Path, max_height_px: int = 8000) -> None:
    """Screenshot of the whole app page.

    Streamlit scrolls inside its main section, not the document, so Playwright's ``full_page`` sees one
    viewport only: the viewport is made as tall as the content for the shot (capped at ``max_height_px``),
    then restored.
    """
    size = page.viewport_size or {"width": 1400, "height": 1000}
    height = int(page.evaluate(
        """() => {
            const els = [document.querySelector('[data-testid="stMain"]'),
                         document.querySelector('[data-testid="stMainBlockContainer"]'),
                         document.querySelector('[data-testid="stSidebarContent"]')];
            return Math.max(...els.filter(Boolean).map(e => e.scrollHeight), 0);
        }"""))
    tall = min(max(height + 40, size["height"]), max_height_px)
    if tall > size["height"]:
        page.set_viewport_size({"width": size["width"], "height": tall})
        page.wait_for_timeout(300)  # let charts re-lay out to the new size
    try:
        page.screenshot(path=str(path), full_page=True)
    finally:
        if tall > size["height"]:
            page.set_viewport_size(size)


# ---- steps of the main flow (sync API), shared by the browser tests ----------------------------------------

DEMO_CASE_ID = "TCIA-example"


def viewer_frame(page: Any, timeout_s: float = 60.0) -> Any:
    """The frame of the in-browser slice viewer once it has drawn its first image (``window.__viewer.ready``)."""
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


def open_demo_case(page: Any, timeout_s: float = 60.0, before_open: Any = None) -> None:
    """From any page: Case browser, open the bundled demo case (the data folder's default), wait until the page
    names it as the selected case. ``before_open(page)`` runs on the Case browser before the click."""
    goto_sidebar_page(page, "Case browser", timeout_s)
    page.get_by_role("button", name="Open case").wait_for(timeout=timeout_s * 1000)
    if before_open is not None:
        before_open(page)
    page.get_by_role("button", name="Open case").click()
    wait_text(page, f"Selected case: {DEMO_CASE_ID}", timeout_s)
    wait_idle(page, timeout_s)


def segment_whole_volume(page: Any, timeout_s: float = 150.0, done: Any = "Whole-volume prediction of model"
                         ) -> None:
    """Press "Segment whole volume" on the page shown, wait for ``done`` (a text, or a locator to appear), then
    for an idle page."""
    page.get_by_role("button", name="Segment whole volume").click()
    if isinstance(done, str):
        wait_text(page, done, timeout_s)
    else:
        done.wait_for(timeout=timeout_s * 1000)
    wait_idle(page, timeout_s)


def download(page: Any, button: Any, path: str | Path, timeout_s: float = 60.0) -> Path:
    """Click a ``stDownloadButton`` element (its inner button), wait for the download and save it at ``path``.

    Raises:
        AssertionError: the browser reports the download failed.
    """
    with page.expect_download(timeout=timeout_s * 1000) as info:
        button.locator("button").click()
    download = info.value
    assert download.failure() is None, download.failure()
    download.save_as(str(path))
    return Path(path)


# ---- waits (async API, for concurrent sessions) -----------------------------------------------------------

async def async_wait_idle(page: Any, timeout_s: float = 60.0, settle_s: float = 0.5, poll_s: float = 0.1) -> None:
    """``wait_idle`` for a Playwright async page."""
    deadline = time.monotonic() + timeout_s
    idle_since: float | None = None
    while time.monotonic() < deadline:
        if await page.evaluate(IDLE_JS, [STATUS_WIDGET, BUSY]):
            idle_since = idle_since or time.monotonic()
            if time.monotonic() - idle_since >= settle_s:
                return
        else:
            idle_since = None
        await page.wait_for_timeout(int(poll_s * 1000))
    raise TimeoutError(f"Streamlit still busy after {timeout_s:.0f} s")


async def async_goto_sidebar_page(page: Any, label: str, timeout_s: float = 60.0) -> None:
    """``goto_sidebar_page`` for a Playwright async page."""
    await page.locator('[data-testid="stSidebarNav"] a').filter(has_text=label).first.click()
    await page.wait_for_url(f"**/{label.replace(' ', '_')}*", timeout=timeout_s * 1000)
    await page.get_by_role("heading", name=label).first.wait_for(timeout=timeout_s * 1000)
    await async_wait_idle(page, timeout_s)


# ---- offline: nothing may leave for another host -------------------------------------------------------------

LOCAL_SCHEMES: tuple[str, ...] = ("data:", "blob:", "about:")


def foreign_requests(urls: list[str], origin: str) -> list[str]:
    """The requested URLs that are not to ``origin`` (scheme://host:port; http and ws alike) nor local
    (``data:``, ``blob:``, ``about:``): each would fail on a network with no internet."""
    from urllib.parse import urlsplit

    own = urlsplit(origin)
    out = []
    for url in urls:
        if url.startswith(LOCAL_SCHEMES):
            continue
        parts = urlsplit(url)
        if (parts.hostname, parts.port) != (own.hostname, own.port):
            out.append(url)
    return out


def record_requests(page: Any, origin: str, block_foreign: bool = True) -> list[str]:
    """Record every URL ``page`` requests (a live list); with ``block_foreign``, requests to other hosts are
    aborted as on an offline network (they are still recorded)."""
    seen: list[str] = []
    page.on("request", lambda request: seen.append(request.url))
    page.on("websocket", lambda ws: seen.append(ws.url))
    if block_foreign:
        page.route("**/*", lambda route: route.abort() if foreign_requests([route.request.url], origin)
                   else route.continue_())
    return seen
