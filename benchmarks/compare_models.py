"""Score model folders on labelled cases: BraTS region Dice and HD95 per case, full grid, native resolution.

Usage:
    python benchmarks/compare_models.py --models models/A models/B --cases DIR [DIR ...]

Every case under each DIR that has a segmentation is segmented by each model (all axial slices) and scored
with core.analysis.metrics.score_case. Prints one row per (model, case) and the mean per model, as a Markdown table.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import numpy as np  # noqa: E402

from core.analysis.metrics import score_case  # noqa: E402
from core.data.cases import discover_cases, load_case  # noqa: E402
from core.engine.inference import predict_case  # noqa: E402
from core.engine.model import load_model  # noqa: E402

REGIONS = ("WT", "TC", "ET")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", required=True)
    parser.add_argument("--cases", nargs="+", required=True)
    args = parser.parse_args()
    refs = [r for d in args.cases for r in discover_cases(d) if r.has_seg]
    print("| model | case | " + " | ".join(f"Dice {r}" for r in REGIONS) + " | "
          + " | ".join(f"HD95 {r} (mm)" for r in REGIONS) + " | predict (s) |")
    print("|---" * (3 + 2 * len(REGIONS)) + "|")
    for model_dir in args.models:
        loaded = load_model(model_dir)
        dices: dict[str, list[float]] = {r: [] for r in REGIONS}
        for ref in refs:
            case = load_case(ref)
            started = time.perf_counter()
            pred = predict_case(loaded, case)
            elapsed = time.perf_counter() - started
            score = score_case(pred.labels, np.asarray(case.seg.data), case.spacing_mm)
            for r in REGIONS:
                dices[r].append(score.regions[r].dice)
            print(f"| {loaded.name} | {ref.case_id} | "
                  + " | ".join(f"{score.regions[r].dice:.3f}" for r in REGIONS) + " | "
                  + " | ".join(f"{score.regions[r].hd95_mm:.1f}" for r in REGIONS) + f" | {elapsed:.1f} |")
        print(f"| {loaded.name} | **mean of {len(refs)}** | "
              + " | ".join(f"{np.mean(dices[r]):.3f}" for r in REGIONS) + " | | | | |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
