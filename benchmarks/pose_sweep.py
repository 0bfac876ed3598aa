"""Raw-study registration in any head pose, and the checks that refuse a wrong one.

Three parts (each optional):

- ``--sweep N``: the shared raw study (``../shared/data/raw/TCGA-FG-6692``) with its headers rewritten by a rotation
  (yaw, pitch, roll up to +-20 degrees) and a shift (up to +-30 mm) about the T1CE's centre, the voxels untouched;
  each posed copy goes through ``preprocess_study`` and its BraTS-space T1CE is correlated with the unmoved study's
  (over the unmoved brain mask). The first poses are the eight corners (+-20 degrees about every axis, +-30 mm along
  every axis), then seeded random poses. Prints per pose the correlation, the acceptance measures and the time,
  then the minimum correlation and how many were refused.
- ``--misreg``: deliberate misregistrations of the unmoved study's correct atlas transform (rotations of 10, 20 and
  30 degrees about each axis through the atlas's brain centre, shifts of 20, 30 and 40 mm along each axis), each
  scored by ``core.data.atlas_fit.fit_atlas`` as if the registration had found it. Prints hits (refused) and the
  refusal line of each; with ``--sweep``, false refusals are the correct runs refused.
- ``--brain-only CASE``: a brain-only study in scanner space made from a BraTS case (its four sequences resampled
  to 5 mm axial slices, their headers turned 9, -6 and 4 degrees and shifted), preprocessed; prints the path taken,
  the correlation of each BraTS-space sequence with the study resampled by the known true transform and with the 1
  mm original (capped by the 5 mm slices) and, with ``--segment``, WT/TC/ET Dice of ``python -m core segment``
  against the case's expert label. Use a case whose BraTS space is the atlas's (Brats18_2013_21_1: midline 0.3
  degrees from it; the BraTS 2021 cases here sit 1.5-7 degrees off it).

Usage::

    .venv/bin/python benchmarks/pose_sweep.py --sweep 24 --misreg [--brain-only Brats18_2013_21_1 --segment]
    .venv/bin/python benchmarks/pose_sweep.py --pose 5.0,5.5,-14.9,7.6,17.2,-29.6   # one pose (and the unmoved run)
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

PROJECT = Path(__file__).resolve().parent.parent
if str(PROJECT) not in sys.path:
    sys.path.insert(0, str(PROJECT))

import nibabel as nib  # noqa: E402
import numpy as np  # noqa: E402

from core import config  # noqa: E402

RAW_CASE = "TCGA-FG-6692"
CORNERS = [(y * 20.0, p * 20.0, r * 20.0, (y * 30.0, -p * 30.0, r * 30.0)) for y in (-1, 1) for p in (-1, 1)
           for r in (-1, 1)]
MIN_POSE_NCC = 0.90


def rotation_ras(yaw_deg: float, pitch_deg: float, roll_deg: float) -> np.ndarray:
    """3x3 rotation in RAS world: yaw about I-S (z), pitch about L-R (x), roll about A-P (y); yaw o pitch o roll."""
    y, p, r = np.deg2rad([yaw_deg, pitch_deg, roll_deg])
    rz = np.array([[np.cos(y), -np.sin(y), 0.0], [np.sin(y), np.cos(y), 0.0], [0.0, 0.0, 1.0]])
    rx = np.array([[1.0, 0.0, 0.0], [0.0, np.cos(p), -np.sin(p)], [0.0, np.sin(p), np.cos(p)]])
    ry = np.array([[np.cos(r), 0.0, np.sin(r)], [0.0, 1.0, 0.0], [-np.sin(r), 0.0, np.cos(r)]])
    return rz @ rx @ ry


def pose_matrix(centre_ras: np.ndarray, yaw_deg: float, pitch_deg: float, roll_deg: float,
                shift_mm: tuple[float, float, float]) -> np.ndarray:
    """4x4 world (RAS mm) motion: the rotation about ``centre_ras``, then the shift."""
    m = np.eye(4)
    m[:3, :3] = rotation_ras(yaw_deg, pitch_deg, roll_deg)
    m[:3, 3] = centre_ras - m[:3, :3] @ centre_ras + np.asarray(shift_mm, dtype=float)
    return m


def posed_study(files: dict[str, Path], out_dir: Path, yaw_deg: float, pitch_deg: float, roll_deg: float,
                shift_mm: tuple[float, float, float], reference: str = "t1ce") -> dict[str, Path]:
    """Copies of a study's series (sequence -> NIfTI) with every header moved by one world motion about the
    reference series' centre (voxels untouched; qform and sform both rewritten). Returns sequence -> new file."""
    out_dir.mkdir(parents=True, exist_ok=True)
    ref = nib.load(files[reference])
    centre = (ref.affine @ np.r_[(np.array(ref.shape[:3]) - 1) / 2.0, 1.0])[:3]
    motion = pose_matrix(centre, yaw_deg, pitch_deg, roll_deg, shift_mm)
    out = {}
    for seq, path in files.items():
        img = nib.load(path)
        affine = motion @ img.affine
        moved = nib.Nifti1Image(np.asanyarray(img.dataobj), affine, img.header)
        moved.set_qform(affine, code=1)
        moved.set_sform(affine, code=1)
        target = out_dir / f"posed_{seq}.nii.gz"
        nib.save(moved, target)
        out[seq] = target
    return out


def random_poses(n: int, seed: int = 18) -> list[tuple[float, float, float, tuple[float, float, float]]]:
    """The eight corners first, then seeded uniform poses (+-20 degrees, +-30 mm)."""
    rng = np.random.default_rng(seed)
    poses = list(CORNERS)
    while len(poses) < n:
        a = rng.uniform(-20.0, 20.0, 3)
        s = rng.uniform(-30.0, 30.0, 3)
        poses.append((float(a[0]), float(a[1]), float(a[2]), (float(s[0]), float(s[1]), float(s[2]))))
    return poses[:n]


def _shared() -> Path:
    path = config.shared_data_dir()
    if path is None or not (path / "raw" / RAW_CASE).is_dir():
        sys.exit("../shared/data/raw/TCGA-FG-6692 not found: set BRATS_SHARED_DATA")
    return path


def parse_pose(text: str) -> tuple[float, float, float, tuple[float, float, float]]:
    """``yaw,pitch,roll,dx,dy,dz`` (degrees, then mm) as a pose of ``posed_study``."""
    try:
        v = [float(t) for t in text.split(",")]
    except ValueError as err:
        raise argparse.ArgumentTypeError(f"expected six numbers yaw,pitch,roll,dx,dy,dz, got {text!r}") from err
    if len(v) != 6:
        raise argparse.ArgumentTypeError(f"expected six numbers yaw,pitch,roll,dx,dy,dz, got {len(v)}")
    return v[0], v[1], v[2], (v[3], v[4], v[5])


def sweep(poses: list[tuple[float, float, float, tuple[float, float, float]]], work: Path) -> tuple[list[dict], Path]:
    from core.data.io import load_volume
    from core.data.registration import ncc
    from core.data.study import find_series, preprocess_study
    from core.errors import RegistrationError

    files = find_series(_shared() / "raw" / RAW_CASE).series
    t0 = time.perf_counter()
    base = preprocess_study(files, work / "unmoved", RAW_CASE)
    base_s = time.perf_counter() - t0
    ref = load_volume(base.images["t1ce"]).data
    brain = load_volume(base.case_dir / "preprocessing" / "brain_mask.nii.gz").data > 0
    print(f"unmoved: {base_s:.1f} s, acceptance {json.dumps(base.record['acceptance']['measures'])}", flush=True)
    rows = [{"pose": "unmoved", "ncc": 1.0, "refused": None, "time_s": base_s, **base.record["acceptance"]["measures"]}]
    for i, (yaw, pitch, roll, shift) in enumerate(poses):
        posed = posed_study(files, work / f"pose{i}" / "in", yaw, pitch, roll, shift)
        t0 = time.perf_counter()
        row: dict = {"pose": f"yaw {yaw:+.1f} pitch {pitch:+.1f} roll {roll:+.1f} shift "
                             f"({shift[0]:+.0f}, {shift[1]:+.0f}, {shift[2]:+.0f}) mm"}
        try:
            res = preprocess_study(posed, work / f"pose{i}" / "out", RAW_CASE)
            row.update(res.record["acceptance"]["measures"])
            out = load_volume(res.images["t1ce"]).data
            posed_brain = load_volume(res.case_dir / "preprocessing" / "brain_mask.nii.gz").data > 0
            row["ncc"] = ncc(out, ref, brain)
            row["ncc_both"] = ncc(out, ref, brain & posed_brain)
            row["mask_dice_runs"] = 2 * np.count_nonzero(brain & posed_brain) / (brain.sum() + posed_brain.sum())
            row["refused"] = None
        except RegistrationError as err:
            row["ncc"] = float("nan")
            row["refused"] = str(err)
        row["time_s"] = time.perf_counter() - t0
        if row["refused"] is None:
            print(f"  stage times (s): {json.dumps(res.record['time_s'])}", flush=True)
        rows.append(row)
        print(f"{row['pose']}: ncc {row['ncc']:.3f} (inside both masks {row.get('ncc_both', np.nan):.3f}, mask Dice "
              f"with the unmoved {row.get('mask_dice_runs', np.nan):.3f}), {row['time_s']:.0f} s, "
              + (f"REFUSED: {row['refused']}" if row["refused"] else
                 "accepted " + json.dumps({k: round(row[k], 3) for k in ('atlas_ncc', 'midline_tilt_deg',
                                                                           'midline_offset_mm', 'symmetry',
                                                                           'mask_dice', 'pose_margin',
                                                                           'fine_pose_margin')})),
              flush=True)
    posed_rows = rows[1:]
    nccs = [r["ncc"] for r in posed_rows]
    refused = sum(r["refused"] is not None for r in posed_rows)
    both = [r.get("ncc_both", np.nan) for r in posed_rows]
    dices = [r.get("mask_dice_runs", np.nan) for r in posed_rows]
    print(f"\npose sweep: inside both brain masks min correlation {np.nanmin(both) if both else np.nan:.3f}, "
          f"min mask Dice with the unmoved {np.nanmin(dices) if dices else np.nan:.3f}")
    print(f"pose sweep: {len(posed_rows)} poses, min correlation with the unmoved T1CE (over its mask) "
          f"{np.nanmin(nccs) if posed_rows else float('nan'):.3f} (>= {MIN_POSE_NCC} required), "
          f"{sum(c < MIN_POSE_NCC for c in nccs if np.isfinite(c))} under it, {refused} refused, "
          f"median time {np.median([r['time_s'] for r in posed_rows]) if posed_rows else float('nan'):.1f} s")
    return rows, base.case_dir


def misregistrations() -> list[tuple[str, np.ndarray]]:
    """(name, 4x4 LPS motion about the origin-free centre placeholder) pairs; rotations use the axis index."""
    out = []
    for deg in (10.0, 20.0, 30.0):
        for axis, name in ((0, "pitch"), (1, "roll"), (2, "yaw")):
            out.append((f"{name} {deg:.0f} deg", np.array([axis, deg, 0.0])))
    for mm in (20.0, 30.0, 40.0):
        for axis, name in ((0, "L-R"), (1, "A-P"), (2, "I-S")):
            out.append((f"shift {name} {mm:.0f} mm", np.array([axis, 0.0, mm])))
    return out


def misreg(case_dir: Path | None, work: Path) -> tuple[int, int]:
    import SimpleITK as sitk

    from core.data.atlas_fit import atlas_reference, fit_atlas, refusal_line
    from core.data.io import load_volume
    from core.data.registration import chain, linear_transform, load_transform
    from core.data.study import find_series, load_atlas, preprocess_study

    files = find_series(_shared() / "raw" / RAW_CASE).series
    if case_dir is None:
        case_dir = preprocess_study(files, work / "unmoved", RAW_CASE).case_dir
    true = load_transform(case_dir / "preprocessing" / "atlas.tfm")
    ref = atlas_reference(load_atlas())
    t1ce = load_volume(files["t1ce"])
    hits = 0
    items = misregistrations()
    print(f"\nmisregistrations of the correct atlas transform ({len(items)}), scored by fit_atlas:")
    for name, (axis, deg, mm) in items:
        rot = sitk.Euler3DTransform()
        rot.SetCenter([float(v) for v in ref.centre])
        angles = [0.0, 0.0, 0.0]
        angles[int(axis)] = float(np.deg2rad(deg))
        rot.SetRotation(*angles)
        shift = [0.0, 0.0, 0.0]
        shift[int(axis)] = float(mm)
        rot.SetTranslation(shift)
        wrong = chain(linear_transform(_matrix(rot)), true)  # moved in BraTS space, then the correct map
        fit = fit_atlas(t1ce, ref, transform=wrong)
        line = refusal_line(fit.check, fit.path)
        hits += line is not None
        print(f"  {name}: {'REFUSED' if line else 'ACCEPTED (missed)'} "
              + json.dumps(fit.check.record()["measures"]) + (f"\n    {line}" if line else ""), flush=True)
    print(f"misregistration hits: {hits} of {len(items)} refused")
    return hits, len(items)


def _matrix(tx) -> np.ndarray:
    from core.data.registration import matrix_of

    return matrix_of(tx)


def brain_only(case: str, work: Path, segment: bool) -> None:
    from core.data.io import load_volume
    from core.data.registration import ncc
    from core.data.study import preprocess_study

    src = next((p for p in (_shared() / "brats").glob(f"*/{case}") if p.is_dir()), None)
    if src is None:
        sys.exit(f"BraTS case {case} not found under ../shared/data/brats")
    files = make_brain_only_study(src, work / "brain_only_in")
    t0 = time.perf_counter()
    res = preprocess_study(files, work / "brain_only_out", case)
    dt = time.perf_counter() - t0
    print(f"\nbrain-only study from {case} (5 mm slices, turned 9, -6, 4 deg, shifted): path "
          f"{res.record['input_path']}, {dt:.0f} s, acceptance {json.dumps(res.record['acceptance']['measures'])}")
    from core.data.registration import brats_volume, linear_transform, ras_array, resample, to_sitk

    brain = load_volume(src / f"{case}_t1ce.nii.gz").data != 0
    lps = np.diag([-1.0, -1.0, 1.0, 1.0])
    for seq in ("flair", "t1", "t1ce", "t2"):
        ours = load_volume(res.images[seq]).data
        original = nib.load(src / f"{case}_{seq}.nii.gz")
        thick = original.affine.copy()
        thick[:3, 2] *= 5.0
        motion = nib.load(files[seq]).affine @ np.linalg.inv(thick)
        truth = ras_array(resample(to_sitk(load_volume(files[seq])), to_sitk(brats_volume()),
                                   linear_transform(lps @ motion @ lps)))
        theirs = np.asanyarray(load_volume(src / f"{case}_{seq}.nii.gz").data)
        print(f"  {seq}: correlation in BraTS space with the study resampled by the true transform "
              f"{ncc(ours, truth, brain):.3f}; with the 1 mm original {ncc(ours, theirs, brain):.3f} "
              f"(ceiling from the 5 mm slices: {ncc(truth, theirs, brain):.3f})")
    if segment:
        out = work / "brain_only_seg"
        cmd = [sys.executable, "-m", "core", "segment", str(res.case_dir), "--out", str(out)]
        run = subprocess.run(cmd, capture_output=True, text=True, cwd=PROJECT, check=False)
        if run.returncode != 0:
            print(f"  segment failed: {run.stderr.strip()[-400:]}")
            return
        seg_path = Path(json.loads(run.stdout.strip().splitlines()[-1])["outputs"]["seg"])
        seg = load_volume(seg_path).data
        label = load_volume(src / f"{case}_seg.nii.gz").data
        for region, labels in (("WT", (1, 2, 4)), ("TC", (1, 4)), ("ET", (4,))):
            a, b = np.isin(seg, labels), np.isin(label, labels)
            d = 2 * np.count_nonzero(a & b) / max(1, np.count_nonzero(a) + np.count_nonzero(b))
            print(f"  {region} Dice vs the expert label: {d:.3f}")


def make_brain_only_study(case_dir: Path, out_dir: Path, angles_deg: tuple[float, float, float] = (9.0, -6.0, 4.0),
                          shift_mm: tuple[float, float, float] = (12.0, -8.0, 15.0),
                          slice_mm: float = 5.0) -> dict[str, Path]:
    """A BraTS case (brain-extracted, BraTS space) as a scanner would hand over its brain-extracted version: each
    sequence resampled (linear) to ``slice_mm`` axial slices of 1 x 1 mm, stored LAS, and its header turned by
    ``angles_deg`` (yaw, pitch, roll) about the brain's centre and shifted. Returns sequence -> file."""
    import SimpleITK as sitk

    out_dir.mkdir(parents=True, exist_ok=True)
    case = case_dir.name
    out = {}
    for seq in ("flair", "t1", "t1ce", "t2"):
        src = case_dir / f"{case}_{seq}.nii.gz"
        img = sitk.ReadImage(str(src), sitk.sitkFloat32)
        spacing = (1.0, 1.0, slice_mm)
        size = [img.GetSize()[0], img.GetSize()[1], int(round(img.GetSize()[2] / slice_mm))]
        thick = sitk.Resample(img, size, sitk.Transform(), sitk.sitkLinear, img.GetOrigin(), spacing,
                              img.GetDirection(), 0.0, sitk.sitkFloat32)
        tmp = out_dir / f"thick_{seq}.nii.gz"
        sitk.WriteImage(thick, str(tmp))
        nii = nib.load(tmp)
        data = np.rint(np.asanyarray(nii.dataobj)).astype(np.int16)
        centre = (nii.affine @ np.r_[(np.array(nii.shape[:3]) - 1) / 2.0, 1.0])[:3]
        affine = pose_matrix(centre, *angles_deg, shift_mm) @ nii.affine
        moved = nib.Nifti1Image(data, affine)
        moved.set_qform(affine, code=1)
        moved.set_sform(affine, code=1)
        target = out_dir / f"brain_{seq}.nii.gz"
        nib.save(moved, target)
        tmp.unlink()
        out[seq] = target
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sweep", type=int, default=0, metavar="N", help="poses to run (0: none)")
    parser.add_argument("--pose", type=parse_pose, action="append", default=None, metavar="Y,P,R,DX,DY,DZ",
                        help="run this pose (degrees yaw, pitch, roll; mm shift) instead of the sweep's; repeatable")
    parser.add_argument("--misreg", action="store_true", help="score deliberate misregistrations")
    parser.add_argument("--brain-only", default=None, metavar="CASE", help="BraTS case for the brain-only check")
    parser.add_argument("--segment", action="store_true", help="segment the brain-only study and score it")
    parser.add_argument("--calibrate", action="store_true",
                        help="refuse nothing (every threshold off), to see the measures of every run")
    parser.add_argument("--work", type=Path, default=None, help="working folder (default: a temporary one)")
    args = parser.parse_args()
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    if args.calibrate:
        from core.data import atlas_fit

        atlas_fit.MIN_ATLAS_NCC = atlas_fit.MIN_SYMMETRY = atlas_fit.MIN_MASK_DICE = -np.inf
        atlas_fit.MAX_MIDLINE_TILT_DEG = atlas_fit.MAX_MIDLINE_OFFSET_MM = np.inf
        atlas_fit.MIN_MASK_DICE_BRAIN_ONLY = atlas_fit.MIN_POSE_MARGIN = atlas_fit.MIN_FINE_POSE_MARGIN = -np.inf
    with tempfile.TemporaryDirectory() as tmp:
        work = args.work or Path(tmp)
        case_dir = None
        rows: list[dict] = []
        if args.sweep or args.pose:
            rows, case_dir = sweep(args.pose or random_poses(args.sweep), work)
        if args.misreg:
            hits, total = misreg(case_dir, work)
            if rows:
                false = sum(r["refused"] is not None for r in rows)
                print(f"acceptance: {hits}/{total} misregistrations refused, {false}/{len(rows)} correct runs "
                      "refused (false refusals)")
        if args.brain_only:
            brain_only(args.brain_only, work, args.segment)


if __name__ == "__main__":
    main()
