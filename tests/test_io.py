"""core/data/io.py: every class of bad input is refused with the project's own error and a helpful message;
orientation is handled once at load and written back exactly; atomic writes survive a crash."""

from __future__ import annotations

import gzip
import io
import itertools
import os
import struct
import tracemalloc
import zlib
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from conftest import LPS_AFFINE, SHAPE, random_image, write_nifti
from PIL import Image

from core.data.io import (
    atomic_write_bytes,
    load_volume,
    load_volume_bytes,
    nifti_bytes,
    parse_header,
    read_header_info,
    save_like,
    volume_from_array,
)
from core.errors import BratsViewerError, ImageContentError, ImageFormatError, ImageSizeError

# NIfTI-1 header byte offsets (little endian, as nibabel writes on x86).
_DIM, _PIXDIM, _SROW_X, _SROW_Y, _QFORM_CODE = 40, 76, 280, 296, 252


def _assert_refused(excinfo: pytest.ExceptionInfo, cls: type, *words: str) -> None:
    """The error is ``cls`` (a project error, hence a ValueError), one line, and names what went wrong."""
    err = excinfo.value
    assert isinstance(err, cls), f"expected {cls.__name__}, got {type(err).__name__}: {err}"
    assert isinstance(err, BratsViewerError) and isinstance(err, ValueError)
    message = str(err)
    assert "\n" not in message
    for word in words:
        assert word.lower() in message.lower(), f"{word!r} not in message {message!r}"


def _nifti1_bytes(array: np.ndarray, affine: np.ndarray = LPS_AFFINE) -> bytearray:
    img = nib.Nifti1Image(array, affine)
    img.set_sform(affine, code=1)
    img.set_qform(affine, code=1)
    return bytearray(img.to_bytes())


@pytest.fixture
def good_gz(tmp_path: Path) -> bytes:
    return write_nifti(tmp_path / "good.nii.gz", random_image()).read_bytes()


# ------------------------------------------------------------------------------------------ gzip ------------

def test_truncated_gzip_is_refused(tmp_path: Path, good_gz: bytes) -> None:
    path = tmp_path / "cut.nii.gz"
    path.write_bytes(good_gz[: len(good_gz) // 2])
    with pytest.raises(ImageFormatError) as excinfo:
        load_volume(path)
    _assert_refused(excinfo, ImageFormatError, "cut.nii.gz", "gzip", "truncated")


def test_bit_flipped_gzip_payload_is_refused(good_gz: bytes) -> None:
    blob = bytearray(good_gz)
    blob[len(blob) // 2] ^= 0xFF
    with pytest.raises(ImageFormatError) as excinfo:
        load_volume_bytes(bytes(blob), "flipped.nii.gz")
    _assert_refused(excinfo, ImageFormatError, "flipped.nii.gz", "gzip", "corrupt")


def test_gzip_crc_mismatch_is_refused(good_gz: bytes) -> None:
    blob = bytearray(good_gz)
    blob[-6] ^= 0x01  # inside the CRC-32 of the trailer: the payload inflates fine but does not check
    with pytest.raises(ImageFormatError) as excinfo:
        load_volume_bytes(bytes(blob), "crc.nii.gz")
    _assert_refused(excinfo, ImageFormatError, "gzip", "corrupt")


def test_extra_data_after_gzip_stream_is_refused(good_gz: bytes) -> None:
    with pytest.raises(ImageFormatError) as excinfo:
        load_volume_bytes(good_gz + b"garbage after the end", "tail.nii.gz")
    _assert_refused(excinfo, ImageFormatError, "extra data")


@pytest.fixture(scope="module")
def gzip_bomb() -> bytes:
    """About 1 MB of gzip that expands to 1 GiB: a valid small NIfTI header (12x10x8 int16) then zeros."""
    header = bytes(_nifti1_bytes(np.zeros(SHAPE, np.int16))[:352])
    comp = zlib.compressobj(9, zlib.DEFLATED, 16 + zlib.MAX_WBITS)
    zeros = bytes(1 << 20)
    parts = [comp.compress(header)]
    parts.extend(comp.compress(zeros) for _ in range(1024))
    parts.append(comp.flush())
    return b"".join(parts)


def test_gzip_bomb_is_refused_with_small_memory(gzip_bomb: bytes) -> None:
    assert 0.5e6 < len(gzip_bomb) < 2e6
    tracemalloc.start()
    try:
        with pytest.raises(ImageSizeError) as excinfo:
            load_volume_bytes(gzip_bomb, "bomb.nii.gz")
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    _assert_refused(excinfo, ImageSizeError, "bomb.nii.gz", "decompression", "gzip bomb")
    assert peak < 100 * 2**20, f"peak traced memory {peak / 2**20:.0f} MB while refusing a gzip bomb"


def test_gzip_bomb_declaring_a_huge_image_is_refused_from_its_header() -> None:
    raw = _nifti1_bytes(np.zeros(SHAPE, np.int8))
    struct.pack_into("<8h", raw, _DIM, 3, 1024, 1024, 1024, 1, 1, 1, 1)  # 1 GiB of int8
    comp = zlib.compressobj(9, zlib.DEFLATED, 16 + zlib.MAX_WBITS)
    blob = comp.compress(bytes(raw[:352])) + comp.compress(bytes(1 << 22)) + comp.flush()
    with pytest.raises(ImageSizeError) as excinfo:
        load_volume_bytes(blob, "huge.nii.gz")
    _assert_refused(excinfo, ImageSizeError, "voxels", "1024")


# ------------------------------------------------------------------------------------------ header ----------

def test_header_dims_32767_cubed_are_refused() -> None:
    raw = _nifti1_bytes(np.zeros(SHAPE, np.int16))
    struct.pack_into("<8h", raw, _DIM, 3, 32767, 32767, 32767, 1, 1, 1, 1)
    with pytest.raises(ImageSizeError) as excinfo:
        load_volume_bytes(bytes(raw), "big.nii")
    _assert_refused(excinfo, ImageSizeError, "voxels", "32767")


def test_nifti2_dims_whose_product_overflows_int64_are_refused_as_too_large() -> None:
    img = nib.Nifti2Image(np.zeros(SHAPE, np.int16), LPS_AFFINE)
    raw = bytearray(img.to_bytes())
    struct.pack_into("<8q", raw, 16, 3, 2**32, 2**32, 1, 1, 1, 1, 1)  # 2**64 voxels: wraps to 0 in int64
    with pytest.raises(ImageSizeError) as excinfo:
        load_volume_bytes(bytes(raw), "wrap.nii")
    _assert_refused(excinfo, ImageSizeError, "voxels")


def test_truncated_uncompressed_file_is_refused(tmp_path: Path) -> None:
    blob = write_nifti(tmp_path / "a.nii", random_image()).read_bytes()
    with pytest.raises(ImageFormatError) as excinfo:
        load_volume_bytes(blob[:-10], "short.nii")
    _assert_refused(excinfo, ImageFormatError, "truncated")


@pytest.mark.parametrize("value", [np.nan, np.inf, -np.inf])
def test_non_finite_voxels_are_refused(nifti_writer, value: float) -> None:
    arr = random_image().astype(np.float32)
    arr[3, 4, 5] = value
    with pytest.raises(ImageContentError) as excinfo:
        load_volume(nifti_writer("nonfinite.nii.gz", arr))
    _assert_refused(excinfo, ImageContentError, "finite", "1 NaN or infinite")


def test_two_dimensional_image_is_refused(nifti_writer) -> None:
    with pytest.raises(ImageContentError) as excinfo:
        load_volume(nifti_writer("slice.nii.gz", np.zeros((12, 10), np.int16)))
    _assert_refused(excinfo, ImageContentError, "3-D", "2-D")


def test_four_dimensional_image_with_three_volumes_is_refused(nifti_writer) -> None:
    with pytest.raises(ImageContentError) as excinfo:
        load_volume(nifti_writer("series.nii.gz", np.zeros((*SHAPE, 3), np.int16)))
    _assert_refused(excinfo, ImageContentError, "3-D", "4-D", "3)")


def test_four_dimensional_image_with_trailing_singleton_loads_as_3d(nifti_writer) -> None:
    arr = random_image((*SHAPE, 1))
    vol = load_volume(nifti_writer("single.nii.gz", arr))
    assert vol.original_shape == SHAPE
    np.testing.assert_array_equal(vol.to_original(vol.data), arr[..., 0])


def test_complex_voxels_are_refused(nifti_writer) -> None:
    with pytest.raises(ImageContentError) as excinfo:
        load_volume(nifti_writer("complex.nii.gz", np.zeros(SHAPE, np.complex64)))
    _assert_refused(excinfo, ImageContentError, "integer or real", "complex64")


def test_rgb_voxels_are_refused(nifti_writer) -> None:
    rgb = np.zeros(SHAPE, dtype=[("R", "u1"), ("G", "u1"), ("B", "u1")])
    with pytest.raises(ImageContentError) as excinfo:
        load_volume(nifti_writer("colour.nii.gz", rgb))
    _assert_refused(excinfo, ImageContentError, "integer or real", "RGB24")


@pytest.mark.parametrize("axis", [1, 2, 3])
@pytest.mark.parametrize("value", [0.0, -1.0, float("nan")])
def test_bad_pixdim_is_refused(axis: int, value: float) -> None:
    # nibabel repairs pixdim when it writes, so the header bytes are patched directly.
    raw = _nifti1_bytes(random_image(), np.eye(4))
    struct.pack_into("<f", raw, _PIXDIM + 4 * axis, value)
    with pytest.raises(ImageContentError) as excinfo:
        load_volume_bytes(bytes(raw), "pixdim.nii")
    _assert_refused(excinfo, ImageContentError, "voxel sizes", f"pixdim[{axis}]")


def test_singular_affine_is_refused() -> None:
    raw = _nifti1_bytes(random_image(), np.eye(4))
    struct.pack_into("<h", raw, _QFORM_CODE, 0)
    struct.pack_into("<4f", raw, _SROW_X, 1.0, 1.0, 0.0, 0.0)  # x and y columns parallel
    struct.pack_into("<4f", raw, _SROW_Y, 1.0, 1.0, 0.0, 0.0)
    with pytest.raises(ImageContentError) as excinfo:
        load_volume_bytes(bytes(raw), "singular.nii")
    _assert_refused(excinfo, ImageContentError, "non-singular affine")


def test_singular_array_affine_is_refused() -> None:
    with pytest.raises(ImageContentError) as excinfo:
        volume_from_array(random_image(), np.diag([1.0, 0.0, 1.0, 1.0]))
    _assert_refused(excinfo, ImageContentError, "non-singular")


# ------------------------------------------------------------------------------------ not NIfTI at all ------

def test_png_renamed_nii_is_refused(tmp_path: Path) -> None:
    buf = io.BytesIO()
    Image.fromarray(np.zeros((16, 16), np.uint8)).save(buf, format="PNG")
    path = tmp_path / "photo.nii"
    path.write_bytes(buf.getvalue())
    with pytest.raises(ImageFormatError) as excinfo:
        load_volume(path)
    _assert_refused(excinfo, ImageFormatError, "photo.nii", "expected a NIfTI", "PNG")


def test_dicom_preamble_is_refused_with_a_conversion_hint() -> None:
    blob = bytes(128) + b"DICM" + bytes(600)
    with pytest.raises(ImageFormatError) as excinfo:
        load_volume_bytes(blob, "IM0001.nii")
    _assert_refused(excinfo, ImageFormatError, "DICOM", "dcm2niix")


def test_gzipped_png_is_refused() -> None:
    buf = io.BytesIO()
    Image.fromarray(np.zeros((64, 64), np.uint8)).save(buf, format="PNG")
    with pytest.raises(ImageFormatError) as excinfo:
        load_volume_bytes(gzip.compress(buf.getvalue() + bytes(1000)), "png.nii.gz")
    _assert_refused(excinfo, ImageFormatError, "PNG")


def test_text_file_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "notes.nii"
    path.write_text("patient 1: flair looks fine\n" * 40, encoding="utf-8")
    with pytest.raises(ImageFormatError) as excinfo:
        load_volume(path)
    _assert_refused(excinfo, ImageFormatError, "notes.nii", "text file")


@pytest.mark.parametrize("name", ["empty.nii", "empty.nii.gz"])
def test_empty_file_is_refused(tmp_path: Path, name: str) -> None:
    path = tmp_path / name
    path.write_bytes(b"")
    with pytest.raises(ImageFormatError) as excinfo:
        load_volume(path)
    _assert_refused(excinfo, ImageFormatError, name, "empty file")


def test_missing_file_and_folder_are_refused(tmp_path: Path) -> None:
    with pytest.raises(ImageFormatError) as excinfo:
        load_volume(tmp_path / "absent.nii.gz")
    _assert_refused(excinfo, ImageFormatError, "absent.nii.gz", "readable file")
    with pytest.raises(ImageFormatError) as excinfo:
        load_volume(tmp_path)
    _assert_refused(excinfo, ImageFormatError, "folder")


def test_parse_header_names_short_input() -> None:
    with pytest.raises(ImageFormatError) as excinfo:
        parse_header(b"\x00" * 100)
    _assert_refused(excinfo, ImageFormatError, "348 bytes", "100 bytes")


# ------------------------------------------------------------------------------------------ loads fine ------

def test_non_ascii_file_name_loads_and_names_errors(tmp_path: Path) -> None:
    arr = random_image()
    path = write_nifti(tmp_path / "patiënt_Ωμέγα_脑.nii.gz", arr)
    vol = load_volume(path)
    assert vol.source_name == "patiënt_Ωμέγα_脑.nii.gz"
    np.testing.assert_array_equal(vol.to_original(vol.data), arr)
    bad = tmp_path / "schädel_ü.nii.gz"
    bad.write_bytes(path.read_bytes()[:100])
    with pytest.raises(ImageFormatError) as excinfo:
        load_volume(bad)
    _assert_refused(excinfo, ImageFormatError, "schädel_ü.nii.gz")


def test_nifti2_loads(nifti_writer) -> None:
    arr = random_image()
    path = nifti_writer("two.nii.gz", arr, version=2)
    assert parse_header(gzip.decompress(path.read_bytes())[:540]).version == 2
    vol = load_volume(path)
    assert vol.axcodes == ("R", "A", "S") and vol.original_axcodes == ("L", "P", "S")
    np.testing.assert_array_equal(vol.to_original(vol.data), arr)


def test_big_endian_file_loads_same_values() -> None:
    arr = random_image()
    vol = load_volume_bytes(nib.Nifti1Image(arr.astype(">i2"), LPS_AFFINE).to_bytes(), "be.nii")
    np.testing.assert_array_equal(vol.to_original(vol.data), arr)
    assert vol.stored_dtype == "int16"


def test_zero_scale_factor_reads_as_no_scaling_with_warning() -> None:
    arr = random_image()
    raw = _nifti1_bytes(arr)
    struct.pack_into("<2f", raw, 112, 0.0, 0.0)  # scl_slope, scl_inter
    vol = load_volume_bytes(bytes(raw), "noscale.nii")
    np.testing.assert_array_equal(vol.to_original(vol.data), arr)
    assert any("scl_slope" in w for w in vol.warnings)


def test_loaded_data_is_read_only(nifti_writer) -> None:
    vol = load_volume(nifti_writer("ro.nii.gz", random_image()))
    with pytest.raises(ValueError):
        vol.data[0, 0, 0] = 1


def test_read_header_info_matches_a_full_load(tmp_path: Path) -> None:
    affine = np.diag([-0.5, -1.0, 3.0, 1.0])
    path = write_nifti(tmp_path / "h.nii.gz", random_image(), affine)
    shape, spacing = read_header_info(path)
    assert shape == SHAPE
    assert spacing == pytest.approx((0.5, 1.0, 3.0), abs=1e-6)


# ------------------------------------------------------------------------------------------ orientation -----

def _axis_aligned_affine(perm: tuple[int, ...], flips: tuple[int, ...],
                         spacing: tuple[float, ...] = (1.0, 1.0, 1.0)) -> np.ndarray:
    """Stored axis i points along world axis perm[i], in direction flips[i] (+1/-1), spacing[i] mm apart."""
    affine = np.eye(4)
    affine[:3, :3] = 0.0
    for i in range(3):
        affine[perm[i], i] = flips[i] * spacing[i]
    affine[:3, 3] = (-12.5, 30.0, 7.25)
    return affine


_ORIENTATIONS = [(p, f) for p in itertools.permutations(range(3)) for f in itertools.product((1, -1), repeat=3)]


def test_there_are_48_axis_aligned_orientations() -> None:
    codes = {nib.aff2axcodes(_axis_aligned_affine(p, f)) for p, f in _ORIENTATIONS}
    assert len(codes) == 48


@pytest.mark.parametrize(("perm", "flips"), _ORIENTATIONS, ids=lambda v: "".join(map(str, v)))
def test_orientation_round_trip(tmp_path: Path, perm: tuple[int, ...], flips: tuple[int, ...]) -> None:
    affine = _axis_aligned_affine(perm, flips, (1.0, 2.0, 0.5))
    stored = random_image((5, 6, 7), seed=sum(perm) * 8 + sum(f > 0 for f in flips))
    marked = (1, 4, 2)
    stored[marked] = 9999  # the random intensities stay below 1000
    path = write_nifti(tmp_path / "o.nii.gz", stored, affine)

    vol = load_volume(path)
    assert vol.axcodes == ("R", "A", "S")
    assert vol.original_axcodes == tuple(nib.aff2axcodes(affine))
    np.testing.assert_allclose(vol.original_affine, affine, atol=1e-6)
    # The marked voxel sits at the same point in the world on both grids.
    ras_index = np.argwhere(vol.data == 9999)
    assert ras_index.shape == (1, 3)
    world_ras = vol.affine @ np.append(ras_index[0], 1.0)
    world_stored = affine @ np.append(marked, 1.0)
    np.testing.assert_allclose(world_ras, world_stored, atol=1e-5)
    # RAS grid: the affine's diagonal is positive and nothing else is.
    assert np.all(np.diag(vol.affine)[:3] > 0)
    np.testing.assert_allclose(vol.affine[:3, :3], np.diag(np.diag(vol.affine)[:3]), atol=1e-9)
    # Back to the stored order exactly.
    np.testing.assert_array_equal(vol.to_original(vol.data), stored)
    # Written back in the input's own geometry, reloaded: same data, same affine, same stored order.
    out = save_like(vol, vol.data, tmp_path / "out.nii.gz")
    again = load_volume(out)
    np.testing.assert_array_equal(again.data, vol.data)
    assert again.data.dtype == vol.data.dtype
    np.testing.assert_allclose(again.original_affine, affine, atol=1e-6)
    np.testing.assert_array_equal(np.asanyarray(nib.load(out).dataobj), stored)


def test_oblique_affine_warns_and_round_trips_exactly(tmp_path: Path) -> None:
    theta = np.deg2rad(20.0)
    rotation = np.array([[np.cos(theta), -np.sin(theta), 0.0], [np.sin(theta), np.cos(theta), 0.0], [0.0, 0.0, 1.0]])
    affine = np.eye(4)
    affine[:3, :3] = rotation @ np.diag([-1.0, -1.0, 1.2])
    affine[:3, 3] = (90.0, 120.0, -60.0)
    stored = random_image()
    vol = load_volume(write_nifti(tmp_path / "oblique.nii.gz", stored, affine))
    assert any("oblique" in w for w in vol.warnings)
    assert vol.is_oblique
    assert vol.axcodes == ("R", "A", "S")
    np.testing.assert_array_equal(vol.to_original(vol.data), stored)
    again = load_volume(save_like(vol, vol.data, tmp_path / "out.nii.gz"))
    np.testing.assert_array_equal(again.data, vol.data)
    np.testing.assert_allclose(again.original_affine, affine, atol=1e-5)
    assert again.is_oblique


def test_axis_aligned_volume_is_not_oblique(nifti_writer) -> None:
    vol = load_volume(nifti_writer("straight.nii.gz", random_image()))
    assert not vol.is_oblique and vol.warnings == ()


def test_spacing_of_anisotropic_permuted_volume(tmp_path: Path) -> None:
    # Stored axis 0 runs Superior at 3 mm, axis 1 Left at 0.5 mm, axis 2 Anterior at 1 mm.
    affine = _axis_aligned_affine((2, 0, 1), (1, -1, 1), (3.0, 0.5, 1.0))
    vol = load_volume(write_nifti(tmp_path / "aniso.nii.gz", random_image((4, 6, 5)), affine))
    assert vol.original_axcodes == ("S", "L", "A")
    assert vol.shape == (6, 5, 4)
    assert vol.spacing_mm == pytest.approx((0.5, 1.0, 3.0), abs=1e-6)
    assert vol.voxel_volume_ml == pytest.approx(0.5 * 1.0 * 3.0 / 1000.0, rel=1e-6)


def test_to_original_refuses_another_grid(nifti_writer) -> None:
    vol = load_volume(nifti_writer("g.nii.gz", random_image()))
    with pytest.raises(ImageContentError) as excinfo:
        vol.to_original(np.zeros((3, 3, 3)))
    _assert_refused(excinfo, ImageContentError, "(3, 3, 3)")


def test_to_original_keeps_trailing_channels(nifti_writer) -> None:
    stored = random_image()
    vol = load_volume(nifti_writer("c.nii.gz", stored))
    stacked = np.stack([vol.data, vol.data + 1], axis=-1)
    back = vol.to_original(stacked)
    np.testing.assert_array_equal(back[..., 0], stored)
    np.testing.assert_array_equal(back[..., 1], stored + 1)


@pytest.mark.parametrize("dtype", [np.int64, np.uint64, np.bool_])
def test_save_like_writes_argmax_and_mask_dtypes(tmp_path: Path, nifti_writer, dtype: type) -> None:
    vol = load_volume(nifti_writer("ref.nii.gz", random_image()))
    labels = (np.asarray(vol.data) % 2).astype(dtype)  # e.g. np.argmax gives int64, a threshold gives bool
    again = load_volume(save_like(vol, labels, tmp_path / "labels.nii.gz"))
    np.testing.assert_array_equal(again.data, labels.astype(np.int64))
    np.testing.assert_array_equal(again.original_affine, vol.original_affine.astype(np.float32))


def test_nifti_bytes_reload_matches(nifti_writer) -> None:
    vol = load_volume(nifti_writer("n.nii.gz", random_image()))
    again = load_volume_bytes(nifti_bytes(vol, vol.data), "n.nii.gz")
    np.testing.assert_array_equal(again.data, vol.data)


# ------------------------------------------------------------------------------------------ atomic write ----

def test_atomic_write_replaces_and_leaves_no_temp(tmp_path: Path) -> None:
    target = tmp_path / "out" / "report.json"
    atomic_write_bytes(target, b"first")
    atomic_write_bytes(target, b"second")
    assert target.read_bytes() == b"second"
    assert os.listdir(target.parent) == ["report.json"]


@pytest.mark.parametrize("failing", ["replace", "fsync"])
def test_atomic_write_crash_keeps_old_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, failing: str) -> None:
    target = tmp_path / "seg.nii.gz"
    target.write_bytes(b"old content")

    def crash(*args: object, **kwargs: object) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, failing, crash)
    with pytest.raises(OSError, match="No space left"):
        atomic_write_bytes(target, b"new content that never lands")
    monkeypatch.undo()
    assert target.read_bytes() == b"old content"
    assert os.listdir(tmp_path) == ["seg.nii.gz"]


def test_nibabel_leaves_dicom_extensions_unparsed_and_pydicom_unimported(tmp_path: Path) -> None:
    """core.data.io imports nibabel with pydicom hidden (core.data.nibabel_import): a NIfTI whose DICOM header
    extension (code 2) holds junk still loads, its extension kept as raw bytes; pydicom is not imported by
    loading NIfTI files, and still imports normally when the DICOM code needs it."""
    import subprocess
    import sys

    code = """
import io, sys, gzip
import numpy as np
import core.data.io as cio
from core.data.nibabel_import import nib
img = nib.Nifti1Image(np.arange(24, dtype=np.int16).reshape(2, 3, 4), np.eye(4))
img.header.extensions.append(nib.nifti1.Nifti1Extension(2, b"not a DICOM dataset at all" * 4))
buf = io.BytesIO(); img.to_file_map({"header": nib.FileHolder(fileobj=buf), "image": nib.FileHolder(fileobj=buf)})
vol = cio.load_volume_bytes(gzip.compress(buf.getvalue()), "ext.nii.gz")
print(vol.shape, int(np.asarray(vol.data).sum()), nib.nifti1.have_dicom, "pydicom" in sys.modules)
import pydicom
print(type(pydicom.Dataset()).__name__)
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         cwd=Path(__file__).resolve().parent.parent).stdout.splitlines()
    assert out == ["(2, 3, 4) 276 False False", "Dataset"]


# ---- voxel volume from the affine (issue 18) ----------------------------------------------------------------------

TILT_DEG = 30.0
SHEARED = np.array([[0.8, 0.0, 0.0, 0.0],  # 0.8 x 1 x 2 mm voxels, slices stepped 30 deg off the normal
                    [0.0, 1.0, 2.0 * np.sin(np.radians(TILT_DEG)), 0.0],
                    [0.0, 0.0, 2.0 * np.cos(np.radians(TILT_DEG)), 0.0],
                    [0.0, 0.0, 0.0, 1.0]])


def test_voxel_volume_is_the_determinant_of_the_affine_on_a_sheared_grid() -> None:
    from core.data.io import voxel_volume_ml_from

    vol = volume_from_array(np.zeros((4, 5, 6), np.int16), SHEARED)
    assert vol.spacing_mm == pytest.approx((0.8, 1.0, 2.0))  # the slice step is 2 mm long...
    by_hand = 0.8 * 1.0 * 2.0 * np.cos(np.radians(TILT_DEG)) / 1000.0  # ...but slices are 2 cos(30) mm apart
    assert vol.voxel_volume_ml == pytest.approx(by_hand, rel=1e-9)
    assert voxel_volume_ml_from(SHEARED) == pytest.approx(by_hand, rel=1e-9)
    assert voxel_volume_ml_from(vol.spacing_mm) == pytest.approx(1.6e-3)  # the product: 1/cos(30) too large
    assert voxel_volume_ml_from(np.diag([-1.0, 2.0, 3.0, 1.0])) == pytest.approx(6e-3)  # |det|: a flip is fine
    for bad in ([1.0, 0.0, 2.0], np.zeros((4, 4)), [1.0, 2.0]):
        with pytest.raises(ImageContentError):
            voxel_volume_ml_from(bad)
