"""Inference benchmark: ``python -m core segment`` against the original design's inference, same machine, same run.

Prints, for one case (default: the first complete case of the shared data):

(a) ``python -m core segment CASE --out DIR`` with the shipped model, as a whole process: the default runtime
    (ONNX Runtime when the model folder holds a valid ``model.onnx``) and, for comparison, ``--runtime
    onnx-int8`` (when the model has an int8 network) and ``--runtime tensorflow``; the in-process breakdown
    (model load, case load, predict, write) from its JSON line;
(b) the reference ``../shared/reference/seed_infer.py CASE OUT`` (the original design end to end: TensorFlow,
    100 slices at 128 x 128, labels written), as a whole process;

run alternately ``--repeat`` times; medians and the median of the per-round ratios (a)/(b); the peak RSS of
each process (``ru_maxrss`` of a one-child wrapper); and for a folder of 8 copies of the case (copied
files under other case ids) the cases per minute of ``segment FOLDER --workers 1``, ``--workers 2`` and ``--dask`` on a local
cluster of 2 worker processes (1 inference thread each, as --workers 2 gives on 2 cores).

Usage::

    .venv/bin/python benchmarks/bench_inference.py [--case FOLDER] [--model models/unet2d_default] [--repeat 3]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

PROJECT = Path(__file__).resolve().parent.parent
if str(PROJECT) not in sys.path:
    sys.path.insert(0, str(PROJECT))

# Runs a command as the wrapper's only child and prints that child's peak RSS in kB last.
_WRAPPER = ("import resource, subprocess, sys; r = subprocess.run(sys.argv[1:]); "
            "print('PEAK_RSS_KB', resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss, flush=True); "
            "sys.exit(r.returncode)")


def timed(cmd: list[str], env: dict[str, str] | None = None) -> tuple[float, float, str]:
    """(wall seconds, peak RSS MB, stdout) of ``cmd`` run as a whole process."""
    t0 = time.perf_counter()
    proc = subprocess.run([sys.executable, "-c", _WRAPPER, *cmd], cwd=PROJECT, capture_output=True, text=True,
                          timeout=1800, check=False, env=env)
    wall = time.perf_counter() - t0
    if proc.returncode not in (0,):
        raise SystemExit(f"failed ({proc.returncode}): {' '.join(cmd)}\n{proc.stderr[-3000:]}")
    peak = [line for line in proc.stdout.splitlines() if line.startswith("PEAK_RSS_KB ")][-1]
    return wall, int(peak.split()[1]) / 1024.0, proc.stdout


def pick_case(explicit: str | None) -> Path:
    from core.config import shared_data_dir
    from core.data.cases import discover_cases

    if explicit:
        return Path(explicit)
    root = shared_data_dir()
    if root is None:
        raise SystemExit("no shared data found (../shared/data or $BRATS_SHARED_DATA); pass --case FOLDER")
    for ref in discover_cases(root / "brats" / "train" if (root / "brats" / "train").is_dir() else root):
        # the reference script finds files named *flair / *t1ce (BraTS 2020/2021 names)
        names = [p.name.split(".nii")[0].lower() for p in ref.files.values()]
        if all(m in ref.files for m in ("flair", "t1", "t1ce", "t2")) and any(n.endswith("t1ce") for n in names):
            return ref.folder
    raise SystemExit(f"no case with all four modalities under {root}")


def copies(case: Path, n: int, dest: Path) -> Path:
    """``n`` cases under ``dest`` whose files are copies of ``case``'s, named BraTS2021_9000<i>."""
    from core.data.cases import discover_cases

    (ref,) = discover_cases(case)
    for i in range(n):
        cid = f"BraTS2021_{90000 + i}"
        folder = dest / cid
        folder.mkdir(parents=True)
        for key, path in ref.files.items():
            if key != "seg":
                suffix = ".nii.gz" if path.name.endswith(".nii.gz") else ".nii"
                shutil.copyfile(path, folder / f"{cid}_{key}{suffix}")
    return dest


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--case", help="a case folder (default: the first complete case of the shared data)")
    parser.add_argument("--model", default=str(PROJECT / "models" / "unet2d_default"))
    parser.add_argument("--repeat", type=int, default=3, help="alternating rounds (medians are reported)")
    parser.add_argument("--folder-cases", type=int, default=8, help="copies of the case for the workers figure")
    parser.add_argument("--default-only", action="store_true",
                        help="time only the default runtime against the reference (no int8, TensorFlow or batch runs)")
    args = parser.parse_args()
    from core.config import shared_data_dir

    shared = shared_data_dir()
    seed = (shared.parent / "reference" / "seed_infer.py") if shared else None
    if seed is None or not seed.is_file():
        raise SystemExit("the reference ../shared/reference/seed_infer.py is missing")
    model = Path(args.model)
    case = pick_case(args.case)
    card = json.loads((model / "model_card.json").read_text()) if (model / "model_card.json").is_file() else {}
    int8 = "onnx_int8" in card
    print(f"case: {case}\nmodel: {model} (ONNX export: {'yes' if 'onnx' in card else 'no'}, int8 network: "
          f"{'yes' if int8 else 'no'})")
    print(f"machine: {platform.machine()}, {os.cpu_count()} CPU cores, Python {platform.python_version()}")
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
    tmp = Path(tempfile.mkdtemp(prefix="bench_inference_"))
    rounds: list[dict] = []
    try:
        for r in range(max(1, args.repeat)):
            row: dict = {}
            variants = [("segment", []), *([("segment_int8", ["--runtime", "onnx-int8"])] if int8 else []),
                        ("segment_tf", ["--runtime", "tensorflow"])]
            if args.default_only:
                variants = variants[:1]
                int8 = False
            for name, extra in variants:
                out = tmp / f"{name}{r}"
                wall, rss, stdout = timed([sys.executable, "-m", "core", "segment", str(case), "--out", str(out),
                                           "--model", str(model), *extra], env)
                summary = json.loads([ln for ln in stdout.splitlines() if ln.startswith("{")][-1])
                row[name] = {"wall": wall, "rss": rss, "times": summary["time_s"],
                             "runtime": summary["model"].get("runtime", "tensorflow"),
                             "outputs": sorted(p.name for p in out.iterdir())}
            wall, rss, _ = timed([sys.executable, str(seed), str(case), str(tmp / f"seed{r}.nii.gz")], env)
            row["seed"] = {"wall": wall, "rss": rss}
            rounds.append(row)
            print(f"round {r + 1}: segment {row['segment']['wall']:.2f} s ({row['segment']['runtime']}), "
                  + (f"--runtime onnx-int8 {row['segment_int8']['wall']:.2f} s, " if int8 else "")
                  + (f"--runtime tensorflow {row['segment_tf']['wall']:.2f} s, " if "segment_tf" in row else "")
                  + f"seed_infer {wall:.2f} s")

        def med(key: str, field: str = "wall") -> float:
            return statistics.median(r[key][field] for r in rounds)

        ratio = statistics.median(r["segment"]["wall"] / r["seed"]["wall"] for r in rounds)
        times = rounds[-1]["segment"]["times"]
        print(f"\n(a) segment, default runtime ({rounds[-1]['segment']['runtime']}): median {med('segment'):.2f} s "
              f"whole process; last run: model load {times['model_load']:.2f}, case load {times['load']:.2f}, "
              f"predict {times['predict']:.2f}, write {times['write']:.2f} s; peak RSS {med('segment', 'rss'):.0f} MB")
        print(f"    outputs: {', '.join(rounds[-1]['segment']['outputs'])}")
        if "segment_tf" in rounds[-1]:
            t_tf = rounds[-1]["segment_tf"]["times"]
            print(f"(a') segment --runtime tensorflow: median {med('segment_tf'):.2f} s; last run: model load "
                  f"{t_tf['model_load']:.2f}, predict {t_tf['predict']:.2f} s; peak RSS "
                  f"{med('segment_tf', 'rss'):.0f} MB")
        print(f"(b) seed_infer.py (original design): median {med('seed'):.2f} s; peak RSS {med('seed', 'rss'):.0f} MB")
        rounds_ratios = sorted(r["segment"]["wall"] / r["seed"]["wall"] for r in rounds)
        print(f"ratio (a)/(b), median of {len(rounds)} rounds: {ratio:.2f} (range {rounds_ratios[0]:.2f}-"
              f"{rounds_ratios[-1]:.2f})" + (f"   (a')/(b): {statistics.median(r['segment_tf']['wall'] / r['seed']['wall'] for r in rounds):.2f}"
                                             if "segment_tf" in rounds[-1] else ""))
        if int8:
            ratio_q = statistics.median(r["segment_int8"]["wall"] / r["seed"]["wall"] for r in rounds)
            tq = rounds[-1]["segment_int8"]["times"]
            print(f"(a'') segment --runtime onnx-int8 (opt-in, labels differ; see the model card): median "
                  f"{med('segment_int8'):.2f} s; last run: predict {tq['predict']:.2f} s; peak RSS "
                  f"{med('segment_int8', 'rss'):.0f} MB; ratio to (b) {ratio_q:.2f}")

        if args.default_only:
            return 0
        folder = copies(case, args.folder_cases, tmp / "folder")
        for workers in (1, 2):
            out = tmp / f"batch{workers}"
            wall, rss, _ = timed([sys.executable, "-m", "core", "segment", str(folder), "--out", str(out), "--model",
                                  str(model), "--workers", str(workers)], env)
            print(f"folder of {args.folder_cases} cases, --workers {workers}: {wall:.1f} s whole process, "
                  f"{60.0 * args.folder_cases / wall:.1f} cases/min (peak RSS of the parent {rss:.0f} MB)")
        try:
            from distributed import LocalCluster
        except ImportError:
            print("dask distributed not installed: no cluster figure")
        else:
            t0 = time.perf_counter()
            with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, host="127.0.0.1",
                              dashboard_address=None) as cluster:
                start_s = time.perf_counter() - t0
                wall, _, _ = timed([sys.executable, "-m", "core", "segment", str(folder), "--out", str(tmp / "dask"),
                                    "--model", str(model), "--dask", cluster.scheduler_address, "--threads", "1"], env)
            print(f"folder of {args.folder_cases} cases on a local Dask cluster (2 worker processes, loopback): "
                  f"cluster start {start_s:.1f} s, {wall:.1f} s, {60.0 * args.folder_cases / wall:.1f} cases/min")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
