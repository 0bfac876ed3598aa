"""DICOM study -> one NIfTI per usable series, with sequence guesses, refusals and a PHI-free listing.

The way a study travels:

The ideas live in their own modules, re-exported here: ``dicom_zip`` (archives and folder limits),
``dicom_stack`` (one series as a 3-D stack: checks, affine, voxels), ``dicom_sequence`` (sequence guess) and
``dicom_phi`` (identifiers and scrubbing). This module groups files into series and studies, names them and writes.

1. ``safe_extract_zip`` (zip input only): members are written under generated names (``000001.dcm``...),
   never their own; path-climbing names, links, encrypted members, too many members and too many bytes
   (counted while inflating, not trusted from the directory) refuse the whole archive.
2. ``read_study``: every regular file is read as DICOM (headers only), files are grouped by
   SeriesInstanceUID and the series sorted by it. Each series is checked as one consistent 3-D stack
   (one orientation, one matrix, one pixel spacing, at least ``MIN_SLICES`` slices at distinct, evenly spaced
   positions on one line) and refused with a one-line reason otherwise; usable series are read into voxels.
3. Geometry comes from the headers only: ImageOrientationPatient (row and column cosines), PixelSpacing and
   ImagePositionPatient; the slice step is the vector between consecutive positions, *not* SliceThickness.
   A gantry tilt (positions not along the slice normal) is kept exactly as a sheared affine, nothing is
   resampled. Voxel (i, j, k) = (column, row, slice) maps to
   ``IPP_0 + i * col_spacing * row_cosine + j * row_spacing * col_cosine + k * step`` (LPS), stored as RAS.
4. ``guess_sequence`` names each series flair, t1, t1ce, t2 or nothing from SeriesDescription and
   ProtocolName; ``resolve_names`` applies the user's overrides and gives each converted series its file name.
5. ``write_study`` writes ``<name>.nii.gz`` per series and ``dicom_series.json``.

Patient identifiers (name, ID, birth date, accession number, UIDs, institution, physicians, paths) are never
written: the listing holds series numbers, descriptions (scrubbed of the patient's own name and ID, should a
scanner have put them there), geometry and decisions; the NIfTI headers hold geometry only.
"""

from __future__ import annotations

import hashlib
import io
import json
import math
import os
import zipfile
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from core.config import MODALITIES
from core.data.dicom_phi import PHI_NOTE, SCRUBBED_FIELDS, phi_strings, scrub_listing, scrub_text
from core.data.dicom_sequence import guess_sequence, normalise_text
from core.data.dicom_stack import (
    MIN_SLICES,
    ORIENTATION_TOL,
    SPACING_ABS_TOL_MM,
    SPACING_REL_TOL,
    StackHeader,
    check_series,
    header_of,
    read_pixels,
    series_affine,
    stack_geometry,
)
from core.data.dicom_zip import MAX_FILE_BYTES, MAX_FILES, MAX_RATIO, MAX_TOTAL_BYTES, safe_extract_zip, walk_files
from core.data.io import Volume, atomic_write_bytes, load_volume_bytes
from core.data.nibabel_import import nib
from core.errors import BratsViewerError, DicomError

__all__ = [  # re-exported from the modules of each idea, so that ``dicom.<name>`` keeps working
    "MAX_FILES", "MAX_FILE_BYTES", "MAX_RATIO", "MAX_TOTAL_BYTES", "MIN_SLICES", "ORIENTATION_TOL", "PHI_NOTE",
    "SCRUBBED_FIELDS", "SPACING_ABS_TOL_MM", "SPACING_REL_TOL", "guess_sequence", "normalise_text", "phi_strings",
    "safe_extract_zip", "scrub_listing", "scrub_text", "series_affine", "stack_geometry", "walk_files",
]

TILT_WARN_DEG: float = 0.1  # a slice step further than this from the normal is reported as a tilt

LISTING_NAME = "dicom_series.json"
SEQUENCES: tuple[str, ...] = MODALITIES  # flair, t1, t1ce, t2
OVERRIDE_VALUES: tuple[str, ...] = (*SEQUENCES, "none", "skip")  # none: keep it as series-<n>; skip: do not write

_DICOMDIR_CLASS = "1.2.840.10008.1.3.10"


# ---- the study --------------------------------------------------------------------------------------------------

@dataclass(eq=False)
class Series:
    """One DICOM series of a study.

    Attributes:
        index: 1-based position in SeriesInstanceUID order.
        n: what names it (``series-<n>``, ``--sequence N=...``): SeriesNumber when it is positive and no other
            series of the folder has it, else a string derived from the SeriesInstanceUID, ``"<number>-<hash>"``
            (``"uid-<hash>"`` without a number; hash: the first hex digits of its SHA-256, never the UID itself),
            so that no two series of a folder share a name.
        series_number: SeriesNumber as stored (None when absent).
        uid: SeriesInstanceUID: matched against overrides, never written anywhere.
        description, protocol: SeriesDescription and ProtocolName, scrubbed of the patient's name and ID.
        modality: DICOM Modality (MR, CT, ...).
        n_files: files of the series (exact duplicates dropped).
        study, patient: 1-based study and patient of the folder it belongs to (a folder may hold several).
        guess, guess_reason: guessed sequence (flair, t1, t1ce, t2 or None) and why.
        refusal: one-line reason the series cannot be converted (None when usable).
        warnings: non-fatal findings (gantry tilt, rescaling).
        shape: voxel grid (columns, rows, slices) when usable.
        spacing_mm: voxel size along those axes (mm).
        affine: 4x4 voxel-to-RAS-world (mm) affine of the stored grid when usable.
        data: voxels (columns, rows, slices), int16 or float32, when usable and read.
    """

    index: int
    n: int | str
    series_number: int | None
    uid: str
    description: str
    protocol: str
    modality: str
    n_files: int
    study: int = 1
    patient: int = 1
    guess: str | None = None
    guess_reason: str = ""
    refusal: str | None = None
    warnings: list[str] = field(default_factory=list)
    shape: tuple[int, int, int] | None = None
    spacing_mm: tuple[float, float, float] | None = None
    affine: np.ndarray | None = None
    data: np.ndarray | None = None
    files: list[Path] = field(default_factory=list, repr=False)

    @property
    def usable(self) -> bool:
        return self.refusal is None

    @property
    def label(self) -> str:
        return f"series-{self.n}"

    def listing(self) -> dict[str, Any]:
        """JSON-ready description: series number and description, geometry, guess, decision (no identifiers)."""
        out: dict[str, Any] = {
            "n": self.n, "series_number": self.series_number, "study": self.study, "patient": self.patient,
            "description": self.description,
            "protocol": self.protocol, "modality": self.modality, "files": self.n_files,
            "sequence_guess": self.guess, "guess_reason": self.guess_reason,
        }
        if self.shape is not None and self.spacing_mm is not None and self.affine is not None:
            out["shape"] = list(self.shape)
            out["spacing_mm"] = [round(s, 4) for s in self.spacing_mm]
            out["orientation"] = "".join(nib.aff2axcodes(self.affine))
        out["status"] = "usable" if self.usable else "refused"
        if self.refusal:
            out["refusal"] = self.refusal
        if self.warnings:
            out["warnings"] = list(self.warnings)
        return out


@dataclass(eq=False)
class Study:
    """The series of one DICOM folder or archive, sorted by SeriesInstanceUID.

    ``skipped_files`` counts files that are not DICOM Part-10 (or are DICOMDIR indexes); ``scrub`` holds the
    patient's identifier strings (kept in memory only) used to scrub every text that is written.
    """

    series: list[Series]
    dicom_files: int
    skipped_files: int
    scrub: tuple[str, ...] = ()
    duplicate_files: int = 0

    @property
    def n_studies(self) -> int:
        """Studies (StudyInstanceUID, per patient) among the series of the folder."""
        return len({s.study for s in self.series}) if self.series else 0

    @property
    def n_patients(self) -> int:
        """Patients (PatientID, name and birth date) among the series of the folder."""
        return len({s.patient for s in self.series}) if self.series else 0

    def folder_of(self, s: Series) -> str:
        """Sub-folder the series' file is written to: ``""`` for a folder of one study, else ``study-<k>``."""
        return f"study-{s.study}" if self.n_studies > 1 else ""

    def studies_note(self) -> str:
        """One line saying how a folder of several studies or patients is split (``""`` for one study)."""
        if self.n_studies <= 1:
            return ""
        parts = []
        for k in sorted({s.study for s in self.series}):
            members = [s for s in self.series if s.study == k]
            parts.append(f"study-{k}/ (patient {members[0].patient}): series "
                         + ", ".join(str(s.n) for s in members))
        return (f"this folder holds {self.n_studies} studies of {self.n_patients} patient(s); each study is "
                "converted on its own, into its own folder: " + "; ".join(parts))

    def find(self, key: str) -> Series:
        """The series named by ``key``: its name ``n`` (``series-`` prefix allowed) or its SeriesInstanceUID.

        Raises:
            DicomError: no such series.
        """
        key = key.strip()
        short = key.removeprefix("series-")
        for s in self.series:
            if key == s.uid or short == str(s.n):
                return s
        known = ", ".join(str(s.n) for s in self.series)
        raise DicomError(f"expected a series number ({known}) or a SeriesInstanceUID of this study, got {key!r}"
                         if len(key) < 80 else "expected a series number or SeriesInstanceUID of this study")


# ---- reading ----------------------------------------------------------------------------------------------------

def _import_pydicom() -> Any:
    try:
        import pydicom
    except ImportError as err:  # pragma: no cover - pinned in requirements.txt
        raise DicomError("expected the pydicom package to read DICOM (pip install -r requirements.txt)") from err
    return pydicom


def _read_header(pydicom: Any, path: Path) -> tuple[StackHeader | None, set[str]]:
    try:
        ds = pydicom.dcmread(path, stop_before_pixels=True, force=False)
    except Exception:  # not DICOM Part 10 (pydicom raises several types on arbitrary bytes)
        return None, set()
    meta = getattr(ds, "file_meta", None)
    if meta is not None and str(meta.get("MediaStorageSOPClassUID", "")) == _DICOMDIR_CLASS:
        return None, set()
    return header_of(ds, path), phi_strings(ds)


def read_study(folder: str | os.PathLike[str], *, load_pixels: bool = True,
               progress: Callable[[float, str], None] | None = None) -> Study:
    """Read every DICOM file under ``folder`` into series, check them and read the usable ones' voxels.

    Args:
        folder: a folder of DICOM files (any depth; links are not followed; other files are skipped).
        load_pixels: read voxels of usable series (False: headers and checks only).
        progress: optional ``progress(fraction, message)``.

    Raises:
        DicomError: the folder holds no DICOM file, or too many files or bytes.
    """
    pydicom = _import_pydicom()
    root = Path(folder)
    if not root.is_dir():
        raise DicomError("expected a folder of DICOM files or a zip archive, got something else")
    paths = walk_files(root, MAX_FILES, MAX_TOTAL_BYTES)
    headers: list[StackHeader] = []
    phi: set[str] = set()
    skipped = 0
    for i, p in enumerate(paths):
        h, ids = _read_header(pydicom, p)
        if h is None:
            skipped += 1
            continue
        headers.append(h)
        phi |= ids
        if progress and i % 50 == 0:
            progress(0.5 * i / max(len(paths), 1), f"Reading headers ({i}/{len(paths)})")
    if not headers:
        raise DicomError(f"expected DICOM files, found none among {len(paths)} file(s) "
                         "(DICOM Part-10 files start with a 128-byte preamble and 'DICM')")
    groups: dict[str, list[StackHeader]] = {}
    for h in headers:
        groups.setdefault(h.uid, []).append(h)
    names = series_names({uid: g[0].number for uid, g in groups.items()})
    patients = {p: k for k, p in enumerate(sorted({g[0].patient for g in groups.values()}), start=1)}
    studies = {key: k for k, key in enumerate(sorted({(patients[g[0].patient], g[0].study_uid)
                                                       for g in groups.values()}), start=1)}
    series: list[Series] = []
    duplicates = 0
    for index, uid in enumerate(sorted(groups), start=1):
        hs, dropped, conflict = _drop_duplicates(groups[uid])
        duplicates += dropped
        first = hs[0]
        patient = patients[first.patient]
        s = Series(index=index, n=names[uid], series_number=first.number, uid=uid,
                   description=scrub_text(first.description, phi), protocol=scrub_text(first.protocol, phi),
                   modality=first.modality, n_files=len(hs), study=studies[(patient, first.study_uid)],
                   patient=patient, files=[h.path for h in hs])
        # Guessed from the headers' own text (in memory), so that scrubbing cannot change the guess.
        s.guess, s.guess_reason = guess_sequence(first.description, first.protocol)
        if dropped:
            s.warnings.append(f"{dropped} exact duplicate file(s) dropped (same SOPInstanceUID, same bytes)")
        if not uid:
            s.refusal = "no SeriesInstanceUID: files cannot be grouped into a series"
        elif conflict:
            s.refusal = (f"{conflict} files share a SOPInstanceUID with another file of the series but differ "
                         "from it: which one is the image cannot be told")
        else:
            s.refusal, geo = check_series(hs)
            if s.refusal is None:
                s.affine = series_affine(geo["origin"], geo["row_cos"], geo["col_cos"], geo["spacing"][0], geo["spacing"][1],
                                         geo["step"])
                s.shape = (int(first.columns or 0), int(first.rows or 0), len(hs))
                s.spacing_mm = (geo["spacing"][0], geo["spacing"][1], float(np.linalg.norm(geo["step"])))
                cos_tilt = abs(float(geo["step"] @ geo["normal"])) / float(np.linalg.norm(geo["step"]))
                tilt = math.degrees(math.acos(min(1.0, cos_tilt)))
                if tilt > TILT_WARN_DEG:
                    s.warnings.append(f"gantry tilt / sheared stack of {tilt:.1f} degrees: kept exactly in a sheared "
                                      "affine (voxels not resampled)")
                if load_pixels:
                    if progress:
                        progress(0.5 + 0.5 * index / len(groups), f"Reading voxels of series {s.n}")
                    try:
                        s.data, notes = read_pixels(pydicom, hs, geo["order"])
                        s.warnings.extend(notes)
                    except DicomError as err:
                        s.refusal = str(err)
                    except Exception as err:  # a corrupt file inside an otherwise good series
                        s.refusal = f"pixel data could not be read ({type(err).__name__})"
        series.append(s)
    if progress:
        progress(1.0, "Read")
    return Study(series=series, dicom_files=len(headers), skipped_files=skipped, scrub=tuple(sorted(phi)),
                 duplicate_files=duplicates)


def series_names(numbers: Mapping[str, int | None]) -> dict[str, int | str]:
    """The name ``n`` of every series, by SeriesInstanceUID, from its SeriesNumber (None when absent).

    A positive SeriesNumber that no other series of the folder has names its series; the others are named
    ``"<number>-<hash>"`` (``"uid-<hash>"`` without a number), hash: the first 6 (or more, until unique) hex digits
    of the SHA-256 of the SeriesInstanceUID. Names are unique, and never the UID itself.
    """
    counts: dict[int | None, int] = {}
    for number in numbers.values():
        counts[number] = counts.get(number, 0) + 1
    out: dict[str, int | str] = {}
    for uid, number in numbers.items():
        if number is not None and number > 0 and counts[number] == 1:
            out[uid] = number
    used = {str(v) for v in out.values()}
    for uid in sorted(numbers):
        if uid in out:
            continue
        number = numbers[uid]
        digest = hashlib.sha256(uid.encode("utf-8")).hexdigest()
        for length in range(6, len(digest) + 1):
            name = f"{number if number is not None else 'uid'}-{digest[:length]}"
            if name not in used:
                break
        used.add(name)
        out[uid] = name
    return out


def _drop_duplicates(headers: list[StackHeader]) -> tuple[list[StackHeader], int, int]:
    """(headers without exact duplicates, duplicates dropped, files that share a SOPInstanceUID but differ).

    Files of one series with the same SOPInstanceUID are compared byte for byte: identical ones are kept once
    (as dcm2niix does); differing ones are counted as a conflict and all kept (the series is then refused).
    """
    by_sop: dict[str, list[StackHeader]] = {}
    for h in headers:
        if h.sop_uid:
            by_sop.setdefault(h.sop_uid, []).append(h)
    drop: set[int] = set()
    conflict = 0
    for group in by_sop.values():
        if len(group) < 2:
            continue
        digests: dict[str, StackHeader] = {}
        for h in group:
            try:
                digest = hashlib.sha256(h.path.read_bytes()).hexdigest()
            except OSError:
                digest = f"unreadable:{h.path}"
            if digest in digests:
                drop.add(id(h))
            else:
                digests[digest] = h
        if len(digests) > 1:
            conflict += len(digests)
    return [h for h in headers if id(h) not in drop], len(drop), conflict


# ---- naming and overrides -------------------------------------------------------------------------------------

def parse_overrides(items: Iterable[str]) -> dict[str, str]:
    """``["5=flair", "1.2.840...=t1ce"]`` -> {key: value}; values among ``OVERRIDE_VALUES``.

    Raises:
        DicomError: an item without ``=`` or with an unknown value.
    """
    out: dict[str, str] = {}
    for item in items:
        key, sep, value = item.partition("=")
        value = value.strip().lower()
        if not sep or not key.strip():
            raise DicomError(f"expected SERIES=SEQUENCE (e.g. 5=flair), got {item!r}")
        if value not in OVERRIDE_VALUES:
            raise DicomError(f"expected a sequence among {', '.join(OVERRIDE_VALUES)}, got {value!r} in {item!r}")
        out[key.strip()] = value
    return out


def resolve_names(study: Study, overrides: Mapping[str, str] | None = None) -> dict[int, tuple[str | None, str]]:
    """The file name (without ``.nii.gz``) of every usable series, by ``Series.index``, and why.

    An override (key: name ``n`` or SeriesInstanceUID; value: a sequence, ``none`` or ``skip``) wins over the
    guess. A guessed sequence is used as the name only when exactly one usable series of its study has it and no
    override took it; otherwise the series is named ``series-<n>``. ``skip`` gives None (not written). In a
    folder of several studies, names are per study (each study is written into its own folder,
    ``Study.folder_of``); no two series of one folder get one name.

    Raises:
        DicomError: an override names no series, a refused series, or gives one sequence to two series of a study.
    """
    chosen: dict[int, str] = {}
    for key, value in (overrides or {}).items():
        s = study.find(key)
        if not s.usable:
            raise DicomError(f"series {s.n} cannot be converted ({s.refusal}); its sequence cannot be set")
        chosen[s.index] = value
    by_index = {s.index: s for s in study.series}
    taken: dict[tuple[int, str], int] = {}
    for idx, value in chosen.items():
        if value in SEQUENCES:
            slot = (by_index[idx].study, value)
            if slot in taken:
                raise DicomError(f"expected one series per sequence, got {value} for series "
                                 f"{by_index[taken[slot]].n} and {by_index[idx].n}")
            taken[slot] = idx
    usable = [s for s in study.series if s.usable]
    counts: dict[tuple[int, str], int] = {}
    for s in usable:
        if s.index not in chosen and s.guess:
            counts[(s.study, s.guess)] = counts.get((s.study, s.guess), 0) + 1
    names: dict[int, tuple[str | None, str]] = {}
    for s in usable:
        picked = chosen.get(s.index)
        n_like = counts.get((s.study, s.guess or ""), 0)
        if picked == "skip":
            names[s.index] = (None, "skipped by the user")
        elif picked == "none":
            names[s.index] = (s.label, "set to no sequence by the user")
        elif picked in SEQUENCES:
            names[s.index] = (picked, "set by the user")
        elif s.guess and (s.study, s.guess) in taken:
            names[s.index] = (s.label, f"guessed {s.guess}, but the user gave {s.guess} to another series")
        elif s.guess and n_like > 1:
            names[s.index] = (s.label, f"guessed {s.guess} like {n_like - 1} other series: choose one")
        elif s.guess:
            names[s.index] = (s.guess, "guessed")
        else:
            names[s.index] = (s.label, "no sequence guessed")
    seen: dict[tuple[str, str], int] = {}
    for idx, (name, _why) in names.items():  # by construction never; checked so that no file is ever overwritten
        if name is None:
            continue
        where = (study.folder_of(by_index[idx]), name)
        if where in seen:
            raise DicomError(f"expected one file name per series, got {name}.nii.gz for series "
                             f"{by_index[seen[where]].n} and {by_index[idx].n}")
        seen[where] = idx
    return names


def refusal_summary(study: Study, max_chars: int = 300) -> str:
    """Why the series of ``study`` were refused, in one line of whole reasons (about ``max_chars`` at most, then
    "and N more refused series"; the listing holds them all). ``""`` when none was refused."""
    refused = [s for s in study.series if s.refusal]
    parts: list[str] = []
    used = 0
    for s in refused:
        part = f"series {s.n}: {scrub_text(str(s.refusal), study.scrub)}"
        if parts and used + len(part) > max_chars:
            break
        parts.append(part)
        used += len(part) + 2
    more = len(refused) - len(parts)
    return "; ".join(parts) + (f"; and {more} more refused series" if more else "")


# ---- writing ------------------------------------------------------------------------------------------------

def series_nifti_bytes(s: Series) -> bytes:
    """Gzipped NIfTI-1 of a usable, read series: voxels (columns, rows, slices), sform = qform code 1 (scanner).

    The header holds geometry only (no description, no identifiers). A sheared (tilted) affine is kept exactly
    in the sform; the qform holds its nearest rigid form.
    """
    if s.data is None or s.affine is None:
        raise DicomError(f"series {s.n} has no voxels to write ({s.refusal or 'not read'})")
    img = nib.Nifti1Image(s.data, s.affine, dtype=s.data.dtype)
    img.header.set_xyzt_units("mm", "sec")
    img.set_sform(s.affine, code=1)
    img.set_qform(s.affine, code=1)
    import gzip

    return gzip.compress(img.to_bytes(), compresslevel=1, mtime=0)


def series_volume(s: Series, name: str | None = None) -> Volume:
    """The series as a ``Volume`` loaded through ``core.data.io`` exactly as its written file would be."""
    file_name = f"{name or s.label}.nii.gz"
    return load_volume_bytes(series_nifti_bytes(s), file_name)


@dataclass(frozen=True)
class Conversion:
    """What ``write_study`` wrote: sequence or series name -> file path, and the listing."""

    files: dict[str, Path]
    listing: dict[str, Any]
    listing_path: Path


def study_listing(study: Study, names: Mapping[int, tuple[str | None, str]] | None = None,
                  written: Mapping[int, str] | None = None) -> dict[str, Any]:
    """The JSON-ready listing of a study: counts, the PHI note and every series (no identifiers).

    The patient's identifier strings are scrubbed field by field (``scrub_listing``), never from the JSON text.
    """
    rows = []
    for s in study.series:
        row = s.listing()
        if names and s.index in names:
            name, why = names[s.index]
            row["sequence"] = name if name in SEQUENCES else None
            row["name"] = name
            row["name_reason"] = why
        if written and s.index in written:
            row["file"] = written[s.index]
            row["status"] = "converted"
        elif s.usable and names is not None and names.get(s.index, (None, ""))[0] is None:
            row["status"] = "skipped"
        rows.append(row)
    listing: dict[str, Any] = {
        "note": PHI_NOTE,
        "dicom_files": study.dicom_files,
        "skipped_files": study.skipped_files,
        "duplicate_files_dropped": study.duplicate_files,
        "studies": study.n_studies,
        "patients": study.n_patients,
    }
    if study.n_studies > 1:
        listing["split"] = study.studies_note()
    listing["series"] = rows
    return scrub_listing(listing, study.scrub)


def _file_of(study: Study, s: Series, name: str) -> str:
    """The written file's path relative to the output folder (``study-<k>/`` first for several studies)."""
    folder = study.folder_of(s)
    return f"{folder}/{name}.nii.gz" if folder else f"{name}.nii.gz"


def write_study(study: Study, out_dir: str | os.PathLike[str], overrides: Mapping[str, str] | None = None, *,
                overwrite: bool = False) -> Conversion:
    """Write ``<name>.nii.gz`` for every usable series not skipped, and ``dicom_series.json``.

    A folder of several studies (or patients) is split: each study's files go into ``study-<k>/`` (the listing
    says which series went where). A file written by this run is never overwritten. Every file is loaded back
    through ``core.data.io`` before it is written. The listing is written even when no series can be converted.

    Returns:
        ``Conversion``; ``files`` is keyed by the name (``study-<k>/<name>`` for several studies).

    Raises:
        DicomError: no usable series (after writing the listing), an output folder that holds files (unless
            ``overwrite``), a bad override.
        BratsViewerError: a written image would not load (should not happen).
    """
    names = resolve_names(study, overrides)
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise DicomError("expected an output folder, got an existing file")
    if out.is_dir() and any(out.iterdir()) and not overwrite:
        raise DicomError("expected an empty or new output folder (use --overwrite to write into this one)")
    out.mkdir(parents=True, exist_ok=True)
    files: dict[str, Path] = {}
    written: dict[int, str] = {}
    for s in study.series:
        name = names.get(s.index, (None, ""))[0]
        if name is None:
            continue
        rel = _file_of(study, s, name)
        if rel in written.values():  # resolve_names makes names unique: never overwrite a file of this run
            raise DicomError(f"refused to overwrite {rel}, written for another series in this run")
        blob = series_nifti_bytes(s)
        try:
            load_volume_bytes(blob, f"{name}.nii.gz")
        except BratsViewerError as err:
            s.refusal = f"the converted image does not load: {err}"
            continue
        (out / rel).parent.mkdir(parents=True, exist_ok=True)
        files[rel.removesuffix(".nii.gz")] = atomic_write_bytes(out / rel, blob)
        written[s.index] = rel
    listing = study_listing(study, names, written)
    listing_path = atomic_write_bytes(out / LISTING_NAME, (json.dumps(listing, indent=2) + "\n").encode("utf-8"))
    if not written:
        reasons = refusal_summary(study)
        raise DicomError("no series to convert" + (f" ({reasons})" if reasons else "")
                         + f"; every series is listed in {LISTING_NAME}")
    return Conversion(files, listing, listing_path)


def read_source(source: str | os.PathLike[str], *, load_pixels: bool = True,
                scratch: str | os.PathLike[str] | None = None,
                progress: Callable[[float, str], None] | None = None) -> Study:
    """``read_study`` of a DICOM folder, or of a zip archive extracted safely into a temporary folder (under
    ``scratch`` when given) that is removed afterwards (voxels are read into memory first).

    Raises:
        DicomError: neither a folder nor a zip archive, or any refusal of ``safe_extract_zip``/``read_study``.
    """
    src = Path(source)
    if src.is_dir():
        return read_study(src, load_pixels=load_pixels, progress=progress)
    if not src.is_file() or not zipfile.is_zipfile(src):
        raise DicomError("expected a folder of DICOM files or a zip archive of them, got "
                         + ("another kind of file" if src.is_file() else "a path that does not exist"))
    import tempfile

    with tempfile.TemporaryDirectory(prefix="dicom-", dir=scratch) as tmp:
        safe_extract_zip(src, tmp)
        return read_study(tmp, load_pixels=load_pixels, progress=progress)


def convert(source: str | os.PathLike[str], out_dir: str | os.PathLike[str],
            overrides: Mapping[str, str] | None = None, *, overwrite: bool = False,
            scratch: str | os.PathLike[str] | None = None) -> Conversion:
    """Convert a DICOM folder or zip archive (see ``read_source`` and ``write_study``)."""
    return write_study(read_source(source, scratch=scratch), out_dir, overrides, overwrite=overwrite)


def study_volumes(study: Study, overrides: Mapping[str, str] | None = None) -> dict[str, Volume]:
    """Volumes of the series named flair, t1, t1ce or t2 (after overrides), each on its own grid.

    Raises:
        DicomError: the named series belong to several studies (or patients): one case is one study.
    """
    names = resolve_names(study, overrides)
    named = [s for s in study.series if names.get(s.index, (None, ""))[0] in SEQUENCES]
    if len({s.study for s in named}) > 1:
        raise DicomError("expected the sequences of one study, got series named from several: "
                         + study.studies_note() + "; set the series of all studies but one to skip")
    return {str(names[s.index][0]): series_volume(s, names[s.index][0]) for s in named}


def resample_onto(vol: Volume, ref: Volume) -> Volume:
    """``vol`` resampled (trilinear, 0 outside) onto ``ref``'s RAS grid through both affines (scanner
    coordinates; no registration: right for series of one session without patient motion)."""
    from scipy import ndimage

    m = np.linalg.inv(vol.affine) @ ref.affine
    data = ndimage.affine_transform(np.asarray(vol.data, dtype=np.float32), m[:3, :3], offset=m[:3, 3],
                                    output_shape=ref.shape, order=1, mode="constant", cval=0.0)
    return ref.with_data(data.astype(np.float32))


def conversion_zip(study: Study, overrides: Mapping[str, str] | None = None) -> bytes:
    """A zip (in memory) of what ``write_study`` would write: ``<name>.nii.gz`` per series and the listing."""
    names = resolve_names(study, overrides)
    buf = io.BytesIO()
    written: dict[int, str] = {}
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_STORED) as zf:  # the NIfTI files are already gzipped
        for s in study.series:
            name = names.get(s.index, (None, ""))[0]
            if name is None or s.data is None:
                continue
            rel = _file_of(study, s, name)
            if rel in written.values():
                raise DicomError(f"refused to overwrite {rel}, written for another series")
            zf.writestr(rel, series_nifti_bytes(s))
            written[s.index] = rel
        listing = study_listing(study, names, written)
        zf.writestr(LISTING_NAME, json.dumps(listing, indent=2) + "\n")
    return buf.getvalue()


def open_as_case_volumes(study: Study, overrides: Mapping[str, str] | None = None,
                         reference: str = "t1ce") -> tuple[dict[str, Volume], str]:
    """The series named flair/t1/t1ce/t2 on one grid, ready for ``cases.assemble_case``, and a note.

    Series on another grid than the reference (``reference`` when present, else the first sequence in
    flair, t1, t1ce, t2 order) are resampled onto it by scanner coordinates (``resample_onto``): right for
    series of one session without patient motion, not a registration and not BraTS space.

    Raises:
        DicomError: no series is named flair, t1, t1ce or t2.
    """
    vols = study_volumes(study, overrides)
    if not vols:
        raise DicomError("expected at least one series set to flair, t1, t1ce or t2 to open as a case, got none")
    ref_key = reference if reference in vols else next(k for k in SEQUENCES if k in vols)
    ref = vols[ref_key]
    out: dict[str, Volume] = {}
    moved: list[str] = []
    for key, vol in vols.items():
        same = vol.original_shape == ref.original_shape and np.allclose(vol.original_affine, ref.original_affine,
                                                                         atol=1e-3)
        out[key] = vol if same else resample_onto(vol, ref)
        if not same:
            moved.append(key.upper())
    note = ("Converted from DICOM; raw scanner space, not BraTS space (no skull stripping, no atlas registration)."
            + (f" {', '.join(moved)} resampled onto the {ref_key.upper()} grid by scanner coordinates "
               "(no registration)." if moved else ""))
    return out, note
