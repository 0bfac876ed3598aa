"""Every class of bad file, uploaded through the case browser, gets a message beside that file; the session
stays usable and a good case can be built afterwards. The bad files are built here, in code."""

from __future__ import annotations

import gzip
import io
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
from conftest import HOME, SHAPE, make_case_dir, random_image
from PIL import Image
from streamlit.testing.v1 import AppTest
from test_io import _PIXDIM, _QFORM_CODE, _SROW_X, _SROW_Y, _nifti1_bytes

from core.app import ui

GZ = "application/gzip"


def _gz(raw: bytes | bytearray) -> bytes:
    return gzip.compress(bytes(raw), mtime=0)


def _patched(fmt: str, offset: int, *values: float) -> bytes:
    raw = _nifti1_bytes(random_image(), np.eye(4))
    struct.pack_into(fmt, raw, offset, *values)
    return bytes(raw)


def _gzip_bomb() -> bytes:
    """About 1 MB of gzip expanding to 1 GiB behind a valid 12x10x8 int16 header."""
    header = bytes(_nifti1_bytes(np.zeros(SHAPE, np.int16))[:352])
    comp = zlib.compressobj(9, zlib.DEFLATED, 16 + zlib.MAX_WBITS)
    zeros = bytes(1 << 20)
    return comp.compress(header) + b"".join(comp.compress(zeros) for _ in range(1024)) + comp.flush()


def bad_files() -> dict[str, tuple[bytes, str]]:
    """File name -> (bytes, a word the error beside it must contain)."""
    good = _gz(_nifti1_bytes(random_image()))
    flipped = bytearray(good)
    flipped[len(flipped) // 2] ^= 0xFF
    png = io.BytesIO()
    Image.fromarray(np.zeros((16, 16), np.uint8)).save(png, format="PNG")
    huge = _nifti1_bytes(random_image())
    struct.pack_into("<8h", huge, 40, 3, 32767, 32767, 32767, 1, 1, 1, 1)
    nan = random_image().astype(np.float32)
    nan[1, 1, 1] = np.nan
    inf = random_image().astype(np.float32)
    inf[2, 2, 2] = np.inf
    singular = bytearray(_patched("<h", _QFORM_CODE, 0))
    struct.pack_into("<4f", singular, _SROW_X, 1.0, 1.0, 0.0, 0.0)
    struct.pack_into("<4f", singular, _SROW_Y, 1.0, 1.0, 0.0, 0.0)
    return {
        "truncated_t1.nii.gz": (good[: len(good) // 2], "truncated"),
        "flipped_t1.nii.gz": (bytes(flipped), "gzip"),
        "bomb_t1.nii.gz": (_gzip_bomb(), "bomb"),
        "huge_t1.nii.gz": (_gz(huge), "voxels"),
        "nan_t1.nii.gz": (_gz(_nifti1_bytes(nan)), "finite"),
        "inf_t1.nii.gz": (_gz(_nifti1_bytes(inf)), "finite"),
        "flat_t1.nii.gz": (_gz(_nifti1_bytes(random_image((12, 10)))), "3-D"),
        "series_t1.nii.gz": (_gz(_nifti1_bytes(random_image((*SHAPE, 3)))), "3-D"),
        "complex_t1.nii.gz": (_gz(_nifti1_bytes(random_image().astype(np.complex64))), "complex"),
        "rgb_t1.nii.gz": (_gz(_nifti1_bytes(np.zeros(SHAPE, dtype=[("R", "u1"), ("G", "u1"), ("B", "u1")]))),
                          "RGB"),
        "zero_pixdim_t1.nii": (_patched("<f", _PIXDIM + 4, 0.0), "voxel sizes"),
        "negative_pixdim_t1.nii": (_patched("<f", _PIXDIM + 8, -1.0), "voxel sizes"),
        "nan_pixdim_t1.nii": (_patched("<f", _PIXDIM + 12, float("nan")), "voxel sizes"),
        "singular_t1.nii": (bytes(singular), "affine"),
        "photo_t1.nii": (png.getvalue(), "PNG"),
        "empty_t1.nii.gz": (b"", "empty"),
        "notes_t1.nii": (b"patient notes, not an image\n" * 20, "text"),
        "scan_t1.nii": (bytes(128) + b"DICM" + bytes(400), "DICOM"),
    }


@pytest.fixture(autouse=True)
def _isolated(app_env: Path) -> Path:
    return app_env

def test_every_bad_file_gets_its_own_message_and_the_session_stays_usable(tmp_path: Path) -> None:
    files = bad_files()
    at = AppTest.from_file(HOME, default_timeout=120)
    at.switch_page("pages/1_Case_browser.py")
    at.run()
    uploader = at.file_uploader(key="browser_uploads")
    uploader.set_value([(name, blob, GZ) for name, (blob, _) in files.items()]).run()
    assert not at.exception
    errors = [str(e.value) for e in at.error]
    for name, (_, word) in files.items():
        mine = [e for e in errors if e.startswith(f"{name}:")]
        assert len(mine) == 1, (name, errors)
        assert word.lower() in mine[0].lower(), (name, mine[0])
        assert "\n" not in mine[0]
    assert next(b for b in at.button if b.label == "Use these files as the case").disabled

    # the same session then builds a good case
    folder = make_case_dir(tmp_path, case_id="BraTS2021_00042")
    at.file_uploader(key="browser_uploads").set_value(
        [(p.name, p.read_bytes(), GZ) for p in sorted(folder.iterdir())]).run()
    assert not at.exception and not at.error
    next(b for b in at.button if b.label == "Use these files as the case").click().run()
    assert not at.exception
    sel = at.session_state[ui.KEY_CASE]
    assert (sel["kind"], sel["case_id"], sel["origin"]) == ("upload", "BraTS2021_00042", "upload")


def test_mismatched_modalities_are_refused_with_one_message(tmp_path: Path) -> None:
    folder = make_case_dir(tmp_path / "a", case_id="BraTS2021_00042")
    other = make_case_dir(tmp_path / "b", case_id="BraTS2021_00042", shape=(12, 10, 9))
    files = [(p.name, p.read_bytes(), GZ) for p in sorted(folder.iterdir()) if "_t2" not in p.name]
    files.append(("BraTS2021_00042_t2.nii.gz", (other / "BraTS2021_00042_t2.nii.gz").read_bytes(), GZ))
    at = AppTest.from_file(HOME, default_timeout=120)
    at.switch_page("pages/1_Case_browser.py")
    at.run()
    at.file_uploader(key="browser_uploads").set_value(files).run()
    button = next(b for b in at.button if b.label == "Use these files as the case")
    if not button.disabled:
        button.click().run()
    assert not at.exception
    errors = " ".join(str(e.value) for e in at.error)
    assert "shape" in errors and "T2" in errors
    assert ui.KEY_UPLOADED not in at.session_state
