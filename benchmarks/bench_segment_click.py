"""Click-to-settled of "Segment whole volume" in Chromium: a fresh server per repeat (so the model really runs),
the demo case opened by URL on the Segmentation page, then the click timed until the page is idle
(``e2e_util.wait_idle``; its settle time is subtracted). Prints each repeat, the median, the model's own time
(the "Segmented in X s" toast, when seen) and the script runs the server made after the click (``Running``
status flips seen by the page). With ``--trace`` the server logs each script run (``benchmarks/trace_site``):
the runs after the click are printed with their start and end relative to the click, whole page or fragment.

Usage::

    .venv/bin/python benchmarks/bench_segment_click.py [--repeats 3] [--tta] [--stroke] [--slider] [--trace]

``--slider``: after segmenting, three steps of the page's "Axial slice (z)" slider (arrow key), each timed to
settled (the probability maps, the error view and the canvas of the new slice).
"""

from __future__ import annotations

import argparse
import os
import re
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))

import e2e_util as e2e  # noqa: E402

SETTLE_S = 0.5


def stroke_and_undo(page) -> tuple[float, float]:
    """After segmenting: one stroke on the correction canvas (applied on release; or with an "Apply stroke"
    button, from its click), then Undo; seconds from the action to settled for each."""
    canvas = page.locator("canvas.upper-canvas").first
    e2e.press_and_drag(page, canvas, 0.35, 0.35, (6, 4))
    apply = page.get_by_role("button", name="Apply stroke")
    if apply.count():
        page.mouse.up()
        e2e.wait_idle(page, timeout_s=120)
        started = time.perf_counter()
        apply.click()
    else:
        started = time.perf_counter()
        page.mouse.up()
    page.wait_for_timeout(300)
    e2e.wait_idle(page, timeout_s=120, settle_s=SETTLE_S)
    stroke_s = time.perf_counter() - started - SETTLE_S
    started = time.perf_counter()
    page.get_by_role("button", name="Undo").first.click()
    page.wait_for_timeout(300)
    e2e.wait_idle(page, timeout_s=120, settle_s=SETTLE_S)
    return stroke_s, time.perf_counter() - started - SETTLE_S


def _trace_env(tmp: str) -> dict[str, str]:
    """Environment of a server that logs its script runs to ``<tmp>/runs.txt`` (``benchmarks/trace_site``)."""
    site = str(ROOT / "benchmarks" / "trace_site")
    path = os.pathsep.join(p for p in (site, os.environ.get("PYTHONPATH", "")) if p)
    return {"PYTHONPATH": path, "BENCH_TRACE_FILE": str(Path(tmp) / "runs.txt")}


def _print_runs(tmp: str, since: float, what: str) -> None:
    """The server's script runs that started after ``since`` (epoch seconds), relative to it."""
    try:
        lines = (Path(tmp) / "runs.txt").read_text(encoding="utf-8").splitlines()
    except OSError:
        return
    runs = [(float(a), float(b), kind) for _, a, b, kind in (line.split() for line in lines) if float(a) >= since]
    print(f"  {what}: {len(runs)} script run(s): "
          + ", ".join(f"{kind} +{a - since:.2f}..+{b - since:.2f} s" for a, b, kind in runs), flush=True)


def slider_steps(page, n: int = 3) -> list[float]:
    """Seconds from one ArrowRight on the "Axial slice (z)" slider to the settled page, ``n`` times."""
    thumb = page.locator('[data-testid="stSlider"]').filter(has_text="Axial slice (z)").first.get_by_role("slider")
    thumb.scroll_into_view_if_needed()
    thumb.focus()
    times = []
    for _ in range(n):
        started = time.perf_counter()
        page.keyboard.press("ArrowRight")
        page.wait_for_timeout(300)
        e2e.wait_idle(page, timeout_s=120, settle_s=SETTLE_S)
        times.append(time.perf_counter() - started - SETTLE_S)
    return times


def one(tta: bool, stroke: bool = False, trace: bool = False, slider: bool = False
        ) -> tuple[float, float | None, int, float | None, float | None, list[float]]:
    from playwright.sync_api import sync_playwright

    with tempfile.TemporaryDirectory() as tmp, \
            e2e.running_server(Path(tmp) / "work", extra_env=_trace_env(tmp) if trace else None) as server, \
            sync_playwright() as pw:
        browser = e2e.launch_chromium(pw)
        page = browser.new_page(viewport={"width": 1400, "height": 1000})
        sent: list[float] = []  # browser -> server websocket messages (a rerun request each, widget changes included)
        frames: list[tuple[float, bytes]] = []

        def _sent(payload: bytes | str) -> None:
            sent.append(time.perf_counter())
            frames.append((sent[-1], payload if isinstance(payload, bytes) else payload.encode()))

        page.on("websocket", lambda ws: ws.on("framesent", _sent))
        page.goto(f"{server.url}/Segmentation?case=TCIA-example&src=demo")
        page.get_by_role("button", name="Segment whole volume").wait_for(timeout=120_000)
        e2e.wait_idle(page, timeout_s=120)
        if tta:
            page.get_by_text("Test-time augmentation (flips)").click()
            e2e.wait_idle(page, timeout_s=60)
        started, started_epoch = time.perf_counter(), time.time()
        page.get_by_role("button", name="Segment whole volume").click()
        page.wait_for_timeout(300)  # the rerun starts
        e2e.wait_idle(page, timeout_s=300, settle_s=SETTLE_S)
        elapsed = time.perf_counter() - started - SETTLE_S
        text = page.inner_text("body")
        m = re.search(r"Segmented in ([0-9.]+) s", text) or re.search(r"TTA (?:on|off), ([0-9.]+) s\.", text)
        runs = sum(1 for t in sent if t >= started)
        if trace:
            _print_runs(tmp, started_epoch, "segment click")
        stroke_s = undo_s = None
        if stroke:
            stroke_epoch = time.time()
            stroke_s, undo_s = stroke_and_undo(page)
            print(f"  stroke to settled {stroke_s:.2f} s, undo to settled {undo_s:.2f} s", flush=True)
            if trace:
                _print_runs(tmp, stroke_epoch, "stroke and undo")
        steps: list[float] = []
        if slider:
            steps = slider_steps(page)
            print(f"  slider steps to settled: {', '.join(f'{t:.2f}' for t in steps)} s", flush=True)
        if os.environ.get("BENCH_SHOW_FRAMES"):
            for t, data in frames:
                if t >= started:
                    keys = sorted(set(re.findall(rb"[a-z_]+(?:canvas|seg|fig)[a-z_0-9-]*", data)))[:8]
                    print(f"  +{t - started:.2f} s: {len(data)} bytes, {keys}")
        browser.close()
        return elapsed, float(m.group(1)) if m else None, runs, stroke_s, undo_s, steps


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--tta", action="store_true")
    parser.add_argument("--stroke", action="store_true", help="then time one brush stroke and its undo")
    parser.add_argument("--slider", action="store_true", help="then time three steps of the axial slider")
    parser.add_argument("--trace", action="store_true", help="print the server's script runs after each action")
    args = parser.parse_args()
    print(f"load before {os.getloadavg()[0]:.2f} (1 min), {os.cpu_count()} CPUs", flush=True)
    rows, strokes, undos, steps = [], [], [], []
    for i in range(args.repeats):
        elapsed, model_s, runs, stroke_s, undo_s, step_s = one(args.tta, args.stroke, args.trace, args.slider)
        steps += step_s
        rows.append((elapsed, model_s))
        strokes += [stroke_s] if stroke_s is not None else []
        undos += [undo_s] if undo_s is not None else []
        print(f"repeat {i + 1}: click to settled {elapsed:.2f} s, model {model_s} s, messages to the server after the click {runs}, "
              f"load {os.getloadavg()[0]:.2f}", flush=True)
    med = statistics.median(r[0] for r in rows)
    models = [r[1] for r in rows if r[1] is not None]
    print(f"median click to settled {med:.2f} s; median model {statistics.median(models):.2f} s" if models else
          f"median click to settled {med:.2f} s")
    if strokes:
        print(f"median stroke to settled {statistics.median(strokes):.2f} s, median undo to settled "
              f"{statistics.median(undos):.2f} s")
    if steps:
        print(f"median slider step to settled {statistics.median(steps):.2f} s ({len(steps)} steps)")
    print(f"load after {os.getloadavg()[0]:.2f} (1 min)")


if __name__ == "__main__":
    main()
