"""Load test: N concurrent sessions (AppTest threads or headless browsers) drive the main flow of the app.

Usage:  .venv/bin/python benchmarks/load_test.py [--client apptest|browser] [--sessions 10] [--moves 3]
            [--time-limit 540] [--idle-after 60]

Two clients drive the same flow (open the demo case, the Slice viewer, segment the whole volume with the active
model, move the Segmentation page's axial slider, the Volume report, build the PDF):

- ``--client apptest`` (default): each session is a ``streamlit.testing.v1.AppTest`` in a thread of this process,
  which runs the page code itself, so this process *is* the server (shared ``st.cache_resource``, one model, the
  fair inference queue) and the client costs next to nothing (no browser, no websocket). Latencies are the page
  runs' wall times; RSS is this process's: fresh, after a one-session warm-up (model loaded, case open), peak
  during the sessions, after they are gone and ``--idle-after`` seconds later. Not covered: the websocket, the
  browser's own work, per-session media files of a real server.
- ``--client browser``: headless chromium sessions against ``streamlit run serve.py`` (realism; the browsers take
  most of the CPU of a small machine):

1. starts ``streamlit run serve.py`` (work folder in a temporary directory; the bundled demo case and the shipped
   model), and samples the resident memory (RSS) of the server process and its children every 0.5 s;
2. one warm-up session, alone: Home -> open the demo case -> segment the whole volume; the RSS growth of each
   step is printed (opening a case; the first segmentation, which includes loading the model in ONNX Runtime
   once per process);
3. N sessions at once (one headless chromium, one browser context per session, Playwright's async API), each:
   Home -> open the demo case -> slice viewer -> segmentation (whole volume; a cache hit after the warm-up) ->
   ``--moves`` moves of the Segmentation page's axial slider (keyboard) -> volume report -> PDF download.
   Each session makes a fixed number of interactions and everything stops at ``--time-limit`` seconds;
4. prints per-step latency p50 / p90 / max over the sessions, the error count, and the RSS before, at peak,
   right after the sessions close and ``--idle-after`` seconds later.

Latencies are wall times seen by the browser (click to the page settled), on whatever machine runs this.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
import threading
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # core/ (the AppTest client runs the app here)

import e2e_util as e2e  # noqa: E402

CASE_ID = "TCIA-example"
ERROR_SHOTS = e2e.PROJECT_ROOT / "test-artifacts" / "load"  # screenshots of failed sessions (gitignored)
STEPS = ("home", "open_case", "viewer", "segment", "slice_move", "report_page", "pdf")


class RssSampler(threading.Thread):
    """Samples the RSS (bytes) of a process tree every ``period_s`` in the background."""

    def __init__(self, pid: int, period_s: float = 0.5) -> None:
        super().__init__(daemon=True)
        self.pid, self.period_s = pid, period_s
        self.samples: list[tuple[float, int]] = []
        self._halt = threading.Event()
        self._lock = threading.Lock()

    def run(self) -> None:
        while not self._halt.is_set():
            rss = e2e.process_tree_rss_bytes(self.pid)
            with self._lock:
                self.samples.append((time.monotonic(), rss))
            self._halt.wait(self.period_s)

    def stop(self) -> None:
        self._halt.set()
        self.join(timeout=5)

    def peak_since(self, t0: float) -> int:
        with self._lock:
            return max((r for t, r in self.samples if t >= t0), default=0)


def mib(n_bytes: float) -> str:
    return f"{n_bytes / 2**20:,.0f} MiB"


@dataclass
class SessionResult:
    index: int
    times_s: dict[str, list[float]] = field(default_factory=dict)
    errors: list[str] = field(default_factory=list)
    done: bool = False
    step: str = ""  # the step running (or last run)

    def add(self, step: str, seconds: float) -> None:
        self.times_s.setdefault(step, []).append(seconds)


async def _axial_value(page: Any) -> int:
    widget = page.locator('[data-testid="stSlider"]').filter(has_text="Axial slice (z)").first
    return int(await widget.locator('[data-testid="stSliderThumbValue"]').inner_text())


async def run_session(browser: Any, url: str, index: int, moves: int, deadline: float, step_timeout_s: float,
                      result: SessionResult, segment_only: bool = False,
                      on_step: Any = None) -> SessionResult:
    """One user's flow in its own browser context; each step's wall time goes into ``result``."""
    context = await browser.new_context(viewport={"width": 1400, "height": 1000}, accept_downloads=True)
    page = await context.new_page()
    page.set_default_timeout(step_timeout_s * 1000)

    def left() -> float:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise TimeoutError("total time limit reached")
        return min(step_timeout_s, remaining)

    async def timed(step: str, coro: Any) -> None:
        result.step = step
        started = time.monotonic()
        await asyncio.wait_for(coro, timeout=left())
        result.add(step, time.monotonic() - started)
        if on_step is not None:
            on_step(step)

    async def home() -> None:
        await page.goto(url)
        await page.get_by_role("heading", name="Brain tumour MRI viewer").first.wait_for()
        await e2e.async_wait_idle(page, left())

    async def open_case() -> None:
        await e2e.async_goto_sidebar_page(page, "Case browser", left())
        await page.get_by_role("button", name="Open case").click()
        await page.get_by_text(f"Selected case: {CASE_ID}").first.wait_for()
        await e2e.async_wait_idle(page, left())

    async def viewer() -> None:
        await e2e.async_goto_sidebar_page(page, "Slice viewer", left())
        await page.get_by_text("At the last click").first.wait_for()  # the browser viewer's readout

    async def move() -> None:  # the Segmentation page's axial slider (the Slice viewer pages in the browser)
        widget = page.locator('[data-testid="stSlider"]').filter(has_text="Axial slice (z)").first
        before = await _axial_value(page)
        await widget.locator('input[type="range"]').focus()
        await page.keyboard.press("ArrowRight")
        await page.get_by_text(f"Axial slice z={before + 1},").first.wait_for()  # the canvas slice was redrawn
        await e2e.async_wait_idle(page, left())

    async def segment() -> None:
        await e2e.async_goto_sidebar_page(page, "Segmentation", left())
        await page.get_by_role("button", name="Segment whole volume").click()
        await page.get_by_text("Whole-volume prediction of model").first.wait_for()
        await e2e.async_wait_idle(page, left())

    async def report_page() -> None:
        await e2e.async_goto_sidebar_page(page, "Volume report", left())
        await page.locator('[data-testid="stDownloadButton"]').filter(has_text="PDF summary").first.wait_for()

    async def pdf() -> None:
        button = page.locator('[data-testid="stDownloadButton"]').filter(has_text="PDF summary").first
        async with page.expect_download() as info:
            await button.locator("button").click()
        download = await info.value
        path = await download.path()
        if path is None or Path(path).read_bytes()[:5] != b"%PDF-":
            raise RuntimeError("the download is not a PDF")

    try:
        await timed("home", home())
        await timed("open_case", open_case())
        if not segment_only:
            await timed("viewer", viewer())
        await timed("segment", segment())
        if not segment_only:
            for _ in range(moves):
                await timed("slice_move", move())
        if not segment_only:
            await timed("report_page", report_page())
            await timed("pdf", pdf())
        result.done = True
    except Exception as err:  # noqa: BLE001 - a load test counts every failure
        first_line = (str(err).splitlines() or [""])[0][:200]
        result.errors.append(f"session {index} at {result.step}: {type(err).__name__} {first_line}".rstrip())
        try:  # what the page showed, for diagnosis
            ERROR_SHOTS.mkdir(parents=True, exist_ok=True)
            await asyncio.wait_for(page.screenshot(path=str(ERROR_SHOTS / f"session{index}_{result.step}.png"),
                                                   full_page=True), timeout=30)
        except Exception:  # noqa: BLE001, S110 - best effort
            pass
    finally:
        await context.close()
    return result


def percentile(values: list[float], q: float) -> float:
    """Linear-interpolation percentile (``q`` in [0, 100]) of a non-empty list."""
    ordered = sorted(values)
    pos = (len(ordered) - 1) * q / 100.0
    lo = int(pos)
    hi = min(lo + 1, len(ordered) - 1)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (pos - lo)


def print_results(results: list[SessionResult], wall_s: float) -> list[str]:
    """Print per-step latency p50 / p90 / p99 / max over the sessions and the errors; returns the errors."""
    print(f"\nDone in {wall_s:.1f} s: {sum(r.done for r in results)} of {len(results)} sessions finished the flow.")
    print(f"{'step':<12}{'n':>4}{'p50 s':>9}{'p90 s':>9}{'p99 s':>9}{'max s':>9}")
    rows = [(step, [v for r in results for v in r.times_s.get(step, [])]) for step in STEPS]
    rows.append(("whole flow", [sum(sum(v) for v in r.times_s.values()) for r in results if r.done]))
    for step, values in rows:
        if values:
            print(f"{step:<12}{len(values):>4}{percentile(values, 50):>9.2f}{percentile(values, 90):>9.2f}"
                  f"{percentile(values, 99):>9.2f}{max(values):>9.2f}")
    errors = [e for r in results for e in r.errors]
    print(f"errors: {len(errors)}")
    for e in errors[:20]:
        print(f"  {e}")
    return errors


# ---- AppTest client: sessions as threads of this process, which is the server ---------------------------------

PAGES = {"browser": "pages/1_Case_browser.py", "viewer": "pages/2_Slice_viewer.py",
         "segmentation": "pages/3_Segmentation.py", "report": "pages/4_Volume_report.py"}


def apptest_session(index: int, moves: int, deadline: float, step_timeout_s: float, result: SessionResult,
                    segment_only: bool = False, on_step: Any = None) -> SessionResult:
    """One user's flow as an AppTest session (its own session state; page code, caches, model and inference
    queue shared with every other session of the process): home, open the demo case on the Case browser, the
    Slice viewer (the case is packed for the browser), segment the whole volume with the active model, ``moves``
    axial slider moves on the Segmentation page (each checked: slider, cursor and canvas caption agree), the
    Volume report, the PDF (the download's deferred callable run as the server runs it on a click)."""
    from apptest_threads import current_runtime
    from streamlit.testing.v1 import AppTest

    from core.app import ui

    at = AppTest.from_file(str(e2e.PROJECT_ROOT / "Home.py"), default_timeout=step_timeout_s)

    def run(target: Any) -> None:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise TimeoutError("total time limit reached")
        target.run(timeout=min(step_timeout_s, remaining))
        if at.exception:
            raise RuntimeError(f"exception on the page: {at.exception[0].message}")
        if at.error:
            raise RuntimeError(f"error shown: {at.error[0].value}")

    def timed(step: str, action: Any) -> None:
        result.step = step
        started = time.monotonic()
        action()
        result.add(step, time.monotonic() - started)
        if on_step is not None:
            on_step(step)

    def button(label: str) -> Any:
        matches = [b for b in at.button if b.label == label]
        if not matches:
            raise RuntimeError(f"no button {label!r} on the page")
        return matches[0]

    def captions() -> str:
        return "\n".join(str(c.value) for c in at.caption)

    def home() -> None:
        run(at)

    def open_case() -> None:
        at.switch_page(PAGES["browser"])
        run(at)
        run(button("Open case").click())
        selected = (at.session_state[ui.KEY_CASE] or {}).get("case_id")
        if selected != CASE_ID:
            raise RuntimeError(f"expected case {CASE_ID} selected, got {selected!r}")

    def viewer() -> None:
        at.switch_page(PAGES["viewer"])
        run(at)

    def segment() -> None:
        at.switch_page(PAGES["segmentation"])
        run(at)
        run(button("Segment whole volume").click())
        if "Whole-volume prediction of model" not in captions():
            raise RuntimeError("no whole-volume prediction shown after segmenting")

    def move() -> None:
        slider = at.slider(key="seg_z")
        target = int(slider.value) + 1
        run(slider.set_value(target))
        got, cursor_z = int(at.slider(key="seg_z").value), int(at.session_state[ui.KEY_CURSOR]["z"])
        if got != target or cursor_z != target or f"Axial slice z={target}," not in captions():
            raise RuntimeError(f"slider moved to {target}: slider {got}, cursor {cursor_z}")

    def report_page() -> None:
        at.switch_page(PAGES["report"])
        run(at)
        if not any(el.proto.label == "PDF summary" for el in at.get("download_button")):
            raise RuntimeError("no PDF download on the report page")

    def pdf() -> None:
        proto = next(el.proto for el in at.get("download_button") if el.proto.label == "PDF summary")
        manager = current_runtime().media_file_mgr  # the runtime of this session's last run
        url = manager.execute_deferred(proto.deferred_file_id)
        data = manager._storage.get_file(url.rsplit("/", 1)[-1]).content  # noqa: SLF001 - the test runtime's store
        if bytes(data[:5]) != b"%PDF-":
            raise RuntimeError("the download is not a PDF")

    try:
        timed("home", home)
        timed("open_case", open_case)
        if not segment_only:
            timed("viewer", viewer)
        timed("segment", segment)
        if not segment_only:
            for _ in range(moves):
                timed("slice_move", move)
            timed("report_page", report_page)
            timed("pdf", pdf)
        result.done = True
    except Exception as err:  # noqa: BLE001 - a load test counts every failure
        first_line = (str(err).splitlines() or [""])[0][:200]
        result.errors.append(f"session {result.index} at {result.step}: {type(err).__name__} {first_line}".rstrip())
    return result


def main_apptest(args: argparse.Namespace) -> int:
    """The AppTest client: this process is the server; RSS is this process's."""
    import gc
    import os
    from concurrent.futures import ThreadPoolExecutor

    from apptest_threads import concurrent_apptests

    pid = os.getpid()
    with tempfile.TemporaryDirectory(prefix="brats_load_") as tmp:
        os.environ.pop("BRATS_DATA_DIR", None)  # the bundled demo is the data folder
        os.environ.pop("BRATS_MODEL", None)  # the shipped default model is the active model
        os.environ["BRATS_VIEWER_WORK_DIR"] = str(Path(tmp) / "work")
        import streamlit  # noqa: F401 - imported before the first RSS, as a server has it

        import core.app.ui  # noqa: F401

        sampler = RssSampler(pid)
        sampler.start()
        try:
            with concurrent_apptests():
                return drive_apptest(args, pid, sampler, gc, ThreadPoolExecutor)
        finally:
            sampler.stop()


def drive_apptest(args: argparse.Namespace, pid: int, sampler: RssSampler, gc: Any, pool_cls: Any) -> int:
    t_start = time.monotonic()
    rss_start = e2e.process_tree_rss_bytes(pid)
    import os

    from core.engine import allocator

    arenas = os.environ.get(allocator.ARENAS_ENV) or f"{allocator.DEFAULT_ARENAS} (core.app.allocator)"
    print(f"AppTest client: sessions are threads of this process (PID {pid}), which is the server; RSS "
          f"{mib(rss_start)} with streamlit and the app's modules imported; malloc arenas {arenas}")

    marks: dict[str, int] = {}
    warm = apptest_session(-1, 1, t_start + args.time_limit, args.step_timeout, SessionResult(-1),
                           on_step=lambda step: marks.__setitem__(step, e2e.process_tree_rss_bytes(pid)))
    if warm.errors:
        print("warm-up failed:", *warm.errors, sep="\n  ")
        return 1
    print("\nOne session alone (warm-up: every page's first use, the model loaded, the case segmented once):")
    prev = rss_start
    for step in STEPS:
        print(f"  {step:<12} {warm.times_s[step][0]:6.1f} s   RSS {mib(marks[step])} "
              f"({(marks[step] - prev) / 2**20:+,.0f} MiB)")
        prev = marks[step]
    del warm
    gc.collect()

    rss_before = e2e.process_tree_rss_bytes(pid)
    t0 = time.monotonic()
    deadline = t_start + args.time_limit
    results = [SessionResult(i) for i in range(args.sessions)]
    print(f"\n{args.sessions} concurrent sessions (RSS before {mib(rss_before)}), time limit "
          f"{deadline - t0:.0f} s left...")
    with pool_cls(max_workers=args.sessions) as pool:
        list(pool.map(lambda r: apptest_session(r.index, args.moves, deadline, args.step_timeout, r), results))
    wall = time.monotonic() - t0
    peak = sampler.peak_since(t0)
    errors = print_results(results, wall)
    gc.collect()  # the sessions are gone: their AppTest objects and session states are garbage now
    rss_closed = e2e.process_tree_rss_bytes(pid)
    print(f"\nRSS (this process = the server): fresh {mib(rss_start)}; before the {args.sessions} sessions "
          f"{mib(rss_before)}; peak during them {mib(peak)} ({(peak - rss_before) / 2**20:+,.0f} MiB); "
          f"right after they closed {mib(rss_closed)} ({(rss_closed - rss_before) / 2**20:+,.0f} MiB)")
    time.sleep(args.idle_after)
    rss_after = e2e.process_tree_rss_bytes(pid)
    print(f"{args.idle_after:.0f} s after the sessions closed: {mib(rss_after)} "
          f"({(rss_after - rss_before) / 2**20:+,.0f} MiB over before)")
    if allocator.trim():  # diagnosis: what malloc still held that the app had freed
        rss_trim = e2e.process_tree_rss_bytes(pid)
        print(f"after malloc_trim(0): {mib(rss_trim)} ({(rss_trim - rss_before) / 2**20:+,.0f} MiB over before)")
    return 1 if errors else 0


async def main_async(args: argparse.Namespace) -> int:
    from playwright.async_api import async_playwright

    with tempfile.TemporaryDirectory(prefix="brats_load_") as tmp:
        server = e2e.start_server(Path(tmp) / "work")
        sampler = RssSampler(server.process.pid)
        sampler.start()
        try:
            async with async_playwright() as pw:
                browser = await e2e.launch_chromium(pw)
                try:
                    return await drive(browser, server, sampler, args)
                finally:
                    await browser.close()
        finally:
            sampler.stop()
            e2e.stop_server(server)
            log = server.log_text()
            if "Traceback" in log:
                print("\nServer log has tracebacks:\n" + log[-3000:])


async def drive(browser: Any, server: e2e.AppServer, sampler: RssSampler, args: argparse.Namespace) -> int:
    t_start = time.monotonic()
    rss_start = e2e.process_tree_rss_bytes(server.process.pid)
    print(f"server started on {server.url}; RSS {mib(rss_start)}")

    # ---- warm-up: one session alone, RSS after each step
    marks: dict[str, int] = {}
    warm = SessionResult(-1)
    await run_session(browser, server.url, -1, 0, time.monotonic() + args.time_limit, args.step_timeout, warm,
                      segment_only=True,
                      on_step=lambda step: marks.__setitem__(step, e2e.process_tree_rss_bytes(server.process.pid)))
    if warm.errors:
        print("warm-up failed:", *warm.errors, sep="\n  ")
        return 1
    print("\nOne session alone (warm-up):")
    prev = rss_start
    for step in ("home", "open_case", "segment"):
        print(f"  {step:<10} {warm.times_s[step][0]:6.1f} s   RSS {mib(marks[step])} ({(marks[step] - prev) / 2**20:+,.0f} MiB)")
        prev = marks[step]
    print(f"  one open, segmented case: {mib(marks['segment'] - rss_start)} over the fresh server "
          f"(of which opening the case {mib(marks['open_case'] - marks['home'])}; the segment step includes the "
          "one-off model load in ONNX Runtime and the first prediction)")
    await asyncio.sleep(2)

    # ---- N concurrent sessions
    rss_before = e2e.process_tree_rss_bytes(server.process.pid)
    t0 = time.monotonic()
    deadline = t_start + args.time_limit
    results = [SessionResult(i) for i in range(args.sessions)]
    print(f"\n{args.sessions} concurrent sessions (RSS before {mib(rss_before)}), time limit "
          f"{deadline - t0:.0f} s left...")
    await asyncio.gather(*(run_session(browser, server.url, i, args.moves, deadline, args.step_timeout, r)
                           for i, r in enumerate(results)))
    wall = time.monotonic() - t0
    rss_closed = e2e.process_tree_rss_bytes(server.process.pid)
    peak = sampler.peak_since(t0)

    errors = print_results(results, wall)

    print(f"\nServer RSS (process + children): fresh {mib(rss_start)}; before the {args.sessions} sessions "
          f"{mib(rss_before)}; peak during them {mib(peak)} ({(peak - rss_before) / 2**20:+,.0f} MiB); "
          f"right after they closed {mib(rss_closed)}")
    await asyncio.sleep(args.idle_after)
    rss_after = e2e.process_tree_rss_bytes(server.process.pid)
    print(f"{args.idle_after:.0f} s after the sessions closed: {mib(rss_after)} "
          f"({(rss_after - rss_before) / 2**20:+,.0f} MiB over before)")
    return 1 if errors else 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--client", choices=("apptest", "browser"), default="apptest",
                        help="apptest: sessions as AppTest threads of this process, which is the server (cheap "
                             "client); browser: headless chromium sessions against a streamlit server (default "
                             "apptest)")
    parser.add_argument("--sessions", type=int, default=10, help="concurrent sessions (default 10)")
    parser.add_argument("--moves", type=int, default=3, help="axial slice moves per session (default 3)")
    parser.add_argument("--time-limit", type=float, default=540.0, help="total seconds for everything (default 540)")
    parser.add_argument("--step-timeout", type=float, default=240.0, help="seconds one step may take (default 240)")
    parser.add_argument("--idle-after", type=float, default=60.0,
                        help="seconds to wait after the sessions close before the last RSS (default 60)")
    args = parser.parse_args(argv)
    if args.client == "apptest":
        try:
            return main_apptest(args)
        except Exception:  # noqa: BLE001 - report and exit non-zero
            traceback.print_exc()
            return 1
    reason = e2e.browser_skip_reason()
    if reason:
        print(f"cannot run: {reason}", file=sys.stderr)
        return 2
    try:
        return asyncio.run(main_async(args))
    except Exception:  # noqa: BLE001 - report and exit non-zero
        traceback.print_exc()
        return 1


if __name__ == "__main__":
    sys.exit(main())
