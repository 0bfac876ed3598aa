"""Constants in one place: labels, regions, colours, modalities, default paths and settings."""

from __future__ import annotations

import os
from pathlib import Path

PROJECT_ROOT: Path = Path(__file__).resolve().parent.parent

DISCLAIMER: str = (
    "Research software only - not a medical device and not for clinical diagnosis or treatment decisions."
)

# --- Modalities -------------------------------------------------------------------------------------------
MODALITIES: tuple[str, ...] = ("flair", "t1", "t1ce", "t2")
MODALITY_TITLES: dict[str, str] = {"flair": "FLAIR", "t1": "T1", "t1ce": "T1CE", "t2": "T2"}

# --- Labels (internal convention = BraTS 2017-2021 on disk) ----------------------------------------------
LABEL_BACKGROUND = 0
LABEL_NCR = 1  # necrotic / non-enhancing tumour core
LABEL_ED = 2  # peritumoral edema
LABEL_ET = 4  # enhancing tumour (BraTS 2023 files use 3)
LABEL_ET_2023 = 3
VALID_LABELS: frozenset[int] = frozenset({0, 1, 2, 4})
TUMOUR_LABELS: tuple[int, ...] = (LABEL_NCR, LABEL_ED, LABEL_ET)
LABEL_NAMES: dict[int, str] = {1: "NCR/NET", 2: "ED", 4: "ET"}
LABEL_LONG_NAMES: dict[int, str] = {
    1: "Necrotic / non-enhancing core",
    2: "Peritumoral edema",
    4: "Enhancing tumour",
}
# Model class index <-> label. Class 3 of the softmax is label 4.
CLASS_TO_LABEL: tuple[int, ...] = (0, 1, 2, 4)
CLASS_NAMES: tuple[str, ...] = ("background", "NCR", "ED", "ET")

# BraTS evaluation regions as tuples of labels.
REGIONS: dict[str, tuple[int, ...]] = {"WT": (1, 2, 4), "TC": (1, 4), "ET": (4,)}
REGION_LONG_NAMES: dict[str, str] = {"WT": "Whole tumour", "TC": "Tumour core", "ET": "Enhancing tumour"}

# Colours of the original design: red NCR/NET, green edema, blue enhancing (RGB 0-255).
LABEL_COLOURS: dict[int, tuple[int, int, int]] = {1: (230, 40, 40), 2: (40, 200, 70), 4: (40, 110, 240)}

# --- Input limits -------------------------------------------------------------------------------------------
MAX_FILE_BYTES: int = 300 * 1024 * 1024  # compressed file on disk or upload
MAX_VOXELS: int = 512 * 512 * 256  # per 3-D image (BraTS: 240 x 240 x 155 = 8.9 M)
MAX_DECOMPRESSED_BYTES: int = 512 * 1024 * 1024  # a decompressed image never grows beyond this (gzip bombs)
HD95_EMPTY_MM: float = 373.13  # BraTS 2017-2021 value when exactly one mask is empty

# --- Paths and settings -------------------------------------------------------------------------------------
DEMO_DATA_DIR: Path = PROJECT_ROOT / "assets" / "demo"
MODELS_DIR: Path = PROJECT_ROOT / "models"
DEFAULT_MODEL_NAME: str = "unet2d_default"
WORK_DIR_ENV = "BRATS_VIEWER_WORK_DIR"
DATA_DIR_ENV = "BRATS_DATA_DIR"
MODEL_ENV = "BRATS_MODEL"
SHARED_DATA_ENV = "BRATS_SHARED_DATA"


def data_dir() -> Path:
    """The data folder in use: ``$BRATS_DATA_DIR`` or the bundled demo."""
    value = os.environ.get(DATA_DIR_ENV, "").strip()
    return Path(value).expanduser() if value else DEMO_DATA_DIR


def work_dir() -> Path:
    """Writable folder for corrections, reports, audit log and training runs (created on demand)."""
    value = os.environ.get(WORK_DIR_ENV, "").strip()
    path = Path(value).expanduser() if value else PROJECT_ROOT / "work"
    path.mkdir(parents=True, exist_ok=True)
    return path


def active_model_dir() -> Path:
    """Folder of the model the app and CLI use by default (``$BRATS_MODEL`` may name another)."""
    value = os.environ.get(MODEL_ENV, "").strip()
    if value:
        p = Path(value).expanduser()
        return p if p.is_absolute() or p.exists() else MODELS_DIR / value
    marker = MODELS_DIR / "ACTIVE"
    if marker.is_file():
        name = marker.read_text(encoding="utf-8").strip()
        if name and "/" not in name and "\\" not in name and name not in {".", ".."} and (MODELS_DIR / name).is_dir():
            return MODELS_DIR / name
    return MODELS_DIR / DEFAULT_MODEL_NAME


def shared_data_dir() -> Path | None:
    """``../shared/data`` beside the project (or ``$BRATS_SHARED_DATA``), or None when absent."""
    value = os.environ.get(SHARED_DATA_ENV, "").strip()
    path = Path(value) if value else PROJECT_ROOT.parent / "shared" / "data"
    return path if path.is_dir() else None
