"""Pure helpers of the segmentation and report pages (core/app/segstate.py) and their figure builders
(core/views/figures_seg.py), on tiny hand-checkable label volumes."""

from __future__ import annotations

import io
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pypdf
import pytest
from conftest import make_case_dir

from core.analysis.edits import EditStore, axial_display, hierarchy_report
from core.analysis.metrics import score_case
from core.app import segstate
from core.config import DISCLAIMER
from core.data.cases import load_case_folder
from core.data.io import load_volume_bytes
from core.errors import BratsViewerError
from core.views import figures, figures_seg

SHAPE = (6, 5, 4)
KEY = "abc123"


def _labels() -> np.ndarray:
    lab = np.zeros(SHAPE, dtype=np.uint8)
    lab[1:4, 1:3, 1] = 2  # 6 voxels of edema on z=1
    lab[2, 2, 2] = 4  # one ET voxel on z=2
    lab[1, 1, 2] = 1  # one NCR voxel on z=2
    return lab


def _pred(labels: np.ndarray, name: str = "m", sha: str = "s" * 64, tta: bool = False) -> SimpleNamespace:
    return SimpleNamespace(labels=labels, model_name=name, model_sha256=sha, tta=tta)


# ------------------------------------------------------------------------------------------------ digests ---

def test_labels_digest_follows_content_and_shape() -> None:
    a = _labels()
    assert segstate.labels_digest(a) == segstate.labels_digest(a.copy())
    b = a.copy()
    b[0, 0, 0] = 1
    assert segstate.labels_digest(b) != segstate.labels_digest(a)
    assert segstate.labels_digest(a.reshape(5, 6, 4)) != segstate.labels_digest(a)
    assert segstate.labels_digest(a[::-1]) == segstate.labels_digest(np.ascontiguousarray(a[::-1]))


def test_labels_of_accepts_arrays_and_predictions_on_the_grid_only() -> None:
    a = _labels()
    assert segstate.labels_of(a, SHAPE) is a
    assert segstate.labels_of(_pred(a), SHAPE) is a
    assert segstate.labels_of(a, (6, 5, 5)) is None
    assert segstate.labels_of(None, SHAPE) is None
    assert segstate.labels_of("labels", SHAPE) is None


# ------------------------------------------------------------------------------------ choosing the labels ---

def test_choose_corrected_before_prediction() -> None:
    pred, corr = _labels(), _labels()
    corr[0, 0, 0] = 2
    src = segstate.choose_report_source(KEY, SHAPE, corrected=corr, corrected_key=KEY, prediction=_pred(pred, "unet"),
                                        prediction_key=KEY, ground_truth=pred)
    assert src.kind == segstate.SOURCE_CORRECTED and src.corrected and src.labels is corr
    assert src.model_name == "unet" and src.model_sha256 == "s" * 64  # taken from the prediction
    assert "corrected by hand" in src.description


def test_choose_corrected_keeps_its_own_model() -> None:
    corr = _labels()
    src = segstate.choose_report_source(KEY, SHAPE, corrected=corr, corrected_key=KEY, corrected_model_name="old",
                                        corrected_model_sha256="a" * 64)
    assert src.kind == "corrected" and src.model_name == "old" and src.model_sha256 == "a" * 64


def test_choose_ignores_other_cases_and_grids() -> None:
    pred, corr = _labels(), _labels()
    src = segstate.choose_report_source(KEY, SHAPE, corrected=corr, corrected_key="other",
                                        prediction=_pred(pred, tta=True), prediction_key=KEY)
    assert src.kind == segstate.SOURCE_PREDICTION and not src.corrected and src.labels is pred
    assert "TTA on" in src.description
    assert segstate.choose_report_source(KEY, SHAPE, prediction=_pred(pred), prediction_key="other") is None
    assert segstate.choose_report_source(KEY, (6, 5, 5), prediction=_pred(pred), prediction_key=KEY) is None
    assert segstate.choose_report_source(KEY, SHAPE, corrected=corr, corrected_key=None) is None


def test_describe_segmentation_names_expert_model_tta_runtime_and_hand_correction() -> None:
    """Bug (issue 19.6): pages showed volumes without saying whether they came from the expert label or the model."""
    assert segstate.describe_segmentation(segstate.SOURCE_GROUND_TRUTH).startswith("Reference label: the case's own segmentation file")
    assert (segstate.describe_segmentation(segstate.SOURCE_PREDICTION, model_name="m", tta=False, runtime="onnxruntime")
            == "Model prediction (model `m`, TTA off, ONNX Runtime)")
    assert (segstate.describe_segmentation(segstate.SOURCE_CORRECTED, model_name="m", tta=True)
            == "Model prediction corrected by hand (model `m`, TTA on)")
    with pytest.raises(ValueError, match="expected a segmentation kind"):
        segstate.describe_segmentation("mystery")


def test_choose_ground_truth_only_when_asked() -> None:
    gt = _labels()
    assert segstate.choose_report_source(KEY, SHAPE, ground_truth=gt) is None
    src = segstate.choose_report_source(KEY, SHAPE, ground_truth=gt, use_ground_truth=True)
    assert src.kind == segstate.SOURCE_GROUND_TRUTH and src.labels is gt and src.model_sha256 == ""
    # a prediction of the case still wins over the ground truth
    pred = _labels()
    src = segstate.choose_report_source(KEY, SHAPE, prediction=_pred(pred), prediction_key=KEY, ground_truth=gt,
                                        use_ground_truth=True)
    assert src.kind == segstate.SOURCE_PREDICTION
    assert segstate.choose_report_source(KEY, SHAPE, ground_truth=None, use_ground_truth=True) is None


# ----------------------------------------------------------------------------------- saved corrections ---

def test_saved_corrections_follow_the_edit_store(tmp_path: Path) -> None:
    store = EditStore(tmp_path)
    model = _labels()
    assert segstate.saved_corrections(store, KEY, SHAPE) is None
    store.start(KEY, model, "f" * 64)
    saved = segstate.saved_corrections(store, KEY, SHAPE)
    assert saved is not None and not saved.corrected and saved.strokes == 0 and saved.undo_depth == 0
    assert saved.model_sha256 == "f" * 64
    mask = np.zeros(SHAPE[:2], dtype=bool)
    mask[0, 0] = True
    store.apply(KEY, 0, mask, 2)
    saved = segstate.saved_corrections(store, KEY, SHAPE)
    assert saved.corrected and saved.strokes == 1 and saved.undo_depth == 1
    assert saved.labels[0, 0, 0] == 2 and saved.model_labels[0, 0, 0] == 0
    assert segstate.saved_corrections(store, KEY, (6, 5, 5)) is None  # another grid
    store.undo(KEY)
    assert not segstate.saved_corrections(store, KEY, SHAPE).corrected
    assert segstate.saved_corrections(store, "../escape", SHAPE) is None


# --------------------------------------------------------------------------------------------- checks ---

def test_hierarchy_summary_matches_the_whole_grid() -> None:
    rng = np.random.default_rng(7)
    lab = np.zeros((30, 28, 20), dtype=np.uint8)
    lab[8:20, 6:18, 5:14] = rng.choice([0, 1, 2, 4], size=(12, 12, 9), p=[0.2, 0.2, 0.4, 0.2])
    lab[25, 3, 2] = 4  # an isolated core voxel far away
    lab[0, 0, 0] = 2  # tumour touching the grid's corner
    assert segstate.hierarchy_summary(lab) == hierarchy_report(lab)
    empty = segstate.hierarchy_summary(np.zeros(SHAPE, dtype=np.uint8))
    assert empty["tumour_components"] == 0 and empty["ncr_voxels"] == 0


def test_hierarchy_caption_flags_what_needs_a_look() -> None:
    lab = _labels()
    lab[5, 4, 3] = 4  # isolated ET voxel
    text = segstate.hierarchy_caption(segstate.hierarchy_summary(lab))
    assert text.startswith("Label check (worth a look)") and "1 isolated core voxel" in text
    assert "2 connected tumour piece(s)" in text
    clean = np.zeros((12, 12, 12), dtype=np.uint8)
    clean[3:9, 3:9, 3:9] = 2
    clean[5:7, 5:7, 5:7] = 4
    assert segstate.hierarchy_caption(segstate.hierarchy_summary(clean)).startswith("Label check: 1 connected")


def test_tumour_box_and_most_tumour_z() -> None:
    lab = _labels()
    assert segstate.tumour_box(lab, margin=0) == (slice(1, 4), slice(1, 3), slice(1, 3))
    assert segstate.tumour_box(lab, margin=2) == (slice(0, 6), slice(0, 5), slice(0, 4))
    assert segstate.tumour_box(np.zeros(SHAPE, dtype=np.uint8)) is None
    assert segstate.most_tumour_z(lab) == 1  # 6 voxels on z=1, 2 on z=2
    assert segstate.most_tumour_z(np.zeros(SHAPE, dtype=np.uint8)) is None
    assert segstate.most_tumour_z(None) is None


# ---------------------------------------------------------------------------------------------- report ---

def _flat(text: str) -> str:
    return " ".join(text.split())


def test_report_pdf_of_a_corrected_prediction(tmp_path: Path) -> None:
    case = load_case_folder(make_case_dir(tmp_path, shape=(16, 14, 10)))
    labels = np.asarray(case.seg.data).copy()
    labels[labels == 1] = 2
    src = segstate.ReportSource("corrected", labels, "unet_x", "e" * 64, True, "corrected")
    pdf = segstate.report_pdf_bytes(case, src, score_case(labels, case.seg.data, case.spacing_mm), "TTA on")
    text = _flat("\n".join(p.extract_text() for p in pypdf.PdfReader(io.BytesIO(pdf)).pages))
    assert case.case_id in text and _flat(DISCLAIMER) in text and "unet_x" in text and "e" * 64 in text
    assert "Corrected by hand yes" in text and "Reference (mL)" in text and "TTA on" in text
    assert "Agreement with the reference" in text


def test_report_pdf_of_the_ground_truth(tmp_path: Path) -> None:
    case = load_case_folder(make_case_dir(tmp_path, shape=(16, 14, 10)))
    src = segstate.ReportSource("ground_truth", case.seg.data, "", "", False, "gt")
    text = _flat("\n".join(p.extract_text() for p in pypdf.PdfReader(io.BytesIO(
        segstate.report_pdf_bytes(case, src, scores="ignored"))).pages))
    assert "Reference segmentation file (no model)" in text and case.seg.sha256 in text
    assert "Reference (mL)" not in text and "Agreement with the reference" not in text
    assert "Corrected by hand no" in text


@pytest.mark.parametrize("naming, et_on_disk", [("2021", 4), ("2023", 3)])
def test_nifti_download_round_trip(tmp_path: Path, naming: str, et_on_disk: int) -> None:
    case = load_case_folder(make_case_dir(tmp_path, naming=naming, shape=(12, 10, 8)))
    labels = np.asarray(case.seg.data).copy()
    labels[0, 0, 0] = 4
    vol = load_volume_bytes(segstate.nifti_download_bytes(case, labels), "seg.nii.gz")
    assert vol.original_axcodes == case.reference.original_axcodes
    np.testing.assert_allclose(vol.original_affine, case.reference.original_affine)
    expected = np.where(labels == 4, et_on_disk, labels)
    np.testing.assert_array_equal(vol.data, expected)  # same RAS grid, ET in the file's convention


# ------------------------------------------------------------------------------------------- figures ---

def test_probability_figure_layout_and_orientation() -> None:
    probs = np.zeros((6, 5, 4), dtype=np.float16)
    probs[..., 0] = 1.0
    probs[5, 4, :] = (0.1, 0.2, 0.3, 0.4)  # patient right (high X), anterior (high Y)
    fig = figures_seg.probability_figure(probs, z=3)
    heat = [t for t in fig.data if t.type == "heatmap"]
    assert len(heat) == 3 and all(t.coloraxis == "coloraxis" for t in heat)
    assert fig.layout.coloraxis.cmin == 0.0 and fig.layout.coloraxis.cmax == 1.0
    for t, cls in zip(heat, (1, 2, 3), strict=True):
        np.testing.assert_allclose(np.asarray(t.z), axial_display(probs[:, :, cls]).astype(np.float32), atol=1e-3)
    # radiological: patient right at the left, anterior at the top -> pixel (row 0, col 0)
    assert np.asarray(heat[2].z)[0, 0] == pytest.approx(0.4, abs=1e-3)
    assert figures.orientation_letters("axial") == {"top": "A", "bottom": "P", "left": "R", "right": "L"}
    with pytest.raises(BratsViewerError):
        figures_seg.probability_figure(np.zeros((6, 5, 3)), 0)
    with pytest.raises(BratsViewerError):
        figures_seg.probability_figure(np.zeros((6, 5)), 0)


def test_uncertainty_figure() -> None:
    unc = np.zeros((6, 5), dtype=np.float16)
    unc[0, 0] = 0.5  # patient left, posterior -> bottom right
    fig = figures_seg.uncertainty_figure(unc, 2)
    assert len(fig.data) == 1 and np.asarray(fig.data[0].z)[-1, -1] == pytest.approx(0.5)
    assert fig.layout.coloraxis.cmax == 1.0
    with pytest.raises(BratsViewerError):
        figures_seg.uncertainty_figure(np.zeros((6, 5, 4)), 0)


def test_probability_and_uncertainty_maps_over_an_anatomical_underlay() -> None:
    probs = np.zeros((6, 5, 4), dtype=np.float32)
    probs[..., 0] = 1.0
    image = np.zeros((6, 5), dtype=np.float32)
    image[5, 4] = 100.0  # patient right, anterior -> top left on screen (radiological)
    fig = figures_seg.probability_figure(probs, z=3, image_xy=image, window=(0.0, 100.0))
    assert [t.type for t in fig.data] == ["image", "heatmap"] * 3  # grey under each probability map
    # the underlay travels as a PNG (the browser draws it at once; plotly painted a z array pixel by pixel)
    assert fig.data[0].z is None and fig.data[0].source.startswith("data:image/png;base64,")
    grey = figures.image_pixels(fig.data[0])
    top = figures_seg.UNDERLAY_MAX_GREY
    assert grey.shape == (5, 6, 3) and tuple(grey[0, 0]) == (top, top, top) and grey[1:, 1:].max() == 0
    scale = fig.layout.coloraxis.colorscale
    assert scale[0][1].endswith(",0)") and scale[-1][0] == 1.0  # clear at probability 0: the anatomy shows
    cropped = figures_seg.probability_figure(probs, 3, box=(4, 6, 3, 5), image_xy=image, window=(0.0, 100.0))
    under = figures.image_pixels(cropped.data[0])
    assert under.shape == (2, 2, 3) and tuple(under[0, 0]) == (top, top, top)
    unc = figures_seg.uncertainty_figure(np.zeros((6, 5)), 3, image_xy=image, window=(0.0, 100.0))
    assert [t.type for t in unc.data] == ["image", "heatmap"]
    with pytest.raises(BratsViewerError):  # an underlay of another grid
        figures_seg.probability_figure(probs, 3, image_xy=np.zeros((5, 5)))
    assert [t.type for t in figures_seg.probability_figure(probs, 3).data] == ["heatmap"] * 3  # none asked


def test_a_bright_image_where_the_probability_is_near_0_does_not_read_as_a_high_probability() -> None:
    """Bug (issue 19.10): in P(ED) the FLAIR's bright tumour core showed through the clear low end of the scale as a
    white core, brighter than the scale's top. The underlay is now dimmed: where P is 0 the picture is darker grey
    than the colour the scale gives a probability of 1 (data of the figure, not pixels)."""
    probs = np.zeros((6, 5, 4), dtype=np.float32)
    probs[..., 0] = 1.0
    probs[:2, :2, 2] = 1.0  # a certain edema in one corner
    image = np.full((6, 5), 10.0, dtype=np.float32)
    image[2:5, 2:4] = 100.0  # the bright (FLAIR) core, where P(ED) = 0
    fig = figures_seg.probability_figure(probs, z=0, image_xy=image, window=(0.0, 100.0))
    grey, ed = figures.image_pixels(fig.data[2]).astype(float), np.asarray(fig.data[3].z, dtype=float)
    assert fig.data[3].name == "ED" and grey[..., 0][ed == 0].max() <= figures_seg.UNDERLAY_MAX_GREY
    top = fig.layout.coloraxis.colorscale[-1][1]  # rgba(r,g,b,a) of probability 1
    r, g, b, a = (float(v) for v in top[top.index("(") + 1:-1].split(","))
    luminance_at_1 = 0.299 * r * a + 0.587 * g * a + 0.114 * b * a  # over black, the darkest underlay
    assert luminance_at_1 > 2 * figures_seg.UNDERLAY_MAX_GREY
    assert fig.layout.coloraxis.colorscale[0][1].endswith(",0)")  # still clear at 0: the anatomy shows, dimmed


def test_a_zero_change_is_neutral() -> None:
    """Bug (issue 19.11): an unchanged HD95 showed "+0.0 mm" with a red up arrow."""
    assert figures_seg.metric_delta(0.0, 1, "mm") == ("0.0 mm", True)
    assert figures_seg.metric_delta(-0.04, 1, "mm") == ("0.0 mm", True)  # rounds to zero: no "-0.0"
    assert figures_seg.metric_delta(1.25, 1, "mm") == ("+1.2 mm", False)
    assert figures_seg.metric_delta(-0.002, 3) == ("-0.002", False)


def test_canvas_background_has_orientation_letters() -> None:
    image = np.zeros((40, 30, 3), dtype=np.float32)
    image[:, :, 1] = 50.0
    plain = np.asarray(figures_seg.canvas_background(image, None, 1, (0.0, 100.0), target_px=240, letters=False))
    lettered = np.asarray(figures_seg.canvas_background(image, None, 1, (0.0, 100.0), target_px=240))
    assert plain.shape == lettered.shape == (180, 240, 3)
    def yellowish(a: np.ndarray) -> np.ndarray:  # letters are anti-aliased: near the letter colour, not grey
        r, g, b = (a[..., i].astype(int) for i in range(3))
        return (r > 180) & (g > 140) & (b < r - 80)

    yellow = yellowish(lettered)
    assert not yellowish(plain).any()
    h, w = yellow.shape
    for rows, cols in ((slice(0, h // 6), slice(w // 3, 2 * w // 3)), (slice(5 * h // 6, h), slice(w // 3, 2 * w // 3)),
                       (slice(h // 3, 2 * h // 3), slice(0, w // 8)), (slice(h // 3, 2 * h // 3), slice(7 * w // 8, w))):
        assert yellow[rows, cols].any()  # a letter in the middle of each edge
    assert not yellow[h // 4: 3 * h // 4, w // 4: 3 * w // 4].any()  # and none over the brain
    assert "NCR" in figures_seg.legend_html() and "False positive" in figures_seg.legend_html(error=True)


def test_volume_bar_figure_groups_prediction_and_ground_truth() -> None:
    rows = [{"structure": "NCR", "volume_ml": 1.5, "gt_volume_ml": 2.0}, {"structure": "WT", "volume_ml": 10.0,
                                                                          "gt_volume_ml": 9.0}]
    fig = figures_seg.volume_bar_figure(rows, "Corrected")
    assert [t.name for t in fig.data] == ["Corrected", "Ground truth"] and fig.layout.barmode == "group"
    assert list(fig.data[0].y) == [1.5, 10.0] and list(fig.data[1].y) == [2.0, 9.0]
    assert len(figures_seg.volume_bar_figure([{"structure": "ET", "volume_ml": 0.0}]).data) == 1
    with pytest.raises(BratsViewerError):
        figures_seg.volume_bar_figure([])


def test_canvas_background_size_and_labels() -> None:
    image = np.zeros((20, 10, 3), dtype=np.float32)
    image[:, :, 1] = 100.0
    labels = np.zeros((20, 10, 3), dtype=np.uint8)
    labels[19, 9, 1] = 2  # patient right, anterior -> top left on screen
    assert figures_seg.canvas_size((20, 10, 3), 480) == (480, 240)
    bg = figures_seg.canvas_background(image, labels, 1, (0.0, 100.0), target_px=40, opacity=1.0)
    assert bg.size == (40, 20)
    arr = np.asarray(bg)
    assert tuple(arr[0, 0]) == figures.LABEL_COLOURS[2] and tuple(arr[-1, -1]) == (255, 255, 255)
    assert figures_seg.label_choice_text(0) == "Erase (0)" and figures_seg.label_choice_text(4) == "ET (4)"
    assert figures_seg.stroke_colour(2).startswith("rgba(40, 200, 70")


def test_brain_box_and_cropped_probability_maps() -> None:
    image = np.zeros((10, 8, 3), dtype=np.float32)
    image[3:6, 2:4, 1] = 1.0
    assert segstate.brain_box_xy(image, margin=0) == (3, 6, 2, 4)
    assert segstate.brain_box_xy(image, margin=4) == (0, 10, 0, 8)
    assert segstate.brain_box_xy(np.zeros((4, 4, 2))) is None
    probs = np.zeros((10, 8, 4), dtype=np.float32)
    probs[5, 3, 3] = 0.9  # highest X and Y inside the box -> top left when radiological
    fig = figures_seg.probability_figure(probs, 1, box=(3, 6, 2, 4))
    z = np.asarray(fig.data[2].z)
    assert z.shape == (2, 3) and z[0, 0] == pytest.approx(0.9)
    assert np.asarray(figures_seg.uncertainty_figure(probs[..., 3], 1, box=(3, 6, 2, 4)).data[0].z).shape == (2, 3)
    with pytest.raises(BratsViewerError):
        figures_seg.probability_figure(probs, 1, box=(3, 11, 2, 4))
