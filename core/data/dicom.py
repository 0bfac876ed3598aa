"""DICOM study -> one NIfTI per usable series, with sequence guesses, refusals and a PHI-free listing.

The way a study travels:

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
import re
import stat
import zipfile
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from core.config import MAX_VOXELS, MODALITIES
from core.data.io import Volume, atomic_write_bytes, load_volume_bytes
from core.data.nibabel_import import nib
from core.errors import BratsViewerError, DicomError

# ---- limits -------------------------------------------------------------------------------------------------
MAX_FILES: int = 20_000  # DICOM files (or zip members) in one study
MAX_FILE_BYTES: int = 64 * 1024 * 1024  # one DICOM file (a 1024 x 1024 float64 slice is 8 MB)
MAX_TOTAL_BYTES: int = 2 * 1024**3  # all files of one study, decompressed
MAX_RATIO: int = 200  # a zip member inflating more than this many times its compressed size is a bomb
MIN_SLICES: int = 3  # fewer slices is a localiser or a single image, not a volume

ORIENTATION_TOL: float = 1e-3  # max difference of direction cosines within one series
SPACING_REL_TOL: float = 0.01  # slice gaps may differ by this fraction of the median gap...
SPACING_ABS_TOL_MM: float = 0.02  # ...plus this (positions are written with limited decimals)
TILT_WARN_DEG: float = 0.1  # a slice step further than this from the normal is reported as a tilt

LISTING_NAME = "dicom_series.json"
SEQUENCES: tuple[str, ...] = MODALITIES  # flair, t1, t1ce, t2
OVERRIDE_VALUES: tuple[str, ...] = (*SEQUENCES, "none", "skip")  # none: keep it as series-<n>; skip: do not write
PHI_NOTE = ("Patient identifiers (name, ID, birth date, accession number, UIDs, institution) are not copied into "
            "any file written: series are listed by number and description only.")

_LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0, 1.0])
_PHI_TAGS = ("PatientName", "PatientID", "PatientBirthDate", "OtherPatientIDs", "AccessionNumber")
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


# ---- archives ---------------------------------------------------------------------------------------------------

def _is_unsafe_member_name(name: str) -> bool:
    parts = re.split(r"[\\/]+", name)
    return name.startswith(("/", "\\")) or bool(re.match(r"^[A-Za-z]:", name)) or ".." in parts or "\x00" in name


def safe_extract_zip(source: str | os.PathLike[str] | bytes, dest: str | os.PathLike[str], *,
                     max_files: int = MAX_FILES, max_total_bytes: int = MAX_TOTAL_BYTES,
                     max_file_bytes: int = MAX_FILE_BYTES, max_ratio: int = MAX_RATIO) -> int:
    """Extract the regular files of a zip archive into ``dest`` under generated names (``000001.dcm``, ...).

    Member names are never used as paths; an archive whose names climb out of it (``../``, absolute, drive
    letters) is refused whole, as are links, encrypted members, more than ``max_files`` members, a member over
    ``max_file_bytes`` or inflating more than ``max_ratio`` times, and more than ``max_total_bytes`` in all.
    Sizes are counted while inflating: the archive's own directory is not trusted.

    Returns:
        The number of files written.

    Raises:
        DicomError: not a zip archive, or any of the refusals above (one line, no member name).
    """
    out = Path(dest)
    out.mkdir(parents=True, exist_ok=True)
    try:
        zf = zipfile.ZipFile(io.BytesIO(source) if isinstance(source, bytes | bytearray) else Path(source))
    except (zipfile.BadZipFile, OSError, ValueError) as err:
        raise DicomError(f"expected a zip archive of DICOM files, got an unreadable archive ({err})") from err
    with zf:
        members = zf.infolist()
        files = [m for m in members if not m.is_dir()]
        if len(members) > max_files * 2 or len(files) > max_files:
            raise DicomError(f"expected at most {max_files:,} files in the archive, got {len(files):,} files "
                             f"in {len(members):,} entries")
        declared = sum(m.file_size for m in files)
        if declared > max_total_bytes:
            raise DicomError(f"expected at most {max_total_bytes // 2**20:,} MB once extracted, the archive "
                             f"declares {declared // 2**20:,} MB")
        for pos, m in enumerate(members, start=1):
            if _is_unsafe_member_name(m.filename):
                raise DicomError(f"refused the archive: member {pos} has a path that climbs out of the archive "
                                 "(absolute or '..'); nothing was extracted from it")
        total = 0
        written = 0
        for pos, m in enumerate(files, start=1):
            mode = (m.external_attr >> 16) & 0o170000
            if mode and not stat.S_ISREG(mode):
                raise DicomError(f"refused the archive: member {pos} is a link or special file, not a regular file")
            if m.flag_bits & 0x1:
                raise DicomError(f"refused the archive: member {pos} is encrypted")
            limit = min(max_file_bytes, max_ratio * max(m.compress_size, 1) + 64 * 1024)
            target = out / f"{pos:06d}.dcm"
            size = 0
            try:
                with zf.open(m) as src, open(target, "wb") as dst:
                    while chunk := src.read(1 << 20):
                        size += len(chunk)
                        total += len(chunk)
                        if size > limit:
                            raise DicomError(f"refused the archive: member {pos} inflates beyond "
                                             f"{limit // 2**20 or 1} MB (at most {max_file_bytes // 2**20} MB per "
                                             f"file and {max_ratio}x its compressed size): a zip bomb?")
                        if total > max_total_bytes:
                            raise DicomError(f"refused the archive: more than {max_total_bytes // 2**20:,} MB "
                                             "once extracted")
                        dst.write(chunk)
            except DicomError:
                target.unlink(missing_ok=True)
                raise
            except (zipfile.BadZipFile, zipfile.LargeZipFile, NotImplementedError, EOFError, OSError,
                    RuntimeError) as err:
                target.unlink(missing_ok=True)
                raise DicomError(f"refused the archive: member {pos} cannot be read ({type(err).__name__})") from err
            written += 1
    return written


# ---- sequence guess ---------------------------------------------------------------------------------------------

_NOT_STRUCTURAL = re.compile(
    r"(?<![a-z0-9])(dwi|diffusion|adc|trace|dti|tensor|swi|swan|t2\s*\*|t2star|t2\s+star|gre\s*t2|hemo|perf\w*|dsc|dce|pwi|"
    r"asl|mra|tof|angio|mip|localizer|localiser|scout|survey|3\s*plane|spectro\w*|mrs|fmri|bold|cbf|cbv|"
    r"sub(traction)?|fa|mapping|map)(?![a-z0-9])")
_FLAIR = re.compile(r"\b(flair|t2\s*flair|t2f|dark\s*fluid|darkfluid|tirm|fluid\s*att\w*)\b")
_PRE = re.compile(r"\b(pre|precontrast|pre\s*contrast|pre\s*(gd|gad|c)|w\s*o|wo|without|non\s*contrast|"
                  r"no\s*contrast|nat\w*|native|plain)\b")
_POST = re.compile(r"(\+\s*c\b|\bc\s*\+|\+\s*gd|\bgd\b|\bgad\w*|\bgado\w*|\bcontrast\b|\bpost(?!er)\w*|\bce\b|\bt1ce\b|"
                   r"\bt1c\b|\bt1gd\b|\bt1\s*c\b|\bwith\s*contrast\b|\bw\s*contrast\b|\benhanc\w*|\bmultihance\b|"
                   r"\bdotarem\b|\bgadavist\b|\bmagnevist\b|\bprohance\b)")
_T1 = re.compile(r"(\bt1\w*|\bmprage\b|\bmp\s*rage\b|\bspgr\b|\bfspgr\b|\bbravo\b|\btfe\b|\bvibe\b|\bt1n\b|"
                 r"\bflash\b|\bse\s*t1\b)")
_T2 = re.compile(r"\b(t2|t2w|t2\s*w|t2\s*tse|t2\s*fse|tse\s*t2|fse\s*t2|t2\s*se|t2w\w*)\b")


def _normalise_text(text: str) -> str:
    """Lower case; separators (``_-./,()``) become spaces; ``+`` and ``*`` are kept."""
    return re.sub(r"\s+", " ", re.sub(r"[^a-z0-9+*]+", " ", text.lower())).strip()


def guess_sequence(description: str, protocol: str = "") -> tuple[str | None, str]:
    """Guess flair, t1, t1ce or t2 from a SeriesDescription and ProtocolName.

    The description is tried first, then the protocol. Diffusion, susceptibility (T2*), perfusion, angiography,
    localisers, maps and subtractions are recognised and guessed as nothing. T1 with a contrast word
    ("post", "+C", "C+", "Gd", "gad", "contrast", "CE", "enhanced") and no "pre"/"without" word is T1CE.

    Returns:
        (sequence or None, the reason in a few words).
    """
    for field_name, raw in (("description", description), ("protocol", protocol)):
        text = _normalise_text(raw or "")
        if not text:
            continue
        if _NOT_STRUCTURAL.search(text):
            what = _NOT_STRUCTURAL.search(text).group(0)  # type: ignore[union-attr]
            return None, f"{field_name} names {what!r}: not a structural sequence"
        t1 = _T1.search(text)
        if _FLAIR.search(text) and not (t1 and t1.group(0).startswith("t1")):  # GE's "T1 FLAIR" is a T1
            return "flair", f"{field_name} says FLAIR"
        post = _POST.search(text)
        pre = _PRE.search(text)
        if t1 or (post and not _T2.search(text) and re.search(r"\b(t1c|t1ce|t1gd)\b", text)):
            if post and not pre:
                return "t1ce", f"{field_name} says T1 with contrast ({post.group(0).strip()!r})"
            return "t1", f"{field_name} says T1" + (" before contrast" if pre else "")
        if _T2.search(text):
            return "t2", f"{field_name} says T2"
    return None, "no sequence named in description or protocol"


# ---- reading ----------------------------------------------------------------------------------------------------

def _import_pydicom() -> Any:
    try:
        import pydicom
    except ImportError as err:  # pragma: no cover - pinned in requirements.txt
        raise DicomError("expected the pydicom package to read DICOM (pip install -r requirements.txt)") from err
    return pydicom


def _walk_files(root: Path, max_files: int, max_total_bytes: int) -> list[Path]:
    """Regular files under ``root`` (links not followed), sorted, bounded in number and bytes."""
    found: list[Path] = []
    total = 0
    for folder, dirs, names in os.walk(root, followlinks=False):
        dirs.sort()
        for name in sorted(names):
            p = Path(folder) / name
            try:
                st = p.lstat()
            except OSError:
                continue
            if not stat.S_ISREG(st.st_mode) or st.st_size == 0 or st.st_size > MAX_FILE_BYTES:
                continue
            found.append(p)
            total += st.st_size
            if len(found) > max_files:
                raise DicomError(f"expected at most {max_files:,} files in the DICOM folder, found more")
            if total > max_total_bytes:
                raise DicomError(f"expected at most {max_total_bytes // 2**20:,} MB of files in the DICOM folder, "
                                 "found more")
    return found


def _text(ds: Any, tag: str) -> str:
    value = ds.get(tag, "")
    return "" if value is None else str(value).strip()


def _floats(ds: Any, tag: str, n: int) -> tuple[float, ...] | None:
    value = ds.get(tag)
    if value is None:
        return None
    try:
        out = tuple(float(v) for v in value)
    except (TypeError, ValueError):
        return None
    return out if len(out) == n and all(math.isfinite(v) for v in out) else None


def _int_or_none(ds: Any, tag: str) -> int | None:
    try:
        value = ds.get(tag)
        return None if value is None or value == "" else int(value)
    except (TypeError, ValueError):
        return None


def _phi_strings(ds: Any) -> set[str]:
    """The patient's identifier strings of one header (name parts of 3+ letters, IDs, birth date)."""
    out: set[str] = set()
    for tag in _PHI_TAGS:
        value = ds.get(tag)
        if value is None:
            continue
        text = str(value).strip()
        if tag == "PatientName":
            out.update(p for p in re.split(r"[\^=\s,]+", text) if len(p) >= 3)
        elif len(text) >= 3:
            out.add(text)
    return out


def scrub_text(text: str, phi: Iterable[str]) -> str:
    """``text`` with every whole-word occurrence of the identifier strings ``phi`` replaced by ``[removed]``.

    Any case; a match must not touch a letter or digit on either side (``_``, ``-``, ``.``, spaces and the text's
    ends are boundaries), so that an identifier "Ann" removes "Ann" and "ann_t1" but leaves "Planning" whole.
    """
    for item in sorted(set(phi), key=len, reverse=True):
        text = re.sub(r"(?<![A-Za-z0-9])" + re.escape(item) + r"(?![A-Za-z0-9])", "[removed]", text,
                      flags=re.IGNORECASE)
    return text


SCRUBBED_FIELDS: tuple[str, ...] = ("description", "protocol", "guess_reason", "name_reason", "refusal", "warnings")


def scrub_listing(listing: Mapping[str, Any], phi: Iterable[str]) -> dict[str, Any]:
    """A copy of a study listing with the identifier strings ``phi`` scrubbed from each series' free-text fields
    (``SCRUBBED_FIELDS``: texts copied from headers or quoting them), field by field. Keys, numbers and the
    names of written files are left as they are (a patient id "130" must not touch a count of 130 files)."""
    phi = tuple(phi)
    out = dict(listing)
    rows = []
    for row in listing.get("series", []):
        row = dict(row)
        for key in SCRUBBED_FIELDS:
            value = row.get(key)
            if isinstance(value, str):
                row[key] = scrub_text(value, phi)
            elif isinstance(value, list):
                row[key] = [scrub_text(v, phi) if isinstance(v, str) else v for v in value]
        rows.append(row)
    out["series"] = rows
    return out


@dataclass
class _Header:
    path: Path
    uid: str
    study_uid: str
    patient: str
    sop_uid: str
    mosaic: int
    number: int | None
    description: str
    protocol: str
    modality: str
    image_type: str
    rows: int | None
    columns: int | None
    frames: int
    samples: int
    iop: tuple[float, ...] | None
    ipp: tuple[float, ...] | None
    pixel_spacing: tuple[float, ...] | None
    has_pixels: bool


def _read_header(pydicom: Any, path: Path) -> tuple[_Header | None, set[str]]:
    try:
        ds = pydicom.dcmread(path, stop_before_pixels=True, force=False)
    except Exception:  # not DICOM Part 10 (pydicom raises several types on arbitrary bytes)
        return None, set()
    meta = getattr(ds, "file_meta", None)
    if meta is not None and str(meta.get("MediaStorageSOPClassUID", "")) == _DICOMDIR_CLASS:
        return None, set()
    return _header_of(ds, path), _phi_strings(ds)


def _header_of(ds: Any, path: Path) -> _Header:
    """The fields of one header (a pydicom Dataset) that grouping and the stack checks use."""
    frames = _int_or_none(ds, "NumberOfFrames") or 1
    image_type = "\\".join(str(v) for v in (ds.get("ImageType") or []))
    mosaic = 0  # Siemens mosaic: tiles per image (-1: a mosaic of unknown tile count)
    siemens_tiles = (0x0019, 0x100A) in ds and "SIEMENS" in str(ds.get((0x0019, 0x0010), "") and
                                                               ds[0x0019, 0x0010].value).upper()
    if "MOSAIC" in image_type.upper() or siemens_tiles:
        mosaic = -1
        if siemens_tiles:
            value = ds[0x0019, 0x100A].value
            try:
                mosaic = int.from_bytes(value[:2], "little") if isinstance(value, bytes) else int(value)
            except (TypeError, ValueError):
                pass
        mosaic = mosaic or -1
    patient = "\x1f".join(_text(ds, t) for t in ("PatientID", "PatientName", "PatientBirthDate"))
    return _Header(
        path=path, uid=_text(ds, "SeriesInstanceUID"), study_uid=_text(ds, "StudyInstanceUID"), patient=patient,
        sop_uid=_text(ds, "SOPInstanceUID"), mosaic=mosaic, number=_int_or_none(ds, "SeriesNumber"),
        description=_text(ds, "SeriesDescription"), protocol=_text(ds, "ProtocolName"),
        modality=_text(ds, "Modality"), image_type=image_type,
        rows=_int_or_none(ds, "Rows"), columns=_int_or_none(ds, "Columns"), frames=frames,
        samples=_int_or_none(ds, "SamplesPerPixel") or 1, iop=_floats(ds, "ImageOrientationPatient", 6),
        ipp=_floats(ds, "ImagePositionPatient", 3), pixel_spacing=_floats(ds, "PixelSpacing", 2),
        has_pixels=ds.get("Rows") is not None and ds.get("Columns") is not None,
    )


def _check_series(headers: list[_Header]) -> tuple[str | None, dict[str, Any]]:
    """(refusal or None, geometry) of one series' headers: the consistency checks of a 3-D stack.

    Geometry (LPS, mm): ``row_cos`` (direction of increasing column index), ``col_cos`` (increasing row index),
    ``spacing`` (between columns, between rows), ``order`` of the headers by position along the normal and
    ``step`` (vector between consecutive slices).
    """
    first = headers[0]
    n = len(headers)
    if not any(h.has_pixels for h in headers):
        return f"no image data (modality {first.modality or '?'}: a report, presentation state or key object?)", {}
    if any(h.mosaic for h in headers):
        tiles = max(h.mosaic for h in headers)
        each = f"each tiling {tiles} slices into one image" if tiles > 0 else "slices tiled into one image per file"
        return (f"a Siemens mosaic ({n} file(s), {each}: one file per volume): mosaics are not unpacked here; "
                "convert it with dcm2niix and upload the NIfTI"), {}
    if "LOCALIZER" in first.image_type.upper() or re.search(r"\b(localizer|localiser|scout|survey)\b",
                                                            _normalise_text(first.description)):
        return f"a localiser (scout) series of {n} image(s), not a diagnostic volume", {}
    if any(h.frames > 1 for h in headers):
        return ("multi-frame (enhanced) DICOM is not supported here: convert it with dcm2niix and upload "
                "the NIfTI"), {}
    if any(h.samples != 1 for h in headers):
        return "colour images (SamplesPerPixel > 1), not a greyscale MR/CT series", {}
    missing = [t for t, ok in (("ImageOrientationPatient", all(h.iop for h in headers)),
                               ("ImagePositionPatient", all(h.ipp for h in headers)),
                               ("PixelSpacing", all(h.pixel_spacing for h in headers))) if not ok]
    if missing:
        return f"missing geometry ({', '.join(missing)}) in some or all images: no 3-D position to give", {}
    matrices = sorted({(h.rows, h.columns) for h in headers}, key=str)
    if len(matrices) > 1:
        shown = ", ".join(f"{r}x{c}" for r, c in matrices[:3])
        return f"mixed matrix sizes ({shown}): not one 3-D stack", {}
    iops = np.array([h.iop for h in headers], dtype=float)
    if np.abs(iops - iops[0]).max() > ORIENTATION_TOL:
        n_orient = len({tuple(np.round(v, 3)) for v in iops})
        return f"mixed slice orientations ({n_orient} different): a multi-plane localiser or several stacks", {}
    spacings = np.array([h.pixel_spacing for h in headers], dtype=float)
    if np.abs(spacings - spacings[0]).max() > 1e-4:
        return "mixed pixel spacings: not one 3-D stack", {}
    if n < MIN_SLICES:
        return f"only {n} slice(s): a single image or localiser, at least {MIN_SLICES} slices are needed", {}
    row_cos, col_cos = np.asarray(first.iop[:3]), np.asarray(first.iop[3:])  # type: ignore[index]
    if abs(np.linalg.norm(row_cos) - 1) > 0.01 or abs(np.linalg.norm(col_cos) - 1) > 0.01 \
            or abs(float(row_cos @ col_cos)) > 0.01:
        return "ImageOrientationPatient is not two orthogonal unit vectors", {}
    row_cos, col_cos = row_cos / np.linalg.norm(row_cos), col_cos / np.linalg.norm(col_cos)
    normal = np.cross(row_cos, col_cos)
    pos = np.array([h.ipp for h in headers], dtype=float)
    dist = pos @ normal
    order = np.argsort(dist, kind="stable")
    pos, dist = pos[order], dist[order]
    gaps = np.diff(dist)
    if (gaps < 1e-3).any():
        dup = int((gaps < 1e-3).sum()) + 1
        return (f"{dup} images share a slice position (several echoes, phases or time points in one series?): "
                "not one 3-D stack"), {}
    median = float(np.median(gaps))
    tol = SPACING_REL_TOL * median + SPACING_ABS_TOL_MM
    if float(np.abs(gaps - median).max()) > tol:
        return (f"uneven slice spacing ({gaps.min():.3g} to {gaps.max():.3g} mm between positions): "
                "a slice is missing or the series mixes stacks"), {}
    step = (pos[-1] - pos[0]) / (n - 1)
    line = pos[0] + np.arange(n)[:, None] * step
    if float(np.linalg.norm(pos - line, axis=1).max()) > tol:
        return "slice positions do not lie on one line: not one 3-D stack", {}
    ps = spacings[0]
    if ps.min() <= 0:
        return f"non-positive PixelSpacing {tuple(ps)}", {}
    voxels = int(first.rows or 0) * int(first.columns or 0) * n
    if voxels > MAX_VOXELS:
        return f"too large: {voxels:,} voxels, at most {MAX_VOXELS:,}", {}
    return None, {"row_cos": row_cos, "col_cos": col_cos, "spacing": (float(ps[1]), float(ps[0])),
                  "order": order, "step": step, "origin": pos[0], "normal": normal}


def stack_geometry(datasets: Sequence[Any]) -> tuple[str | None, dict[str, Any]]:
    """(refusal or None, geometry) of one series' single-frame headers (pydicom Datasets, any order): the checks
    and the geometry that ``read_study`` uses (see ``_check_series``; ``order`` sorts ``datasets`` by position)."""
    return _check_series([_header_of(ds, Path()) for ds in datasets])


def series_affine(origin: np.ndarray, row_cos: np.ndarray, col_cos: np.ndarray, col_spacing_mm: float,
                  row_spacing_mm: float, step: np.ndarray) -> np.ndarray:
    """The 4x4 voxel-to-RAS affine of a stack with array axes (column i, row j, slice k).

    Args:
        origin: ImagePositionPatient of the first slice (LPS, mm).
        row_cos, col_cos: ImageOrientationPatient's two cosines (LPS).
        col_spacing_mm, row_spacing_mm: PixelSpacing[1] (between columns) and PixelSpacing[0] (between rows).
        step: vector between consecutive slice positions (LPS, mm); not necessarily along the normal.
    """
    lps = np.eye(4)
    lps[:3, 0] = row_cos * col_spacing_mm
    lps[:3, 1] = col_cos * row_spacing_mm
    lps[:3, 2] = step
    lps[:3, 3] = origin
    return _LPS_TO_RAS @ lps


def _read_pixels(pydicom: Any, headers: list[_Header], order: np.ndarray) -> tuple[np.ndarray, list[str]]:
    """Voxels (columns, rows, slices) of the ordered slices with each slice's rescale applied.

    Integers that fit stay int16; anything else becomes float32.
    """
    slices: list[np.ndarray] = []
    scaled = False
    for idx in order:
        ds = pydicom.dcmread(headers[int(idx)].path, force=False)
        try:
            px = np.asarray(ds.pixel_array)
        except Exception as err:  # compressed without a decoder, truncated pixel data, ...
            uid = getattr(getattr(ds, "file_meta", None), "TransferSyntaxUID", None)
            syntax = getattr(uid, "name", None) or str(uid or "?")
            raise DicomError(f"pixel data could not be decoded (transfer syntax {syntax}, "
                             f"{type(err).__name__}): decompress the files first, e.g. with dcmdjpeg") from err
        if px.ndim != 2:
            raise DicomError(f"expected one 2-D greyscale image per file, got pixel data of shape {px.shape}")
        slope = float(ds.get("RescaleSlope", 1) or 1)
        intercept = float(ds.get("RescaleIntercept", 0) or 0)
        if slope != 1 or intercept != 0:
            scaled = True
            px = px.astype(np.float64) * slope + intercept
        slices.append(px.T)  # (rows, columns) -> (columns, rows)
    vol = np.stack(slices, axis=2)
    notes = ["rescale slope/intercept applied"] if scaled else []
    if vol.dtype.kind in "iu" or (np.isfinite(vol).all() and np.array_equal(vol, np.round(vol))):
        lo, hi = float(vol.min()), float(vol.max())
        if -32768 <= lo and hi <= 32767:
            return vol.astype(np.int16), notes
    return vol.astype(np.float32), notes


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
    paths = _walk_files(root, MAX_FILES, MAX_TOTAL_BYTES)
    headers: list[_Header] = []
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
    groups: dict[str, list[_Header]] = {}
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
            s.refusal, geo = _check_series(hs)
            if s.refusal is None:
                s.affine = series_affine(geo["origin"], geo["row_cos"], geo["col_cos"], *geo["spacing"], geo["step"])
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
                        s.data, notes = _read_pixels(pydicom, hs, geo["order"])
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


def _drop_duplicates(headers: list[_Header]) -> tuple[list[_Header], int, int]:
    """(headers without exact duplicates, duplicates dropped, files that share a SOPInstanceUID but differ).

    Files of one series with the same SOPInstanceUID are compared byte for byte: identical ones are kept once
    (as dcm2niix does); differing ones are counted as a conflict and all kept (the series is then refused).
    """
    by_sop: dict[str, list[_Header]] = {}
    for h in headers:
        if h.sop_uid:
            by_sop.setdefault(h.sop_uid, []).append(h)
    drop: set[int] = set()
    conflict = 0
    for group in by_sop.values():
        if len(group) < 2:
            continue
        digests: dict[str, _Header] = {}
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
            key = (by_index[idx].study, value)
            if key in taken:
                raise DicomError(f"expected one series per sequence, got {value} for series "
                                 f"{by_index[taken[key]].n} and {by_index[idx].n}")
            taken[key] = idx
    usable = [s for s in study.series if s.usable]
    counts: dict[tuple[int, str], int] = {}
    for s in usable:
        if s.index not in chosen and s.guess:
            counts[(s.study, s.guess)] = counts.get((s.study, s.guess), 0) + 1
    names: dict[int, tuple[str | None, str]] = {}
    for s in usable:
        value = chosen.get(s.index)
        n_like = counts.get((s.study, s.guess or ""), 0)
        if value == "skip":
            names[s.index] = (None, "skipped by the user")
        elif value == "none":
            names[s.index] = (s.label, "set to no sequence by the user")
        elif value in SEQUENCES:
            names[s.index] = (value, "set by the user")
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
