"""Labels on a case's RAS grid -> a DICOM Segmentation (SEG) object that references the source DICOM series.

For users whose PACS wants the segmentation as DICOM, filed with the study the case was converted from:

1. ``source_series`` (headers already in memory) or ``read_source_series`` (a DICOM folder, a zip archive or its
   bytes) gives a ``SourceSeries``: the single-frame headers of one series (no pixel data), checked and sorted
   with the very stack checks and geometry of ``core.data.dicom`` (``stack_geometry``, ``series_affine``).
2. ``labels_onto_series`` maps labels on any RAS grid onto that series' own voxels (column i, row j, slice k in
   position order) by nearest neighbour through both affines. When the case was converted from that series its
   grid is a permutation/flip of the series' voxels (``core.data.io`` reorients once at load): every voxel centre
   lands on a label voxel centre and the mapping is exact (``exact=True``), nothing is interpolated.
3. ``build_seg`` writes one BINARY segment per label present (1 NCR/NET, 2 edema, 4 enhancing tumour) with
   the coded concepts of DICOM's brain-lesion context groups (CID 7168/7169: SCT 6574001 Necrosis, SCT 79654002
   Edema, NCIt C113842 Enhancing Lesion; category SCT 49755003 Morphologically Abnormal Structure, anatomic region
   SCT 12738006 Brain), the algorithm type (AUTOMATIC: the model's labels; SEMIAUTOMATIC: the model's labels
   corrected by hand; MANUAL: drawn by a person, e.g. a reference segmentation), one frame per source slice with
   tumour (frames without any are left out), each referencing its source SOP instance, through highdicom.

Identifiers: the SEG keeps the source study's patient and study modules (name, ID, birth date, accession number,
study UID...) because DICOM requires them and a PACS files the object by them: it is the only file this project
writes that carries patient identifiers (``SEG_PHI_NOTE``). ``SourceSeries`` holds the headers in memory only;
nothing here writes them anywhere else. File names never come from the headers.
"""

from __future__ import annotations

import copy
import io
import os
import tempfile
import zipfile
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from core import __version__
from core.config import LABEL_COLOURS, LABEL_ED, LABEL_ET, LABEL_NCR, TUMOUR_LABELS
from core.data import dicom
from core.data.cases import check_labels
from core.data.io import Volume
from core.errors import DicomError

ALGORITHM_TYPES: tuple[str, ...] = ("AUTOMATIC", "SEMIAUTOMATIC", "MANUAL")
SEG_SERIES_NUMBER = 9901  # the SEG's own series number (any positive number a PACS can list)
SEG_SERIES_DESCRIPTION = "BraTS tumour sub-regions (research)"
SEG_CONTENT_LABEL = "BRATS_LABELS"  # CS, at most 16 characters
SEG_PHI_NOTE = ("The DICOM SEG keeps the study's patient and study information (patient name, ID, birth date, "
                "accession number, study UID) because DICOM requires it and your PACS files the segmentation with "
                "the study by it: it is the only file this app writes that carries patient identifiers. Every other "
                "output (NIfTI files, reports, tables, the audit log) holds none.")
_GEOMETRY_TOL_MM = 1e-3  # affines compared within this (NIfTI stores them as float32)
_EXACT_TOL_VOXEL = 1e-3  # a voxel centre this close to a label voxel centre is that voxel
# Type-2 attributes highdicom copies from the source: present but empty means "unknown" in DICOM.
_TYPE2_COPIED = ("PatientName", "PatientID", "PatientBirthDate", "PatientSex", "AccessionNumber", "StudyID",
                 "StudyDate", "StudyTime", "ReferringPhysicianName")


@dataclass(frozen=True)
class SegmentSpec:
    """How one BraTS label is described in the SEG.

    ``property_type`` is (code value, coding scheme designator, code meaning).
    """

    label: int
    segment_label: str
    description: str
    property_type: tuple[str, str, str]
    rgb: tuple[int, int, int]


SEGMENTS: dict[int, SegmentSpec] = {
    LABEL_NCR: SegmentSpec(LABEL_NCR, "NCR/NET", "Necrotic and non-enhancing tumour core (BraTS label 1)",
                           ("6574001", "SCT", "Necrosis"), LABEL_COLOURS[LABEL_NCR]),
    LABEL_ED: SegmentSpec(LABEL_ED, "Edema", "Peritumoral edema (BraTS label 2)",
                          ("79654002", "SCT", "Edema"), LABEL_COLOURS[LABEL_ED]),
    LABEL_ET: SegmentSpec(LABEL_ET, "Enhancing tumour", "Enhancing tumour (BraTS label 4)",
                          ("C113842", "NCIt", "Enhancing Lesion"), LABEL_COLOURS[LABEL_ET]),
}
CATEGORY: tuple[str, str, str] = ("49755003", "SCT", "Morphologically Abnormal Structure")
ANATOMIC_REGION: tuple[str, str, str] = ("12738006", "SCT", "Brain")


# ---- the source series ----------------------------------------------------------------------------------------

@dataclass(frozen=True, eq=False)
class SourceSeries:
    """One single-frame DICOM series a SEG can reference.

    Attributes:
        datasets: the headers (pydicom Datasets without pixel data) in slice-position order: slice k of the
            series' voxel grid is ``datasets[k]``. They hold the patient's identifiers: kept in memory only.
        affine: 4x4 voxel (column i, row j, slice k) -> RAS world (mm) affine (``dicom.series_affine``).
        shape: (columns, rows, slices).
        series_uid: SeriesInstanceUID (never shown or logged).
        series_number: SeriesNumber as stored (None when absent).
        description: SeriesDescription, scrubbed of the patient's name and ID (safe to show).
    """

    datasets: tuple[Any, ...] = field(repr=False)
    affine: np.ndarray
    shape: tuple[int, int, int]
    series_uid: str = field(repr=False)
    series_number: int | None
    description: str

    @property
    def sop_instance_uids(self) -> tuple[str, ...]:
        """SOPInstanceUID of every slice, in slice-position order."""
        return tuple(str(ds.SOPInstanceUID) for ds in self.datasets)

    def matches(self, vol: Volume) -> bool:
        """True when ``vol`` was stored on this series' grid (same shape, affine within 1e-3 mm)."""
        return (tuple(vol.original_shape) == self.shape
                and bool(np.allclose(vol.original_affine, self.affine, atol=_GEOMETRY_TOL_MM)))


def source_series(datasets: Sequence[Any]) -> SourceSeries:
    """Check the headers of one series as a 3-D stack (``dicom.stack_geometry``) and sort them by position.

    Args:
        datasets: pydicom Datasets of one series' single-frame images, any order (pixel data not needed).

    Raises:
        DicomError: no headers, several series, a missing UID, or a series that is not one consistent stack.
    """
    if not datasets:
        raise DicomError("expected the headers of one DICOM series, got none")
    uids = {str(ds.get("SeriesInstanceUID", "") or "") for ds in datasets}
    if len(uids) != 1 or "" in uids:
        raise DicomError(f"expected the images of one series (one SeriesInstanceUID), got {len(uids)} series"
                         if "" not in uids else "expected a SeriesInstanceUID in every image, some have none")
    for tag in ("SOPInstanceUID", "SOPClassUID", "StudyInstanceUID", "FrameOfReferenceUID"):
        if any(not ds.get(tag) for ds in datasets):
            raise DicomError(f"expected {tag} in every image of the source series, some have none: a DICOM SEG "
                             "cannot reference them")
    seen: set[str] = set()
    kept = []
    for ds in datasets:  # an exact duplicate file (one SOPInstanceUID twice) is dropped, as read_study does
        sop = str(ds.SOPInstanceUID)
        if sop not in seen:
            seen.add(sop)
            kept.append(ds)
    datasets = kept
    refusal, geo = dicom.stack_geometry(datasets)
    if refusal:
        raise DicomError(f"the source series cannot carry a segmentation: {refusal}")
    ordered = tuple(datasets[int(i)] for i in geo["order"])
    affine = dicom.series_affine(geo["origin"], geo["row_cos"], geo["col_cos"], geo["spacing"][0], geo["spacing"][1],
                                 geo["step"])
    first = ordered[0]
    phi = dicom.phi_strings(first)
    number = first.get("SeriesNumber")
    try:
        series_number = int(number) if number not in (None, "") else None
    except (TypeError, ValueError):
        series_number = None
    return SourceSeries(
        datasets=ordered, affine=affine, shape=(int(first.Columns), int(first.Rows), len(ordered)),
        series_uid=uids.pop(), series_number=series_number,
        description=dicom.scrub_text(str(first.get("SeriesDescription", "") or "").strip(), phi))


def _read_headers(paths: Iterable[Path], series_uid: str | None = None) -> list[Any]:
    import pydicom

    out = []
    for p in paths:
        try:
            ds = pydicom.dcmread(p, stop_before_pixels=True, force=False)
        except Exception:  # not DICOM Part 10: skipped, as read_study does
            continue
        if series_uid is None or str(ds.get("SeriesInstanceUID", "")) == series_uid:
            out.append(ds)
    return out


def pick_series(study: dicom.Study, key: str | None = None, match: Volume | None = None,
                prefer: Sequence[str] = ("t1ce", "flair", "t1", "t2"),
                names: Mapping[int, tuple[str | None, str]] | None = None) -> tuple[dicom.Series, bool]:
    """The series of ``study`` a SEG should reference, and whether it is the grid of ``match``.

    ``key`` (series number or SeriesInstanceUID) names it; else the usable series stored on ``match``'s grid
    (several on one grid: the first whose sequence comes first in ``prefer``; the sequence is the name given by
    ``names`` (``dicom.resolve_names``, which then also limits the choice to named series) or else the guess);
    else the only usable series.

    Raises:
        DicomError: no such series, a refused one, or no way to choose.
    """
    usable = [s for s in study.series if s.usable and s.affine is not None and s.shape is not None
              and (names is None or (names.get(s.index) or (None, ""))[0] is not None)]
    if key is not None:
        s = study.find(key)
        if not s.usable:
            raise DicomError(f"series {s.n} cannot carry a segmentation: {s.refusal}")
        on_grid = match is not None and tuple(match.original_shape) == s.shape and bool(
            np.allclose(match.original_affine, np.asarray(s.affine, dtype=float), atol=_GEOMETRY_TOL_MM))
        return s, on_grid
    if match is not None:
        same = [s for s in usable if tuple(match.original_shape) == s.shape
                and np.allclose(match.original_affine, np.asarray(s.affine, dtype=float), atol=_GEOMETRY_TOL_MM)]
        if same:
            rank = {name: i for i, name in enumerate(prefer)}
            def seq(s: dicom.Series) -> str:
                return str((names.get(s.index) or (None, ""))[0] if names is not None else s.guess or "")

            return min(same, key=lambda s: (rank.get(seq(s), len(rank)), s.index)), True
        listed = ", ".join(f"{s.n} ({'x'.join(map(str, s.shape))})" for s in usable)  # type: ignore[arg-type]
        raise DicomError(f"expected the segmentation on the grid of a series of the study, got shape "
                         f"{tuple(match.original_shape)} on none of them (usable series: {listed or 'none'}); "
                         "name the series (--series N): the labels are then resampled onto it (nearest neighbour)")
    if len(usable) == 1:
        return usable[0], False
    raise DicomError(f"expected one usable series or a series number, got {len(usable)} usable series")


def read_source_series(source: str | os.PathLike[str] | bytes, key: str | None = None, match: Volume | None = None,
                       *, scratch: str | os.PathLike[str] | None = None) -> tuple[SourceSeries, bool]:
    """The ``SourceSeries`` of a DICOM folder, a zip archive (path or bytes) of one study, and whether its grid is
    ``match``'s (see ``pick_series`` for the choice). A zip is extracted safely (``dicom.safe_extract_zip``)
    into a temporary folder removed before returning.

    Raises:
        DicomError: not a folder or zip of DICOM files, no series to choose, or the series cannot carry a SEG.
    """
    def pick(folder: Path) -> tuple[SourceSeries, bool]:
        study = dicom.read_study(folder, load_pixels=False)
        s, same = pick_series(study, key, match)
        return source_series(_read_headers(s.files, s.uid)), same

    if isinstance(source, bytes | bytearray):
        with tempfile.TemporaryDirectory(prefix="dicomseg-", dir=scratch) as tmp:
            dicom.safe_extract_zip(bytes(source), tmp)
            return pick(Path(tmp))
    src = Path(source)
    if src.is_dir():
        return pick(src)
    if not src.is_file() or not zipfile.is_zipfile(src):
        raise DicomError("expected a folder of DICOM files or a zip archive of them, got "
                         + ("another kind of file" if src.is_file() else "a path that does not exist"))
    with tempfile.TemporaryDirectory(prefix="dicomseg-", dir=scratch) as tmp:
        dicom.safe_extract_zip(src, tmp)
        return pick(Path(tmp))


def series_headers(source: str | os.PathLike[str] | bytes | Sequence[Path], series_uid: str, *,
                   scratch: str | os.PathLike[str] | None = None) -> SourceSeries:
    """The ``SourceSeries`` with SeriesInstanceUID ``series_uid`` read from a DICOM folder, a zip archive (path
    or bytes) or a list of files (headers only; a zip is extracted into a temporary folder removed at once).

    Raises:
        DicomError: no image of that series, or it cannot carry a SEG.
    """
    if isinstance(source, bytes | bytearray):
        with tempfile.TemporaryDirectory(prefix="dicomseg-", dir=scratch) as tmp:
            dicom.safe_extract_zip(bytes(source), tmp)
            found = _read_headers(sorted(p for p in Path(tmp).iterdir() if p.is_file()), series_uid)
    elif isinstance(source, str | os.PathLike) and Path(source).is_file():
        with tempfile.TemporaryDirectory(prefix="dicomseg-", dir=scratch) as tmp:
            dicom.safe_extract_zip(Path(source), tmp)
            found = _read_headers(sorted(p for p in Path(tmp).iterdir() if p.is_file()), series_uid)
    elif isinstance(source, str | os.PathLike):
        found = _read_headers(dicom.walk_files(Path(source), dicom.MAX_FILES, dicom.MAX_TOTAL_BYTES), series_uid)
    else:
        found = _read_headers(source, series_uid)
    if not found:
        raise DicomError("expected the images of the source series, found none (were the files moved?)")
    return source_series(found)


# ---- labels onto the series' voxels ---------------------------------------------------------------------------

def labels_onto_series(labels: np.ndarray, affine: np.ndarray, series: SourceSeries) -> tuple[np.ndarray, bool]:
    """Labels on a RAS grid mapped onto the series' voxels by nearest neighbour.

    Args:
        labels: (X, Y, Z) integer labels on the grid of ``affine``.
        affine: 4x4 voxel-to-RAS world (mm) affine of ``labels``.
        series: the target series.

    Returns:
        (labels on the series as (slices, rows, columns), frame k = ``series.datasets[k]``, uint8;
        exact: True when every series voxel centre is a voxel centre of ``labels`` and each is used once, i.e.
        the grids are one up to axis order and direction).
    """
    arr = np.asarray(labels)
    if arr.ndim != 3:
        raise DicomError(f"expected a 3-D label volume, got shape {arr.shape}")
    aff = np.asarray(affine, dtype=float)
    if aff.shape != (4, 4) or not np.isfinite(aff).all() or abs(np.linalg.det(aff[:3, :3])) < 1e-12:
        raise DicomError("expected an invertible 4x4 affine for the labels")
    m = np.linalg.inv(aff) @ series.affine  # series voxel (i, j, k) -> label voxel
    lin, off = m[:3, :3], m[:3, 3]
    perm = np.abs(np.rint(lin))
    exact = bool(np.allclose(lin, np.rint(lin), atol=_EXACT_TOL_VOXEL)
                 and np.array_equal(perm.sum(axis=0), np.ones(3)) and np.array_equal(perm.sum(axis=1), np.ones(3))
                 and np.allclose(off, np.rint(off), atol=_EXACT_TOL_VOXEL)
                 and sorted(arr.shape) == sorted(series.shape))
    ni, nj, nk = series.shape
    ii, jj = np.meshgrid(np.arange(ni, dtype=float), np.arange(nj, dtype=float), indexing="ij")
    plane = lin[:, :2] @ np.stack([ii.ravel(), jj.ravel()]) + off[:, None]  # (3, ni * nj) at k = 0
    out = np.zeros((nk, nj, ni), dtype=np.uint8)
    hits = 0
    for k in range(nk):
        idx = np.rint(plane + lin[:, 2:3] * k).astype(np.int64)
        inside = np.all((idx >= 0) & (idx < np.asarray(arr.shape)[:, None]), axis=0)
        hits += int(inside.sum())
        vals = np.zeros(ni * nj, dtype=np.uint8)
        vals[inside] = arr[idx[0, inside], idx[1, inside], idx[2, inside]]
        out[k] = vals.reshape(ni, nj).T  # (columns, rows) -> (rows, columns)
    return out, exact and hits == arr.size


# ---- the SEG object -------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class SegExport:
    """What ``build_seg`` wrote: labels exported (in segment order), frames, whether the mapping was exact,
    and notes for the user (no identifiers)."""

    labels: tuple[int, ...]
    frames: int
    exact: bool
    notes: tuple[str, ...] = ()


def _code(triple: tuple[str, str, str]) -> Any:
    from pydicom.sr.coding import Code

    return Code(*triple)


def _prepared(series: SourceSeries) -> list[Any]:
    """The headers with the type-2 attributes highdicom copies present (empty when absent: a copy is changed,
    never the held header)."""
    out = []
    for ds in series.datasets:
        missing = [tag for tag in _TYPE2_COPIED if tag not in ds or ds.get(tag) is None]
        sex = str(ds.get("PatientSex", "") or "").strip().upper()
        if missing or sex not in ("", "M", "F", "O"):
            ds = copy.deepcopy(ds)
            for tag in missing:
                setattr(ds, tag, "")
            if sex not in ("", "M", "F", "O"):  # a value outside DICOM's M/F/O (e.g. "Male") becomes unknown
                ds.PatientSex = ""
        out.append(ds)
    return out


def build_seg(series: SourceSeries, labels: np.ndarray, affine: np.ndarray, *, algorithm_type: str = "AUTOMATIC",
              algorithm_name: str = "BraTS viewer segmentation model", algorithm_version: str = "",
              series_description: str = SEG_SERIES_DESCRIPTION) -> tuple[Any, SegExport]:
    """A highdicom ``Segmentation`` of ``labels`` referencing ``series``, and what it holds.

    Args:
        series: the source series (its headers give the patient, study and frame of reference).
        labels: (X, Y, Z) labels 0/1/2/4 (internal convention) on the RAS grid of ``affine``.
        affine: 4x4 voxel-to-RAS world (mm) affine of ``labels`` (a case's ``reference.affine``).
        algorithm_type: AUTOMATIC (model output), SEMIAUTOMATIC (model output corrected by hand) or MANUAL.
        algorithm_name, algorithm_version: the algorithm identification (AUTOMATIC and SEMIAUTOMATIC), e.g. the
            model's name and the first characters of its weights' SHA-256.

    Raises:
        DicomError: an unknown algorithm type, no tumour label at all (nothing to export), no label left on the
            series' slices, or a source highdicom refuses.
        CaseError: labels outside {0, 1, 2, 4}.
    """
    algo = str(algorithm_type).upper()
    if algo not in ALGORITHM_TYPES:
        raise DicomError(f"expected an algorithm type among {', '.join(ALGORITHM_TYPES)}, got {algorithm_type!r}")
    arr = np.asarray(labels)
    if arr.ndim != 3:
        raise DicomError(f"expected a 3-D label volume, got shape {arr.shape}")
    check_labels(arr)
    present = [lab for lab in TUMOUR_LABELS if (arr == lab).any()]
    if not present:
        raise DicomError("nothing to export: the segmentation holds no tumour label (1, 2 or 4), and a DICOM SEG "
                         "needs at least one segment")
    mapped, exact = labels_onto_series(arr, affine, series)
    kept = [lab for lab in present if (mapped == lab).any()]
    notes = []
    if not exact:
        notes.append("the labels were resampled onto the source series' slices (nearest neighbour): the case "
                     "was not on that series' grid")
    lost = [SEGMENTS[lab].segment_label for lab in present if lab not in kept]
    if lost:
        notes.append(f"no voxel of {', '.join(lost)} falls on the source series' slices: left out")
    if not kept:
        raise DicomError("nothing to export: no tumour voxel falls on the source series' slices")

    import highdicom as hd
    from pydicom.sr.codedict import codes

    descriptions = []
    for number, lab in enumerate(kept, start=1):
        spec = SEGMENTS[lab]
        ident = None
        if algo != "MANUAL":
            ident = hd.AlgorithmIdentificationSequence(name=algorithm_name[:64] or "segmentation model",
                                                       family=codes.cid7162.ArtificialIntelligence,
                                                       version=(algorithm_version or __version__)[:64])
        descriptions.append(hd.seg.SegmentDescription(
            segment_number=number, segment_label=spec.segment_label[:64],
            segmented_property_category=_code(CATEGORY), segmented_property_type=_code(spec.property_type),
            algorithm_type=algo, algorithm_identification=ident, anatomic_regions=[_code(ANATOMIC_REGION)],
            display_color=hd.color.CIELabColor.from_rgb(*spec.rgb)))
        descriptions[-1].SegmentDescription = spec.description  # (0062,0006): free text, no constructor argument
    stacked = np.stack([(mapped == lab) for lab in kept], axis=-1).astype(np.uint8)  # (frames, rows, cols, segs)
    try:
        seg = hd.seg.Segmentation(
            source_images=_prepared(series), pixel_array=stacked, segmentation_type="BINARY",
            segment_descriptions=descriptions, series_instance_uid=hd.UID(), series_number=SEG_SERIES_NUMBER,
            sop_instance_uid=hd.UID(), instance_number=1, manufacturer="brats-viewer (research software)",
            manufacturer_model_name="brats-viewer", software_versions=__version__, device_serial_number="none",
            content_description="BraTS tumour sub-regions; research use only, not for clinical diagnosis"[:64],
            content_label=SEG_CONTENT_LABEL, series_description=series_description[:64],
            content_qualification="RESEARCH", omit_empty_frames=True)
    except (ValueError, TypeError, AttributeError, KeyError) as err:
        first = str(err).splitlines()[0] if str(err) else type(err).__name__
        first = dicom.scrub_text(first, dicom.phi_strings(series.datasets[0]))  # never an identifier in a message
        raise DicomError(f"the DICOM SEG could not be built from this series ({first[:200]})") from err
    frames = int(seg.get("NumberOfFrames", 0) or 0)
    return seg, SegExport(labels=tuple(kept), frames=frames, exact=exact, notes=tuple(notes))


def seg_bytes(series: SourceSeries, labels: np.ndarray, affine: np.ndarray, **kwargs: Any) -> tuple[bytes, SegExport]:
    """The SEG of ``build_seg`` as DICOM Part-10 bytes, and what it holds."""
    seg, info = build_seg(series, labels, affine, **kwargs)
    buf = io.BytesIO()
    seg.save_as(buf, enforce_file_format=True)
    return buf.getvalue(), info
