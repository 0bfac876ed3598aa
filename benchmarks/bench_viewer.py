"""Server cost of one slice-viewer cursor move: build the three linked views (axial, coronal, sagittal) of a real
case with the ground-truth overlay, a prediction-style error overlay, cross-hairs, letters and hover data.

Usage:  .venv/bin/python benchmarks/bench_viewer.py [case folder] [--moves N]
Default case: the first BraTS training case under ../shared/data (else the bundled demo).
Prints median and p95 in ms of (a) building the figures and (b) building plus plotly JSON serialisation (what
Streamlit sends). Target: (b) <= 150 ms for a 240 x 240 x 155 case.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from core import config  # noqa: E402
from core.data.cases import discover_cases, load_case  # noqa: E402
from core.views import figures


def pick_case(arg: str | None) -> Path:
    if arg:
        return Path(arg)
    shared = config.shared_data_dir()
    if shared is not None:
        refs = [r for r in discover_cases(shared / "brats" / "train") if r.has_seg] if (shared / "brats" / "train").is_dir() else []
        if refs:
            return refs[0].folder
    return config.DEMO_DATA_DIR / "TCIA-example"


def three_views(image: np.ndarray, cursor: dict[str, int], window: tuple[float, float],
                layers: list[figures.Overlay]) -> list:
    out = []
    for plane in ("axial", "coronal", "sagittal"):
        index = cursor[figures.AXIS_NAMES[figures.PLANE_AXIS[plane]]]
        rgb = figures.compose_plane(image, plane, index, window, True, layers)
        raw = figures.extract_slice(image, plane, index, True)
        out.append(figures.slice_figure(rgb, raw, plane, index, cursor, image.shape, True, title=plane))
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("case", nargs="?", help="case folder (BraTS naming)")
    parser.add_argument("--moves", type=int, default=40)
    args = parser.parse_args()
    folder = pick_case(args.case)
    refs = discover_cases(folder)
    if not refs:
        print(f"error: expected a BraTS case under {folder}, found none", file=sys.stderr)
        return 2
    case = load_case(refs[0])
    image = case.images["flair"].data
    seg = case.seg.data if case.seg is not None else np.zeros(case.shape, np.uint8)
    pred = np.roll(seg, 3, axis=0)  # a shifted copy stands in for a prediction (gives FP and FN)
    layers = [figures.Overlay(seg, 0.4, contour=True), figures.Overlay(pred, 0.4),
              figures.Overlay(pred, 0.6, reference=seg)]
    window = figures.window_from_percentiles(figures.brain_percentiles(image), *figures.AUTO_PERCENTILES)
    start = figures.most_tumour_cursor(seg) or figures.brain_centre(image)
    rng = np.random.default_rng(0)
    three_views(image, start, window, layers)  # warm-up (imports, plotly validators)
    build_ms, total_ms = [], []
    for _ in range(args.moves):
        cursor = dict(start)
        axis = str(rng.choice(figures.AXIS_NAMES))
        cursor[axis] = int(np.clip(cursor[axis] + rng.integers(-20, 21), 0, case.shape["xyz".index(axis)] - 1))
        t0 = time.perf_counter()
        figs = three_views(image, cursor, window, layers)
        t1 = time.perf_counter()
        payload = sum(len(f.to_json()) for f in figs)
        t2 = time.perf_counter()
        build_ms.append((t1 - t0) * 1000)
        total_ms.append((t2 - t0) * 1000)
    print(f"case {case.case_id} shape {case.shape}, {args.moves} cursor moves, 3 views with 3 overlay layers")
    print(f"build figures:        median {np.median(build_ms):6.1f} ms  p95 {np.percentile(build_ms, 95):6.1f} ms")
    print(f"build + plotly JSON:  median {np.median(total_ms):6.1f} ms  p95 {np.percentile(total_ms, 95):6.1f} ms"
          f"  ({payload / 1e6:.2f} MB per move)")
    t0 = time.perf_counter()
    fig3d = figures.tumour_3d_figure(seg, case.spacing_mm, brain=image)
    t3d = (time.perf_counter() - t0) * 1000
    print(f"3-D view (built once per case, cached): {t3d:.0f} ms, {len(fig3d.to_json()) / 1e6:.2f} MB")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
