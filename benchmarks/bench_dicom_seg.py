"""DICOM SEG export (core.data.dicom_seg): time and exactness on series of clinical size, built in code.

For each series (0.9 x 0.9 x 5.5 mm, 26 slices, as the raw TCGA case's axial series: axial 256 and 512 matrices, a
double-oblique 256 matrix with a 10 degree gantry tilt), three ellipsoids labelled NCR, edema and ET are drawn on the
series' own voxels, carried onto the case's RAS grid (``dicom.series_volume``), exported, and the SEG read back
with highdicom: the decoded masks must equal the drawn ones voxel for voxel. Prints the time to read the headers,
to build and encode the SEG, its size, and the mismatching voxels (0 expected).

    .venv/bin/python benchmarks/bench_dicom_seg.py
"""

from __future__ import annotations

import io
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

import highdicom as hd  # noqa: E402  (imported before timing: its import is not the export)
from dicom_factory import AXIAL, oblique_iop, write_series  # noqa: E402

from core.data import dicom, dicom_seg  # noqa: E402


def drawn_labels(shape: tuple[int, int, int], spacing_mm: tuple[float, float, float]) -> np.ndarray:
    """Edema ellipsoid (radius 30 mm) holding an ET shell (radius 18 mm) around an NCR core (radius 10 mm)."""
    idx = np.indices(shape).astype(float)
    centre = [s / 2 for s in shape]
    r = np.sqrt(sum(((idx[a] - centre[a]) * spacing_mm[a]) ** 2 for a in range(3)))
    out = np.zeros(shape, np.uint8)
    out[r < 30] = 2
    out[r < 18] = 4
    out[r < 10] = 1
    return out


def run(name: str, **geometry: object) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        folder, _, _ = write_series(Path(tmp), n_slices=26, slice_gap_mm=5.5, pixel_spacing=(0.9, 0.9),
                                    reverse_files=False, **geometry)  # type: ignore[arg-type]
        study = dicom.read_study(folder)
        s = study.series[0]
        vol = dicom.series_volume(s, "t1ce")
        src = drawn_labels(s.shape, s.spacing_mm)  # type: ignore[arg-type]
        # the drawn labels onto the RAS grid: the inverse of Volume.to_original, checked by the round trip
        from nibabel import orientations as ornt

        to_ras = ornt.ornt_transform(ornt.io_orientation(vol.original_affine), [[0, 1], [1, 1], [2, 1]])
        ras = np.ascontiguousarray(ornt.apply_orientation(src, to_ras))
        if not np.array_equal(vol.to_original(ras), src):
            raise SystemExit("the labels did not reach the RAS grid")
        t0 = time.perf_counter()
        series, same = dicom_seg.read_source_series(folder, match=vol)
        t1 = time.perf_counter()
        blob, info = dicom_seg.seg_bytes(series, ras, vol.affine)
        t2 = time.perf_counter()
        seg = hd.seg.segread(io.BytesIO(blob))
        px = seg.get_pixels_by_source_instance(list(series.sop_instance_uids), segment_numbers=[1, 2, 3])
        wrong = sum(int((px[..., n].astype(bool) != (src == lab).transpose(2, 1, 0)).sum())
                    for n, lab in enumerate((1, 2, 4)))
        print(f"{name:<32} {'x'.join(map(str, s.shape)):>11}  headers {1000 * (t1 - t0):6.0f} ms  "
              f"SEG {1000 * (t2 - t1):6.0f} ms  {len(blob) / 1024:7.0f} KiB  frames {info.frames:3d}  "
              f"exact {info.exact and same}  mismatching voxels {wrong}")


if __name__ == "__main__":
    run("axial 0.9x0.9x5.5 mm", rows=256, columns=256, iop=AXIAL)
    run("axial 0.9x0.9x5.5 mm, 512 matrix", rows=512, columns=512, iop=AXIAL)
    run("double oblique, 10 deg tilt", rows=256, columns=256, iop=oblique_iop(), tilt_deg=10.0)
