"""Tests of core/analysis/edits.py on tiny label volumes whose answers are worked out by hand."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest

from core.analysis.edits import (
    EditError,
    EditStore,
    apply_stroke,
    axial_display,
    axial_undisplay,
    hierarchy_report,
    mask_from_canvas,
    stroke_target,
)
from core.errors import BratsViewerError

SHA = "a" * 64


def _labels() -> np.ndarray:
    """(X, Y, Z) = (4, 3, 2): slice z=1 holds ED at x=1..2, y=1 and one ET voxel at (2, 1)."""
    lab = np.zeros((4, 3, 2), np.uint8)
    lab[1:3, 1, 1] = 2
    lab[2, 1, 1] = 4
    return lab


def _mask(points: list[tuple[int, int]], shape: tuple[int, int] = (4, 3)) -> np.ndarray:
    m = np.zeros(shape, bool)
    for x, y in points:
        m[x, y] = True
    return m


# --------------------------------------------------------------------------------------- display transform ---

def test_axial_display_orientation_both_conventions() -> None:
    sl = np.zeros((3, 2), int)  # X = 3 (R grows with x), Y = 2 (A grows with y)
    sl[2, 1] = 7  # most right, most anterior voxel
    rad = axial_display(sl, radiological=True)
    neu = axial_display(sl, radiological=False)
    assert rad.shape == (2, 3) and neu.shape == (2, 3)
    assert rad[0, 0] == 7  # anterior at the top, patient's right on the image's left
    assert neu[0, 2] == 7  # neurological: patient's right on the image's right


@pytest.mark.parametrize("radiological", [True, False])
def test_axial_undisplay_inverts_display(radiological: bool) -> None:
    sl = np.arange(12).reshape(4, 3)
    np.testing.assert_array_equal(axial_undisplay(axial_display(sl, radiological), radiological), sl)
    rgb = np.arange(36).reshape(4, 3, 3)  # trailing channel axis is kept
    assert axial_display(rgb, radiological).shape == (3, 4, 3)
    np.testing.assert_array_equal(axial_undisplay(axial_display(rgb, radiological), radiological), rgb)


def _canvas(rows: slice, cols: slice, shape: tuple[int, int] = (6, 8), alpha: int = 200) -> np.ndarray:
    img = np.zeros((*shape, 4), np.uint8)
    img[rows, cols] = (230, 40, 40, alpha)
    return img


def test_mask_from_canvas_upscaled_hits_expected_voxels() -> None:
    # slice (X, Y) = (4, 3) displayed as (Y, X) = (3, 4) rows x cols, drawn on a 6 x 8 canvas (2x per voxel)
    canvas = _canvas(slice(0, 2), slice(0, 2))  # display cell row 0, col 0
    rad = mask_from_canvas(canvas, (4, 3), radiological=True)
    assert rad.shape == (4, 3) and rad.dtype == bool
    np.testing.assert_array_equal(np.argwhere(rad), [[3, 2]])  # top-left = most right (x=3), most anterior (y=2)
    neu = mask_from_canvas(canvas, (4, 3), radiological=False)
    np.testing.assert_array_equal(np.argwhere(neu), [[0, 2]])  # top-left = most left (x=0)


def test_mask_from_canvas_stroke_across_cells_and_coverage() -> None:
    canvas = _canvas(slice(2, 4), slice(2, 6))  # display row 1, cols 1..2
    rad = mask_from_canvas(canvas, (4, 3), radiological=True)
    np.testing.assert_array_equal(np.argwhere(rad), [[1, 1], [2, 1]])  # cols 1,2 -> x = 3-1, 3-2; row 1 -> y=1
    one_pixel = _canvas(slice(0, 1), slice(0, 1))  # a quarter of a voxel's footprint
    assert not mask_from_canvas(one_pixel, (4, 3)).any()
    assert mask_from_canvas(one_pixel, (4, 3), min_coverage=0.25).sum() == 1
    transparent = _canvas(slice(0, 6), slice(0, 8), alpha=0)
    assert not mask_from_canvas(transparent, (4, 3)).any()


def test_mask_from_canvas_smaller_canvas_maps_nearest() -> None:
    # slice (X, Y) = (8, 6) displayed (6, 8) on a 3 x 4 canvas: each canvas pixel covers 2 x 2 voxels
    canvas = _canvas(slice(0, 1), slice(3, 4), shape=(3, 4))
    rad = mask_from_canvas(canvas, (8, 6), radiological=True)
    # display rows 0-1, cols 6-7 -> y = 5, 4 and x = 7-6, 7-7 = 1, 0
    assert set(map(tuple, np.argwhere(rad))) == {(0, 4), (0, 5), (1, 4), (1, 5)}


def test_mask_from_canvas_rejects_bad_input() -> None:
    with pytest.raises(EditError, match="expected canvas image data"):
        mask_from_canvas(np.zeros((6, 8, 3), np.uint8), (4, 3))
    with pytest.raises(EditError, match="slice shape"):
        mask_from_canvas(np.zeros((6, 8, 4), np.uint8), (4, 0))
    assert issubclass(EditError, BratsViewerError) and issubclass(EditError, ValueError)


# ------------------------------------------------------------------------------------------------ strokes ---

def test_paint_ed_sets_label_and_keeps_input() -> None:
    lab = _labels()
    before = lab.copy()
    out = apply_stroke(lab, 1, _mask([(0, 0), (2, 1)]), 2)
    np.testing.assert_array_equal(lab, before)  # input untouched
    assert out.dtype == np.uint8 and out is not lab
    assert out[0, 0, 1] == 2 and out[2, 1, 1] == 2  # ET voxel overwritten by ED paint
    assert (out[:, :, 0] == 0).all()  # other slice untouched
    assert np.count_nonzero(out != lab) == 2


def test_core_paint_stays_inside_tumour_by_default() -> None:
    lab = _labels()
    m = _mask([(0, 0), (1, 1)])  # (0,0) is background, (1,1) is ED
    out = apply_stroke(lab, 1, m, 1)
    assert out[0, 0, 1] == 0 and out[1, 1, 1] == 1
    grown = apply_stroke(lab, 1, m, 1, inside_tumour_only=False)
    assert grown[0, 0, 1] == 1 and grown[1, 1, 1] == 1
    et = apply_stroke(lab, 1, m, 4)
    assert et[0, 0, 1] == 0 and et[1, 1, 1] == 4
    ed_restricted = apply_stroke(lab, 1, m, 2, inside_tumour_only=True)
    assert ed_restricted[0, 0, 1] == 0


def test_erase_sets_background() -> None:
    lab = _labels()
    out = apply_stroke(lab, 1, _mask([(1, 1), (2, 1), (3, 2)]), 0)
    assert not out.any()
    assert stroke_target(lab, 1, _mask([(1, 1), (3, 2)]), 0).sum() == 1  # background voxel does not change


@pytest.mark.parametrize("bad", [
    dict(z=2), dict(z=-1), dict(label=3), dict(label=True), dict(mask=np.zeros((3, 4), bool)),
    dict(mask=np.zeros((4, 3), np.uint8)),
])
def test_stroke_rejects_bad_input(bad: dict) -> None:
    kwargs = dict(z=1, mask=_mask([(1, 1)]), label=2) | bad
    with pytest.raises(EditError, match="expected"):
        apply_stroke(_labels(), **kwargs)


def test_stroke_rejects_bad_volume() -> None:
    with pytest.raises(EditError, match="labels within"):
        apply_stroke(np.full((4, 3, 2), 3, np.uint8), 0, _mask([]), 2)
    with pytest.raises(EditError, match=r"\(X, Y, Z\)"):
        apply_stroke(np.zeros((4, 3), np.uint8), 0, _mask([]), 2)


def test_hierarchy_report_counts() -> None:
    lab = np.zeros((7, 7, 7), np.uint8)
    lab[1, 1, 1] = 1  # isolated core voxel: a component of 1 voxel, touching background, no edema
    lab[3:6, 3:6, 3:6] = 2
    lab[4, 4, 4] = 4  # enclosed by edema
    rep = hierarchy_report(lab, small_component_voxels=5)
    assert rep == {"ncr_voxels": 1, "ed_voxels": 26, "et_voxels": 1, "isolated_core_voxels": 1,
                   "core_voxels_without_edema_nearby": 1, "tumour_components": 2, "small_tumour_components": 1}
    assert hierarchy_report(np.zeros((3, 3, 3), np.uint8))["tumour_components"] == 0


# --------------------------------------------------------------------------------------------- edit store ---

def test_store_paint_undo_reset_and_history(tmp_path: Path) -> None:
    store = EditStore(tmp_path)
    model = _labels()
    assert store.load("k1") is None and store.history("k1") == [] and not store.is_corrected("k1")
    np.testing.assert_array_equal(store.start("k1", model, SHA), model)
    a = store.apply("k1", 1, _mask([(0, 0), (1, 1)]), 2)  # one voxel changes ((1,1) is already ED)
    b = store.apply("k1", 1, _mask([(1, 1), (2, 1)]), 1)  # NCR inside tumour: 2 voxels
    c = store.apply("k1", 0, _mask([(3, 2)]), 0)  # erase on background: no change, no history line
    np.testing.assert_array_equal(c, b)
    assert store.is_corrected("k1") and store.undo_depth("k1") == 2
    np.testing.assert_array_equal(store.load("k1"), b)
    np.testing.assert_array_equal(store.undo("k1"), a)
    np.testing.assert_array_equal(store.undo("k1"), model)
    np.testing.assert_array_equal(store.undo("k1"), model)  # nothing left to undo
    assert not store.is_corrected("k1")
    store.apply("k1", 1, _mask([(0, 2)]), 2)
    np.testing.assert_array_equal(store.reset("k1"), model)
    assert not store.is_corrected("k1")
    restored = store.undo("k1")  # a reset can be undone
    assert restored[0, 2, 1] == 2 and store.is_corrected("k1")
    hist = store.history("k1")
    assert [h["action"] for h in hist] == ["start", "paint", "paint", "undo", "undo", "paint", "reset", "undo"]
    assert [h["voxels_changed"] for h in hist] == [0, 1, 2, 2, 1, 1, 1, 1]
    assert hist[1]["z"] == 1 and hist[1]["label"] == 2 and all(h["model_sha256"] == SHA for h in hist)
    assert hist[1]["time_utc"].endswith("Z")
    lines = (tmp_path / "k1" / "history.jsonl").read_text().splitlines()
    assert len(lines) == 8 and all(isinstance(json.loads(line), dict) for line in lines)


def test_store_erase_history_and_state_files(tmp_path: Path) -> None:
    store = EditStore(tmp_path)
    store.start("k", _labels(), SHA)
    out = store.apply("k", 1, _mask([(1, 1), (2, 1)]), 0)
    assert not out.any()
    assert store.history("k")[-1]["action"] == "erase"
    folder = tmp_path / "k"
    assert (folder / "labels.npy").is_file() and (folder / "model_labels.npy").is_file()
    np.testing.assert_array_equal(np.load(folder / "model_labels.npy", allow_pickle=False), _labels())
    undo = sorted((folder / "undo").glob("*.npz"))
    assert len(undo) == 1
    with np.load(undo[0], allow_pickle=False) as data:
        assert data["old"].tolist() == [2, 4] and data["idx"].dtype == np.int64


def test_store_persists_across_instances(tmp_path: Path) -> None:
    EditStore(tmp_path).start("case", _labels(), SHA)
    EditStore(tmp_path).apply("case", 1, _mask([(0, 0)]), 2)
    fresh = EditStore(tmp_path)
    assert fresh.load("case")[0, 0, 1] == 2 and fresh.is_corrected("case")
    assert len(fresh.history("case")) == 2
    # the same model again resumes the edits; another model (or restart) starts afresh
    assert fresh.start("case", _labels(), SHA)[0, 0, 1] == 2
    assert fresh.start("case", _labels(), "b" * 64)[0, 0, 1] == 0
    assert fresh.undo_depth("case") == 0 and fresh.meta("case")["model_sha256"] == "b" * 64


def test_store_default_root_is_work_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BRATS_VIEWER_WORK_DIR", str(tmp_path))
    store = EditStore()
    store.start("abc", _labels(), SHA)
    assert (tmp_path / "corrections" / "abc" / "labels.npy").is_file()


def test_store_rejects_bad_input(tmp_path: Path) -> None:
    store = EditStore(tmp_path)
    for key in ("../evil", "a/b", "", ".."):
        with pytest.raises(EditError, match="case key"):
            store.load(key)
    with pytest.raises(EditError, match="start one first"):
        store.apply("none", 0, _mask([]), 2)
    with pytest.raises(EditError, match="start one first"):
        store.undo("none")
    store.start("k", _labels(), SHA)
    with pytest.raises(EditError, match="label"):
        store.apply("k", 1, _mask([(0, 0)]), 5)
    with pytest.raises(EditError, match="slice shape"):
        store.apply("k", 1, np.ones((3, 4), bool), 2)
    np.testing.assert_array_equal(store.load("k"), _labels())
    assert not list(tmp_path.parent.glob("evil*"))


def _temp_files(root: Path) -> list[Path]:
    return [p for p in root.rglob("*") if p.name.endswith(".tmp")]


def test_crash_while_saving_keeps_previous_labels(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    store = EditStore(tmp_path)
    store.start("k", _labels(), SHA)
    first = store.apply("k", 1, _mask([(0, 0)]), 2)
    real_replace = os.replace

    def crash(src: str, dst: str) -> None:
        raise OSError("simulated crash")

    monkeypatch.setattr(os, "replace", crash)
    with pytest.raises(OSError, match="simulated"):
        store.apply("k", 1, _mask([(3, 2)]), 2)
    monkeypatch.setattr(os, "replace", real_replace)
    np.testing.assert_array_equal(EditStore(tmp_path).load("k"), first)
    assert _temp_files(tmp_path) == []
    assert len(store.history("k")) == 2  # no line for the failed stroke

    # crash after the undo record was written, while the labels are replaced
    def crash_labels(src: str, dst: str) -> None:
        if Path(dst).name == "labels.npy":
            raise OSError("simulated crash on labels")
        real_replace(src, dst)

    monkeypatch.setattr(os, "replace", crash_labels)
    with pytest.raises(OSError, match="simulated"):
        store.apply("k", 1, _mask([(3, 2)]), 2)
    monkeypatch.setattr(os, "replace", real_replace)
    np.testing.assert_array_equal(store.load("k"), first)
    assert _temp_files(tmp_path) == []
    np.testing.assert_array_equal(store.undo("k"), first)  # the orphan undo record restores current values
    np.testing.assert_array_equal(store.undo("k"), _labels())


@pytest.mark.parametrize("radiological", [True, False])
def test_axial_display_agrees_with_viewer_figures(radiological: bool) -> None:
    """The canvas is drawn over the viewer's axial image: both must use the same transform."""
    figures = pytest.importorskip("core.views.figures")
    vol = np.arange(4 * 3 * 2).reshape(4, 3, 2)
    np.testing.assert_array_equal(figures.extract_slice(vol, "axial", 1, radiological),
                                  axial_display(vol[:, :, 1], radiological))
