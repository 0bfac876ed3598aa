"""Benchmark the data layer: load one real case, discover 400 synthetic cases, refuse a gzip bomb.

Run: ``.venv/bin/python benchmarks/bench_load.py [CASE_FOLDER]`` (default: the first training case of
``../shared/data``). Prints wall time, peak traced Python/NumPy memory (tracemalloc) and the process's
resident memory (psutil RSS, before/after and peak) for each step.
"""

from __future__ import annotations

import os
import platform
import sys
import tempfile
import time
import tracemalloc
import zlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np
import psutil

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from core.config import shared_data_dir  # noqa: E402
from core.data.cases import discover_cases, load_case  # noqa: E402
from core.data.io import load_volume_bytes  # noqa: E402
from core.errors import ImageSizeError  # noqa: E402

_PROC = psutil.Process()
_MB = 2**20


def _rss_mb() -> float:
    return _PROC.memory_info().rss / _MB


def measure(label: str, fn: Callable[[], Any], repeat: int = 3) -> Any:
    """Run ``fn`` ``repeat`` times; print best and median wall time, peak traced memory and RSS."""
    times: list[float] = []
    result: Any = None
    peak_traced = 0
    rss_before = _rss_mb()
    for i in range(repeat):
        if i == 0:
            tracemalloc.start()
        t0 = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - t0)
        if i == 0:
            peak_traced = tracemalloc.get_traced_memory()[1]
            tracemalloc.stop()
    rss_after = _rss_mb()
    times_ms = sorted(t * 1000 for t in times)
    print(f"{label:<48} best {times_ms[0]:9.1f} ms  median {times_ms[len(times_ms) // 2]:9.1f} ms  "
          f"peak traced {peak_traced / _MB:7.1f} MB  RSS {rss_before:7.1f} -> {rss_after:7.1f} MB")
    return result


def bench_real_case(folder: Path | None) -> None:
    root = shared_data_dir()
    if folder is None:
        if root is None:
            print("real case: skipped (../shared/data not found: set BRATS_SHARED_DATA)")
            return
        folder = root / "brats" / "train" / "BraTS2021_00000"
    refs = discover_cases(folder, max_depth=1)
    if len(refs) != 1:
        print(f"real case: skipped (expected one case in {folder}, found {len(refs)})")
        return
    ref = refs[0]
    size_mb = sum(p.stat().st_size for p in ref.files.values()) / _MB
    case = measure(f"load_case {ref.case_id} (4 mod + seg, {size_mb:.1f} MB gz)", lambda: load_case(ref))
    arrays_mb = sum(v.data.nbytes for v in case.images.values()) / _MB + (case.seg.data.nbytes / _MB if case.seg else 0)
    print(f"{'':<48} arrays held {arrays_mb:.1f} MB, shape {case.shape}, peak RSS {_peak_rss_mb()}")


def _peak_rss_mb() -> str:
    try:
        import resource

        return f"{resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MB"
    except (ImportError, AttributeError):
        return "n/a"


def bench_discovery(n_cases: int = 400) -> None:
    with tempfile.TemporaryDirectory(prefix="bench_discovery_") as tmp:
        root = Path(tmp)
        img = nib.Nifti1Image(np.zeros((240, 240, 155), np.int16), np.diag([-1.0, -1.0, 1.0, 1.0]))
        header_only = zlib.compress(img.header.binaryblock + b"\x00" * 4, wbits=16 + zlib.MAX_WBITS)
        for i in range(n_cases):
            cid = f"BraTS2021_{i:05d}"
            folder = root / "training" / cid
            folder.mkdir(parents=True)
            for key in ("flair", "t1", "t1ce", "t2", "seg"):
                (folder / f"{cid}_{key}.nii.gz").write_bytes(header_only)  # headers are all discovery reads
        refs = measure(f"discover_cases ({n_cases} cases, 5 files each)", lambda: discover_cases(root))
        assert len(refs) == n_cases
        summaries = measure(f"header_summary x {n_cases}", lambda: [r.header_summary() for r in refs])
        assert all(s["shape"] == "240x240x155" for s in summaries), summaries[0]
        measure("discover + header_summary (a page's case list)",
                lambda: [r.header_summary() for r in discover_cases(root)])


def bench_gzip_bomb() -> None:
    img = nib.Nifti1Image(np.zeros((12, 10, 8), np.int16), np.eye(4))
    comp = zlib.compressobj(9, zlib.DEFLATED, 16 + zlib.MAX_WBITS)
    zeros = bytes(_MB)
    parts = [comp.compress(img.to_bytes()[:352])]
    parts.extend(comp.compress(zeros) for _ in range(1024))
    parts.append(comp.flush())
    bomb = b"".join(parts)

    def refuse() -> str:
        try:
            load_volume_bytes(bomb, "bomb.nii.gz")
        except ImageSizeError as err:
            return str(err)
        raise AssertionError("gzip bomb was not refused")

    message = measure(f"refuse gzip bomb ({len(bomb) / _MB:.2f} MB -> 1024 MB)", refuse, repeat=5)
    print(f"{'':<48} {message}")


def main(argv: list[str]) -> int:
    print(f"python {platform.python_version()}, numpy {np.__version__}, nibabel {nib.__version__}, "
          f"{os.cpu_count()} CPUs, {platform.machine()}")
    bench_real_case(Path(argv[0]) if argv else None)
    bench_discovery()
    bench_gzip_bomb()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
