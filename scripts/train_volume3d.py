"""Train the 3-D context network (``core.engine.training3d``): export the volumes, then train one model or the
cross-validation folds and the final model side by side.

Usage:
    python scripts/train_volume3d.py export --cache work/cv/full_noctx/cache --out work/volumes/volumes.npz
    python scripts/train_volume3d.py train --volumes FILE.npz --out DIR [--exclude a,b] [--minutes M] [--steps N]
    python scripts/train_volume3d.py folds --volumes FILE.npz --out DIR [--minutes M] [--steps N]

``folds`` trains, at once in separate processes, one model per cross-validation fold of
``benchmarks/accuracy.py`` (``DIR/fold<k>``, its fold's cases excluded) and the final model on every case
(``DIR/final``). It was run on a GPU machine with Keras on JAX (``KERAS_BACKEND=jax``); the model files it writes
load in TensorFlow alike (the models use standard layers only).
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

CHANNELS = ("flair", "t1ce", "t1", "t2")  # the shipped 2-D model's channel order (its preprocess.json)


def folds() -> tuple[tuple[str, ...], ...]:
    sys.path.insert(0, str(ROOT / "benchmarks"))
    from accuracy import FOLDS  # type: ignore[import-not-found]

    return FOLDS


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="cmd", required=True)
    ex = sub.add_parser("export")
    ex.add_argument("--cache", type=Path, required=True, help="folder of 2-D training caches (<case>-<key>_x.npy)")
    ex.add_argument("--out", type=Path, required=True)
    ex.add_argument("--skip", default="TCIA-example", help="cases left out (comma-separated): the TCIA test case")
    for name in ("train", "folds"):
        p = sub.add_parser(name)
        p.add_argument("--volumes", type=Path, required=True)
        p.add_argument("--out", type=Path, required=True)
        p.add_argument("--minutes", type=float, default=10.0)
        p.add_argument("--steps", type=int, default=4000)
        p.add_argument("--base-filters", type=int, default=8)
        p.add_argument("--seed", type=int, default=42)
        p.add_argument("--workers", type=int, default=4)
        p.add_argument("--learning-rate", type=float, default=1e-3)
        if name == "train":
            p.add_argument("--exclude", default="")
            p.add_argument("--init", type=Path, default=None, help="model.keras to continue training from")
        else:
            p.add_argument("--init-dir", type=Path, default=None,
                           help="continue each of fold0..2 and final from INIT_DIR/<name>/model.keras")
    args = parser.parse_args()
    if args.cmd == "export":
        from core.engine.training3d import export_volumes

        files = []
        for x_path in sorted(args.cache.glob("*_x.npy")):
            case_id = x_path.name.rsplit("-", 1)[0]
            if case_id in args.skip.split(","):
                continue
            files.append((case_id, x_path, x_path.with_name(x_path.name.replace("_x.npy", "_y.npy"))))
        print(export_volumes(files, args.out), [f[0] for f in files])
        return 0
    if args.cmd == "train":
        from core.engine.training3d import train_volume

        rec = train_volume(args.volumes, args.out, CHANNELS, [c for c in args.exclude.split(",") if c],
                           base_filters=args.base_filters, steps=args.steps, max_minutes=args.minutes,
                           seed=args.seed, workers=args.workers, learning_rate=args.learning_rate, init=args.init)
        print({k: v for k, v in rec.items() if k != "train_cases"}, flush=True)
        return 0
    jobs = []
    plan = [(f"fold{k}", ",".join(fold)) for k, fold in enumerate(folds())] + [("final", "")]
    for name, exclude in plan:
        cmd = [sys.executable, str(Path(__file__).resolve()), "train", "--volumes", str(args.volumes),
               "--out", str(args.out / name), "--exclude", exclude, "--minutes", str(args.minutes),
               "--steps", str(args.steps), "--base-filters", str(args.base_filters), "--seed", str(args.seed),
               "--workers", str(args.workers), "--learning-rate", str(args.learning_rate)]
        if args.init_dir is not None:
            cmd += ["--init", str(args.init_dir / name / "model.keras")]
        args.out.mkdir(parents=True, exist_ok=True)
        log = open(args.out / f"{name}.log", "w")  # noqa: SIM115 - closed when the process ends
        jobs.append((name, subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=dict(os.environ)), log))
        time.sleep(2)
    rc = 0
    for name, proc, log in jobs:
        rc |= proc.wait()
        log.close()
        print(name, "exit", proc.returncode, flush=True)
    return rc


if __name__ == "__main__":
    sys.exit(main())
