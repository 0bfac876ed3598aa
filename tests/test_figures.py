"""Tests of core/views/figures.py on tiny hand-checkable arrays: orientation, window/level, overlays, slice finding,
montages and the plotly figures (asserting on data and trace counts, not pixels of rendered images)."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from core.config import LABEL_COLOURS
from core.errors import BratsViewerError
from core.views import figures as F

SHAPE = (5, 6, 7)  # X (L->R), Y (P->A), Z (I->S): all different so a swapped axis shows up


def marked(voxel: tuple[int, int, int], shape: tuple[int, int, int] = SHAPE) -> np.ndarray:
    vol = np.zeros(shape, dtype=np.int16)
    vol[voxel] = 1
    return vol


# ------------------------------------------------------------------------------------------------- orientation

@pytest.mark.parametrize(("plane", "radiological", "expected"), [
    ("axial", True, {"top": "A", "bottom": "P", "left": "R", "right": "L"}),
    ("axial", False, {"top": "A", "bottom": "P", "left": "L", "right": "R"}),
    ("coronal", True, {"top": "S", "bottom": "I", "left": "R", "right": "L"}),
    ("coronal", False, {"top": "S", "bottom": "I", "left": "L", "right": "R"}),
    ("sagittal", True, {"top": "S", "bottom": "I", "left": "A", "right": "P"}),
    ("sagittal", False, {"top": "S", "bottom": "I", "left": "A", "right": "P"}),
])
def test_orientation_letters(plane: str, radiological: bool, expected: dict[str, str]) -> None:
    assert F.orientation_letters(plane, radiological) == expected


def test_unknown_plane_is_refused() -> None:
    with pytest.raises(BratsViewerError, match="plane"):
        F.plane_layout("oblique")


@pytest.mark.parametrize(("plane", "radiological", "shape2d", "pixel"), [
    # voxel (1, 2, 3) of a (5, 6, 7) grid, worked out by hand
    ("axial", True, (6, 5), (6 - 1 - 2, 5 - 1 - 1)),  # rows = y flipped (A up), cols = x flipped (R left)
    ("axial", False, (6, 5), (6 - 1 - 2, 1)),  # cols = x (L left)
    ("coronal", True, (7, 5), (7 - 1 - 3, 5 - 1 - 1)),  # rows = z flipped (S up)
    ("coronal", False, (7, 5), (7 - 1 - 3, 1)),
    ("sagittal", True, (7, 6), (7 - 1 - 3, 6 - 1 - 2)),  # cols = y flipped (A left)
    ("sagittal", False, (7, 6), (7 - 1 - 3, 6 - 1 - 2)),
])
def test_marked_voxel_appears_at_expected_pixel(plane: str, radiological: bool, shape2d: tuple[int, int],
                                                pixel: tuple[int, int]) -> None:
    voxel = (1, 2, 3)
    index = voxel[F.PLANE_AXIS[plane]]
    sl = F.extract_slice(marked(voxel), plane, index, radiological)
    assert sl.shape == shape2d
    assert [tuple(p) for p in np.argwhere(sl)] == [pixel]
    assert F.voxel_to_display(plane, voxel, SHAPE, radiological) == pixel
    assert F.display_shape(plane, SHAPE) == shape2d


@pytest.mark.parametrize(("plane", "radiological"), list(itertools.product(F.PLANES, (True, False))))
def test_display_to_voxel_inverts_voxel_to_display(plane: str, radiological: bool) -> None:
    for voxel in itertools.product(*(range(s) for s in SHAPE)):
        r, c = F.voxel_to_display(plane, voxel, SHAPE, radiological)
        assert F.display_to_voxel(plane, voxel[F.PLANE_AXIS[plane]], r, c, SHAPE, radiological) == voxel


@pytest.mark.parametrize(("plane", "radiological"), list(itertools.product(F.PLANES, (True, False))))
def test_letters_agree_with_pixels(plane: str, radiological: bool) -> None:
    """A voxel at the high end of the column axis (R, A or S) shows on the edge carrying that letter."""
    lay = F.plane_layout(plane, radiological)
    voxel = [1, 1, 1]
    voxel[lay.col_axis] = SHAPE[lay.col_axis] - 1
    voxel[lay.row_axis] = SHAPE[lay.row_axis] - 1
    sl = F.extract_slice(marked(tuple(voxel)), plane, 1, radiological)
    (row, col), = np.argwhere(sl)
    letters = F.orientation_letters(plane, radiological)
    high_col, high_row = F.AXIS_LETTERS[lay.col_axis][1], F.AXIS_LETTERS[lay.row_axis][1]
    assert letters["left" if col == 0 else "right"] == high_col
    assert letters["top" if row == 0 else "bottom"] == high_row


def test_extract_slice_keeps_channels_and_refuses_bad_index() -> None:
    vol = np.zeros(SHAPE + (4,), dtype=np.float32)
    vol[1, 2, 3, 2] = 1.0
    sl = F.extract_slice(vol, "axial", 3)
    assert sl.shape == (6, 5, 4)
    assert sl[3, 3, 2] == 1.0
    with pytest.raises(BratsViewerError, match="0..6"):
        F.extract_slice(vol, "axial", 7)
    with pytest.raises(BratsViewerError, match="shape"):
        F.extract_slice(np.zeros((3, 3)), "axial", 0)


# ------------------------------------------------------------------------------------------------ window/level

def test_window_to_uint8_maps_and_clips() -> None:
    out = F.window_to_uint8(np.array([-10.0, 0.0, 50.0, 100.0, 150.0]), 0.0, 100.0)
    assert out.dtype == np.uint8
    np.testing.assert_array_equal(out, [0, 0, 128, 255, 255])  # 50 * 2.55 = 127.5 rounds to 128
    with pytest.raises(BratsViewerError, match="high > low"):
        F.window_to_uint8(np.zeros(3), 5.0, 5.0)


def test_brain_percentiles_ignore_background_zeros() -> None:
    vol = np.zeros(1000, dtype=np.int16)
    vol[:101] = np.arange(100, 201)  # brain voxels 100..200, the other 899 are background
    stats = F.brain_percentiles(vol, (0.0, 50.0, 100.0))
    assert stats == {0.0: 100.0, 50.0: 150.0, 100.0: 200.0}
    lo, hi = F.auto_window(vol)
    assert lo == pytest.approx(100.5) and hi == pytest.approx(199.5)


def test_windows_of_a_flat_or_empty_volume_stay_valid() -> None:
    assert F.auto_window(np.zeros((3, 3, 3))) == (0.0, 1.0)
    assert F.auto_window(np.full((3, 3, 3), 7.0)) == (7.0, 8.0)


def test_every_modality_has_an_auto_preset() -> None:
    for mod in ("flair", "t1", "t1ce", "t2", "unknown"):
        presets = F.presets_for(mod)
        assert presets[F.DEFAULT_PRESET] == F.AUTO_PERCENTILES
        stats = F.brain_percentiles(np.arange(1, 101))
        for pair in presets.values():
            lo, hi = F.window_from_percentiles(stats, *pair)
            assert hi > lo


# --------------------------------------------------------------------------------------------------- overlays

LABELS_2D = np.array([[0, 1], [2, 4]], dtype=np.uint8)


def test_label_overlay_colours_and_opacity() -> None:
    ov = F.label_overlay_rgba(LABELS_2D, opacity=0.5)
    assert ov.shape == (2, 2, 4) and ov.dtype == np.uint8
    assert tuple(ov[0, 0]) == (0, 0, 0, 0)
    assert tuple(ov[0, 1, :3]) == LABEL_COLOURS[1] == (230, 40, 40)  # red NCR
    assert tuple(ov[1, 0, :3]) == LABEL_COLOURS[2]  # green ED
    assert tuple(ov[1, 1, :3]) == LABEL_COLOURS[4]  # blue ET
    assert set(ov[..., 3].ravel()) == {0, 128}


def test_label_overlay_class_toggles() -> None:
    ov = F.label_overlay_rgba(LABELS_2D, opacity=1.0, classes=(1,))
    assert ov[0, 1, 3] == 255
    assert ov[1, 0, 3] == 0 and ov[1, 1, 3] == 0
    with pytest.raises(BratsViewerError, match="opacity"):
        F.label_overlay_rgba(LABELS_2D, opacity=1.5)


def test_contour_mode_draws_only_the_boundary() -> None:
    labels = np.zeros((7, 7), dtype=np.uint8)
    labels[1:6, 1:6] = 2  # a 5x5 square: boundary ring of 16 pixels, 3x3 inside
    ov = F.label_overlay_rgba(labels, opacity=0.3, contour=True)
    drawn = ov[..., 3] > 0
    assert drawn.sum() == 16
    assert not drawn[2:5, 2:5].any()
    assert set(ov[drawn, 3]) == {255}  # outlines are opaque
    assert F.boundary(np.eye(1, dtype=bool)).sum() == 1


def test_error_overlay_marks_fp_and_fn() -> None:
    pred = np.array([[1, 0], [2, 0]])
    ref = np.array([[4, 2], [0, 0]])  # TP at (0,0), FN at (0,1), FP at (1,0), TN at (1,1)
    ov = F.error_overlay_rgba(pred, ref, opacity=1.0)
    assert tuple(ov[1, 0]) == (*F.FP_COLOUR, 255)
    assert tuple(ov[0, 1]) == (*F.FN_COLOUR, 255)
    assert ov[0, 0, 3] == 0 and ov[1, 1, 3] == 0


def test_composite_blends_in_order() -> None:
    grey = np.full((1, 3), 100, dtype=np.uint8)
    red = np.zeros((1, 3, 4), dtype=np.uint8)
    red[0, :, :3] = (200, 0, 0)
    red[0, :, 3] = (0, 255, 128)
    out = F.composite(grey, red)
    assert out.shape == (1, 3, 3)
    assert tuple(out[0, 0]) == (100, 100, 100)
    assert tuple(out[0, 1]) == (200, 0, 0)
    assert tuple(out[0, 2]) == (150, 50, 50)  # 100 + (200-100)*128/255 = 150.2; 100 - 100*0.502 = 49.8
    with pytest.raises(BratsViewerError, match="overlay"):
        F.composite(grey, np.zeros((2, 2, 4), dtype=np.uint8))


def test_compose_plane_places_label_at_the_marked_voxel() -> None:
    image = np.full(SHAPE, 10, dtype=np.int16)
    labels = np.zeros(SHAPE, dtype=np.uint8)
    labels[1, 2, 3] = 4
    rgb = F.compose_plane(image, "axial", 3, (0.0, 20.0), True, [F.Overlay(labels, opacity=1.0)])
    assert rgb.shape == (6, 5, 3)
    assert tuple(rgb[3, 3]) == LABEL_COLOURS[4]
    assert tuple(rgb[0, 0]) == (128, 128, 128)
    err = F.compose_plane(image, "axial", 3, (0.0, 20.0), True, [F.Overlay(np.zeros_like(labels), 1.0,
                                                                             reference=labels)])
    assert tuple(err[3, 3]) == F.FN_COLOUR
    with pytest.raises(BratsViewerError, match="grid"):
        F.compose_plane(image, "axial", 3, (0.0, 20.0), True, [F.Overlay(np.zeros((2, 2, 2), np.uint8))])


def test_legend_items() -> None:
    assert [c for _, c in F.legend_items()] == ["#e62828", "#28c846", "#286ef0"]
    assert len(F.legend_items(error=True)) == 5


# ---------------------------------------------------------------------------------------------- slice finding

def test_most_tumour_slice_and_cursor() -> None:
    labels = np.zeros(SHAPE, dtype=np.uint8)
    labels[1, 0:3, 2] = 2  # three voxels in z=2, x=1
    labels[4, 5, 5] = 1  # one voxel in z=5
    assert F.most_tumour_slice(labels, 2) == 2
    assert F.most_tumour_slice(labels, 0) == 1
    assert F.most_tumour_cursor(labels) == {"x": 1, "y": 0, "z": 2}  # y: tie of 1 voxel each -> lowest index
    assert F.most_tumour_slice(np.zeros(SHAPE), 2) is None
    assert F.most_tumour_cursor(np.zeros(SHAPE)) is None


def test_brain_centre() -> None:
    image = np.zeros(SHAPE)
    image[1:4, 2:6, 0:3] = 5.0
    assert F.brain_centre(image) == {"x": 2, "y": 3, "z": 1}
    assert F.brain_centre(np.zeros(SHAPE)) == {"x": 2, "y": 3, "z": 3}


def test_montage_indices_and_extent() -> None:
    assert F.montage_indices(155, 5) == [0, 38, 77, 116, 154]
    assert F.montage_indices(155, 3, (10, 20)) == [10, 15, 20]
    assert F.montage_indices(155, 50, (10, 13)) == [10, 11, 12, 13]
    labels = np.zeros(SHAPE)
    labels[:, :, 2:5] = 1
    assert F.nonzero_extent(labels, 2) == (2, 4)
    assert F.nonzero_extent(np.zeros(SHAPE), 2) is None


def test_montage_image_tiles() -> None:
    image = np.zeros(SHAPE)
    image[:, :, 4] = 100.0
    grid = F.montage_image(image, "axial", [3, 4, 5], (0.0, 100.0), ncols=2)
    assert grid.shape == (2 * 6, 2 * 5, 3)
    assert grid[:6, :5].max() == 0 and grid[:6, 5:].min() == 255  # z=3 dark, z=4 bright
    assert grid[6:, 5:].max() == 0  # the unused fourth tile stays black
    with pytest.raises(BratsViewerError):
        F.montage_image(image, "axial", [], (0.0, 1.0))


# ------------------------------------------------------------------------------------------------ plotly views

def test_slice_figure_crosshair_letters_and_hover() -> None:
    image = np.arange(np.prod(SHAPE), dtype=np.int16).reshape(SHAPE)
    cursor = {"x": 1, "y": 2, "z": 3}
    raw = F.extract_slice(image, "axial", 3)
    rgb = F.compose_plane(image, "axial", 3, (0.0, 210.0))
    fig = F.slice_figure(rgb, raw, "axial", 3, cursor, SHAPE, radiological=True, title="Axial")
    assert len(fig.data) == 1 and fig.data[0].type == "image"
    vertical, horizontal = fig.layout.shapes
    assert (vertical.x0, horizontal.y0) == (3, 3)  # voxel (1, 2) -> display (row 3, col 3)
    assert sorted(a.text for a in fig.layout.annotations) == ["<b>A</b>", "<b>L</b>", "<b>P</b>", "<b>R</b>"]
    custom = np.asarray(fig.data[0].customdata)
    assert custom.shape == (6, 5, 3)
    assert tuple(custom[3, 3]) == (2, 1, image[1, 2, 3])  # (y index, x index, intensity) under the cross-hair
    assert "z=3" in fig.data[0].hovertemplate
    assert fig.layout.yaxis.scaleratio == 1.0
    # the pixels travel as a PNG, drawn by the browser at once (a z array was painted pixel by pixel by plotly)
    assert fig.data[0].z is None and fig.data[0].source.startswith("data:image/png;base64,")
    np.testing.assert_array_equal(F.image_pixels(fig.data[0]), rgb)


def test_four_view_and_montage_images_are_pngs() -> None:
    rgb = np.zeros((6, 5, 3), dtype=np.uint8)
    rgb[1, 2] = (10, 200, 30)
    four = F.four_view_figure({"flair": rgb, "t1": rgb}, "axial", {"x": 1, "y": 2, "z": 3}, SHAPE)
    assert all(t.z is None for t in four.data)
    np.testing.assert_array_equal(F.image_pixels(four.data[1]), rgb)
    image = np.zeros(SHAPE)
    montage = F.montage_figure(image, "coronal", [1, 3], (0.0, 2.0), ncols=2)
    assert montage.data[0].z is None
    np.testing.assert_array_equal(F.image_pixels(montage.data[0]), F.montage_image(image, "coronal", [1, 3], (0.0, 2.0),
                                                                                   ncols=2))
    with pytest.raises(BratsViewerError):
        F.png_data_uri(np.zeros((2, 2, 4)))


def test_pixel_aspect_follows_spacing() -> None:
    spacing = (1.0, 2.0, 5.0)  # x, y, z in mm
    assert F.pixel_aspect("axial", spacing) == 2.0  # rows are y, columns x
    assert F.pixel_aspect("coronal", spacing) == 5.0  # rows z, columns x
    assert F.pixel_aspect("sagittal", spacing) == 2.5  # rows z, columns y
    assert F.pixel_aspect("axial", None) == 1.0
    rgb = np.zeros((7, 6, 3), dtype=np.uint8)
    fig = F.slice_figure(rgb, None, "sagittal", 0, {"x": 0, "y": 0, "z": 0}, SHAPE, spacing_mm=spacing)
    assert fig.layout.yaxis.scaleratio == 2.5


def test_four_view_figure_has_one_image_per_modality() -> None:
    rgb = np.zeros((6, 5, 3), dtype=np.uint8)
    fig = F.four_view_figure({"flair": rgb, "t1": rgb, "t1ce": rgb, "t2": rgb}, "axial", {"x": 1, "y": 2, "z": 3},
                             SHAPE)
    assert [t.type for t in fig.data] == ["image"] * 4
    assert len(fig.layout.shapes) == 8
    assert {s.xref for s in fig.layout.shapes} == {"x", "x2", "x3", "x4"}
    # bug: the second row fell below a 1000 px window (controls end ~430 px down; the figure was 720 px tall)
    assert fig.layout.height == F.FOUR_VIEW_HEIGHT_PX and 430 + fig.layout.height <= 1000 - 40
    three = F.four_view_figure({"flair": rgb, "t1": rgb, "t2": rgb}, "axial", {"x": 1, "y": 2, "z": 3}, SHAPE)
    assert len(three.data) == 3
    with pytest.raises(BratsViewerError):
        F.four_view_figure({}, "axial", {"x": 0, "y": 0, "z": 0}, SHAPE)


def test_four_view_titles_do_not_touch_their_images() -> None:
    """Bug (issue 19.11): the 2x2 titles sat 2 px above their images (touching them)."""
    rgb = np.zeros((6, 5, 3), dtype=np.uint8)
    fig = F.four_view_figure({"flair": rgb, "t1": rgb, "t1ce": rgb, "t2": rgb}, "axial", {"x": 1, "y": 2, "z": 3},
                             SHAPE)
    titles = [a for a in fig.layout.annotations if a.text in ("FLAIR", "T1", "T1CE", "T2")]
    assert len(titles) == 4 and all(a.yshift >= 6 and a.yanchor == "bottom" for a in titles)
    assert fig.layout.margin.t >= titles[0].yshift + 13 + 2  # the top row's titles (13 px font) fit above it
    top_row_bottom = fig.layout.yaxis.domain[0]
    bottom_row_top = fig.layout.yaxis3.domain[1]
    gap_px = (top_row_bottom - bottom_row_top) * (fig.layout.height - fig.layout.margin.t)
    assert gap_px >= titles[2].yshift + 13 + 2  # the lower row's titles fit between the rows


def test_montage_figure_annotates_slice_numbers() -> None:
    fig = F.montage_figure(np.ones(SHAPE), "coronal", [1, 3], (0.0, 2.0), ncols=2)
    assert len(fig.data) == 1
    assert [a.text for a in fig.layout.annotations] == ["y=1", "y=3"]


def test_block_mean() -> None:
    mask = np.zeros((4, 4, 2), dtype=bool)
    mask[:2, :2, :] = True
    out = F.block_mean(mask, 2)
    assert out.shape == (2, 2, 1)
    assert out[0, 0, 0] == 1.0 and out[1, 1, 0] == 0.0
    assert F.block_mean(np.ones((3, 3, 3)), 2)[1, 1, 1] == pytest.approx(1 / 8)  # padded with zeros


def test_tumour_3d_figure_traces() -> None:
    labels = np.zeros((20, 20, 20), dtype=np.uint8)
    labels[5:15, 5:15, 5:15] = 2
    labels[8:12, 8:12, 8:12] = 4
    fig = F.tumour_3d_figure(labels, (1.0, 1.0, 2.0))
    assert [t.type for t in fig.data] == ["isosurface", "isosurface"]
    assert [t.name for t in fig.data] == ["ED", "ET"]
    assert float(np.max(fig.data[0].z)) > 20  # z coordinates are in mm (2 mm slices)
    brain = np.ones((20, 20, 20))
    assert len(F.tumour_3d_figure(labels, brain=brain).data) == 3
    small = F.tumour_3d_figure(labels, max_points=200)
    assert all(len(t.value) <= 200 for t in small.data)
    empty = F.tumour_3d_figure(np.zeros((4, 4, 4), dtype=np.uint8))
    assert len(empty.data) == 0 and "No tumour" in empty.layout.annotations[0].text
