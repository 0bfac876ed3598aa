"""Benchmark DICOM -> NIfTI converters on series built in code with known geometry: correctness and time.

Candidates: this project's pydicom-only reader (``core.data.dicom``), ``dicom2nifti`` and the ``dcm2niix``
package. For an axial, a double-oblique, a gantry-tilted (15 degrees) and an oblique+tilted series of 8x8x6
voxels whose values encode their own (column, row, slice) indices, each output is loaded through
``core.data.io`` and every voxel's position by the output affine is compared with the DICOM position of the
pixel it holds: the figure is the largest error in mm. An output that was resampled (values interpolated, so no
longer traceable) or refused is reported as such. Then each converter's wall time on a 256x256x26 series.

Run: ``.venv/bin/python benchmarks/bench_dicom.py``. dicom2nifti and dcm2niix are benchmark-only:
``.venv/bin/pip install dicom2nifti==2.6.2 dcm2niix==1.0.20260724`` (a candidate not installed is skipped).
"""

from __future__ import annotations

import contextlib
import io
import logging
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

from dicom_factory import AXIAL, decode_value, expected_world_ras, oblique_iop, write_series  # noqa: E402

from core.data import dicom  # noqa: E402
from core.data.io import Volume, load_volume  # noqa: E402
from core.errors import BratsViewerError  # noqa: E402

CASES: dict[str, dict] = {
    "axial": {"iop": AXIAL},
    "oblique": {"iop": oblique_iop(20, 15)},
    "tilt 15 deg": {"iop": AXIAL, "tilt_deg": 15.0},
    "oblique + tilt": {"iop": oblique_iop(-10, 25), "tilt_deg": -8.0},
}
SPACING = (1.2, 0.9)


def max_error_mm(vol: Volume, iop, positions) -> float | None:
    """Largest voxel position error (mm) over every voxel, or None when values are not traceable (resampled)."""
    data = np.asarray(vol.data)
    if data.dtype.kind == "f" and not np.array_equal(data, np.round(data)):
        return None
    worst = 0.0
    for x, y, z in np.argwhere(data > 0):
        i, j, k = decode_value(int(data[x, y, z]))
        if not (i < 8 and j < 8 and k < len(positions)):
            return None
        w = vol.affine @ np.array([x, y, z, 1.0])
        worst = max(worst, float(np.linalg.norm(w[:3] - expected_world_ras(iop, SPACING, positions[k], i, j))))
    return worst


def resampled_value_error(vol: Volume, iop, positions) -> tuple[float, int]:
    """(largest |value - exact value|, voxels checked) of a resampled output.

    The factory's values are an affine function of the pixel indices (100 k + 10 j + i + 1), which linear
    interpolation reproduces exactly: a correct resampling holds, at a voxel whose position falls inside the
    stack, that function of the fractional indices of the position (up to rounding to integers, 0.5). One unit
    of value is one column (0.9 mm); a wrong position by 1 mm along the slices shows as about 40.
    """
    r, c = np.asarray(iop[:3]), np.asarray(iop[3:])
    step = (positions[-1] - positions[0]) / (len(positions) - 1)
    lps = np.c_[r * SPACING[1], c * SPACING[0], step]
    inv = np.linalg.inv(lps)
    data = np.asarray(vol.data, dtype=float)
    worst, n = 0.0, 0
    for x, y, z in np.argwhere(np.ones(data.shape, dtype=bool)):
        w = (vol.affine @ np.array([x, y, z, 1.0]))[:3] * np.array([-1.0, -1.0, 1.0])  # RAS -> LPS
        i, j, k = inv @ (w - positions[0])
        if 0 <= i <= 7 and 0 <= j <= 7 and 0 <= k <= len(positions) - 1:
            worst = max(worst, abs(data[x, y, z] - (100 * k + 10 * j + i + 1)))
            n += 1
    return worst, n


def run_project(src: Path, out: Path) -> list[Path]:
    conv = dicom.convert(src, out)
    return list(conv.files.values())


def run_dicom2nifti(src: Path, out: Path) -> list[Path]:
    import dicom2nifti
    import dicom2nifti.settings as settings

    settings.disable_validate_slice_increment()  # as the project: geometry decides, not the tool's defaults
    out.mkdir(parents=True, exist_ok=True)
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):  # refusal tracebacks
        dicom2nifti.convert_directory(str(src), str(out), compression=True, reorient=False)
    return sorted(out.glob("*.nii*"))


def run_dicom2nifti_resampling(src: Path, out: Path) -> list[Path]:
    import dicom2nifti.settings as settings

    settings.enable_resampling()
    settings.set_resample_spline_interpolation_order(1)
    try:
        return run_dicom2nifti(src, out)
    finally:
        settings.disable_resampling()


def run_dcm2niix(src: Path, out: Path) -> list[Path]:
    exe = shutil.which("dcm2niix") or str(Path(sys.executable).parent / "dcm2niix")
    out.mkdir(parents=True, exist_ok=True)
    subprocess.run([exe, "-z", "y", "-b", "n", "-f", "%s_%d", "-o", str(out), str(src)], check=True,
                   capture_output=True, timeout=120)
    return sorted(out.glob("*.nii*"))


CANDIDATES: dict[str, Callable[[Path, Path], list[Path]]] = {
    "project (pydicom)": run_project, "dicom2nifti": run_dicom2nifti,
    "dicom2nifti resampling": run_dicom2nifti_resampling, "dcm2niix": run_dcm2niix,
}


def available(name: str) -> bool:
    if name.startswith("dicom2nifti"):
        try:
            import dicom2nifti  # noqa: F401
        except ImportError:
            return False
    if name == "dcm2niix":
        return bool(shutil.which("dcm2niix") or (Path(sys.executable).parent / "dcm2niix").exists())
    return True


def describe(paths: list[Path], iop, positions) -> str:
    if not paths:
        return "no output (refused)"
    parts = []
    for p in paths:
        try:
            vol = load_volume(p)
        except BratsViewerError as err:
            parts.append(f"{p.name}: does not load ({err})")
            continue
        err_mm = max_error_mm(vol, iop, positions)
        tag = "tilt-corrected file" if "Tilt" in p.name else "file"
        if err_mm is None:
            worst, n = resampled_value_error(vol, iop, positions)
            parts.append(f"{tag}: resampled; largest value error {worst:.2f} over {n} voxels inside the stack")
        else:
            parts.append(f"{tag}: max error {err_mm:.4f} mm")
    return "; ".join(parts)


def main() -> None:
    logging.disable(logging.CRITICAL)  # dicom2nifti logs its refusals with tracebacks on the root logger
    names = [n for n in CANDIDATES if available(n)]
    skipped = [n for n in CANDIDATES if n not in names]
    if skipped:
        print(f"not installed, skipped: {', '.join(skipped)}")
    with tempfile.TemporaryDirectory() as tmp:
        base = Path(tmp)
        print("Correctness: largest distance between an output voxel's position (output affine) and the DICOM "
              "position of the pixel it holds, over all voxels (8x8x6 series)")
        for case, kw in CASES.items():
            src = base / case.replace(" ", "_").replace("+", "p") / "dcm"
            _, _, positions = write_series(src, pixel_spacing=SPACING, slice_gap_mm=2.5, **kw)
            for name in names:
                out = src.parent / name.replace(" ", "_")
                try:
                    paths = CANDIDATES[name](src, out)
                    text = describe(paths, kw["iop"], positions)
                except Exception as err:  # each tool refuses in its own way
                    text = f"refused or failed: {type(err).__name__}: {str(err).splitlines()[0][:120]}"
                print(f"  {case:<15} {name:<24} {text}")
        print("Time: one 256x256x26 axial series (26 files), best of 3 runs")
        src = base / "big" / "dcm"
        write_series(src, rows=256, columns=256, n_slices=26, pixel_spacing=(0.9, 0.9), slice_gap_mm=5.5)
        for name in names:
            best = float("inf")
            for r in range(3):
                out = base / "big" / f"{name.replace(' ', '_')}{r}"
                t0 = time.perf_counter()
                CANDIDATES[name](src, out)
                best = min(best, time.perf_counter() - t0)
            print(f"  {name:<24} {best * 1000:8.1f} ms")


if __name__ == "__main__":
    main()
