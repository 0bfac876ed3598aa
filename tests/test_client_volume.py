"""Data for the in-browser viewer (core.views.client_volume): crop, 8-bit scaling, encoding and the packed case,
on tiny arrays worked out by hand."""

from __future__ import annotations

import zlib

import numpy as np
import pytest

from core.errors import BratsViewerError
from core.views import client_volume as cv
from core.views import figures


def test_crop_box_is_the_union_of_non_zero_voxels_plus_margin() -> None:
    a = np.zeros((10, 8, 6))
    b = np.zeros((10, 8, 6))
    a[3, 2, 1] = 1
    b[5, 4, 4] = 7
    assert cv.crop_box([a, b], margin=0) == ((3, 2, 1), (6, 5, 5))
    assert cv.crop_box([a, b], margin=2) == ((1, 0, 0), (8, 7, 6))  # clipped to the grid
    assert cv.crop_box([np.zeros((4, 4, 4))]) == ((0, 0, 0), (4, 4, 4))  # nothing: the whole grid


def test_crop_box_refuses_mixed_shapes() -> None:
    with pytest.raises(BratsViewerError, match="expected volumes of one"):
        cv.crop_box([np.zeros((2, 2, 2)), np.zeros((2, 2, 3))])
    with pytest.raises(BratsViewerError, match="expected at least one volume"):
        cv.crop_box([])


def test_scale_range_and_uint8() -> None:
    pct = {0.0: 10.0, 99.9: 265.0}
    assert cv.scale_range(pct) == (0.0, 265.0)  # positive images start at 0 so background stays black
    assert cv.scale_range({0.0: -50.0, 99.9: 205.0}) == (-50.0, 205.0)
    assert cv.scale_range({0.0: 0.0, 99.9: 0.0}) == (0.0, 1.0)
    data = np.array([[[0.0, 1.0, 128.0, 255.0, 300.0, -5.0]]])
    assert cv.to_uint8(data, 0.0, 255.0).tolist() == [[[0, 1, 128, 255, 255, 0]]]
    assert cv.window_to_8bit((51.0, 153.0), 0.0, 510.0) == (25.5, 76.5)


def test_encode_block_is_x_fastest_deflate_and_round_trips() -> None:
    block = np.arange(2 * 3 * 4, dtype=np.uint8).reshape(2, 3, 4)  # (nx, ny, nz)
    text = cv.encode_block(block)
    raw = zlib.decompress(text)
    nx, ny = 2, 3
    x, y, z = 1, 2, 3
    assert raw[(z * ny + y) * nx + x] == block[x, y, z]  # the index the browser uses
    np.testing.assert_array_equal(cv.decode_block(text, (2, 3, 4)), block)


def test_decode_block_refuses_bad_text() -> None:
    with pytest.raises(BratsViewerError, match="expected 24 voxels"):
        cv.decode_block(cv.encode_block(np.zeros((2, 3, 3), np.uint8)), (2, 3, 4))
    with pytest.raises(BratsViewerError, match="undecodable"):
        cv.decode_block(b"not deflated", (1, 1, 1))
    with pytest.raises(BratsViewerError, match="uint8"):
        cv.encode_block(np.zeros((2, 2, 2), np.int16))


def test_plane_layouts_follow_the_figures() -> None:
    lay = cv.plane_layouts()
    assert lay["axial"]["axis"] == 2 and lay["axial"]["col_flip"] == {"radiological": True, "neurological": False}
    assert lay["axial"]["letters"]["radiological"] == figures.orientation_letters("axial", True)
    assert lay["sagittal"]["row_axis"] == 2 and lay["sagittal"]["row_flip"] is True


def test_pack_case_crops_scales_and_names_everything() -> None:
    shape = (6, 5, 4)
    flair = np.zeros(shape, np.float32)
    flair[1:4, 1:3, 1:3] = 100.0
    flair[2, 2, 2] = 200.0
    seg = np.zeros(shape, np.uint8)
    seg[2, 2, 2] = 4
    pct = figures.brain_percentiles(flair)
    affine = np.diag([2.0, 2.0, 3.0, 1.0])
    out, blob = cv.pack_case({"flair": flair}, {"flair": pct}, {"Ground truth": seg}, affine, (2.0, 2.0, 3.0),
                       cursors={"tumour": {"x": 2, "y": 2, "z": 2}, "centre": None})
    assert out["shape"] == [6, 5, 4] and out["spacing_mm"] == [2.0, 2.0, 3.0]
    # brain box x 1..3, y 1..2, z 1..2 grown by 2 voxels and clipped: x 0..5, y 0..4, z 0..3
    assert out["offset"] == [0, 0, 0] and out["size"] == [6, 5, 4]
    image = out["images"][0]
    assert image["key"] == "flair" and image["title"] == "FLAIR" and image["low"] == 0.0
    start, length = image["span"]
    assert start == 0 and out["labels"][0]["span"] == [length, len(blob) - length]  # back to back in the blob
    block = cv.decode_block(blob[start:start + length], out["size"])
    high = image["high"]
    assert block[2, 2, 2] == min(255, round(200.0 * 255 / high)) and block[1, 1, 1] == round(100.0 * 255 / high)
    l_start, l_len = out["labels"][0]["span"]
    labels = cv.decode_block(blob[l_start:l_start + l_len], out["size"])
    assert labels[2, 2, 2] == 4 and labels.sum() == 4
    assert set(image["windows"]) == set(figures.presets_for("flair"))
    assert out["cursors"] == {"tumour": {"x": 2, "y": 2, "z": 2}}
    assert out["affine"][2] == [0.0, 0.0, 3.0, 0.0] and out["colours"]["4"] == [40, 110, 240]


def test_pack_case_refuses_labels_of_another_grid() -> None:
    img = np.ones((3, 3, 3))
    with pytest.raises(BratsViewerError, match=r"expected Prediction labels of shape \(3, 3, 3\)"):
        cv.pack_case({"t1": img}, {"t1": figures.brain_percentiles(img)}, {"Prediction": np.zeros((2, 2, 2))},
                     np.eye(4), (1, 1, 1))
