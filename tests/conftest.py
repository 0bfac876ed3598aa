"""Shared fixtures: small synthetic NIfTI files written to ``tmp_path`` with a seeded generator, and the
optional real data under ``../shared/data``.

Helpers are plain functions (importable as ``from conftest import ...`` or used through the fixtures below) so
that every test module can build the files it needs in a line or two.
"""

from __future__ import annotations

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import gzip  # noqa: E402
from pathlib import Path  # noqa: E402

import nibabel as nib  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402

from core import config  # noqa: E402

SHAPE: tuple[int, int, int] = (12, 10, 8)
SEED = 20240611
# BraTS stores LPS: x and y flipped, with the origin offsets BraTS files carry.
LPS_AFFINE: np.ndarray = np.array(
    [[-1.0, 0.0, 0.0, 0.0], [0.0, -1.0, 0.0, 239.0], [0.0, 0.0, 1.0, 0.0], [0.0, 0.0, 0.0, 1.0]]
)
SKIP_SHARED = "../shared/data not found: set BRATS_SHARED_DATA or place shared/ beside the project"

# Modality key -> file suffix, per naming scheme. "seg" is the label map.
NAMING: dict[str, dict[str, str]] = {
    "2020": {"flair": "_flair", "t1": "_t1", "t1ce": "_t1ce", "t2": "_t2", "seg": "_seg"},
    "2021": {"flair": "_flair", "t1": "_t1", "t1ce": "_t1ce", "t2": "_t2", "seg": "_seg"},
    "2023": {"flair": "-t2f", "t1": "-t1n", "t1ce": "-t1c", "t2": "-t2w", "seg": "-seg"},
}
EXAMPLE_IDS: dict[str, str] = {
    "2020": "BraTS20_Training_001",
    "2021": "BraTS2021_00000",
    "2023": "BraTS-GLI-00000-000",
}


def rng(seed: int = SEED) -> np.random.Generator:
    """A seeded generator (one per call, so tests do not depend on each other's draws)."""
    return np.random.default_rng(seed)


def write_nifti(path: str | os.PathLike[str], array: np.ndarray, affine: np.ndarray | None = None,
                gz: bool | None = None, version: int = 1) -> Path:
    """Write ``array`` (stored voxel order) with ``affine`` (default LPS) as NIfTI-1 (or -2).

    Args:
        path: target file; its suffix is replaced by ``.nii.gz`` / ``.nii`` when ``gz`` is given.
        gz: compress; None keeps whatever the name says.
        version: 1 or 2.

    Returns:
        The path written.
    """
    p = Path(path)
    if gz is not None:
        base = p.name[:-7] if p.name.endswith(".nii.gz") else p.name[:-4] if p.name.endswith(".nii") else p.name
        p = p.with_name(base + (".nii.gz" if gz else ".nii"))
    aff = LPS_AFFINE if affine is None else np.asarray(affine, dtype=float)
    klass = nib.Nifti1Image if version == 1 else nib.Nifti2Image
    img = klass(np.asarray(array), aff)
    img.header.set_xyzt_units("mm", "sec")
    img.set_qform(aff, code=1)
    img.set_sform(aff, code=1)
    p.parent.mkdir(parents=True, exist_ok=True)
    raw = img.to_bytes()
    p.write_bytes(gzip.compress(raw, mtime=0) if p.name.endswith(".gz") else raw)
    return p


def random_image(shape: tuple[int, ...] = SHAPE, seed: int = SEED, dtype: type = np.int16) -> np.ndarray:
    """Random non-negative intensities, like a skull-stripped MRI (int16 by default)."""
    return rng(seed).integers(0, 1000, size=shape).astype(dtype)


def random_seg(shape: tuple[int, ...] = SHAPE, seed: int = SEED, et_label: int = 4) -> np.ndarray:
    """A label map holding 0 (most voxels), 1, 2 and ``et_label`` (4, or 3 for BraTS 2023)."""
    labels = rng(seed + 1).choice([0, 1, 2, et_label], size=shape, p=[0.7, 0.1, 0.1, 0.1]).astype(np.uint8)
    labels[0, 0, 0], labels[1, 0, 0], labels[2, 0, 0], labels[3, 0, 0] = 0, 1, 2, et_label  # all present
    return labels


def make_case_dir(root: str | os.PathLike[str], case_id: str | None = None, naming: str = "2021",
                  with_seg: bool = True, modalities: tuple[str, ...] = config.MODALITIES,
                  shape: tuple[int, int, int] = SHAPE, affine: np.ndarray | None = None, gz: bool = True,
                  seed: int = SEED, subfolder: bool = True) -> Path:
    """Write one BraTS-named case (4 modalities + optional seg) and return its folder.

    Args:
        root: parent folder (e.g. ``tmp_path``).
        case_id: default is an example id of the naming scheme.
        naming: "2020", "2021" (``<id>_flair``) or "2023" (``<id>-t2f``, seg ET labelled 3).
        subfolder: put the files in ``root/<case_id>/`` (True) or straight into ``root``.
    """
    if naming not in NAMING:
        raise ValueError(f"naming must be one of {sorted(NAMING)}, not {naming!r}")
    cid = case_id or EXAMPLE_IDS[naming]
    folder = Path(root) / cid if subfolder else Path(root)
    folder.mkdir(parents=True, exist_ok=True)
    ext = ".nii.gz" if gz else ".nii"
    for i, key in enumerate(modalities):
        write_nifti(folder / f"{cid}{NAMING[naming][key]}{ext}", random_image(shape, seed + 10 * i), affine)
    if with_seg:
        seg = random_seg(shape, seed, et_label=3 if naming == "2023" else 4)
        write_nifti(folder / f"{cid}{NAMING[naming]['seg']}{ext}", seg, affine)
    return folder


@pytest.fixture
def nifti_writer(tmp_path: Path):
    """``write(name, array, affine=None, gz=None)`` writing into ``tmp_path``."""

    def write(name: str, array: np.ndarray, affine: np.ndarray | None = None, gz: bool | None = None,
              version: int = 1) -> Path:
        return write_nifti(tmp_path / name, array, affine, gz, version)

    return write


@pytest.fixture
def case_dir(tmp_path: Path) -> Path:
    """One BraTS 2021-named case with a seg under ``tmp_path``."""
    return make_case_dir(tmp_path)


@pytest.fixture
def shared_data() -> Path:
    """``../shared/data`` (or ``$BRATS_SHARED_DATA``); skips the test when absent."""
    path = config.shared_data_dir()
    if path is None:
        pytest.skip(SKIP_SHARED)
    return path


# ---- page tests (AppTest) ------------------------------------------------------------------------------------
HOME = str(config.PROJECT_ROOT / "Home.py")
DEMO_SELECTION: dict[str, str] = {"kind": "folder", "folder": str(config.DEMO_DATA_DIR), "case_id": "TCIA-example"}


@pytest.fixture
def app_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """Pages see the demo data folder, a work folder (corrections, audit log) in tmp and fresh Streamlit caches.

    Returns:
        The work folder.
    """
    import streamlit as st

    monkeypatch.delenv(config.DATA_DIR_ENV, raising=False)
    monkeypatch.setenv(config.WORK_DIR_ENV, str(tmp_path / "work"))
    st.cache_data.clear()
    st.cache_resource.clear()
    return tmp_path / "work"


# The running test's monkeypatch, for helpers that are plain functions (run_page): what they set is undone when
# the test ends. A stack, so that a test may push its own (tests/test_conftest.py).
_MONKEYPATCHES: list[pytest.MonkeyPatch] = []


@pytest.fixture(autouse=True)
def _monkeypatch_for_helpers(monkeypatch: pytest.MonkeyPatch):
    _MONKEYPATCHES.append(monkeypatch)
    yield
    _MONKEYPATCHES.remove(monkeypatch)


def _test_monkeypatch() -> pytest.MonkeyPatch:
    if not _MONKEYPATCHES:
        raise RuntimeError("expected to run inside a test (run_page sets environment variables through monkeypatch)")
    return _MONKEYPATCHES[-1]


def run_page(page: str | None = None, selection: dict | None = None, model: Path | None = None,
             timeout: float = 120, **state: object):
    """Run ``page`` through Home.py (so page links resolve as in the app) with seeded session state."""
    from streamlit.testing.v1 import AppTest

    from core.app import ui

    at = AppTest.from_file(HOME, default_timeout=timeout)
    if page:
        at.switch_page(page)
    if selection is not None:
        at.session_state[ui.KEY_CASE] = selection
    if model is not None:
        at.session_state[ui.KEY_MODEL_DIR] = str(model)
        # the administrator's model roots (core.data.roots.model_roots) must hold a test's model folder; set
        # through the running test's monkeypatch, so the root is gone when the test ends
        allowed = [p for p in os.environ.get("BRATS_MODEL_ROOTS", "").split(os.pathsep) if p]
        if str(Path(model).parent) not in allowed:
            _test_monkeypatch().setenv("BRATS_MODEL_ROOTS", os.pathsep.join([*allowed, str(Path(model).parent)]))
    for key, value in state.items():
        at.session_state[key] = value
    return at.run()


def texts(elements) -> str:
    """The values of AppTest elements (markdown, errors, ...) joined by new lines."""
    return "\n".join(str(e.value) for e in elements)


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An untrained 4-channel U-Net on 32 x 32 inputs, saved like a trained model (built once per run)."""
    return save_tiny_unet(tmp_path_factory.mktemp("models") / "tiny")


# ---- tiny models (CLI and batch tests) -------------------------------------------------------------------------
TINY_SPEC_KW: dict = {"channels": ("flair", "t1ce", "t1", "t2"), "input_size": 32, "normalisation": "zscore_brain",
                      "crop": "brain_bbox"}


def save_tiny_unet(folder: Path, seed: int | None = None, onnx: bool = False) -> Path:
    """An untrained 4-channel U-Net on 32 x 32 inputs (base 4 filters, depth 2) saved in ``folder`` like a trained
    model; with ``onnx`` also a card and its ONNX export."""
    from core.engine.model import build_unet, save_for_inference
    from core.engine.preprocess import PreprocessSpec

    save_for_inference(build_unet(32, 4, 4, 2, seed=seed), folder, PreprocessSpec(**TINY_SPEC_KW))
    if onnx:
        from core.engine.export import export_model_folder

        (folder / "model_card.json").write_text("{}")
        export_model_folder(folder)
    return folder


@pytest.fixture(scope="session")
def tiny_unet(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """``models/tiny_unet``: the tiny U-Net (seed 5), Keras only."""
    return save_tiny_unet(tmp_path_factory.mktemp("models") / "tiny_unet", seed=5)


@pytest.fixture(scope="session")
def tiny_onnx(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """``models/tiny_onnx``: the tiny U-Net (seed 11) with a card and its ONNX export."""
    return save_tiny_unet(tmp_path_factory.mktemp("models") / "tiny_onnx", seed=11, onnx=True)


@pytest.fixture
def work_in_tmp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The work folder (audit events) in tmp, never the project's."""
    folder = tmp_path / "work"
    monkeypatch.setenv(config.WORK_DIR_ENV, str(folder))
    return folder
