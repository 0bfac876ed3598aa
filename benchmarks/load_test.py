"""Load test: N concurrent browser sessions drive the main flow of the app on one localhost server.

Usage:  .venv/bin/python benchmarks/load_test.py [--sessions 10] [--moves 3] [--time-limit 540] [--idle-after 30]

What it does:
1. starts ``streamlit run Home.py`` (work folder in a temporary directory; the bundled demo case and the shipped
   model), and samples the resident memory (RSS) of the server process and its children every 0.5 s;
2. one warm-up session, alone: Home -> open the demo case -> segment the whole volume; the RSS growth of each
   step is printed (opening a case; the first segmentation, which includes importing TensorFlow and loading the
   model once per process);
3. N sessions at once (one headless chromium, one browser context per session, Playwright's async API), each:
   Home -> open the demo case -> slice viewer -> ``--moves`` axial slice moves (keyboard) -> segmentation
   (whole volume; a cache hit after the warm-up) -> volume report -> PDF download. Each session makes a fixed
   number of interactions and everything stops at ``--time-limit`` seconds;
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

import e2e_util as e2e  # noqa: E402

CASE_ID = "TCIA-example"
ERROR_SHOTS = e2e.PROJECT_ROOT / "test-artifacts" / "load"  # screenshots of failed sessions (gitignored)
STEPS = ("home", "open_case", "viewer", "slice_move", "segment", "report_page", "pdf")


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
        await page.get_by_text("Axial slice (z)").first.wait_for()

    async def move() -> None:
        widget = page.locator('[data-testid="stSlider"]').filter(has_text="Axial slice (z)").first
        before = await _axial_value(page)
        await widget.locator('input[type="range"]').focus()
        await page.keyboard.press("ArrowRight")
        await page.get_by_text(f"Axial z={before + 1}").first.wait_for()  # the axial view was redrawn
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
            for _ in range(moves):
                await timed("slice_move", move())
        await timed("segment", segment())
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
          "one-off TensorFlow import and model load)")
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

    print(f"\nDone in {wall:.1f} s: {sum(r.done for r in results)} of {args.sessions} sessions finished the flow.")
    print(f"{'step':<12}{'n':>4}{'p50 s':>9}{'p90 s':>9}{'max s':>9}")
    for step in STEPS:
        values = [v for r in results for v in r.times_s.get(step, [])]
        if values:
            print(f"{step:<12}{len(values):>4}{percentile(values, 50):>9.2f}{percentile(values, 90):>9.2f}"
                  f"{max(values):>9.2f}")
    totals = [sum(sum(v) for v in r.times_s.values()) for r in results if r.done]
    if totals:
        print(f"{'whole flow':<12}{len(totals):>4}{percentile(totals, 50):>9.2f}{percentile(totals, 90):>9.2f}"
              f"{max(totals):>9.2f}")
    errors = [e for r in results for e in r.errors]
    print(f"errors: {len(errors)}")
    for e in errors[:20]:
        print(f"  {e}")

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
    parser.add_argument("--sessions", type=int, default=10, help="concurrent browser sessions (default 10)")
    parser.add_argument("--moves", type=int, default=3, help="axial slice moves per session (default 3)")
    parser.add_argument("--time-limit", type=float, default=540.0, help="total seconds for everything (default 540)")
    parser.add_argument("--step-timeout", type=float, default=240.0, help="seconds one step may take (default 240)")
    parser.add_argument("--idle-after", type=float, default=30.0,
                        help="seconds to wait after the sessions close before the last RSS (default 30)")
    args = parser.parse_args(argv)
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
