"""In-browser slice viewing measured in headless Chromium (Playwright): the app's own viewer (a Streamlit
component drawing 2-D canvases, ``core/app/slice_client``) against NiiVue (``niivue-streamlit``, WebGL) and
against the server-drawn plotly views it replaces.

Usage:  .venv/bin/python benchmarks/bench_viewer_client.py [--steps N] [--no-niivue]
Case: the bundled demo (240 x 240 x 155, four modalities and the ground truth). NiiVue runs in its own one-page
app (``benchmarks/niivue_bench_app.py``, the same cropped 8-bit FLAIR and the labels) and is skipped when
``niivue-streamlit`` is not installed (``pip install niivue-streamlit==0.3.0``).

Prints, per viewer:
- first image: seconds from navigation to a drawn image (canvas more than 5 % non-black), cold (first open of
  the case in the server process) and warm (page reloaded); for the app's viewer also the reader's path: the
  case opened on the case browser, then a click on "Slice viewer" in the sidebar, to the drawn image (first
  time: the browser data of the case are built; then three more times);
- wheel / keys: slices per second over N wheel notches up / N ArrowDown presses on the axial view, from the first
  event until the browser has painted after the last (two animation frames), and the slices actually moved
  (read from the viewer's cursor where the viewer exposes it);
  and the frames the viewer drew per second (steps faster than the screen refresh share a frame);
- window/level: redraws per second while shift-dragging (own viewer);
- draw: milliseconds to draw one cursor position (three planes) inside the page, without input (own viewer);
- server CPU: CPU seconds of the server process tree per scroll step (user + system);
- JS heap: the page's used JavaScript heap after loading (MB);
- foreign requests: requests to any host other than the local server (must be none: the app works offline).
For the plotly views: seconds from one arrow-key step of the axial slider to the settled page.
"""

from __future__ import annotations

import argparse
import io
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

import e2e_util as e2e  # noqa: E402

ROOT = e2e.PROJECT_ROOT
VIEWER_URL = "/Slice_viewer?case=TCIA-example&src=demo"
FRAME2 = "() => new Promise(r => requestAnimationFrame(() => requestAnimationFrame(() => r(true))))"


def cpu_s(pid: int) -> float:
    import psutil

    root = psutil.Process(pid)
    total = 0.0
    for p in [root, *root.children(recursive=True)]:
        try:
            t = p.cpu_times()
            total += t.user + t.system
        except psutil.NoSuchProcess:
            continue
    return total


def non_black_fraction(png: bytes) -> float:
    import numpy as np
    from PIL import Image

    arr = np.asarray(Image.open(io.BytesIO(png)).convert("L"))
    return float((arr > 30).mean()) if arr.size else 0.0


def find_frame(page: Any, probe: str, timeout_s: float = 90.0) -> Any:
    """The first frame in which the JS expression ``probe`` is truthy."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        for f in page.frames:
            try:
                if f.evaluate(probe):
                    return f
            except Exception:  # noqa: BLE001 (frames come and go while the page loads)
                continue
        time.sleep(0.03)
    raise TimeoutError(f"no frame with {probe} after {timeout_s:.0f} s")


def time_to_image(page: Any, url: str, probe: str, timeout_s: float = 90.0) -> tuple[float, Any]:
    """Seconds from navigation until the frame matching ``probe`` shows a canvas more than 5 % non-black."""
    t0 = time.monotonic()
    page.goto(url)
    frame = find_frame(page, probe, timeout_s)
    canvas = frame.locator("canvas").first
    while time.monotonic() - t0 < timeout_s:
        try:
            if canvas.is_visible() and non_black_fraction(canvas.screenshot(timeout=5000)) > 0.05:
                return time.monotonic() - t0, frame
        except Exception:  # noqa: BLE001
            pass
        time.sleep(0.02)
    raise TimeoutError(f"no image after {timeout_s:.0f} s")


def scroll(page: Any, frame: Any, target: Any, steps: int, how: str, pid: int,
           position: str | None = None) -> dict[str, float]:
    """Page ``steps`` slices with the wheel or the ArrowUp key over ``target`` (an element of ``frame``)."""
    box = target.bounding_box()
    page.mouse.move(box["x"] + box["width"] * 0.5, box["y"] + box["height"] * 0.5)
    if how == "keys":
        page.mouse.click(box["x"] + box["width"] * 0.5, box["y"] + box["height"] * 0.5)
        page.wait_for_timeout(1500)  # a click may start a rerun of the page (our viewer): let it settle
    before = frame.evaluate(position) if position else None
    frames0 = frame.evaluate("() => window.__viewer ? window.__viewer.frames : NaN")
    cpu0 = cpu_s(pid)
    t0 = time.monotonic()
    for _ in range(steps):
        if how == "wheel":
            page.mouse.wheel(0, -100)
        else:
            page.keyboard.press("ArrowDown")
    frame.evaluate(FRAME2)
    elapsed = time.monotonic() - t0
    frames = frame.evaluate("() => window.__viewer ? window.__viewer.frames : NaN") - frames0
    page.wait_for_timeout(1000)  # whatever the server does in reply to the scroll
    cpu = cpu_s(pid) - cpu0
    moved = (frame.evaluate(position) - before) if position else float("nan")
    return {"slices_per_s": steps / elapsed, "moved": moved, "frames_per_s": frames / elapsed, "server_cpu_ms_per_step": 1000 * cpu / steps}


def drag_window(page: Any, frame: Any, target: Any, moves: int) -> float:
    """Redraws per second while shift-dragging window/level over ``target`` (``moves`` mouse moves)."""
    box = target.bounding_box()
    x, y = box["x"] + box["width"] * 0.5, box["y"] + box["height"] * 0.5
    page.mouse.move(x, y)
    page.keyboard.down("Shift")
    page.mouse.down()
    frames0 = frame.evaluate("() => window.__viewer.frames")
    t0 = time.monotonic()
    for i in range(moves):
        page.mouse.move(x + 2 * (i + 1), y - (i + 1))
    frame.evaluate(FRAME2)
    elapsed = time.monotonic() - t0
    frames = frame.evaluate("() => window.__viewer.frames") - frames0
    page.mouse.up()
    page.keyboard.up("Shift")
    return frames / elapsed


def js_heap_mb(page: Any) -> float:
    cdp = page.context.new_cdp_session(page)
    metrics = {m["name"]: m["value"] for m in cdp.send("Performance.getMetrics")["metrics"]} \
        if cdp.send("Performance.enable") is not None else {}
    return metrics.get("JSHeapUsedSize", float("nan")) / 1e6


def start_app(script: str, work: Path) -> Any:
    """``streamlit run script`` like ``e2e.start_server`` (which runs serve.py by default)."""
    port = e2e.free_port()
    env = dict(os.environ, BRATS_VIEWER_WORK_DIR=str(work), PYTHONUNBUFFERED="1")
    env.pop("BRATS_DATA_DIR", None)
    work.mkdir(parents=True, exist_ok=True)
    log = open(work / "server.log", "wb")  # noqa: SIM115 (closed with the process)
    proc = subprocess.Popen([sys.executable, "-m", "streamlit", "run", script, "--server.port", str(port),
                             "--server.address", "127.0.0.1", "--server.headless", "true",
                             "--browser.gatherUsageStats", "false"], cwd=ROOT, env=env, stdout=log,
                            stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    server = e2e.AppServer(proc, port, work, work / "server.log")
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline and not e2e._healthy(server.url):
        time.sleep(0.25)
    return server


def foreign(urls: list[str]) -> list[str]:
    return sorted({u for u in urls if urlparse(u).hostname not in (None, "127.0.0.1", "localhost")
                   and not u.startswith(("data:", "blob:", "about:"))})


def bench_own(pw: Any, steps: int, work: Path) -> None:
    server = e2e.start_server(work / "own")
    try:
        browser = e2e.launch_chromium(pw)
        page = browser.new_page(viewport={"width": 1400, "height": 1000})
        urls: list[str] = []
        page.on("request", lambda r: urls.append(r.url))
        probe = "() => document.body && document.body.dataset.ready === '1'"
        # the reader's first open: the case chosen on the case browser (loaded there), then the viewer
        page.goto(server.url + "/Case_browser")
        e2e.wait_idle(page, 120)
        page.get_by_role("button", name="Open case").click()
        e2e.wait_text(page, "Selected case: TCIA-example", 120)
        e2e.wait_idle(page, 120)
        t0 = time.monotonic()
        page.locator('[data-testid="stSidebarNav"] a').filter(has_text="Slice viewer").first.click()
        frame = find_frame(page, probe)
        first_open = time.monotonic() - t0
        e2e.wait_idle(page, 90)
        e2e.stop_server(server)
        server = e2e.start_server(work / "own2")
        cold, frame = time_to_image(page, server.url + VIEWER_URL, probe)
        e2e.wait_idle(page, 90)
        warm, frame = time_to_image(page, server.url + VIEWER_URL, probe)
        e2e.wait_idle(page, 90)
        heap = js_heap_mb(page)
        opens = []
        for _ in range(3):  # the reader's path: case chosen, another page, then the viewer
            e2e.goto_sidebar_page(page, "Case browser", 90)
            t0 = time.monotonic()
            page.locator('[data-testid="stSidebarNav"] a').filter(has_text="Slice viewer").first.click()
            frame = find_frame(page, probe)
            opens.append(time.monotonic() - t0)
            e2e.wait_idle(page, 90)
        axial = frame.locator('.view[data-plane="axial"] canvas')
        z = "() => window.__viewer.cursor[2]"
        wheel = scroll(page, frame, axial, steps, "wheel", server.process.pid, z)
        keys = scroll(page, frame, axial, steps, "keys", server.process.pid, z)
        keys["moved"] = -keys["moved"]
        wl_per_s = drag_window(page, frame, axial, steps)
        draw_ms = frame.evaluate("""(n) => { const S = window.__viewer, t0 = performance.now();
            for (let i = 0; i < n; i++) { S.cursor[2] = S.data.offset[2] + (i % S.data.size[2]);
              for (const p of ["axial", "coronal", "sagittal"]) drawPlane(p, lut()); }
            return (performance.now() - t0) / n; }""", 100)
        print(f"own viewer   first image: first open from the case browser {first_open:.2f} s; again from the "
              f"sidebar {', '.join(f'{t:.2f}' for t in opens)} s; URL typed, fresh server {cold:.2f} s, "
              f"reload {warm:.2f} s; JS heap {heap:.0f} MB")
        for name, r in (("wheel", wheel), ("keys", keys)):
            print(f"own viewer   {name}: {r['slices_per_s']:.1f} slices/s ({r['moved']:.0f} of {steps} slices "
                  f"moved, {r['frames_per_s']:.0f} frames drawn/s), server CPU {r['server_cpu_ms_per_step']:.1f} ms per step")
        print(f"own viewer   window/level by shift-drag: {wl_per_s:.0f} redraws/s over {steps} mouse moves")
        print(f"own viewer   draw of one cursor position (3 planes, in page): {draw_ms:.1f} ms "
              f"(= {1000 / draw_ms:.0f} positions/s)")

        # the plotly views it replaces: one slider step to the settled page
        page.locator('[data-testid="stSidebar"] label').filter(has_text="On the server (plotly)").first.click()
        e2e.wait_idle(page, 90)
        slider = page.locator('[data-testid="stSlider"]').filter(has_text="Axial slice (z)").first
        slider.locator('input[type="range"]').focus()
        times = []
        for _ in range(3):
            t0 = time.monotonic()
            page.keyboard.press("ArrowRight")
            e2e.wait_idle(page, 90, settle_s=0.3)
            times.append(time.monotonic() - t0 - 0.3)
        print(f"plotly views one slider step to settled page: {', '.join(f'{t:.2f}' for t in times)} s "
              f"(= {len(times) / sum(times):.2f} slices/s)")
        print(f"own viewer   foreign requests: {foreign(urls) or 'none'}")
        browser.close()
    finally:
        e2e.stop_server(server)


def bench_niivue(pw: Any, steps: int, work: Path) -> None:
    try:
        import niivue_component  # noqa: F401
    except ImportError:
        print("niivue       skipped: niivue-streamlit is not installed (pip install niivue-streamlit==0.3.0)")
        return
    server = start_app("benchmarks/niivue_bench_app.py", work / "niivue")
    try:
        browser = e2e.launch_chromium(pw)
        page = browser.new_page(viewport={"width": 1400, "height": 1000})
        urls: list[str] = []
        page.on("request", lambda r: urls.append(r.url))
        probe = "() => !!document.querySelector('canvas') && !document.querySelector('[data-testid=stApp]')"
        cold, frame = time_to_image(page, server.url, probe)
        e2e.wait_idle(page, 90)
        warm, frame = time_to_image(page, server.url, probe)
        e2e.wait_idle(page, 90)
        heap = js_heap_mb(page)
        canvas = frame.locator("canvas").first
        before = canvas.screenshot()
        wheel = scroll(page, frame, canvas, steps, "wheel", server.process.pid)
        changed_wheel = canvas.screenshot() != before
        before = canvas.screenshot()
        keys = scroll(page, frame, canvas, steps, "keys", server.process.pid)
        changed_keys = canvas.screenshot() != before
        print(f"niivue       first image cold {cold:.2f} s, warm {warm:.2f} s; JS heap {heap:.0f} MB "
              f"(WebGL through SwiftShader: no GPU here)")
        for name, r, changed in (("wheel", wheel, changed_wheel), ("keys", keys, changed_keys)):
            print(f"niivue       {name}: {r['slices_per_s']:.1f} events/s (view changed: {changed}), "
                  f"server CPU {r['server_cpu_ms_per_step']:.1f} ms per step")
        print(f"niivue       foreign requests: {foreign(urls) or 'none'}")
        browser.close()
    finally:
        e2e.stop_server(server)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=40)
    ap.add_argument("--no-niivue", action="store_true")
    args = ap.parse_args()
    reason = e2e.browser_skip_reason()
    if reason:
        sys.exit(f"cannot run: {reason}")
    import tempfile

    from playwright.sync_api import sync_playwright

    with tempfile.TemporaryDirectory() as tmp, sync_playwright() as pw:
        bench_own(pw, args.steps, Path(tmp))
        if not args.no_niivue:
            bench_niivue(pw, args.steps, Path(tmp))


if __name__ == "__main__":
    main()
