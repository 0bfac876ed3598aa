"""``python -m core info PATH...``: describe one case as JSON.

``PATH`` is one case folder (BraTS names, ``.nii`` or ``.nii.gz``) or one or more NIfTI files. For every image
it prints the file name, the stored shape, voxel type and voxel size (mm, stored axis order), the stored
orientation codes (BraTS files are ``LPS``), the intensity range and any load warning. For a segmentation it
adds the labels present (internal convention 0/1/2/4; BraTS 2023 files store ET as 3, shown as
``label_on_disk``), each label's voxel count and volume in mL (voxel count x voxel volume from the header),
and the label convention.

Every file is fully validated, as the app does. Bad input exits with status 2 and one ``error: ...`` line.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

import numpy as np

from core.cli.common import print_json
from core.config import LABEL_NAMES, MODALITIES
from core.data.cases import (
    SEG_KEY,
    assemble_case,
    case_folder_of,
    discover_cases,
    guess_modality,
    labels_for_disk,
    naming_convention,
    normalise_labels,
    parse_brats_name,
)
from core.data.io import Volume, load_volume
from core.errors import CaseError, DataFolderError

_NIFTI_SUFFIXES = (".nii", ".nii.gz")


def add_parser(subparsers: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    parser = subparsers.add_parser(
        "info",
        help="describe a case folder or NIfTI files (shape, voxel size, orientation, labels) as JSON",
        description=("Describe one case as JSON: per modality the file, stored shape, voxel type, voxel size "
                     "(mm), orientation codes and intensity range; for a segmentation the labels present with "
                     "voxel counts and volumes (mL)."),
    )
    parser.add_argument("paths", nargs="+", type=Path, metavar="PATH",
                        help="one case folder, or NIfTI files of one case")
    parser.add_argument("--indent", type=int, default=2, help="JSON indentation (default 2; 0 for one line)")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    info = describe_paths(list(args.paths))
    print_json(info, indent=args.indent or None, ensure_ascii=False)
    return 0


# --------------------------------------------------------------------------------------------- gathering ---

def describe_paths(paths: list[Path]) -> dict[str, Any]:
    """The JSON-ready description of one case given as a folder or as files.

    Raises:
        DataFolderError: a path is missing, a folder holds no case or several, or folders and files are mixed.
        BratsViewerError: a file is not an acceptable image (message names it) or the case is inconsistent.
    """
    folder = case_folder_of(paths)
    if folder is not None:
        return _describe_folder(folder)
    return _describe_files(paths, case_id=None, source="files")


def _describe_folder(folder: Path) -> dict[str, Any]:
    try:
        refs = discover_cases(folder, max_depth=1)
    except OSError as err:
        raise DataFolderError(f"expected a readable folder, got {err.strerror}: {folder.name}") from err
    if not refs:
        raise DataFolderError(f"expected BraTS-named NIfTI files (e.g. <case>_flair.nii.gz) in {folder.name!r}, "
                              "found none")
    if len(refs) > 1:
        shown = ", ".join(r.case_id for r in refs[:5]) + (", ..." if len(refs) > 5 else "")
        raise DataFolderError(f"expected one case in {folder.name!r}, found {len(refs)} ({shown}): "
                              "give one case folder or its files")
    ref = refs[0]
    files = [ref.files[k] for k in (*ref.modalities, SEG_KEY) if k in ref.files]
    return _describe_files(files, case_id=ref.case_id, source=str(ref.folder))


def _describe_files(paths: list[Path], case_id: str | None, source: str) -> dict[str, Any]:
    images: dict[str, Volume] = {}
    others: dict[str, Volume] = {}
    seg: Volume | None = None
    seg_path: Path | None = None
    names: dict[str, str] = {}
    for p in paths:
        if not p.name.lower().endswith(_NIFTI_SUFFIXES):
            raise DataFolderError(f"expected NIfTI files (.nii or .nii.gz), got {p.name!r}")
        key = guess_modality(p.name)
        try:
            vol = load_volume(p)
        except OSError as err:  # e.g. a file that vanished or cannot be read
            raise DataFolderError(f"{p.name}: expected a readable file, got {err.strerror}") from err
        if key == SEG_KEY:
            if seg is not None:
                raise CaseError(f"expected one segmentation, got {seg_path.name if seg_path else '?'} and {p.name}")
            seg, seg_path = vol, p
        elif key in MODALITIES:
            if key in images:
                raise CaseError(f"expected one file per modality, got {names[key]} and {p.name} for {key!r}")
            images[key] = vol
            names[key] = p.name
        else:
            others[p.name] = vol
        parsed = parse_brats_name(p.name)
        if case_id is None and parsed:
            case_id = parsed[0]
    hint = naming_convention(seg_path.name) if seg_path is not None else None
    if images:
        case = assemble_case(case_id or "case", images, seg, source=source, convention_hint=hint)
        seg, convention = case.seg, case.label_convention
    elif seg is not None:
        seg, convention = normalise_labels(seg, hint=hint)
    else:
        convention = None
    out: dict[str, Any] = {
        "case_id": case_id or (paths[0].parent.name if paths else "case"),
        "source": source,
        "modalities": {k: _describe_image(images[k]) for k in MODALITIES if k in images},
    }
    if others:
        out["other_images"] = {name: _describe_image(v) for name, v in others.items()}
    if seg is not None and seg_path is not None:
        out["segmentation"] = _describe_seg(seg, seg_path.name, convention or "2021")
    return out


# --------------------------------------------------------------------------------------------- describing --

def _stored_spacing_mm(vol: Volume) -> list[float]:
    """Voxel size (mm) along the stored axes, from the original affine's columns."""
    cols = np.sqrt((np.asarray(vol.original_affine)[:3, :3] ** 2).sum(axis=0))
    return [round(float(s), 6) for s in cols]


def _number(x: Any) -> int | float:
    return int(x) if np.issubdtype(type(x), np.integer) else float(x)


def _geometry(vol: Volume) -> dict[str, Any]:
    return {
        "file": vol.source_name,
        "shape": list(vol.original_shape),
        "dtype": vol.stored_dtype,
        "spacing_mm": _stored_spacing_mm(vol),
        "orientation": "".join(vol.original_axcodes),
        "voxel_volume_ml": vol.voxel_volume_ml,
    }


def _describe_image(vol: Volume) -> dict[str, Any]:
    data = np.asarray(vol.data)
    out = _geometry(vol)
    out["intensity_min"] = _number(data.min())
    out["intensity_max"] = _number(data.max())
    if vol.warnings:
        out["warnings"] = list(vol.warnings)
    return out


def _describe_seg(seg: Volume, file_name: str, convention: str) -> dict[str, Any]:
    out = _geometry(seg)
    out["file"] = file_name
    out["label_convention"] = convention
    values, counts = np.unique(np.asarray(seg.data), return_counts=True)
    labels: dict[str, Any] = {}
    for value, count in zip(values.tolist(), counts.tolist(), strict=True):
        entry: dict[str, Any] = {
            "name": LABEL_NAMES.get(int(value), "background"),
            "voxels": int(count),
            "volume_ml": round(int(count) * seg.voxel_volume_ml, 6),
        }
        on_disk = int(labels_for_disk(np.array([value]), convention)[0])
        if on_disk != value:
            entry["label_on_disk"] = on_disk
        labels[str(int(value))] = entry
    out["labels"] = labels
    out["tumour_volume_ml"] = round(sum(v["voxels"] for k, v in labels.items() if k != "0") * seg.voxel_volume_ml, 6)
    if seg.warnings:
        out["warnings"] = list(seg.warnings)
    return out


if __name__ == "__main__":  # pragma: no cover - use ``python -m core info``
    from core.__main__ import main

    sys.exit(main(["info", *sys.argv[1:]]))
