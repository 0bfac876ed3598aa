"""Inference benchmark: this project's ``segment`` end to end vs the original design's inference, same machine.

(a) ``python -m core segment CASE`` with the shipped model (``models/unet2d_default``): NIfTI files ->
    validated case -> preprocessing -> every brain slice -> probabilities back on the native grid -> written
    ``_seg`` and ``_prob`` files in the input geometry.
(b) The original design's inference, reimplemented: an untrained ``build_unet()`` with the design defaults
    (128 x 128 x 2, 32 filters, depth 4; weights do not matter for time), nibabel load of FLAIR and T1CE,
    slices 22..121 resized to 128 x 128 with ``cv2.INTER_AREA``, each slice scaled by its maximum,
    ``model.predict``, argmax (results stay at 128 x 128 and are not written).

Each runs in its own fresh process (TensorFlow imported before the clock starts, so both pay the same import);
the parent reports the in-process time, its breakdown, the whole process wall time and the child's peak RSS
(``resource.getrusage(RUSAGE_SELF).ru_maxrss``).

Usage::

    .venv/bin/python benchmarks/bench_inference.py [--case FOLDER] [--model models/unet2d_default] [--repeat 1]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

PROJECT = Path(__file__).resolve().parent.parent
if str(PROJECT) not in sys.path:
    sys.path.insert(0, str(PROJECT))


def _peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # kB on Linux


def _import_tf() -> None:
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import keras  # noqa: F401
    import tensorflow as tf  # noqa: F401


# ------------------------------------------------------------------------------------------------ children ---

def child_segment(case: str, model: str) -> dict:
    _import_tf()
    from core.__main__ import main

    out = tempfile.mkdtemp(prefix="bench_segment_")
    t0 = time.perf_counter()
    code = main(["segment", case, "--out", out, "--model", model])
    elapsed = time.perf_counter() - t0
    return {"exit_code": code, "seconds": elapsed, "outputs": sorted(os.listdir(out)), "peak_rss_mb": _peak_rss_mb()}


def child_reference(case: str) -> dict:
    _import_tf()
    import cv2
    import nibabel as nib
    import numpy as np

    from core.data.cases import discover_cases
    from core.engine.model import build_unet

    ref = discover_cases(case)[0]
    t0 = time.perf_counter()
    model = build_unet()  # the design: 128x128x2, 32 filters, depth 4 (stands in for loading the .h5)
    t_model = time.perf_counter()
    flair = nib.load(str(ref.files["flair"])).get_fdata()
    t1ce = nib.load(str(ref.files["t1ce"])).get_fdata()
    t_load = time.perf_counter()
    x = np.empty((100, 128, 128, 2), dtype=np.float32)
    for j in range(100):
        z = j + 22
        x[j, :, :, 0] = cv2.resize(flair[:, :, z], (128, 128), interpolation=cv2.INTER_AREA)
        x[j, :, :, 1] = cv2.resize(t1ce[:, :, z], (128, 128), interpolation=cv2.INTER_AREA)
        for c in range(2):
            mx = x[j, :, :, c].max()
            if mx > 0:
                x[j, :, :, c] /= mx
    t_prep = time.perf_counter()
    probs = model.predict(x, verbose=0)
    labels = np.argmax(probs, axis=-1)
    t_pred = time.perf_counter()
    return {"seconds": t_pred - t0, "model_build_s": t_model - t0, "load_s": t_load - t_model,
            "preprocess_s": t_prep - t_load, "predict_s": t_pred - t_prep, "labels_shape": list(labels.shape),
            "peak_rss_mb": _peak_rss_mb()}


# -------------------------------------------------------------------------------------------------- parent ---

def run_child(args: list[str]) -> tuple[dict, float, str]:
    t0 = time.perf_counter()
    proc = subprocess.run([sys.executable, __file__, "--child", *args], cwd=PROJECT, capture_output=True, text=True,
                          timeout=900, check=False)
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        raise SystemExit(f"child {args[0]} failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
    result_line = [line for line in proc.stdout.splitlines() if line.startswith("RESULT ")][-1]
    segment_json = [line for line in proc.stdout.splitlines() if line.startswith("{")]
    return json.loads(result_line[7:]), wall, (segment_json[-1] if segment_json else "")


def pick_case(explicit: str | None) -> Path:
    from core.config import shared_data_dir
    from core.data.cases import discover_cases

    if explicit:
        return Path(explicit)
    root = shared_data_dir()
    if root is None:
        raise SystemExit("no shared data found (../shared/data or $BRATS_SHARED_DATA); pass --case FOLDER")
    for ref in discover_cases(root / "brats" if (root / "brats").is_dir() else root):
        if all(m in ref.files for m in ("flair", "t1", "t1ce", "t2")):
            return ref.folder
    raise SystemExit(f"no case with all four modalities under {root}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--case", help="a case folder (default: the first complete case of the shared data)")
    parser.add_argument("--model", default=str(PROJECT / "models" / "unet2d_default"))
    parser.add_argument("--repeat", type=int, default=1, help="runs of each (the best is reported)")
    parser.add_argument("--child", nargs="+", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        kind = args.child[0]
        result = child_segment(args.child[1], args.child[2]) if kind == "segment" else child_reference(args.child[1])
        print("RESULT " + json.dumps(result), flush=True)
        return 0
    model = Path(args.model)
    if not (model / "model.keras").is_file():
        print(f"shipped model missing: {model / 'model.keras'} does not exist; train it first "
              "(python -m core train ... --out models/unet2d_default)")
        return 1
    case = pick_case(args.case)
    print(f"case: {case}")
    print(f"model: {model}")
    print(f"machine: {platform.machine()}, {os.cpu_count()} CPU cores, Python {platform.python_version()}")
    seg_runs, ref_runs = [], []
    seg_summary = ""
    for _ in range(max(1, args.repeat)):
        res, wall, seg_summary = run_child(["segment", str(case), str(model)])
        seg_runs.append((res, wall))
        res, wall, _ = run_child(["reference", str(case)])
        ref_runs.append((res, wall))
    seg, seg_wall = min(seg_runs, key=lambda r: r[0]["seconds"])
    ref, ref_wall = min(ref_runs, key=lambda r: r[0]["seconds"])
    times = json.loads(seg_summary)["time_s"] if seg_summary else {}
    print("\n(a) segment end to end (files -> written _seg/_prob NIfTI, all brain slices, native grid)")
    print(f"    time {seg['seconds']:.2f} s  [model load {times.get('model_load', float('nan')):.2f}, case load "
          f"{times.get('load', float('nan')):.2f}, predict {times.get('predict', float('nan')):.2f}, write "
          f"{times.get('write', float('nan')):.2f}]; process wall {seg_wall:.2f} s; peak RSS {seg['peak_rss_mb']:.0f} MB")
    print(f"    outputs: {', '.join(seg['outputs'])}")
    print("(b) original design (untrained build_unet(), FLAIR+T1CE, slices 22..121 at 128x128, predict, argmax)")
    print(f"    time {ref['seconds']:.2f} s  [model build {ref['model_build_s']:.2f}, load {ref['load_s']:.2f}, "
          f"preprocess {ref['preprocess_s']:.2f}, predict {ref['predict_s']:.2f}]; process wall {ref_wall:.2f} s; "
          f"peak RSS {ref['peak_rss_mb']:.0f} MB")
    print(f"ratio (a)/(b): {seg['seconds'] / ref['seconds']:.2f}  (process wall {seg_wall / ref_wall:.2f})")
    print(f"peak RSS ratio (a)/(b): {seg['peak_rss_mb'] / ref['peak_rss_mb']:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
