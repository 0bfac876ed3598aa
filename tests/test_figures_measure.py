"""Tests of core/views/figures_measure.py: the RANO-style measurement drawn on its axial slice (data, not pixels)."""

from __future__ import annotations

import numpy as np
import plotly.graph_objects as go
import pytest

from core.analysis.measure import measure_rano
from core.errors import BratsViewerError
from core.views import figures
from core.views.figures_measure import display_segment, lesion_rows, measurement_figure

SHAPE = (40, 30, 8)


def _case() -> tuple[np.ndarray, np.ndarray]:
    img = np.arange(np.prod(SHAPE), dtype=np.float32).reshape(SHAPE) % 97
    lab = np.zeros(SHAPE, np.uint8)
    lab[5:35, 3:27, 2:7] = 2
    lab[8:28, 10:22, 5] = 4  # lesion 1: 20 x 12 voxels on z = 5
    lab[30:33, 24:27, 2] = 4  # lesion 2: a 3 x 3 speck on z = 2
    return img, lab


def test_display_segment_by_hand() -> None:
    # an (X, Y) = (10, 8) slice: voxel x shows at column 9 - x (radiological) or x, voxel y at row 7 - y
    assert display_segment(((2.0, 3.0), (5.5, 3.0)), (10, 8)) == ((7.0, 4.0), (3.5, 4.0))
    assert display_segment(((2.0, 3.0), (5.5, 3.0)), (10, 8), radiological=False) == ((2.0, 4.0), (5.5, 4.0))


def test_measurement_figure_draws_both_diameters_on_the_lesion_slice() -> None:
    img, lab = _case()
    result = measure_rano(lab, (1.0, 1.0, 2.0))
    fig = measurement_figure(img, lab, result, window=(0.0, 96.0), spacing_mm=(1.0, 1.0, 2.0))
    assert isinstance(fig, go.Figure)
    assert [type(t).__name__ for t in fig.data] == ["Image", "Scatter", "Scatter"]  # only lesion 1 is on z = 5
    les = result.lesions[0]
    d1, d2 = fig.data[1], fig.data[2]
    assert "Lesion 1: longest" in d1.name and f"{les.d1_mm:.1f} mm" in d1.name and "perpendicular" in d2.name
    (c0, r0), (c1, r1) = display_segment(les.d1_endpoints, SHAPE[:2])
    assert list(d1.x) == [c0, c1] and list(d1.y) == [r0, r1]
    # the line's middle is on the enhancing tumour as shown (the overlay's ET colour blended in)
    rgb = figures.image_pixels(fig.data[0])
    base = figures.compose_plane(img, "axial", 5, (0.0, 96.0))
    mid_r, mid_c = int(round((r0 + r1) / 2)), int(round((c0 + c1) / 2))
    assert not np.array_equal(rgb[mid_r, mid_c], base[mid_r, mid_c])
    assert figures.extract_slice(lab, "axial", 5)[mid_r, mid_c] == 4
    assert "z = 5 (counted from 0)" in fig.layout.title.text and "lesion 1" in fig.layout.title.text
    assert fig.layout.yaxis.scaleratio == pytest.approx(1.0)
    assert {a.text for a in fig.layout.annotations} >= {"<b>R</b>", "<b>L</b>", "<b>A</b>", "<b>P</b>", "<b>1</b>"}


def test_measurement_figure_other_lesion_and_neurological() -> None:
    img, lab = _case()
    result = measure_rano(lab, (1.0, 1.0, 2.0))
    fig = measurement_figure(img, lab, result, lesion_index=2, radiological=False)
    assert "z = 2" in fig.layout.title.text and len(fig.data) == 3
    les = result.lesions[1]
    (c0, _), (c1, _) = display_segment(les.d1_endpoints, SHAPE[:2], radiological=False)
    assert list(fig.data[1].x) == [c0, c1] and min(c0, c1) >= 29.5  # not mirrored: x 30..32 stays on the right


def test_measurement_figure_refuses_bad_input() -> None:
    img, lab = _case()
    result = measure_rano(lab, (1.0, 1.0, 1.0))
    with pytest.raises(BratsViewerError, match="lesion number"):
        measurement_figure(img, lab, result, lesion_index=3)
    with pytest.raises(BratsViewerError, match="image grid"):
        measurement_figure(img, lab[:, :, :-1], result)
    empty = measure_rano(np.zeros(SHAPE, np.uint8), (1.0, 1.0, 1.0))
    with pytest.raises(BratsViewerError, match="enhancing lesion"):
        measurement_figure(img, lab, empty)


def test_lesion_rows() -> None:
    _, lab = _case()
    rows = lesion_rows(measure_rano(lab, (1.0, 1.0, 2.0)))
    assert [r["Lesion"] for r in rows] == [1, 2] and [r["Axial slice z"] for r in rows] == [5, 2]
    assert rows[0]["Measurable"] and rows[0]["Target"] and not rows[1]["Measurable"] and not rows[1]["Target"]
    assert rows[1]["Volume (mL)"] == pytest.approx(0.02)  # 9 voxels x 2 mm^3


def test_measurement_figure_opens_zoomed_on_the_lesion() -> None:
    lab = np.zeros((200, 180, 3), np.uint8)
    lab[90:102, 60:72, 1] = 4  # a 12 x 12 voxel lesion: the view is 60 mm around it, not the 200 x 180 slice
    img = np.ones(lab.shape, np.float32)
    result = measure_rano(lab, (1.0, 1.0, 1.0))
    fig = measurement_figure(img, lab, result, window=(0.0, 2.0))
    les = result.lesions[0]
    (ax, ay), (bx, by) = les.d1_endpoints
    cx, cy = (ax + bx) / 2, (ay + by) / 2
    # radiological: voxel x at column 199 - x; voxel y at row 179 - y (the y axis runs top-down)
    assert fig.layout.xaxis.range[0] == pytest.approx(199 - cx - 30.5, abs=1.5)
    assert fig.layout.xaxis.range[1] - fig.layout.xaxis.range[0] == pytest.approx(62.0, abs=1.5)
    assert fig.layout.yaxis.range[0] > fig.layout.yaxis.range[1]
    assert (fig.layout.yaxis.range[0] + fig.layout.yaxis.range[1]) / 2 == pytest.approx(179 - cy, abs=1.0)
    whole = measurement_figure(img, lab, result, window=(0.0, 2.0), zoom=False)
    assert list(whole.layout.xaxis.range) == [-0.5, 199.5] and list(whole.layout.yaxis.range) == [179.5, -0.5]
