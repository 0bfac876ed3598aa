"""Four real scanner series (``../shared/data/dicom``: GE, Philips, Siemens, Toshiba) converted by
``core.data.dicom`` match dcm2niix in world coordinates, voxel for voxel (skipped when the shared data is absent).

The reference figures below are dcm2niix's output for each series, made with
``dcm2niix -z y -b n -p n -f %s -o OUT ../shared/data/dicom/<series>`` (dcm2niix v1.0.20260724, the ``dcm2niix``
pip package). ``-p n``: Philips images scaled by the standard RescaleSlope/Intercept, as this converter does, not
by Philips' private "precise" scale (dcm2niix's default, a constant factor away). Kept per series: dcm2niix's
voxel-to-RAS affine (first three rows, mm), its array shape, the SHA-256 of its stored int16 voxels
(little-endian, C order) and its scl_slope. When a ``dcm2niix`` executable is at hand (on PATH or beside the
Python), the test also runs it and compares with its output directly.

How the comparison works: ``M = inv(A_dcm2niix) @ A_ours`` must be a signed permutation with an integer offset
(the two converters may store the axes in another order or direction); then every voxel of ours lies at the
world position of voxel ``M @ ijk`` of dcm2niix's, the affines agree there within ``TOL_MM``, and our voxels,
moved to dcm2niix's order (and divided by the scale), are its stored integers exactly.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from core.config import shared_data_dir
from core.data import dicom
from core.data.nibabel_import import nib

TOL_MM = 1e-3
_ROOT = shared_data_dir()
_DICOM = _ROOT / "dicom" if _ROOT is not None else None

# series: (dcm2niix affine rows 1-3, shape, SHA-256 of its int16 voxels, scl_slope)
REFERENCE: dict[str, tuple[tuple[tuple[float, ...], ...], tuple[int, int, int], str, float]] = {
    "ge_3d_ax_t1": (
        ((0.935635, -0.032066, 0.063559, -121.104950), (0.042376, 0.912942, -0.267413, -64.803146),
         (-0.041209, 0.210746, 1.168090, -120.415985)),
        (256, 256, 130), "9bcbc0292f5cde83e7c91cec810f643e42bcf37ad99d90583222e8982c9d407b", 1.0),
    "philips_oblique_dti_b0": (
        ((-2.999804, 0.033734, 0.005860, 120.578499), (0.034239, 2.952668, 0.529697, -103.225327),
         (-0.000189, -0.529730, 2.952860, -3.072304)),
        (80, 80, 40), "42bd80c593622d2800beed508daa891c0fde979ba480212434e231eb08a593eb", 1.08205128205128),
    "siemens_sag_fieldmap": (
        ((0.000000, 0.000000, 5.000000, -6.270688), (-4.375000, -0.000000, 0.000000, 98.774040),
         (0.000000, 4.375000, 0.000000, -78.311218)),
        (42, 64, 5), "228962517aaa7d4bb56b1f83fad13f8b98187a32548ed05d41680435570fbcb2", 1.0),
    "toshiba_tilted_dti_b0": (
        ((-3.000000, 0.000000, -0.000000, 96.000000), (0.000000, 2.598076, 1.500003, -91.208130),
         (0.000000, -1.500000, 2.598082, 21.723618)),
        (64, 64, 40), "df549a3f6dcc640c01f4b63c7435bb2d449dc37283a3af597fefbbf0d58452de", 1.0),
}


def _skip_reason(name: str) -> str | None:
    if _DICOM is None or not _DICOM.is_dir():
        return "../shared/data/dicom not found: set BRATS_SHARED_DATA or place shared/ beside the project"
    if not (_DICOM / name).is_dir():
        return f"../shared/data/dicom/{name} not found"
    return None


def _params() -> list:
    return [pytest.param(name, id=name, marks=[pytest.mark.shared]
                         + ([pytest.mark.skip(reason=why)] if (why := _skip_reason(name)) else []))
            for name in REFERENCE]


def _to_reference_grid(ours: np.ndarray, affine: np.ndarray, ref_affine: np.ndarray,
                       ref_shape: tuple[int, ...]) -> tuple[np.ndarray, float]:
    """Our voxels moved onto the reference's voxel order, and the largest affine disagreement (mm) there."""
    m = np.linalg.inv(ref_affine) @ affine
    m_int = np.round(m)
    assert np.abs(m - m_int).max() < 1e-3, f"not a permutation of the reference grid:\n{m}"
    assert sorted(np.abs(m_int[:3, :3]).sum(axis=0)) == [1, 1, 1]
    affine_diff_mm = float(np.abs(ref_affine @ m_int - affine).max())
    idx = np.indices(ours.shape).reshape(3, -1)
    ref_idx = (m_int[:3, :3] @ idx + m_int[:3, 3:4]).astype(int)
    assert all((ref_idx[a] >= 0).all() and (ref_idx[a] < ref_shape[a]).all() for a in range(3))
    moved = np.empty(ref_shape, dtype=np.float64)
    moved[tuple(ref_idx)] = ours.reshape(-1)
    return moved, affine_diff_mm


def _dcm2niix() -> str | None:
    beside = Path(sys.executable).parent / "dcm2niix"
    return shutil.which("dcm2niix") or (str(beside) if beside.is_file() and os.access(beside, os.X_OK) else None)


@pytest.mark.parametrize("name", _params())
def test_real_series_match_dcm2niix_in_world_coordinates(name: str, tmp_path: Path) -> None:
    rows, ref_shape, ref_sha, slope = REFERENCE[name]
    ref_affine = np.vstack([np.array(rows), [0, 0, 0, 1]])
    conv = dicom.convert(_DICOM / name, tmp_path / "out")  # type: ignore[operator]
    (path,) = conv.files.values()
    img = nib.load(path)
    ours = np.asarray(img.dataobj, dtype=np.float64)
    assert sorted(ours.shape) == sorted(ref_shape)
    moved, affine_diff_mm = _to_reference_grid(ours, img.affine, ref_affine, ref_shape)
    assert affine_diff_mm < TOL_MM
    stored = moved / slope
    assert np.abs(stored - np.round(stored)).max() < 1e-3  # only the scale separates the two
    digest = hashlib.sha256(np.round(stored).astype("<i2").tobytes()).hexdigest()
    assert digest == ref_sha, "voxels differ from dcm2niix's"
    (row,) = conv.listing["series"]
    assert row["status"] == "converted"

    exe = _dcm2niix()
    if exe is None:
        return
    out = tmp_path / "dcm2niix"
    out.mkdir()
    subprocess.run([exe, "-z", "y", "-b", "n", "-p", "n", "-f", "%s", "-o", str(out), str(_DICOM / name)],  # type: ignore[operator]
                   check=True, capture_output=True, timeout=60)
    (ref_path,) = out.glob("*.nii.gz")
    ref = nib.load(ref_path)
    live, diff = _to_reference_grid(ours, img.affine, ref.affine, ref.shape)
    assert diff < TOL_MM
    np.testing.assert_allclose(live, ref.get_fdata(), rtol=0, atol=1e-3 * max(1.0, slope))
