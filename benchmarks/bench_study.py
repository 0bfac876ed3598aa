"""Raw-study preprocessing against BraTS's own pipeline (BrainLes) on the same patient.

Runs ``core.data.study.preprocess_study`` on ``../shared/data/raw/TCGA-FG-6692`` and compares the result with
``../shared/data/brats/extra/TCIA-example`` (that study after BrainLes). Prints:

- the wall time of each step;
- brain-mask Dice with TCIA-example's brain (its nonzero voxels);
- per sequence, the normalised cross-correlation (NCC) with TCIA-example's image over the voxels both call brain;
- the residual misalignment with TCIA-example: our T1CE rigidly registered onto theirs, the mean and maximum
  displacement (mm) of that residual transform over their brain (0 = the same alignment);
- the alignment measures behind the "did not converge" refusals, at the registration found and after a
  deliberate misalignment (10 degrees about each axis and 15 mm along each), to show the thresholds separate them;
- with ``--segment``: ``python -m core segment`` on the preprocessed case and ``python -m core evaluate``
  against TCIA-example's pseudo-label (WT/TC/ET Dice), and the labels written back in native space;
- with ``--ants`` (needs ``antspyx`` installed, not a project dependency): the same two registrations
  (co-registration and atlas, rigid, Mattes MI) with ANTsPy, timed, and their NCC/residual for comparison.

Usage::

    .venv/bin/python benchmarks/bench_study.py [--out DIR] [--deformable] [--existing CASE_DIR] [--segment] [--ants]
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

import numpy as np  # noqa: E402
import SimpleITK as sitk  # noqa: E402

from core import config  # noqa: E402
from core.data.io import load_volume  # noqa: E402
from core.data.registration import (  # noqa: E402
    brats_volume,
    foreground_mask,
    image_centre,
    matrix_of,
    ncc,
    normalised_mi,
    register_rigid,
    resample,
    to_sitk,
)
from core.data.study import (  # noqa: E402
    MIN_ATLAS_NCC,
    MIN_COREG_NMI,
    REFERENCE,
    StudyResult,
    find_series,
    load_atlas,
    load_record,
    native_transforms,
    preprocess_study,
)

SEQS = ("flair", "t1", "t1ce", "t2")


def _shared() -> Path:
    path = config.shared_data_dir()
    if path is None or not path.is_dir():
        sys.exit("../shared/data not found: set BRATS_SHARED_DATA")
    return path


def residual_mm(ours: sitk.Image, theirs: sitk.Image, brain: np.ndarray) -> tuple[float, float]:
    """Mean and max displacement (mm) over ``brain`` (bool, ITK array order z, y, x) of the rigid transform that
    best maps ``ours`` onto ``theirs`` (both on the BraTS grid)."""
    mask = sitk.GetImageFromArray(brain.astype(np.uint8))
    mask.CopyInformation(theirs)
    reg = register_rigid(theirs, ours, fixed_mask=mask, shrink=(2, 1), sigmas_mm=(1.0, 0.0), sampling=0.2,
                         iterations=200, learning_rate=0.5)
    m = matrix_of(reg.transform)
    idx = np.argwhere(brain)[::50][:, ::-1].astype(float)  # x, y, z indices
    pts = np.array([theirs.TransformContinuousIndexToPhysicalPoint(p.tolist()) for p in idx])
    moved = pts @ m[:3, :3].T + m[:3, 3]
    d = np.linalg.norm(moved - pts, axis=1)
    return float(d.mean()), float(d.max())


def perturbation() -> sitk.Euler3DTransform:
    tx = sitk.Euler3DTransform()
    tx.SetRotation(*np.deg2rad([10.0, 10.0, 10.0]))
    tx.SetTranslation((15.0, 15.0, 15.0))
    return tx


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=Path, default=None, help="output folder (default: a temporary one)")
    parser.add_argument("--deformable", action="store_true", help="brain extraction with the B-spline stage")
    parser.add_argument("--existing", type=Path, default=None, metavar="CASE_DIR",
                        help="measure a case folder already written by preprocess instead of running it")
    parser.add_argument("--segment", action="store_true", help="also segment and score against the pseudo-label")
    parser.add_argument("--ants", action="store_true", help="also time the registrations with ANTsPy")
    args = parser.parse_args()
    shared = _shared()
    raw = shared / "raw" / "TCGA-FG-6692"
    ref_dir = shared / "brats" / "extra" / "TCIA-example"
    out = args.out or Path(tempfile.mkdtemp(prefix="bench_study_"))
    print(f"machine: {os.cpu_count()} CPUs, SimpleITK {sitk.Version.VersionString()}, "
          f"ITK threads {sitk.ProcessObject.GetGlobalDefaultNumberOfThreads()}")

    files = find_series(raw)
    if args.existing is not None:
        record = load_record(args.existing)
        result = StudyResult(record["case_id"], args.existing,
                             {s: args.existing / n for s, n in record["outputs"].items()}, record)
        print(f"\nexisting preprocessed case {args.existing}")
    else:
        t0 = time.perf_counter()
        result = preprocess_study(files.series, out, "TCGA-FG-6692", deformable=args.deformable)
        print(f"\npreprocess (B-spline brain fit: {args.deformable}): {time.perf_counter() - t0:.1f} s wall")
    for k, v in result.record["time_s"].items():
        print(f"  {k:22s} {v:7.2f} s")

    theirs = {s: load_volume(ref_dir / f"TCIA-example_{s}.nii.gz") for s in SEQS}
    ours = {s: load_volume(result.images[s]) for s in SEQS}
    brain_ref = theirs["t1ce"].data != 0
    mask_ours = load_volume(result.case_dir / "preprocessing" / "brain_mask.nii.gz").data > 0
    dice = 2.0 * np.count_nonzero(brain_ref & mask_ours) / (np.count_nonzero(brain_ref) + np.count_nonzero(mask_ours))
    print(f"\nbrain mask: Dice with TCIA-example's brain {dice:.4f} (ours {mask_ours.sum() / 1000:.0f} mL, "
          f"theirs {brain_ref.sum() / 1000:.0f} mL)")
    both = brain_ref & mask_ours
    print("NCC with TCIA-example over both brains (and over theirs):")
    for s in SEQS:
        print(f"  {s:6s} {ncc(ours[s].data, theirs[s].data, both):.4f}  ({ncc(ours[s].data, theirs[s].data, brain_ref):.4f})")
    brain_itk = np.transpose(brain_ref, (2, 1, 0))
    print("residual misalignment with TCIA-example (rigid fit of ours onto theirs, over their brain):")
    for s in SEQS:
        mean_mm, max_mm = residual_mm(to_sitk(ours[s]), to_sitk(theirs[s]), brain_itk)
        print(f"  {s:6s} mean {mean_mm:5.2f} mm, max {max_mm:5.2f} mm")

    # Thresholds: the measures at the registration found and after a deliberate misalignment.
    vols = {s: load_volume(p) for s, p in files.series.items()}
    imgs = {s: to_sitk(v) for s, v in vols.items()}
    fixed = imgs[REFERENCE]
    head = sitk.GetArrayFromImage(foreground_mask(fixed)) > 0
    tx = native_transforms(result.case_dir)
    print(f"\nco-registration NMI (threshold {MIN_COREG_NMI}): found / header only / misaligned")
    from core.data.registration import load_transform

    for s in SEQS:
        if s == REFERENCE:
            continue
        coreg = load_transform(result.case_dir / "preprocessing" / f"coreg_{s}.tfm")
        pert = perturbation()
        pert.SetCenter(image_centre(fixed))
        bad = sitk.CompositeTransform([coreg, pert])
        vals = [normalised_mi(sitk.GetArrayFromImage(fixed), sitk.GetArrayFromImage(resample(imgs[s], fixed, t)), head)
                for t in (coreg, sitk.Transform(), bad)]
        print(f"  {s:6s} " + " / ".join(f"{v:.4f}" for v in vals))
    atlas = to_sitk(load_atlas())
    grid = to_sitk(brats_volume())
    from core.data.brainmask import atlas_brain_mask

    core_mask = sitk.GetArrayFromImage(resample(sitk.BinaryErode(atlas_brain_mask(atlas), [3, 3, 3]), grid,
                                                sitk.Transform(), nearest=True)) > 0
    atlas_arr = sitk.GetArrayFromImage(resample(atlas, grid, sitk.Transform()))
    pert = perturbation()
    pert.SetCenter(image_centre(grid))
    for name, t in (("found", tx[REFERENCE]), ("misaligned", sitk.CompositeTransform([tx[REFERENCE], pert]))):
        v = ncc(sitk.GetArrayFromImage(resample(fixed, grid, t)), atlas_arr, core_mask)
        print(f"atlas NCC (threshold {MIN_ATLAS_NCC}) {name}: {v:.4f}")

    if args.segment:
        for name, case, extra in (("our preprocessing of the raw study", result.case_dir,
                                   ["--native-study", str(result.case_dir)]),
                                  ("BrainLes's (TCIA-example as shipped)", ref_dir, [])):
            segment_and_score(name, case, out / f"seg_{case.name}", extra, ref_dir / "TCIA-example_seg.nii.gz")

    if args.ants:
        bench_ants(files.series, theirs, brain_ref, mask_ours)


def segment_and_score(name: str, case: Path, out: Path, extra: list[str], gt: Path) -> None:
    """``python -m core segment`` (shipped model) on a case, then ``evaluate`` against the pseudo-label."""
    cmd = [sys.executable, "-m", "core", "segment", str(case), "--out", str(out), *extra]
    t1 = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=PROJECT, check=False)
    print(f"\nsegment, {name}: exit {proc.returncode} in {time.perf_counter() - t1:.1f} s")
    if proc.returncode != 0:
        print(proc.stderr[-2000:])
        return
    line = json.loads(proc.stdout.strip().splitlines()[-1])
    print("  volumes_ml", line.get("volumes_ml"), "quality", line.get("quality"),
          "native outputs:", sorted(k for k in line["outputs"] if k.startswith("native")))
    ev = subprocess.run([sys.executable, "-m", "core", "evaluate", "--pred", line["outputs"]["seg"], "--gt", str(gt)],
                        capture_output=True, text=True, cwd=PROJECT, check=False)
    if ev.returncode != 0:
        print("  evaluate failed:", ev.stderr[-500:])
        return
    res = json.loads(ev.stdout)
    regions = res.get("regions", res)
    for r in ("WT", "TC", "ET"):
        if r in regions and isinstance(regions[r], dict):
            d, h = regions[r].get("dice"), regions[r].get("hd95_mm")
            print(f"  {r} Dice vs pseudo-label {d:.3f}, HD95 {h:.1f} mm")


def bench_ants(series: dict[str, Path], theirs: dict, brain_ref: np.ndarray, mask_ours: np.ndarray) -> None:
    """The same rigid registrations with ANTsPy (Mattes MI), timed; NCC with TCIA-example over both brains."""
    try:
        import ants  # type: ignore[import-not-found]
    except ImportError:
        print("\nANTsPy not installed (pip install antspyx): skipped")
        return
    print(f"\nANTsPy {ants.__version__}")
    atlas = ants.image_read(str(PROJECT / "assets" / "atlas" / "t1_skullstripped_brats_space.nii.gz"))
    if atlas.dimension == 4:
        atlas = ants.slice_image(atlas, axis=3, idx=0)
    fixed = ants.image_read(str(series[REFERENCE]))
    t0 = time.perf_counter()
    coreg = {}
    for s in SEQS:
        if s == REFERENCE:
            continue
        t1 = time.perf_counter()
        r = ants.registration(fixed, ants.image_read(str(series[s])), type_of_transform="Rigid",
                              aff_metric="mattes")
        coreg[s] = r["fwdtransforms"]
        print(f"  co-registration {s}: {time.perf_counter() - t1:.1f} s")
    t1 = time.perf_counter()
    r = ants.registration(atlas, fixed, type_of_transform="Rigid", aff_metric="mattes")
    print(f"  atlas registration: {time.perf_counter() - t1:.1f} s; total registration {time.perf_counter() - t0:.1f} s")
    grid = ants.image_read(str(config.shared_data_dir() / "brats" / "extra" / "TCIA-example" / "TCIA-example_t1ce.nii.gz"))
    both = brain_ref & mask_ours
    for s in SEQS:
        # ANTsPy's transformlist: the atlas transform (BraTS -> T1CE) first, then the co-registration (T1CE -> series)
        tx = r["fwdtransforms"] + (coreg[s] if s in coreg else [])
        out = ants.apply_transforms(grid, ants.image_read(str(series[s])), transformlist=tx, interpolator="linear")
        arr = np.asarray(load_like(out))
        ours = theirs[s].with_data(arr)
        mean_mm, max_mm = residual_mm(to_sitk(ours), to_sitk(theirs[s]), np.transpose(brain_ref, (2, 1, 0)))
        print(f"  {s:6s} NCC with TCIA-example over both brains {ncc(arr, theirs[s].data, both):.4f}; residual "
              f"misalignment mean {mean_mm:.2f} mm, max {max_mm:.2f} mm")


def load_like(image) -> np.ndarray:  # noqa: ANN001
    """An ANTs image on the BraTS grid as a RAS array like ``core.data.io`` gives (via a temporary file)."""
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "x.nii.gz"
        image.to_file(str(path))
        return load_volume(path).data


if __name__ == "__main__":
    main()
