"""The case type (modalities plus optional segmentation), BraTS folder discovery and upload assembly."""

from __future__ import annotations

import hashlib
import os
import re
from collections.abc import Iterable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from core.config import LABEL_ET, LABEL_ET_2023, MODALITIES, MODALITY_TITLES, VALID_LABELS
from core.data.io import Volume, load_volume, load_volume_bytes, read_header_info
from core.errors import BratsViewerError, CaseError, DataFolderError

# File-name patterns of every BraTS release. Group "id" is the case id, group "mod" the modality key.
_NIFTI_EXT = r"\.nii(?:\.gz)?$"
_PATTERN_2020 = re.compile(r"^(?P<id>.+?)_(?P<mod>flair|t1ce|t1gd|t1|t2|seg)" + _NIFTI_EXT, re.IGNORECASE)
_PATTERN_2023 = re.compile(r"^(?P<id>.+?)-(?P<mod>t2f|t1c|t1n|t2w|seg)" + _NIFTI_EXT, re.IGNORECASE)
_MOD_ALIASES: dict[str, str] = {
    "flair": "flair", "t2f": "flair", "t1ce": "t1ce", "t1gd": "t1ce", "t1c": "t1ce", "t1": "t1", "t1n": "t1",
    "t2": "t2", "t2w": "t2", "seg": "seg",
}
SEG_KEY = "seg"
MASK_KEY = "mask"
_LOAD_THREADS = 2  # files of one case decompressed at once
AFFINE_TOLERANCE_MM = 1e-3
# The BraTS 2013 layout as DeepMedic ships it: one folder per patient, z-scored FLAIR and T1c, a brain mask and
# ``OTMultiClass`` labels in the 2013 scheme (0, 1 necrosis, 2 edema, 3 non-enhancing core, 4 enhancing).
LAYOUT_BRATS = "brats"
LAYOUT_2013 = "brats2013"
_LAYOUT_2013_FILES: dict[str, str] = {
    "flair": "Flair_subtrMeanDivStd", "t1ce": "T1c_subtrMeanDivStd", "t1": "T1_subtrMeanDivStd",
    "t2": "T2_subtrMeanDivStd", SEG_KEY: "OTMultiClass", MASK_KEY: "brainmask",
}
MIN_DISCOVERED_MODALITIES = 2


def parse_brats_name(file_name: str) -> tuple[str, str] | None:
    """(case_id, modality key) from a BraTS file name, or None. Modality keys: flair, t1, t1ce, t2, seg."""
    for pattern in (_PATTERN_2023, _PATTERN_2020):
        m = pattern.match(file_name)
        if m:
            return m.group("id"), _MOD_ALIASES[m.group("mod").lower()]
    return None


def guess_modality(file_name: str) -> str | None:
    """Best guess of the modality key of an uploaded file from its name (None when unsure).

    BraTS names first; then name tokens (``T1w`` -> t1, ``t1_gd`` / ``T1-post`` -> t1ce, ``mask`` -> seg).
    Both ``/`` and ``\\`` count as folder separators (browsers on Windows may send either).
    """
    base = re.split(r"[\\/]", file_name)[-1]
    parsed = parse_brats_name(base)
    if parsed:
        return parsed[1]
    stem = re.sub(_NIFTI_EXT, "", base, flags=re.IGNORECASE).lower()
    tokens = [t for t in re.split(r"[^a-z0-9]+", stem) if t]
    for i in range(len(tokens) - 1, -1, -1):
        tok = tokens[i]
        if tok in _CONTRAST_TOKENS and "t1" in tokens[:i]:
            return "t1ce"
        if tok in _MOD_ALIASES:
            return _MOD_ALIASES[tok]
        if tok in _EXTRA_ALIASES:
            return _EXTRA_ALIASES[tok]
        if tok in {"mask", "label", "labels", "segmentation", "gt"}:
            return SEG_KEY
    for key, aliases in (("t1ce", ("t1ce", "t1gd", "t1c", "contrast")), ("flair", ("flair",)),
                         ("t2", ("t2w",)), ("seg", ("seg", "mask", "label"))):
        if any(a in stem for a in aliases):
            return key
    return None


_CONTRAST_TOKENS = frozenset({"gd", "ce", "c", "contrast", "post", "gad"})
_EXTRA_ALIASES: dict[str, str] = {"t1w": "t1", "t1wce": "t1ce", "t2flair": "flair", "t2w": "t2"}


@dataclass(frozen=True, eq=False)
class Case:
    """One patient study: co-registered modalities (RAS grid) and an optional segmentation.

    Attributes:
        case_id: BraTS id or the case folder's name (display only; never a path from an upload).
        images: modality key ("flair", "t1", "t1ce", "t2") -> Volume, all on one grid.
        seg: labels 0/1/2/4 (uint8, internal convention) on the same grid, or None.
        label_convention: "2021" (ET = 4 on disk) or "2023" (ET = 3 on disk) for the loaded seg.
        source: folder it came from, or "upload".
        notes: free text shown with the case (e.g. "label is a pseudo-label").
    """

    case_id: str
    images: Mapping[str, Volume]
    seg: Volume | None = None
    label_convention: str = "2021"
    source: str = ""
    notes: str = ""
    files: Mapping[str, str] = field(default_factory=dict)

    @property
    def reference(self) -> Volume:
        """The volume whose geometry all outputs are written in (first modality present)."""
        for key in MODALITIES:
            if key in self.images:
                return self.images[key]
        raise CaseError("expected at least one image in the case, got none")

    @property
    def shape(self) -> tuple[int, int, int]:
        return self.reference.shape

    @property
    def spacing_mm(self) -> tuple[float, float, float]:
        return self.reference.spacing_mm

    @property
    def voxel_volume_ml(self) -> float:
        """One voxel's volume in mL from |det| of the reference affine (``io.voxel_volume_ml_from``)."""
        return self.reference.voxel_volume_ml

    @property
    def modalities(self) -> tuple[str, ...]:
        return tuple(k for k in MODALITIES if k in self.images)

    @property
    def has_seg(self) -> bool:
        return self.seg is not None

    @property
    def content_key(self) -> str:
        """Hash of the input files' hashes: identifies the case content for caches."""
        h = hashlib.sha256()
        for key in sorted(self.images):
            h.update(f"{key}:{self.images[key].sha256};".encode())
        return h.hexdigest()[:32]

    def input_hashes(self) -> dict[str, str]:
        """Modality key -> SHA-256 of its input file."""
        out = {k: self.images[k].sha256 for k in self.modalities}
        if self.seg is not None:
            out[SEG_KEY] = self.seg.sha256
        return out


# --------------------------------------------------------------------------------------------- labels -------

def normalise_labels(seg: Volume, convention: str | None = None, hint: str | None = None) -> tuple[Volume, str]:
    """Check a segmentation's labels and map them to the internal convention (0, 1, 2, 4) as uint8.

    BraTS 2023 files use 3 for ET: a label map holding 3 and no 4 is read as 2023 and 3 becomes 4.
    A map holding neither 3 nor 4 cannot tell; ``hint`` (e.g. "2023" from the file naming) decides then,
    so that it is written back in its own convention. ``convention="2013"`` (BraTS 2013 files: 3 is
    non-enhancing core) maps 3 to NCR/NET (1), as today's convention counts both in label 1.

    Raises:
        CaseError: non-integer labels or labels outside {0, 1, 2, 3, 4}, or both 3 and 4 present.
    """
    arr = np.asarray(seg.data)
    if arr.dtype.kind == "f":
        rounded = np.rint(arr)
        if not np.array_equal(rounded, arr):
            raise CaseError("expected integer labels in the segmentation, got fractional values")
        arr = rounded
    values = set(int(v) for v in np.unique(arr))
    if not values <= {0, 1, 2, 3, 4}:
        raise CaseError(f"expected segmentation labels within {{0, 1, 2, 4}} (or 3 for ET in BraTS 2023), got {sorted(values)}")
    if convention == "2013":
        out = arr.astype(np.uint8)
        return seg.with_data(np.where(out == 3, 1, out).astype(np.uint8)), convention
    if 3 in values and 4 in values:
        raise CaseError("expected ET labelled 4 (BraTS 2021) or 3 (BraTS 2023), got both 3 and 4")
    if convention is None:
        convention = "2023" if 3 in values else "2021" if 4 in values else (hint or "2021")
    out = arr.astype(np.uint8)
    if convention == "2023":
        out = np.where(out == LABEL_ET_2023, LABEL_ET, out).astype(np.uint8)
    elif 3 in values:
        raise CaseError("expected BraTS 2021 labels {0, 1, 2, 4}, got label 3")
    return seg.with_data(out), convention


def labels_for_disk(labels: np.ndarray, convention: str = "2021") -> np.ndarray:
    """Internal labels (0, 1, 2, 4) as written for a convention ("2023" writes ET as 3; "2013" files are written
    in today's convention, 1 holding both necrosis and non-enhancing core)."""
    out = np.asarray(labels).astype(np.uint8)
    if convention == "2023":
        out = np.where(out == LABEL_ET, LABEL_ET_2023, out).astype(np.uint8)
    return out


def check_labels(labels: np.ndarray) -> None:
    """Raise CaseError unless ``labels`` only holds internal labels {0, 1, 2, 4}."""
    values = set(int(v) for v in np.unique(labels))
    if not values <= VALID_LABELS:
        raise CaseError(f"expected labels within {{0, 1, 2, 4}}, got {sorted(values)}")


# ------------------------------------------------------------------------------------------- assembly -------

def check_same_grid(vol: Volume, ref: Volume, name: str, ref_name: str) -> None:
    """Raise CaseError unless ``vol`` was stored with ``ref``'s shape and affine (within 1e-3 mm).

    Args:
        name, ref_name: how the two images are called in the message (e.g. "T1CE", "the ground truth").
    """
    if vol.original_shape != ref.original_shape:
        raise CaseError(f"expected {name} to have the shape of {ref_name} {ref.original_shape}, "
                        f"got {vol.original_shape}")
    diff = float(np.abs(vol.original_affine - ref.original_affine).max())
    if diff > AFFINE_TOLERANCE_MM:
        raise CaseError(f"expected {name} to share the affine of {ref_name} "
                        f"(within {AFFINE_TOLERANCE_MM} mm), got a difference of {diff:.3g}")


def assemble_case(case_id: str, images: Mapping[str, Volume], seg: Volume | None = None, *,
                  required: Iterable[str] = (), source: str = "", notes: str = "",
                  files: Mapping[str, str] | None = None, convention_hint: str | None = None,
                  convention: str | None = None) -> Case:
    """Check that volumes form one case and build it.

    ``convention_hint`` ("2021" or "2023", e.g. from the file naming) decides the label convention of a
    segmentation whose labels hold no ET (see ``normalise_labels``).

    Raises:
        CaseError: a required modality is missing, an unknown key, or shapes/affines disagree.
    """
    unknown = [k for k in images if k not in MODALITIES]
    if unknown:
        raise CaseError(f"expected modalities among {MODALITIES}, got {unknown}")
    if not images:
        raise CaseError("expected at least one modality image, got none")
    missing = [MODALITY_TITLES[k] for k in required if k not in images]
    if missing:
        raise CaseError(f"expected modalities {[MODALITY_TITLES[k] for k in required]}, missing {missing}")
    ordered = [k for k in MODALITIES if k in images]
    ref_key = ordered[0]
    ref = images[ref_key]
    others = [(k, images[k]) for k in ordered[1:]]
    if seg is not None:
        others.append((SEG_KEY, seg))
    for key, vol in others:
        check_same_grid(vol, ref, MODALITY_TITLES.get(key, "segmentation"), MODALITY_TITLES[ref_key])
    used = "2021"
    if seg is not None:
        seg, used = normalise_labels(seg, convention, hint=convention_hint)
    return Case(case_id, dict(images), seg, used, source, notes, dict(files or {}))


# ------------------------------------------------------------------------------------------ discovery -------

@dataclass(frozen=True)
class CaseRef:
    """A case found on disk, not yet loaded. ``files`` maps modality key (and "seg", and "mask" in the 2013
    layout) to a path; ``layout`` is "brats" (BraTS file naming) or "brats2013" (the DeepMedic 2013 folders)."""

    case_id: str
    folder: Path
    files: Mapping[str, Path]
    layout: str = LAYOUT_BRATS

    @property
    def modalities(self) -> tuple[str, ...]:
        return tuple(k for k in MODALITIES if k in self.files)

    @property
    def has_seg(self) -> bool:
        return SEG_KEY in self.files

    def header_summary(self) -> dict[str, object]:
        """Shape and voxel size from the first image's header only."""
        first = self.files[self.modalities[0]] if self.modalities else next(iter(self.files.values()))
        try:
            shape, spacing = read_header_info(first)
            return {"shape": "x".join(str(s) for s in shape), "voxel_mm": "x".join(f"{s:g}" for s in spacing)}
        except (BratsViewerError, OSError) as err:
            return {"shape": "?", "voxel_mm": "?", "error": str(err)}


def _within(root: Path, path: Path) -> bool:
    try:
        path.resolve().relative_to(root)
        return True
    except (ValueError, OSError):
        return False


def discover_cases(root: str | os.PathLike[str], max_depth: int = 6) -> list[CaseRef]:
    """Find BraTS cases under ``root`` (2018/2019/2020/2021 and 2023 naming, .nii and .nii.gz, nested folders,
    and the BraTS 2013 folders of DeepMedic: ``Flair_subtrMeanDivStd`` + ``T1c_subtrMeanDivStd`` + ``brainmask``).

    Files are grouped by folder and case id; a case needs at least two modalities (a lone BraTS-like name,
    e.g. a raw converter's ``..._t1.nii.gz``, is not a case). Links that lead outside ``root`` are ignored.
    Reads no file.

    Raises:
        DataFolderError: ``root`` is not a folder.
    """
    base = Path(root).expanduser()
    if not base.is_dir():
        raise DataFolderError(f"expected a data folder, got {str(base)!r} which is not a folder")
    real_root = base.resolve()
    groups: dict[tuple[Path, str], dict[str, Path]] = {}
    refs_2013: list[CaseRef] = []
    for dirpath, dirnames, filenames in os.walk(base, followlinks=False):
        depth = len(Path(dirpath).relative_to(base).parts)
        if depth >= max_depth:
            dirnames[:] = []
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        layout_2013 = _layout_2013_files(Path(dirpath), filenames, real_root)
        if layout_2013:
            refs_2013.append(CaseRef(Path(dirpath).name, Path(dirpath), layout_2013, LAYOUT_2013))
            continue
        for fname in filenames:
            if fname.startswith("."):  # hidden files, e.g. macOS "._<name>" resource forks next to each image
                continue
            parsed = parse_brats_name(fname)
            if not parsed:
                continue
            path = Path(dirpath) / fname
            if not _within(real_root, path):
                continue
            case_id, key = parsed
            groups.setdefault((Path(dirpath), case_id), {})[key] = path
    refs = [CaseRef(cid, folder, files) for (folder, cid), files in groups.items()
            if sum(k in files for k in MODALITIES) >= MIN_DISCOVERED_MODALITIES] + refs_2013
    return sorted(refs, key=lambda r: (r.case_id, str(r.folder)))


def _layout_2013_files(folder: Path, filenames: list[str], real_root: Path) -> dict[str, Path]:
    """Files of a BraTS 2013 (DeepMedic) case folder by key, or {} when the folder is not one (it needs
    FLAIR, T1c and the brain mask)."""
    stems = {re.sub(_NIFTI_EXT, "", f, flags=re.IGNORECASE): f for f in filenames if re.search(_NIFTI_EXT, f)}
    found = {key: folder / stems[stem] for key, stem in _LAYOUT_2013_FILES.items() if stem in stems}
    found = {k: p for k, p in found.items() if _within(real_root, p)}
    return found if {"flair", "t1ce", MASK_KEY} <= set(found) else {}


def case_key(ref: CaseRef, root: str | os.PathLike[str]) -> str:
    """The unique key of a discovered case under ``root``: its folder relative to ``root`` joined with its id,
    POSIX style (``"site1/BraTS2021_00001/BraTS2021_00001"``; ``"BraTS2021_00001"`` for files straight in root).
    Ids can repeat across a folder tree; (folder, id) cannot, since discovery groups files by both."""
    try:
        rel = ref.folder.relative_to(Path(root).expanduser())
    except ValueError:
        rel = ref.folder.resolve().relative_to(Path(root).expanduser().resolve())
    return (rel / ref.case_id).as_posix() if ref.layout != LAYOUT_2013 else rel.as_posix()


def safe_case_ref(root: str | os.PathLike[str], case_id: str) -> CaseRef:
    """The discovered case ``case_id`` under ``root``; refuses ids that are not a discovered case.

    Raises:
        DataFolderError: no such case under root.
    """
    for ref in discover_cases(root):
        if ref.case_id == case_id:
            return ref
    raise DataFolderError(f"expected a case of the data folder, got unknown case id {case_id!r}")


def load_case(ref: CaseRef, required: Iterable[str] = (), notes: str = "", labels: bool = True) -> Case:
    """Load and validate every file of a discovered case.

    ``labels=False`` leaves a segmentation file unread (the case has no ``seg``): segmenting a case does not
    need its reference labels, nor should a bad label file stop it.

    Raises:
        BratsViewerError: any file is bad (message names the file) or the case is inconsistent.
    """
    with_seg = labels and ref.has_seg
    keys = [*ref.modalities, *([SEG_KEY] if with_seg else []), *([MASK_KEY] if ref.layout == LAYOUT_2013 else [])]
    loaded = dict(zip(keys, _load_all([ref.files[k] for k in keys]), strict=True))
    images: dict[str, Volume] = {k: loaded[k] for k in ref.modalities}
    seg = loaded.get(SEG_KEY)
    files = {k: str(p) for k, p in ref.files.items() if k != SEG_KEY or with_seg}
    if ref.layout == LAYOUT_2013:
        return _assemble_2013(ref, images, seg, loaded[MASK_KEY], files, required, notes)
    return assemble_case(ref.case_id, images, seg, required=required, source=str(ref.folder), notes=notes,
                         files=files,
                         convention_hint=naming_convention(ref.files[SEG_KEY].name) if with_seg else None)


def _assemble_2013(ref: CaseRef, images: dict[str, Volume], seg: Volume | None, mask_vol: Volume,
                   files: dict[str, str], required: Iterable[str], notes: str) -> Case:
    """A BraTS 2013 (DeepMedic) case: voxels outside ``brainmask`` set to 0 (its z-scored images hold a constant
    negative background), labels mapped from the 2013 scheme (3, non-enhancing core, becomes 1)."""
    check_same_grid(mask_vol, next(iter(images.values())), "the brain mask", "the images")
    brain = np.asarray(mask_vol.data) > 0.5
    masked = {k: v.with_data(np.where(brain, np.asarray(v.data, dtype=np.float32), 0.0).astype(np.float32))
              for k, v in images.items()}
    note = notes or "BraTS 2013 labels (non-enhancing core counted as NCR/NET); z-scored FLAIR and T1c only."
    return assemble_case(ref.case_id, masked, seg, required=required, source=str(ref.folder), notes=note,
                         files=files, convention="2013")


def naming_convention(file_name: str) -> str | None:
    """"2023" for BraTS 2023 names (``<id>-seg.nii.gz``), "2021" for earlier ones, None otherwise."""
    if _PATTERN_2023.match(file_name):
        return "2023"
    if _PATTERN_2020.match(file_name):
        return "2021"
    return None


def _load_all(paths: list[Path]) -> list[Volume]:
    """Load files in order, two at a time: gzip decompression releases the GIL, so a case loads in about half
    the time on two cores. The first file (in order) that fails raises its own error."""
    if len(paths) <= 1:
        return [_load_named(p) for p in paths]
    with ThreadPoolExecutor(max_workers=_LOAD_THREADS) as pool:
        futures = [pool.submit(_load_named, p) for p in paths]
        return [f.result() for f in futures]


def _load_named(path: Path) -> Volume:
    """Load one file; ``load_volume`` already starts every error message with the file's name."""
    return load_volume(path)


def load_case_folder(folder: str | os.PathLike[str], required: Iterable[str] = (), labels: bool = True) -> Case:
    """Load the single case in a folder (or the files' common case); ``labels`` as in ``load_case``.

    Raises:
        DataFolderError: no case, or several cases, in the folder.
    """
    refs = discover_cases(folder, max_depth=1)
    if not refs:
        raise DataFolderError(f"expected BraTS-named NIfTI files in {Path(folder).name!r}, found none")
    if len(refs) > 1:
        raise DataFolderError(f"expected one case in {Path(folder).name!r}, found {len(refs)}")
    return load_case(refs[0], required, labels=labels)


def case_folder_of(paths: list[Path]) -> Path | None:
    """The case folder when ``paths`` is one folder, None when it is NIfTI files.

    Raises:
        DataFolderError: a path is missing, or folders are mixed with files or with other folders.
    """
    for p in paths:
        if not p.exists():
            raise DataFolderError(f"expected an existing case folder or NIfTI file, got {str(p)!r} which does not exist")
    folders = [p for p in paths if p.is_dir()]
    if folders and len(paths) > 1:
        raise DataFolderError(f"expected one case folder or NIfTI files, got {len(folders)} folder(s) among "
                              f"{len(paths)} paths")
    return folders[0] if folders else None


def load_case_files(paths: Iterable[str | os.PathLike[str]], required: Iterable[str] = ()) -> Case:
    """Load a case from explicit NIfTI file paths, modality from each name."""
    images: dict[str, Volume] = {}
    seg: Volume | None = None
    case_id = ""
    files: dict[str, str] = {}
    for p in map(Path, paths):
        key = guess_modality(p.name)
        if key is None:
            raise CaseError(f"expected a modality in the file name (flair, t1, t1ce, t2, seg), got {p.name!r}")
        parsed = parse_brats_name(p.name)
        case_id = case_id or (parsed[0] if parsed else p.parent.name)
        vol = _load_named(p)
        files[key] = str(p)
        if key == SEG_KEY:
            seg = vol
        else:
            images[key] = vol
    return assemble_case(case_id or "case", images, seg, required=required, source="files", files=files)


def case_from_uploads(items: Iterable[tuple[str, bytes, str]], required: Iterable[str] = ()) -> Case:
    """Build a case from uploads: (display name, bytes, modality key). Names are never used as paths.

    Raises:
        BratsViewerError: the first bad file (message names it) or an inconsistent case.
    """
    images: dict[str, Volume] = {}
    seg: Volume | None = None
    ids: list[str] = []
    for name, blob, key in items:
        if key != SEG_KEY and key not in MODALITIES:
            raise CaseError(f"{name}: expected a modality among flair, t1, t1ce, t2, seg, got {key!r}")
        if key in images or (key == SEG_KEY and seg is not None):
            raise CaseError(f"{name}: expected one file per modality, got a second {key!r}")
        vol = load_volume_bytes(blob, name)  # messages start with the display name
        parsed = parse_brats_name(re.split(r"[\\/]", name)[-1])
        if parsed:
            ids.append(parsed[0])
        if key == SEG_KEY:
            seg = vol
        else:
            images[key] = vol
    digest = hashlib.sha256("".join(v.sha256 for v in images.values()).encode()).hexdigest()[:8]
    case_id = upload_case_id(ids[0] if ids else "", digest)
    return assemble_case(case_id, images, seg, required=required, source="upload")


def upload_case_id(name_id: str, digest: str) -> str:
    """A display-safe case id for an upload: the BraTS id from the names when present, else upload-<hash>."""
    clean = re.sub(r"[^A-Za-z0-9_.-]", "_", name_id)[:64].strip("._")
    return clean or f"upload-{digest}"
