"""Tests of core/analysis/measure.py: RANO-style diameters of synthetic lesions whose diameters are known.

Ellipses are drawn by voxel centres inside ``(u/a)^2 + (v/b)^2 <= 1`` (u, v in mm along the rotated axes), so the
measured outline (half a voxel outside the last inside centres) lies within one voxel of the true ellipse: the
tolerance below is one in-plane voxel.
"""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from core.analysis.measure import (
    MAX_OUTLINE_POINTS,
    MAX_TARGETS,
    MEASURABLE_MIN_MM,
    PERPENDICULAR_TOLERANCE_DEG,
    Lesion,
    RanoResult,
    measure_rano,
    outline_points,
)
from core.errors import CaseError


def _ellipse(shape_xy: tuple[int, int], centre_mm: tuple[float, float], a_mm: float, b_mm: float, angle_deg: float,
             spacing_xy: tuple[float, float] = (1.0, 1.0)) -> np.ndarray:
    """(X, Y) bool: voxel centres inside an ellipse of semi-axes a (along angle_deg from +X) and b, in mm."""
    x, y = np.meshgrid(np.arange(shape_xy[0]) * spacing_xy[0] - centre_mm[0],
                       np.arange(shape_xy[1]) * spacing_xy[1] - centre_mm[1], indexing="ij")
    t = math.radians(angle_deg)
    u = x * math.cos(t) + y * math.sin(t)
    v = -x * math.sin(t) + y * math.cos(t)
    return (u / a_mm) ** 2 + (v / b_mm) ** 2 <= 1.0


def _direction_deg(seg, spacing_xy: tuple[float, float]) -> float:
    """Direction of a segment in mm, in degrees within [0, 180)."""
    (x0, y0), (x1, y1) = seg
    return math.degrees(math.atan2((y1 - y0) * spacing_xy[1], (x1 - x0) * spacing_xy[0])) % 180.0


def _angle_between(a: float, b: float) -> float:
    d = abs(a - b) % 180.0
    return min(d, 180.0 - d)


def _length_mm(seg, spacing_xy: tuple[float, float]) -> float:
    (x0, y0), (x1, y1) = seg
    return math.hypot((x1 - x0) * spacing_xy[0], (y1 - y0) * spacing_xy[1])


# ------------------------------------------------------------------------------------------- diameters ---

@pytest.mark.parametrize("angle", [0.0, 17.0, 30.0, 45.0, 72.0, 90.0, 135.0])
def test_ellipse_at_angles_isotropic(angle: float) -> None:
    lab = np.zeros((80, 80, 5), np.uint8)
    lab[:, :, 2][_ellipse((80, 80), (40.0, 40.0), 20.0, 10.0, angle)] = 4  # diameters 40 and 20 mm
    result = measure_rano(lab, (1.0, 1.0, 1.0))
    assert len(result.lesions) == 1
    les = result.lesions[0]
    assert les.slice_z == 2 and les.index == 1
    assert les.d1_mm == pytest.approx(40.0, abs=1.0) and les.d2_mm == pytest.approx(20.0, abs=1.0)
    assert les.product_mm2 == pytest.approx(les.d1_mm * les.d2_mm)
    # the long diameter lies along the ellipse's axis (to within the few degrees by which the blunt ends of a
    # digitised ellipse leave it undefined: at 6 degrees off the axis the true diameter is only 0.6 mm shorter);
    # the short one is perpendicular to the long one within the tolerance
    assert _angle_between(_direction_deg(les.d1_endpoints, (1, 1)), angle) <= 6.0
    d1_dir = _direction_deg(les.d1_endpoints, (1, 1))
    assert _angle_between(_direction_deg(les.d2_endpoints, (1, 1)), d1_dir + 90.0) <= PERPENDICULAR_TOLERANCE_DEG
    # the endpoints are the diameters (voxel coordinates, spacing 1)
    assert _length_mm(les.d1_endpoints, (1, 1)) == pytest.approx(les.d1_mm)
    assert _length_mm(les.d2_endpoints, (1, 1)) == pytest.approx(les.d2_mm)
    assert les.measurable and result.targets == (les,)
    assert result.sum_products_mm2 == pytest.approx(les.product_mm2)


@pytest.mark.parametrize("angle", [0.0, 30.0, 60.0, 90.0])
def test_ellipse_with_anisotropic_voxels(angle: float) -> None:
    spacing = (0.5, 1.5, 4.0)  # an ellipse of 40 x 20 mm drawn on 0.5 x 1.5 mm pixels
    lab = np.zeros((170, 60, 3), np.uint8)
    lab[:, :, 1][_ellipse((170, 60), (42.0, 45.0), 20.0, 10.0, angle, spacing[:2])] = 4
    les = measure_rano(lab, spacing).lesions[0]
    assert les.d1_mm == pytest.approx(40.0, abs=1.5) and les.d2_mm == pytest.approx(20.0, abs=1.5)
    assert _angle_between(_direction_deg(les.d1_endpoints, spacing[:2]), angle) <= 8.0
    d1_dir = _direction_deg(les.d1_endpoints, spacing[:2])
    assert _angle_between(_direction_deg(les.d2_endpoints, spacing[:2]), d1_dir + 90.0) <= PERPENDICULAR_TOLERANCE_DEG
    assert _length_mm(les.d1_endpoints, spacing[:2]) == pytest.approx(les.d1_mm)
    # the volume counts every voxel of the lesion: voxels x 0.5 x 1.5 x 4 mm^3
    assert les.volume_ml == pytest.approx(les.n_voxels * 3.0 / 1000.0)
    assert les.area_mm2 == pytest.approx(les.n_voxels * 0.75)


def test_thin_bar_by_hand_with_anisotropic_pixels() -> None:
    # 30 voxels along X, one voxel across Y, pixels 0.5 x 2 mm: edge to edge 15 mm long, 2 mm wide
    lab = np.zeros((40, 5, 1), np.uint8)
    lab[5:35, 2, 0] = 4
    les = measure_rano(lab, (0.5, 2.0, 1.0)).lesions[0]
    assert les.d1_mm == pytest.approx(15.0) and les.d2_mm == pytest.approx(2.0)
    assert les.d1_endpoints == ((4.5, 2.0), (34.5, 2.0))
    assert sorted(les.d2_endpoints) == [(les.d2_endpoints[0][0], 1.5), (les.d2_endpoints[0][0], 2.5)]
    assert les.product_mm2 == pytest.approx(30.0) and not les.measurable
    # the same bar along Y with the spacings swapped measures the same
    lab_y = np.zeros((5, 40, 1), np.uint8)
    lab_y[2, 5:35, 0] = 4
    les_y = measure_rano(lab_y, (2.0, 0.5, 1.0)).lesions[0]
    assert les_y.d1_mm == pytest.approx(15.0) and les_y.d2_mm == pytest.approx(2.0)


def test_square_and_single_voxel() -> None:
    lab = np.zeros((30, 30, 1), np.uint8)
    lab[5:15, 5:15, 0] = 4  # 10 x 10 voxels of 1.2 mm: the longest diameter is the diagonal
    lab[25, 25, 0] = 4
    result = measure_rano(lab, (1.2, 1.2, 1.0))
    square, dot = result.lesions
    assert square.d1_mm == pytest.approx(12.0 * math.sqrt(2.0), abs=1.2 * math.sqrt(2.0))
    assert _angle_between(_direction_deg(square.d1_endpoints, (1, 1)), 45.0) <= 6.0
    assert dot.d1_mm == pytest.approx(1.2) and dot.d2_mm == pytest.approx(1.2) and dot.n_voxels == 1
    assert not dot.measurable


def test_ring_enhancing_lesion_is_measured_across_its_outer_margin() -> None:
    lab = np.zeros((60, 60, 3), np.uint8)
    outer = _ellipse((60, 60), (30.0, 30.0), 15.0, 15.0, 0.0)
    inner = _ellipse((60, 60), (30.0, 30.0), 11.0, 11.0, 0.0)
    lab[:, :, 1][outer] = 4
    lab[:, :, 1][inner] = 1  # necrosis inside the enhancing rim
    les = measure_rano(lab, (1.0, 1.0, 1.0)).lesions[0]
    assert les.d1_mm == pytest.approx(30.0, abs=1.0) and les.d2_mm == pytest.approx(30.0, abs=1.0)
    assert les.n_voxels == int((outer & ~inner).sum())  # the volume is the enhancing rim only


def test_perpendicular_diameter_stays_inside_a_crescent() -> None:
    # the left half of an annulus (radii 20 and 16 mm): 41 mm between the horns' tips, 20 mm wide across the
    # gap, but a chord perpendicular to the long diameter that stays inside is at most 12 mm (near a horn)
    lab = np.zeros((60, 60, 1), np.uint8)
    ring = _ellipse((60, 60), (30.0, 30.0), 20.0, 20.0, 0.0) & ~_ellipse((60, 60), (30.0, 30.0), 16.0, 16.0, 0.0)
    ring[31:, :] = False
    lab[:, :, 0][ring] = 4
    les = measure_rano(lab, (1.0, 1.0, 1.0)).lesions[0]
    assert les.d1_mm == pytest.approx(41.0, abs=1.0)
    assert les.d2_mm == pytest.approx(12.0, abs=1.5)
    (x0, y0), (x1, y1) = les.d2_endpoints
    t = np.linspace(0.05, 0.95, 50)
    xs, ys = np.rint(x0 + (x1 - x0) * t).astype(int), np.rint(y0 + (y1 - y0) * t).astype(int)
    assert ring[xs, ys].all()


def test_outline_points_of_one_voxel() -> None:
    pts = outline_points(np.array([[False, False], [False, True]]))
    assert sorted(map(tuple, pts.tolist())) == [(0.5, 1.0), (1.0, 0.5), (1.0, 1.5), (1.5, 1.0)]


# --------------------------------------------------------------------------------------- lesions, targets ---

def test_lesion_below_10_mm_is_not_measurable() -> None:
    lab = np.zeros((40, 40, 3), np.uint8)
    lab[:, :, 1][_ellipse((40, 40), (20.0, 20.0), 4.0, 4.0, 0.0)] = 4  # ~9 mm across
    result = measure_rano(lab, (1.0, 1.0, 1.0))
    les = result.lesions[0]
    assert les.d1_mm < MEASURABLE_MIN_MM and not les.measurable
    assert result.targets == () and result.sum_products_mm2 == 0.0
    # an elongated lesion with one diameter >= 10 and the other < 10 is not measurable either
    lab2 = np.zeros((40, 40, 3), np.uint8)
    lab2[5:30, 10:18, 1] = 4  # 25 x 8 mm: the diagonal is 26.2 mm, the chord perpendicular to it about 8.5 mm
    les2 = measure_rano(lab2, (1.0, 1.0, 1.0)).lesions[0]
    assert les2.d1_mm == pytest.approx(math.hypot(25, 8), abs=0.5) and 8.0 <= les2.d2_mm < 9.0
    assert not les2.measurable


def test_three_lesions_two_targets_and_largest_slice() -> None:
    lab = np.zeros((100, 60, 12), np.uint8)
    # lesion A: 30 x 20 voxels on slices 2..4, largest on slice 3
    lab[5:35, 5:25, 3] = 4
    lab[10:30, 10:20, 2] = 4
    lab[10:30, 10:20, 4] = 4
    # lesion B: 20 x 14 on slice 8 only
    lab[50:70, 5:19, 8] = 4
    # lesion C: 12 x 11 on slice 6 (measurable, smallest product)
    lab[80:92, 40:51, 6] = 4
    # a 2 x 2 speck, not measurable, touching nothing
    lab[50:52, 50:52, 1] = 4
    result = measure_rano(lab, (1.0, 1.0, 1.0))
    assert len(result.lesions) == 4 and [les.index for les in result.lesions] == [1, 2, 3, 4]
    a, b, c, speck = result.lesions
    assert (a.slice_z, b.slice_z, c.slice_z, speck.slice_z) == (3, 8, 6, 1)
    assert a.product_mm2 > b.product_mm2 > c.product_mm2 > speck.product_mm2
    assert a.measurable and b.measurable and c.measurable and not speck.measurable
    assert len(result.targets) == MAX_TARGETS == 2 and result.targets == (a, b)
    assert result.sum_products_mm2 == pytest.approx(a.product_mm2 + b.product_mm2)
    assert a.n_voxels == 600 + 200 + 200 and a.volume_ml == pytest.approx(1.0)
    # rectangles: the perpendicular to the diagonal is shorter than the diagonal, longer than the short side
    assert a.d1_mm == pytest.approx(math.hypot(30, 20), abs=1.0)


def test_components_are_26_connected_and_other_labels_ignored() -> None:
    lab = np.zeros((30, 30, 4), np.uint8)
    lab[2:14, 2:14, 1] = 4
    lab[14:26, 14:26, 2] = 4  # touches the first block only through one corner voxel: one lesion
    lab[0:30, 0:30, 3] = 2  # edema and necrosis are not enhancing lesions
    lab[20:28, 0:8, 0] = 1
    result = measure_rano(lab, (1.0, 1.0, 1.0))
    assert len(result.lesions) == 1 and result.lesions[0].n_voxels == 288


def test_empty_enhancing_tumour() -> None:
    lab = np.zeros((10, 10, 4), np.uint8)
    lab[2:5, 2:5, 1] = 2
    lab[3, 3, 1] = 1
    result = measure_rano(lab, (1.0, 1.0, 1.0))
    assert result.lesions == () and result.targets == () and result.sum_products_mm2 == 0.0
    d = result.to_dict()
    assert d["n_lesions"] == 0 and d["lesions"] == [] and d["target_indices"] == [] and d["sum_products_mm2"] == 0.0
    assert measure_rano(np.zeros((0, 0, 0), np.uint8), (1.0, 1.0, 1.0)).lesions == ()


def test_to_dict_is_json_ready_and_says_how_slices_count() -> None:
    lab = np.zeros((40, 40, 6), np.uint8)
    lab[5:25, 5:20, 4] = 4
    result = measure_rano(lab, (1.0, 1.0, 2.0))
    d = json.loads(json.dumps(result.to_dict()))
    assert d["slice_index_base"] == 0 and "from 0" in d["slice_numbering"]
    assert d["spacing_mm"] == [1.0, 1.0, 2.0]
    les = d["lesions"][0]
    assert les["slice_z"] == 4 and les["measurable"] is True and d["target_indices"] == [1]
    # a 20 x 15 mm rectangle: the diagonal (25 mm), and perpendicular to it a chord of 15 / cos(36.9 deg) = 18.75
    assert les["d1_mm"] == pytest.approx(25.0, abs=1.0) and les["d2_mm"] == pytest.approx(18.75, abs=1.0)
    assert d["sum_products_mm2"] == pytest.approx(les["product_mm2"], abs=0.01)
    assert isinstance(result.lesions[0], Lesion) and isinstance(result, RanoResult)
    with pytest.raises(AttributeError):
        result.lesions[0].d1_mm = 0.0  # type: ignore[misc]


# ------------------------------------------------------------------------------------------- validation ---

@pytest.mark.parametrize(("labels", "spacing", "match"), [
    (np.zeros((4, 4), np.uint8), (1.0, 1.0, 1.0), "shape"),
    (np.zeros((4, 4, 4, 1), np.uint8), (1.0, 1.0, 1.0), "shape"),
    (np.zeros((4, 4, 4), np.float32), (1.0, 1.0, 1.0), "integer"),
    (np.full((4, 4, 4), 3, np.uint8), (1.0, 1.0, 1.0), "labels within"),
    (np.zeros((4, 4, 4), np.uint8), (1.0, 0.0, 1.0), "voxel sizes"),
    (np.zeros((4, 4, 4), np.uint8), (1.0, 1.0), "voxel sizes"),
    (np.zeros((4, 4, 4), np.uint8), (1.0, float("nan"), 1.0), "voxel sizes"),
    (np.zeros((4, 4, 4), np.uint8), "abc", "voxel sizes"),
])
def test_bad_input_is_refused(labels: np.ndarray, spacing, match: str) -> None:
    with pytest.raises(CaseError, match=match):
        measure_rano(labels, spacing)


def test_ragged_lesion_with_thousands_of_outline_points() -> None:
    # a comb: 55 one-voxel teeth joined by a spine, 12 000 outline points (thinned to MAX_OUTLINE_POINTS for the
    # perpendicular search); the perpendicular diameter still lies inside the lesion
    lab = np.zeros((130, 130, 3), np.uint8)
    lab[10:120:2, 10:120, 1] = 4
    lab[10:120, 10, 1] = 4
    comb = lab[:, :, 1] == 4
    assert len(outline_points(comb)) > 10 * MAX_OUTLINE_POINTS // 2
    les = measure_rano(lab, (1.0, 1.0, 1.0)).lesions[0]
    assert les.d1_mm == pytest.approx(math.hypot(110, 110), abs=2.0)
    (x0, y0), (x1, y1) = les.d2_endpoints
    t = np.linspace(0.05, 0.95, 50)
    # (a chord may graze a gap voxel's corner: it runs along the outline, half-way between inside and outside)
    assert comb[np.rint(x0 + (x1 - x0) * t).astype(int), np.rint(y0 + (y1 - y0) * t).astype(int)].mean() >= 0.8
    assert 0.0 < les.d2_mm < 10.0 and not les.measurable
