"""Click-to-settled of "Segment whole volume" in Chromium: a fresh server per repeat (so the model really runs),
the demo case opened by URL on the Segmentation page, then the click timed until the page is idle
(``e2e_util.wait_idle``; its settle time is subtracted). Prints each repeat, the median, the model's own time
(the "Segmented in X s" toast, when seen) and the script runs the server made after the click (``Running``
status flips seen by the page).

Usage::

    .venv/bin/python benchmarks/bench_segment_click.py [--repeats 3] [--tta] [--stroke]
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
    canvas.scroll_into_view_if_needed()
    box = canvas.bounding_box()
    x0, y0 = box["x"] + box["width"] * 0.35, box["y"] + box["height"] * 0.35
    page.mouse.move(x0, y0)
    page.mouse.down()
    for i in range(1, 11):
        page.mouse.move(x0 + i * 6, y0 + i * 4)
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


def one(tta: bool, stroke: bool = False) -> tuple[float, float | None, int]:
    from playwright.sync_api import sync_playwright

    with tempfile.TemporaryDirectory() as tmp, e2e.running_server(Path(tmp) / "work") as server, \
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
        started = time.perf_counter()
        page.get_by_role("button", name="Segment whole volume").click()
        page.wait_for_timeout(300)  # the rerun starts
        e2e.wait_idle(page, timeout_s=300, settle_s=SETTLE_S)
        elapsed = time.perf_counter() - started - SETTLE_S
        text = page.inner_text("body")
        m = re.search(r"Segmented in ([0-9.]+) s", text) or re.search(r"TTA (?:on|off), ([0-9.]+) s\.", text)
        runs = sum(1 for t in sent if t >= started)
        if stroke:
            stroke_s, undo_s = stroke_and_undo(page)
            print(f"  stroke to settled {stroke_s:.2f} s, undo to settled {undo_s:.2f} s", flush=True)
        if os.environ.get("BENCH_SHOW_FRAMES"):
            for t, data in frames:
                if t >= started:
                    keys = sorted(set(re.findall(rb"[a-z_]+(?:canvas|seg|fig)[a-z_0-9-]*", data)))[:8]
                    print(f"  +{t - started:.2f} s: {len(data)} bytes, {keys}")
        browser.close()
        return elapsed, float(m.group(1)) if m else None, runs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--tta", action="store_true")
    parser.add_argument("--stroke", action="store_true", help="then time one brush stroke and its undo")
    args = parser.parse_args()
    rows = []
    for i in range(args.repeats):
        elapsed, model_s, runs = one(args.tta, args.stroke)
        rows.append((elapsed, model_s))
        print(f"repeat {i + 1}: click to settled {elapsed:.2f} s, model {model_s} s, messages to the server after the click {runs}, "
              f"load {os.getloadavg()[0]:.2f}", flush=True)
    med = statistics.median(r[0] for r in rows)
    models = [r[1] for r in rows if r[1] is not None]
    print(f"median click to settled {med:.2f} s; median model {statistics.median(models):.2f} s" if models else
          f"median click to settled {med:.2f} s")


if __name__ == "__main__":
    main()
