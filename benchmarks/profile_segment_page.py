"""Where the time of "Segment whole volume" goes on the server: the Segmentation page run through AppTest (no
browser) with the shipped model on the bundled demo case, under cProfile.

Measures, in one process: the page's first run (the case opened, nothing segmented), then the click on "Segment
whole volume" (the model itself, the page rerun around it and everything the page builds afterwards: figures, the
canvas background, scores, tables). Prints the wall time of each, the model's own ``elapsed_s``, and the functions
with the largest cumulative time during the click.

Usage::

    .venv/bin/python benchmarks/profile_segment_page.py [--top 30] [--out work/profile_segment.pstats]

The browser's own share (websocket transfer, plotly and canvas drawing) is not in this number: see
``benchmarks/load_test.py`` for click-to-settled in Chromium.
"""

from __future__ import annotations

import argparse
import cProfile
import io
import os
import pstats
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--top", type=int, default=30, help="functions listed (by cumulative time)")
    parser.add_argument("--out", type=Path, default=None, help="also save the pstats file here")
    parser.add_argument("--tta", action="store_true", help="segment with test-time augmentation")
    args = parser.parse_args()

    os.environ["BRATS_VIEWER_WORK_DIR"] = tempfile.mkdtemp(prefix="profile_seg_")
    from streamlit.runtime.scriptrunner.script_runner import ScriptRunner
    from streamlit.testing.v1 import AppTest

    from core import config
    from core.app import ui

    profile = cProfile.Profile()
    profiling = {"on": False, "runs": 0}
    original = ScriptRunner._run_script

    def _profiled(self, rerun_data):  # the page runs in the script thread: profile it there
        if not profiling["on"]:
            return original(self, rerun_data)
        profiling["runs"] += 1
        profile.enable()
        try:
            return original(self, rerun_data)
        finally:
            profile.disable()

    ScriptRunner._run_script = _profiled
    at = AppTest.from_file(str(ROOT / "Home.py"), default_timeout=600)
    at.switch_page("pages/3_Segmentation.py")
    at.session_state[ui.KEY_CASE] = {"kind": "folder", "folder": str(config.DEMO_DATA_DIR),
                                      "case_id": "TCIA-example"}
    at.session_state[ui.KEY_TTA] = bool(args.tta)
    started = time.perf_counter()
    at.run()
    first_s = time.perf_counter() - started
    assert not at.exception, at.exception
    button = next(b for b in at.button if b.label == "Segment whole volume")
    started = time.perf_counter()
    profiling["on"] = True
    button.click().run()
    profiling["on"] = False
    click_s = time.perf_counter() - started
    assert not at.exception, at.exception
    pred = at.session_state[ui.KEY_PREDICTION]
    print(f"load average {os.getloadavg()[0]:.2f} (1 min), {os.cpu_count()} CPUs")
    print(f"first page run (case opened): {first_s:.2f} s")
    print(f"click 'Segment whole volume' to page settled (server): {click_s:.2f} s; the model's own elapsed_s "
          f"{pred.elapsed_s:.2f} s ({pred.runtime}, TTA {'on' if pred.tta else 'off'}); the rest "
          f"{click_s - pred.elapsed_s:.2f} s; script runs profiled: {profiling['runs']}")
    out = io.StringIO()
    stats = pstats.Stats(profile, stream=out).sort_stats("cumulative")
    stats.print_stats(args.top)
    print(out.getvalue())
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        stats.dump_stats(str(args.out))


if __name__ == "__main__":
    main()
