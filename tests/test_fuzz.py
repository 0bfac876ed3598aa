"""Fuzzing the loader: mutated NIfTI files either load as a valid volume or raise the project's own error.

Hypothesis drives bit flips, truncations and header-field overwrites of valid files (plain and gzip), for a
bounded number of examples. Anything other than a Volume or a BratsViewerError is a failure.
"""

from __future__ import annotations

import gzip
import struct
import tracemalloc

import nibabel as nib
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from core.data.io import Volume, load_volume_bytes
from core.errors import BratsViewerError

FUZZ_SETTINGS = settings(max_examples=1500, deadline=None, derandomize=True,
                         suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
# Header fields worth aiming at (offset, struct format) in a NIfTI-1 header.
HEADER_FIELDS = [(0, "<i"), (40, "<8h"), (70, "<h"), (72, "<h"), (76, "<8f"), (108, "<f"), (112, "<f"),
                 (116, "<f"), (252, "<h"), (254, "<h"), (280, "<4f"), (344, "4s")]


def _valid_nifti(dtype: type = np.int16) -> bytes:
    arr = np.arange(6 * 5 * 4, dtype=dtype).reshape(6, 5, 4)
    img = nib.Nifti1Image(arr, np.diag([-1.0, -1.0, 1.0, 1.0]))
    return img.to_bytes()


RAW = _valid_nifti()
GZ = gzip.compress(RAW, mtime=0)
RAW_F32 = _valid_nifti(np.float32)


def _check(blob: bytes) -> None:
    try:
        vol = load_volume_bytes(blob, "fuzz.nii")
    except BratsViewerError as err:
        assert str(err) and "\n" not in str(err)
        return
    assert isinstance(vol, Volume)
    assert vol.data.ndim == 3 and all(s >= 1 for s in vol.data.shape)
    assert all(s > 0 and np.isfinite(s) for s in vol.spacing_mm)
    if vol.data.dtype.kind == "f":
        assert np.isfinite(vol.data).all()


@FUZZ_SETTINGS
@given(base=st.sampled_from([RAW, GZ, RAW_F32]), flips=st.lists(st.tuples(st.integers(0, 10**6), st.integers(0, 7)),
                                                                 min_size=1, max_size=8))
def test_bit_flips_load_or_refuse(base: bytes, flips: list[tuple[int, int]]) -> None:
    data = bytearray(base)
    for pos, bit in flips:
        data[pos % len(data)] ^= 1 << bit
    _check(bytes(data))


@FUZZ_SETTINGS
@given(base=st.sampled_from([RAW, GZ]), cut=st.integers(0, len(RAW)))
def test_truncation_loads_or_refuses(base: bytes, cut: int) -> None:
    _check(base[: cut % (len(base) + 1)])


@FUZZ_SETTINGS
@given(field=st.sampled_from(HEADER_FIELDS), payload=st.binary(min_size=32, max_size=32),
       compress=st.booleans())
def test_header_field_overwrites_load_or_refuse(field: tuple[int, str], payload: bytes, compress: bool) -> None:
    offset, fmt = field
    size = struct.calcsize(fmt)
    data = bytearray(RAW)
    data[offset : offset + size] = payload[:size]
    blob = bytes(data)
    _check(gzip.compress(blob, mtime=0) if compress else blob)


def test_fuzzed_huge_header_dims_do_not_allocate() -> None:
    """A header that claims a huge image over a tiny gzip stream is refused without allocating it."""
    data = bytearray(RAW)
    struct.pack_into("<8h", data, 40, 3, 32767, 32767, 32767, 1, 1, 1, 1)
    tracemalloc.start()
    try:
        with pytest.raises(BratsViewerError, match="voxels"):
            load_volume_bytes(gzip.compress(bytes(data), mtime=0), "huge.nii.gz")
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 20 * 2**20
