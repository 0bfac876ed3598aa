"""What the subcommands share: a case and a segmentation in, JSON or one ``error: ...`` line out.

``load_case_arg`` takes a case as the command line gives it (one folder or the NIfTI files of one case),
``load_seg_on_case_grid`` a label map that must lie on that case's grid; ``print_json`` writes a command's result
on stdout and ``print_error`` / ``error_line`` one line per error on stderr (``core/__main__.py`` turns the
project's errors into exit status 2 with such a line, never a traceback).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import numpy as np

from core.data.cases import (
    Case,
    case_folder_of,
    check_same_grid,
    load_case_files,
    load_case_folder,
    naming_convention,
    normalise_labels,
)
from core.data.io import load_volume
from core.errors import CaseError


def load_case_arg(paths: list[Path]) -> Case:
    """The case given as one folder or as files.

    Raises:
        DataFolderError: a missing path, or folders mixed with files.
        BratsViewerError: bad files or an inconsistent case.
    """
    folder = case_folder_of(paths)
    return load_case_folder(folder) if folder is not None else load_case_files(paths)


def load_seg_on_case_grid(path: Path, case: Case) -> tuple[np.ndarray, str]:
    """Labels (X, Y, Z) uint8 0/1/2/4 of a segmentation file on the case's grid, and the file's SHA-256.

    Raises:
        CaseError: another stored shape, or an affine differing by more than 1e-3 mm, or bad labels (the message
            starts with the file's name).
        BratsViewerError: the file is not an acceptable image.
    """
    vol = load_volume(path)
    try:
        check_same_grid(vol, case.reference, "the segmentation", "the case's images")
        seg, _ = normalise_labels(vol, hint=naming_convention(path.name))
    except CaseError as err:
        raise CaseError(f"{path.name}: {err}") from err
    return np.asarray(seg.data, dtype=np.uint8), vol.sha256


def print_json(result: Any, indent: int | None = 2, flush: bool = False, ensure_ascii: bool = True) -> None:
    """A command's result as JSON on stdout (``indent=None``: one line, as per-case streams print)."""
    print(json.dumps(result, indent=indent, ensure_ascii=ensure_ascii), flush=flush)


def error_line(err: BaseException) -> str:
    """The first line of an error's message (its type's name when it has none)."""
    return str(err).splitlines()[0] if str(err) else type(err).__name__


def print_error(message: str, flush: bool = False) -> None:
    """One ``error: ...`` line on stderr."""
    print(f"error: {message}", file=sys.stderr, flush=flush)
