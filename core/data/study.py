"""A raw clinical study (one NIfTI per sequence, each on its own grid, skull on, scanner orientation) to BraTS
space and back.

Steps (BrainLes's order): every sequence is co-registered to the T1CE (rigid, Mattes mutual information); the
T1CE is registered to the SRI24 atlas in whatever pose the head lies (``core.data.atlas_fit``: a pose search, a
rigid fit, the brain mask, and checks that refuse a wrong answer in one line); each sequence is resampled once (one
composed transform, linear interpolation) onto the BraTS grid (240 x 240 x 155, 1 mm, stored LPS) and masked by
the brain (the atlas's brain mask warped onto a head, or a brain-extracted study's own brain). Every
transform is kept, so a segmentation made in BraTS space is written back onto each original series' own grid
(``write_native_labels``, nearest neighbour).

Output layout, for ``out_dir/<case>/``: ``<case>_{flair,t1,t1ce,t2}.nii.gz`` (what ``python -m core segment``
reads as is) and ``preprocessing/``: ``study.json`` (steps, measures, times, the original grids),
``coreg_<seq>.tfm`` (T1CE points -> that series' points), ``atlas.tfm`` (BraTS points -> T1CE points),
``brain_mask.nii.gz``. Transforms are ITK text files (LPS millimetres).

A study already in BraTS space (every series 240 x 240 x 155 at 1 mm on one grid, brain-extracted) is copied
through untouched, byte for byte.
"""

from __future__ import annotations

import json
import re
import shutil
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import SimpleITK as sitk

from core.config import DISCLAIMER, MODALITIES, MODALITY_TITLES, PROJECT_ROOT
from core.data.atlas_fit import MIN_ATLAS_NCC as MIN_ATLAS_NCC  # re-exported: benchmarks/bench_study.py
from core.data.atlas_fit import atlas_reference, fit_atlas, refusal_line
from core.data.io import Volume, atomic_write_bytes, load_volume, save_like
from core.data.registration import (
    BRATS_SHAPE,
    ProgressFn,
    brats_volume,
    chain,
    foreground_mask,
    grid_volume,
    inverse,
    load_transform,
    normalised_mi,
    ras_array,
    register_rigid,
    resample,
    save_transform,
    to_sitk,
    winsorize,
)
from core.errors import RegistrationError, StudyError

ATLAS_DIR: Path = PROJECT_ROOT / "assets" / "atlas"
ATLAS_FILE: Path = ATLAS_DIR / "t1_skullstripped_brats_space.nii.gz"
REFERENCE = "t1ce"
RECORD_DIR = "preprocessing"
RECORD_FILE = "study.json"
RECORD_VERSION = 1
# A series with fewer slices than this along any axis is a localiser / scout, not a volume to register.
MIN_SLICES = 10
# Alignment measures below these mean a registration did not converge. Set from benchmarks/bench_study.py on the raw
# check case: normalised MI over the T1CE's head 1.032-1.086 after co-registration (1.017-1.037 from the headers
# alone) and 1.013-1.015 after a deliberate 10 degree + 15 mm misalignment. The atlas registration's acceptance
# (MIN_ATLAS_NCC and the others) lives in core.data.atlas_fit.
MIN_COREG_NMI = 1.02
# Brain-extracted: at least this fraction of the grid is exactly zero.
MIN_ZERO_FRACTION = 0.5

# Name tokens -> sequence, beyond what ``guess_modality`` knows (converter suffixes, vendor words).
_FLAIR_TOKENS = frozenset({"flair", "fla", "t2f", "t2flair", "darkfluid", "tirm"})
_T1CE_TOKENS = frozenset({"t1c", "t1ce", "t1gd", "t1post", "t1wce", "t1cgd", "mprage_gd"})
_CONTRAST_TOKENS = frozenset({"gd", "gad", "post", "contrast", "ce", "c"})
_T2_TOKENS = frozenset({"t2", "t2w", "tse"})
_T1_TOKENS = frozenset({"t1", "t1w", "t1n", "mprage", "spgr"})
_NIFTI = re.compile(r"\.nii(\.gz)?$", re.IGNORECASE)
_SAFE = re.compile(r"[^A-Za-z0-9_.-]")


# ------------------------------------------------------------------------------------------- discovery ---

def guess_sequence(file_name: str) -> str | None:
    """The sequence (flair, t1, t1ce, t2) a file name suggests, or None.

    Tokens split on anything not a letter or digit; the last telling token wins (converters append the
    sequence: ``..._fla.nii.gz``, ``..._t1c.nii.gz``), and ``T1 ... POST GAD`` is T1CE.
    """
    base = re.split(r"[\\/]", file_name)[-1]
    stem = _NIFTI.sub("", base).lower()
    tokens = [t for t in re.split(r"[^a-z0-9]+", stem) if t]
    for i in range(len(tokens) - 1, -1, -1):
        tok = tokens[i]
        if tok in _FLAIR_TOKENS:
            return "flair"
        if tok in _T1CE_TOKENS:
            return "t1ce"
        if tok in _CONTRAST_TOKENS and any(t in _T1_TOKENS for t in tokens[:i]):
            return "t1ce"
        if tok in _T2_TOKENS:
            return "flair" if any(t in _FLAIR_TOKENS for t in tokens) else "t2"
        if tok in _T1_TOKENS:
            return "t1ce" if any(t in _CONTRAST_TOKENS for t in tokens[i + 1:]) else "t1"
    return None


@dataclass(frozen=True)
class StudyFiles:
    """The series of a study by sequence, and the NIfTI files that were not taken (with why)."""

    series: dict[str, Path]
    ignored: dict[str, str]


def find_series(study: str | Path | None, explicit: Mapping[str, str | Path | None] | None = None) -> StudyFiles:
    """The NIfTI file of each sequence: named by ``explicit`` (sequence -> path), else guessed from the names
    of the files in the ``study`` folder.

    Raises:
        StudyError: two files guess the same sequence (name them with the flags), or an explicit file is missing.
        FileNotFoundError / NotADirectoryError: ``study`` is not a folder.
    """
    chosen: dict[str, Path] = {}
    for seq, path in (explicit or {}).items():
        if path is None:
            continue
        if seq not in MODALITIES:
            raise StudyError(f"expected a sequence among {', '.join(MODALITIES)}, got {seq!r}")
        p = Path(path)
        if not p.is_file():
            raise StudyError(f"expected the {MODALITY_TITLES[seq]} file {p.name!r} to exist, found none")
        chosen[seq] = p
    ignored: dict[str, str] = {}
    if study is not None:
        folder = Path(study)
        if not folder.exists():
            raise FileNotFoundError(f"study folder {str(folder)!r} does not exist")
        if not folder.is_dir():
            raise NotADirectoryError(f"expected a study folder, got {str(folder)!r} which is not a folder")
        guessed: dict[str, list[Path]] = {}
        taken = {p.resolve() for p in chosen.values()}
        for path in sorted(folder.iterdir()):
            if not path.is_file() or not _NIFTI.search(path.name) or path.resolve() in taken:
                continue
            guess = guess_sequence(path.name)
            if guess is None:
                ignored[path.name] = "no sequence guessed from the name"
            elif guess in chosen:
                ignored[path.name] = f"{MODALITY_TITLES[guess]} named explicitly"
            else:
                guessed.setdefault(guess, []).append(path)
        for seq, paths in guessed.items():
            if len(paths) > 1:
                names = ", ".join(repr(p.name) for p in paths)
                raise StudyError(f"expected one {MODALITY_TITLES[seq]} file in the study, got {len(paths)} ({names}): "
                                 f"name it with --{seq}")
            chosen[seq] = paths[0]
    return StudyFiles({s: chosen[s] for s in MODALITIES if s in chosen}, ignored)


def check_series(volume: Volume, seq: str) -> None:
    """Refuse what is no 3-D volume: a 2-D localiser (or a slab of a few slices).

    Raises:
        StudyError: fewer than ``MIN_SLICES`` voxels along an axis.
    """
    if min(volume.original_shape) < MIN_SLICES:
        raise StudyError(f"{MODALITY_TITLES[seq]} ({volume.source_name}): expected a 3-D series of at least "
                         f"{MIN_SLICES} slices, got shape {volume.original_shape}: a 2-D localiser or scout?")


def is_brats_ready(volumes: Mapping[str, Volume]) -> bool:
    """Whether every series is already in BraTS space: 240 x 240 x 155 voxels of 1 mm, one grid for all, and
    brain-extracted (at least half the grid exactly zero, the corners zero)."""
    if not volumes:
        return False
    ref = next(iter(volumes.values()))
    for vol in volumes.values():
        if vol.original_shape != BRATS_SHAPE or not np.allclose(vol.spacing_mm, 1.0, atol=1e-3):
            return False
        if not np.allclose(vol.affine, ref.affine, atol=1e-3):
            return False
        data = vol.data
        if np.count_nonzero(data) > (1.0 - MIN_ZERO_FRACTION) * data.size:
            return False
        if any(data[i, j, k] != 0 for i in (0, -1) for j in (0, -1) for k in (0, -1)):
            return False
    return True


def safe_case_id(text: str) -> str:
    """A file-name-safe case id (letters, digits, ``_.-``)."""
    return _SAFE.sub("_", text).strip("._") or "case"


# ------------------------------------------------------------------------------------------- preprocessing ---

@dataclass(frozen=True)
class StudyResult:
    """Where a preprocessed study went: the case folder, its images by sequence, and the record (study.json)."""

    case_id: str
    case_dir: Path
    images: dict[str, Path]
    record: dict[str, Any]


def load_atlas() -> Volume:
    """The shipped SRI24 T1 atlas (skull-stripped, in BraTS space)."""
    if not ATLAS_FILE.is_file():
        raise StudyError(f"expected the atlas at {ATLAS_FILE.relative_to(PROJECT_ROOT)}, found none")
    return load_volume(ATLAS_FILE)


def _stage(progress: ProgressFn | None, lo: float, hi: float) -> ProgressFn | None:
    if progress is None:
        return None
    return lambda f, msg: progress(lo + (hi - lo) * max(0.0, min(1.0, f)), msg)


def _report(progress: ProgressFn | None, fraction: float, message: str) -> None:
    if progress is not None:
        progress(fraction, message)


def _grid_record(vol: Volume, path: Path) -> dict[str, Any]:
    return {"file": path.name, "sha256": vol.sha256, "shape": list(vol.original_shape),
            "spacing_mm": [round(float(s), 4) for s in vol.spacing_mm], "axcodes": "".join(vol.original_axcodes),
            "affine": np.asarray(vol.original_affine, dtype=float).round(6).tolist()}


def _to_disk_dtype(array: np.ndarray, stored_dtype: str) -> tuple[np.ndarray, type]:
    """Integer-stored sources stay integers (int16, rounded, clipped); anything else float32."""
    if stored_dtype.startswith(("int", "uint")):
        info = np.iinfo(np.int16)
        return np.clip(np.rint(array), info.min, info.max).astype(np.int16), np.int16
    return array.astype(np.float32), np.float32


def preprocess_study(series: Mapping[str, str | Path], out_dir: str | Path, case_id: str, *,
                     ignored: Mapping[str, str] | None = None, deformable: bool = False,
                     progress: ProgressFn | None = None) -> StudyResult:
    """Bring a raw study to BraTS space and write it as a BraTS case, with every transform.

    Args:
        series: sequence key (flair, t1, t1ce, t2) -> NIfTI file. T1CE and at least one other are required.
        out_dir: the case folder ``out_dir/<case_id>/`` is created (or overwritten) there.
        case_id: the case id (made file-name-safe).
        ignored: files of the study folder not taken, with why (recorded only).
        deformable: refine the brain mask with a B-spline stage after the affine atlas fit (off by default: on the
            raw check case it took 50 s more for a brain Dice of 0.940 instead of 0.942; docs/raw-studies-and-dicom.md).
        progress: called with (fraction in [0, 1], message) through every step.

    Returns:
        A ``StudyResult``.

    Raises:
        StudyError: a required sequence missing, a 2-D localiser among the series.
        RegistrationError: a co-registration that did not converge (its alignment measure under the threshold), or
            an atlas registration refused by its checks (``core.data.atlas_fit.refusal_line``: one line).
        ImageFormatError, ImageContentError, ImageSizeError: an unreadable series.
    """
    t_start = time.perf_counter()
    case_id = safe_case_id(case_id)
    if REFERENCE not in series:
        found = ", ".join(MODALITY_TITLES[s] for s in series) or "none"
        raise StudyError(f"expected a {MODALITY_TITLES[REFERENCE]} series (the registration reference), "
                         f"found {found}")
    if len(series) < 2:
        raise StudyError("expected the T1CE and at least one other sequence (FLAIR, T1 or T2), got the T1CE alone")
    times: dict[str, float] = {}
    _report(progress, 0.0, "loading the series")
    t0 = time.perf_counter()
    paths = {s: Path(p) for s, p in series.items()}
    vols: dict[str, Volume] = {}
    for seq in MODALITIES:
        if seq in paths:
            vol = load_volume(paths[seq])
            check_series(vol, seq)
            vols[seq] = vol
    times["load"] = time.perf_counter() - t0
    case_dir = Path(out_dir) / case_id
    record_dir = case_dir / RECORD_DIR
    record: dict[str, Any] = {
        "version": RECORD_VERSION, "case_id": case_id, "reference": REFERENCE, "disclaimer": DISCLAIMER,
        "series": {s: _grid_record(v, paths[s]) for s, v in vols.items()},
        "missing": [s for s in MODALITIES if s not in vols],
        "ignored": dict(ignored or {}),
    }
    if is_brats_ready(vols):
        return _pass_through(vols, paths, case_dir, record, times, t_start, progress)

    record["passthrough"] = False
    images = {s: to_sitk(v) for s, v in vols.items()}  # resampled for the outputs
    for_reg = {s: to_sitk(v, winsorize(v.data)) for s, v in vols.items()}  # registered (bright outliers clipped)
    fixed = for_reg[REFERENCE]
    fixed_head = foreground_mask(images[REFERENCE])
    fixed_head_arr = sitk.GetArrayFromImage(fixed_head) > 0
    steps: list[dict[str, Any]] = []
    coreg: dict[str, sitk.Transform] = {}
    others = [s for s in vols if s != REFERENCE]
    for n, seq in enumerate(others):
        what = f"co-registration {MODALITY_TITLES[seq]} -> {MODALITY_TITLES[REFERENCE]}"
        _report(progress, 0.05 + 0.3 * n / len(others), what)
        reg = register_rigid(fixed, for_reg[seq], shrink=(2, 1), sigmas_mm=(1.0, 0.0), sampling=0.1,
                             iterations=100, what=what,
                             progress=_stage(progress, 0.05 + 0.3 * n / len(others),
                                             0.05 + 0.3 * (n + 1) / len(others)))
        fixed_arr = sitk.GetArrayFromImage(images[REFERENCE])  # measured on the intensities as stored
        before = normalised_mi(fixed_arr, sitk.GetArrayFromImage(resample(images[seq], fixed, sitk.Transform())),
                               fixed_head_arr)
        after = normalised_mi(fixed_arr, sitk.GetArrayFromImage(resample(images[seq], fixed, reg.transform)),
                              fixed_head_arr)
        coreg[seq] = reg.transform
        steps.append({"step": "coregister", "sequence": seq, "to": REFERENCE, "transform": "rigid",
                      "metric": "Mattes MI", "metric_value": round(reg.metric, 5), "iterations": reg.iterations,
                      "nmi_header": round(before, 4), "nmi": round(after, 4), "time_s": round(reg.time_s, 2),
                      "file": f"{RECORD_DIR}/coreg_{seq}.tfm"})
        times[f"coregister_{seq}"] = reg.time_s
        if not after >= MIN_COREG_NMI:
            raise RegistrationError(f"co-registration of {MODALITY_TITLES[seq]} to {MODALITY_TITLES[REFERENCE]} did not "
                                    f"converge: normalised mutual information {after:.3f}, expected >= "
                                    f"{MIN_COREG_NMI} (same patient, same session?)")
    coreg[REFERENCE] = sitk.Euler3DTransform()

    _report(progress, 0.35, "registration to the SRI24 atlas")
    t0 = time.perf_counter()
    ref = atlas_reference(load_atlas())
    fit = fit_atlas(vols[REFERENCE], ref, deformable=deformable, progress=_stage(progress, 0.35, 0.9))
    times["atlas_register"] = fit.time_s["atlas_register"]
    times["brain_extract"] = fit.time_s["brain_extract"]
    times["acceptance"] = fit.time_s["acceptance"]
    steps.extend(fit.steps)
    record["input_path"] = fit.path
    record["acceptance"] = fit.check.record()
    refusal = refusal_line(fit.check, fit.path)
    if refusal is not None:
        raise RegistrationError(refusal)

    _report(progress, 0.9, "resampling to the 1 mm BraTS grid")
    t0 = time.perf_counter()
    grid = to_sitk(brats_volume())
    to_native = {s: chain(fit.transform, coreg[s]) for s in vols}  # BraTS point -> series point
    in_brats = {s: resample(images[s], grid, to_native[s]) for s in vols}
    times["resample"] = time.perf_counter() - t0
    mask_ras = fit.mask
    steps.append({"step": "resample", "grid": "BraTS 240x240x155, 1 mm, LPS", "interpolation": "linear",
                  "time_s": round(times["resample"], 2)})
    for st in steps:
        if st["step"] == "register_atlas":
            st.update({"ncc_with_atlas": fit.check.record()["measures"]["atlas_ncc"], "file": f"{RECORD_DIR}/atlas.tfm"})
        if st["step"] == "extract_brain":
            st["file"] = f"{RECORD_DIR}/brain_mask.nii.gz"

    _report(progress, 0.95, "writing the BraTS case")
    t0 = time.perf_counter()
    if case_dir.exists():
        shutil.rmtree(case_dir)
    record_dir.mkdir(parents=True, exist_ok=True)
    grid_vol = brats_volume()
    out_images: dict[str, Path] = {}
    for seq in vols:
        arr = ras_array(in_brats[seq]) * mask_ras
        arr, dtype = _to_disk_dtype(arr, vols[seq].stored_dtype)
        out_images[seq] = save_like(grid_vol, arr, case_dir / f"{case_id}_{seq}.nii.gz", dtype)
        save_transform(coreg[seq], record_dir / f"coreg_{seq}.tfm")
    save_transform(fit.transform, record_dir / "atlas.tfm")
    save_like(grid_vol, mask_ras.astype(np.uint8), record_dir / "brain_mask.nii.gz", np.uint8)
    times["write"] = time.perf_counter() - t0
    times["total"] = time.perf_counter() - t_start
    record["steps"] = steps
    record["outputs"] = {s: p.name for s, p in out_images.items()}
    record["time_s"] = {k: round(v, 2) for k, v in times.items()}
    record["thresholds"] = {"min_coreg_nmi": MIN_COREG_NMI, **record["acceptance"]["thresholds"]}
    atomic_write_bytes(record_dir / RECORD_FILE, json.dumps(record, indent=2).encode())
    _report(progress, 1.0, f"done in {times['total']:.0f} s")
    return StudyResult(case_id, case_dir, out_images, record)


def _pass_through(vols: Mapping[str, Volume], paths: Mapping[str, Path], case_dir: Path, record: dict[str, Any],
                  times: dict[str, float], t_start: float, progress: ProgressFn | None) -> StudyResult:
    """Copy a study already in BraTS space, byte for byte, under BraTS names; identity transforms."""
    _report(progress, 0.5, "already in BraTS space: copying the series untouched")
    if case_dir.exists():
        shutil.rmtree(case_dir)
    record_dir = case_dir / RECORD_DIR
    record_dir.mkdir(parents=True, exist_ok=True)
    case_id = case_dir.name
    out: dict[str, Path] = {}
    for seq in vols:
        ext = ".nii.gz" if paths[seq].name.lower().endswith(".gz") else ".nii"
        out[seq] = Path(shutil.copyfile(paths[seq], case_dir / f"{case_id}_{seq}{ext}"))
        save_transform(sitk.Euler3DTransform(), record_dir / f"coreg_{seq}.tfm")
    save_transform(sitk.Euler3DTransform(), record_dir / "atlas.tfm")
    times["total"] = time.perf_counter() - t_start
    record.update({"passthrough": True, "steps": [{"step": "passthrough", "reason": "every series is already "
                                                   "240x240x155 at 1 mm on one grid and brain-extracted"}],
                   "outputs": {s: p.name for s, p in out.items()},
                   "time_s": {k: round(v, 2) for k, v in times.items()}})
    atomic_write_bytes(record_dir / RECORD_FILE, json.dumps(record, indent=2).encode())
    _report(progress, 1.0, "done: passed through untouched")
    return StudyResult(case_id, case_dir, out, record)


# ------------------------------------------------------------------------------------------- back to native ---

def load_record(case_dir: str | Path) -> dict[str, Any]:
    """The ``study.json`` of a preprocessed case folder.

    Raises:
        StudyError: the folder holds no readable record.
    """
    path = Path(case_dir) / RECORD_DIR / RECORD_FILE
    if not path.is_file():
        raise StudyError(f"expected a preprocessed study folder with {RECORD_DIR}/{RECORD_FILE}, found none in "
                         f"{Path(case_dir).name!r} (run python -m core preprocess first)")
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as err:
        raise StudyError(f"expected a readable {RECORD_FILE}, got an error: {err}") from err
    if not isinstance(record, dict) or record.get("version") != RECORD_VERSION or "series" not in record:
        raise StudyError(f"expected a {RECORD_FILE} of version {RECORD_VERSION}, got another")
    return record


def native_transforms(case_dir: str | Path, record: Mapping[str, Any] | None = None) -> dict[str, sitk.Transform]:
    """Per series, the linear transform mapping BraTS points to that series' points (LPS mm)."""
    folder = Path(case_dir) / RECORD_DIR
    rec = load_record(case_dir) if record is None else record
    atlas_tx = load_transform(folder / "atlas.tfm")
    return {seq: chain(atlas_tx, load_transform(folder / f"coreg_{seq}.tfm")) for seq in rec["series"]}


def write_native_labels(case_dir: str | Path, labels: Volume, labels_ras: np.ndarray, out_dir: str | Path,
                        stem: str, sequences: Iterable[str] | None = None) -> dict[str, Path]:
    """Write a label map made in BraTS space back onto each original series' grid (nearest neighbour).

    Args:
        case_dir: the preprocessed case folder (holds ``preprocessing/study.json`` and the transforms).
        labels: a volume on the grid the labels lie on (the case's BraTS-space image).
        labels_ras: the labels, shape (X, Y, Z) on ``labels``'s RAS grid.
        out_dir: where ``<stem>_seg_native_<seq>.nii.gz`` go.
        sequences: which series (default: every series of the study).

    Returns:
        Sequence -> file written, each in that series' stored voxel order and affine (uint8).
    """
    record = load_record(case_dir)
    transforms = native_transforms(case_dir, record)
    label_img = to_sitk(labels, np.asarray(labels_ras), pixel=sitk.sitkUInt8)
    out: dict[str, Path] = {}
    for seq in sequences or record["series"]:
        info = record["series"].get(seq)
        if info is None:
            raise StudyError(f"expected a series {seq!r} in the study, got {', '.join(record['series'])}")
        native = grid_volume(info["shape"], np.array(info["affine"], dtype=float), info["file"])
        native_img = to_sitk(native, pixel=sitk.sitkUInt8)
        back = resample(label_img, native_img, inverse(transforms[seq]), nearest=True)
        out[seq] = save_like(native, ras_array(back), Path(out_dir) / f"{stem}_seg_native_{seq}.nii.gz", np.uint8)
    return out
