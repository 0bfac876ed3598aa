"""Segmentation: run the active model on one axial slice or the whole volume (optionally with flip TTA), look at
the per-class probability maps and the uncertainty, score against the ground truth, and correct the labels by
painting on an axial slice.

Session state used: ``ui.KEY_CASE`` (selected case), ``ui.KEY_CURSOR`` ({x, y, z}, shared with the viewer),
``ui.KEY_TTA``, ``ui.KEY_MODEL_DIR`` (through ``ui.get_model``). Set here: ``ui.KEY_PREDICTION`` +
``ui.KEY_PREDICTION_CASE`` (the cached ``Prediction`` and its case key), ``ui.KEY_CORRECTED`` +
``ui.KEY_CORRECTED_CASE`` (hand-corrected labels and their case key, present only while they differ from the
model's), ``"slice_prediction"`` (the last single-slice result). Corrections live on disk (``EditStore``) in the
session's private folder: never shown to another session, gone with the session. TensorFlow
is imported only when a segmentation is asked for.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

import numpy as np
import pandas as pd
import streamlit as st

from core.analysis.edits import default_inside_tumour_only, mask_from_canvas
from core.analysis.report import volume_table
from core.app import segstate, ui, view_url
from core.config import MODALITY_TITLES, REGION_LONG_NAMES
from core.errors import BratsViewerError
from core.views import figures, figures_seg, viewer

ui.page_header("Segmentation", icon=":material/auto_fix_high:")
case = ui.require_case()
case_key = case.content_key
shape = case.shape
stats = ui.case_display_stats(case)
gt = case.seg.data if case.seg is not None else None
store = ui.edit_store(case)  # an upload's corrections stay in this session's private folder

KEY_SLICE_PRED = "slice_prediction"
Z_KEY = "seg_z"
CANVAS_N = "seg_canvas_n"  # strokes, undos and resets so far: a new value clears the canvas
CANVAS_KEY = "seg_canvas"
CANVAS_APPLIED = "seg_canvas_applied"  # digest of the last drawing applied as a stroke
PAINT_ORDER: tuple[int, ...] = (1, 2, 4, 0)
PLOT_CONFIG = {"displaylogo": False, "modeBarButtonsToRemove": ["select2d", "lasso2d", "autoScale2d", "toImage"]}

TTA_WIDGET = "seg_tta_toggle"  # the toggle's own key: widget state is dropped when another page runs, so the
st.session_state[TTA_WIDGET] = ui.use_tta()  # setting lives under ui.KEY_TTA and the toggle follows it


def _audit(event: str, model_sha: str, **extra: Any) -> None:
    ui.audit_event(case, event, model_sha, **extra)


# ---- the shared cursor (z drives this page) --------------------------------------------------------------------
cursor = (viewer.clamp_cursor(st.session_state.get(ui.KEY_CURSOR), shape) or view_url.restore_cursor(shape)
          or dict(stats.tumour_cursor or stats.centre))  # the URL's cursor after a reload
st.session_state[ui.KEY_CURSOR] = cursor
z_set_here = st.session_state.get(Z_KEY) != cursor["z"]  # the cursor moved elsewhere (a jump, another page)
if z_set_here:
    st.session_state[Z_KEY] = cursor["z"]


def _on_z() -> None:
    st.session_state[ui.KEY_CURSOR] = viewer.move_cursor(st.session_state[ui.KEY_CURSOR], "z",
                                                         st.session_state[Z_KEY], shape)


def _jump(target: dict[str, int] | None) -> None:
    if target is not None:
        st.session_state[ui.KEY_CURSOR] = dict(target)


# ---- model and segmentation ------------------------------------------------------------------------------------
model_dir = ui.active_model_dir()
card = ui.model_card()
model_ok = model_dir.exists()

c_tta, c_slice, c_vol = st.columns([2, 1, 1], vertical_alignment="center")
tta = c_tta.toggle("Test-time augmentation (flips)", key=TTA_WIDGET, on_change=ui.set_tta_from, args=(TTA_WIDGET,),
                   help="Average the prediction over the image and its flips (4x slower) and show the "
                        "disagreement as an uncertainty map.")
do_slice = c_slice.button("Segment this slice", icon=":material/crop_square:", disabled=not model_ok,
                          width="stretch")
do_volume = c_vol.button("Segment whole volume", icon=":material/view_in_ar:", type="primary",
                         disabled=not model_ok, width="stretch")
model_line = f"Model `{model_dir.name}`"
if card.get("weights_sha256"):
    model_line += f" (weights SHA-256 `{str(card['weights_sha256'])[:12]}`"
    if (card.get("volume3d") or {}).get("keras_sha256"):
        model_line += f", 3-D context network `{str(card['volume3d']['keras_sha256'])[:12]}`"
    model_line += ")"
if not model_ok:
    st.warning(f"The active model folder `{model_dir.name}` does not exist: train a model on the Training page "
               "or choose another one.", icon=":material/error:")
elif card.get("small_data_warning"):
    model_line += f" - {card['small_data_warning']}"
st.caption(model_line)

z = int(cursor["z"])

if do_volume:
    done = ui.segment_volume(case, tta, page="segmentation")
    moved = viewer.clamp_cursor(st.session_state.get(ui.KEY_CURSOR), shape)  # no reference label: the cursor
    if done is not None and moved is not None and moved != cursor:  # may have moved onto the model's tumour
        cursor = moved
        st.session_state[Z_KEY] = cursor["z"]
        z_set_here, z = True, int(cursor["z"])

if do_slice:
    loaded = ui.get_model()
    if loaded is not None:
        import time

        from core.app.engine import predict_slice

        try:
            started = time.perf_counter()
            with st.spinner(f"Segmenting slice z={z}..."):
                labels2d, probs2d, unc2d = predict_slice(loaded, ui.prepared_for(case, loaded), z, tta)
            elapsed = time.perf_counter() - started
        except BratsViewerError as err:
            st.error(str(err))
        else:
            if loaded.volume is not None:
                st.caption("Slice preview by the 2-D network alone; *Segment whole volume* adds the 3-D context "
                           "network.")
            st.session_state[KEY_SLICE_PRED] = {
                "case_key": case_key, "z": z, "tta": bool(tta), "model_name": loaded.name,
                "model_sha256": loaded.sha256, "labels": labels2d, "probs": probs2d, "unc": unc2d}
            _audit("segment", loaded.sha256, scope="slice", z=z, tta=bool(tta), elapsed_s=round(elapsed, 3))

pred = ui.session_prediction(case)
if pred is None and model_ok:
    ui.warm_segmentation(case)  # model and case prepared meanwhile: the click pays for the model alone
pred_labels = segstate.labels_of(pred, shape)
saved = segstate.saved_corrections(store, case_key, shape)

# corrected labels shared with the viewer and the report (only while they differ from the model's)
if saved is not None and saved.corrected:
    st.session_state[ui.KEY_CORRECTED] = saved.labels
    st.session_state[ui.KEY_CORRECTED_CASE] = case_key
elif st.session_state.get(ui.KEY_CORRECTED_CASE) == case_key:
    st.session_state.pop(ui.KEY_CORRECTED, None)
    st.session_state.pop(ui.KEY_CORRECTED_CASE, None)

current = saved.labels if saved is not None else pred_labels  # what is being reviewed / edited

# One container for the status lines: what it holds varies (a stroke adds "Corrected by hand"), the page's layout
# after it does not, so the canvas below keeps its place and is not remounted (about 1 s of the browser's time).
with st.container():
    if pred is not None:
        earlier = ui.earlier_prediction_note(pred)
        status = (f"Whole-volume prediction of model `{pred.model_name}` (`{pred.model_sha256[:12]}`), "
                  f"TTA {'on' if pred.tta else 'off'}, {pred.elapsed_s:.1f} s.")
        if bool(pred.tta) != bool(tta) and not earlier:
            status += " The TTA setting has changed since: segment again to apply it."
        st.caption(status)
        if earlier:
            st.info(earlier, icon=":material/history:")
        ui.show_quality(pred)
    if saved is not None and saved.corrected:
        st.success(f"Corrected by hand: {saved.strokes} stroke(s) applied"
                   + (f" to the prediction of model `{saved.model_sha256[:12]}`" if saved.model_sha256 else "")
                   + ". The viewer and the report use the corrected labels.", icon=":material/brush:")
    elif pred is None and saved is None:
        st.info("No segmentation of this case yet: press **Segment whole volume** (or **Segment this slice** for a "
                "quick look at the current slice).", icon=":material/info:")

# ---- slice selection -------------------------------------------------------------------------------------------
c_z, c_jump, c_mod = st.columns([4, 1, 1], vertical_alignment="bottom")
# The slider's default is the cursor's slice: a browser that (re)mounts the slider without its own value for it (a
# run cut short by the next click under load, a layout shift above it) shows the default, which was 0 and sent the
# next rerun back to z=0. A value set through st.session_state this run takes over (and the default must be None).
c_z.slider("Axial slice (z)", 0, shape[2] - 1, value=None if z_set_here else int(cursor["z"]), key=Z_KEY,
           on_change=_on_z)
jump_labels = current if current is not None and np.any(current) else gt
jump_target = figures.most_tumour_cursor(jump_labels) if jump_labels is not None else None
c_jump.button("Most tumour", icon=":material/my_location:", on_click=_jump, args=(jump_target,),
              disabled=jump_target is None, width="stretch",
              help="Jump to the slice with most tumour" + (" (ground truth)" if jump_labels is gt else ""))
modality = c_mod.selectbox("Image", case.modalities, key="seg_modality",
                           index=case.modalities.index("flair") if "flair" in case.modalities else 0,
                           format_func=lambda k: MODALITY_TITLES[k])
image = case.images[modality].data
window = figures.window_from_percentiles(stats.percentiles[modality], *figures.AUTO_PERCENTILES)

# ---- probability maps -----------------------------------------------------------------------------------------


@st.cache_data(max_entries=4, show_spinner=False)
def _brain_box(key: str, _image: np.ndarray) -> tuple[int, int, int, int] | None:
    return segstate.brain_box_xy(_image)


brain_box = _brain_box(ui.case_cache_key(case), case.reference.data)


@st.cache_resource(max_entries=8, show_spinner=False)
def _maps_figures(prediction_key: tuple[Any, ...], z: int, modality: str, window: tuple[float, float],
                  box: tuple[int, int, int, int] | None, _probs: np.ndarray, _unc: np.ndarray | None,
                  _image_xy: np.ndarray) -> tuple[Any, Any]:
    """The probability figure and the uncertainty figure (or None) of one slice of a whole-volume prediction, built
    once per (prediction, slice, underlay): a rerun that does not move the slice (a stroke, an undo, a toggle) reuses
    them (read-only: ``st.plotly_chart`` serialises a copy)."""
    underlay = {"image_xy": _image_xy, "window": window}
    return (figures_seg.probability_figure(_probs, z, box=box, **underlay),
            figures_seg.uncertainty_figure(_unc, z, box=box, **underlay) if _unc is not None else None)


st.subheader("Probability maps")
slice_pred = st.session_state.get(KEY_SLICE_PRED)
if slice_pred is not None and slice_pred.get("case_key") != case_key:
    slice_pred = None
probs = unc = None
if pred is not None:
    probs = pred.probabilities[:, :, z, :]
    unc = pred.uncertainty[:, :, z] if pred.uncertainty is not None else None
elif slice_pred is not None and slice_pred["z"] == z:
    probs, unc = slice_pred["probs"], slice_pred["unc"]
if probs is None:
    msg = "Segment this slice or the whole volume to see the per-class probabilities."
    if slice_pred is not None:
        msg = f"The single-slice result is for z={slice_pred['z']}: segment this slice or the whole volume."
    st.info(msg, icon=":material/info:")
    # the image itself meanwhile (with the expert label, when there is one), so the slice can be chosen first
    plain_layers = [figures.Overlay(gt, 0.35, contour=True)] if gt is not None else []
    plain = figures.compose_plane(image, "axial", z, window, True, plain_layers)
    st.plotly_chart(figures.slice_figure(plain, figures.extract_slice(image, "axial", z, True), "axial", z, cursor,
                                         shape, True, height=420,
                                         title=f"{MODALITY_TITLES[modality]} z={z}"
                                         + (" (ground truth outlined)" if gt is not None else "")),  # the demo's is no expert's
                    config=PLOT_CONFIG, key="seg_image_fig")
else:
    # full width whether or not the uncertainty map is shown (it goes below, as large as one probability map)
    if pred is not None:  # the whole volume's maps: built once per (prediction, slice, underlay)
        prediction_key = (case_key, pred.model_sha256, bool(pred.tta), pred.created_utc, float(pred.elapsed_s))
        prob_fig, unc_fig = _maps_figures(prediction_key, z, modality, tuple(window), brain_box, probs, unc,
                                          image[:, :, z])
    else:  # the single-slice preview
        underlay = {"image_xy": image[:, :, z], "window": window}
        prob_fig = figures_seg.probability_figure(probs, z, box=brain_box, **underlay)
        unc_fig = figures_seg.uncertainty_figure(unc, z, box=brain_box, **underlay) if unc is not None else None
    st.plotly_chart(prob_fig, config=PLOT_CONFIG, key="seg_prob_fig", theme=None)
    note_col = st
    if unc_fig is not None:
        u_col, note_col = st.columns([1.2, 2], vertical_alignment="center")
        u_col.plotly_chart(unc_fig, config=PLOT_CONFIG, key="seg_unc_fig", theme=None)
    note = (f"Axial view cropped to the brain, radiological convention (patient's right on the image's left), "
            f"anterior at the top; the maps are drawn over the {MODALITY_TITLES[modality]} slice (clear where "
            "the value is near 0; the slice is dimmed so that a bright region where the value is 0 does not read as "
            "a high value).")
    if unc is not None:
        note += (" Uncertainty: normalised entropy of the mean over the image and its flips (0 = all views agree "
                 "and are sure, 1 = uniform).")
    elif tta:
        note += " Segment again with TTA on to see the uncertainty map."
    note_col.caption(note)

# ---- agreement with the ground truth ---------------------------------------------------------------------------
st.subheader("Agreement with the ground truth")
if gt is None:
    st.info("This case has no ground-truth segmentation: no scores.", icon=":material/info:")
elif pred_labels is None and saved is None:
    st.info("Segment the whole volume to score it against the ground truth.", icon=":material/info:")
else:
    if (seen := ui.training_case_note(case.case_id)) is not None:
        st.warning(seen, icon=":material/school:")
    base = pred_labels if pred_labels is not None else saved.model_labels
    base_scores = ui.cached_scores(case, base)
    corr_scores = ui.cached_scores(case, saved.labels) if saved is not None and saved.corrected else None
    shown = corr_scores or base_scores
    m_col, e_col = st.columns([3, 2], gap="large")
    with m_col:
        st.caption("Scores of the corrected labels on the whole volume (change against the model's prediction)"
                   if corr_scores else "Scores of the model's prediction on the whole volume")
        for region in ("WT", "TC", "ET"):
            c1, c2 = st.columns(2)
            r = shown.regions[region]
            (d_dice, flat_dice), (d_hd, flat_hd) = (None, False), (None, False)
            if corr_scores is not None:
                b = base_scores.regions[region]
                d_dice, flat_dice = figures_seg.metric_delta(r.dice - b.dice, 3)
                d_hd, flat_hd = figures_seg.metric_delta(r.hd95_mm - b.hd95_mm, 1, "mm")
            c1.metric(f"{region} Dice", f"{r.dice:.3f}", d_dice, help=REGION_LONG_NAMES[region],
                      delta_color="off" if flat_dice else "normal", delta_arrow="off" if flat_dice else "auto")
            c2.metric(f"{region} HD95", f"{r.hd95_mm:.1f} mm", d_hd, delta_color="off" if flat_hd else "inverse",
                      delta_arrow="off" if flat_hd else "auto",
                      help=f"{REGION_LONG_NAMES[region]}: 95th percentile Hausdorff distance")
    with e_col:
        err_labels = saved.labels if corr_scores is not None else base
        rgb = figures.compose_plane(image, "axial", z, window, True,
                                    [figures.Overlay(err_labels, 0.6, reference=gt)])
        raw = figures.extract_slice(image, "axial", z, True)
        st.plotly_chart(figures.slice_figure(rgb, raw, "axial", z, cursor, shape, True, height=340,
                                             title=f"Whole-tumour errors z={z}"),
                        config=PLOT_CONFIG, key="seg_err_fig")
        legend = "".join(
            f'<span style="display:inline-flex;align-items:center;margin-right:14px;">'
            f'<span style="width:12px;height:12px;background:{colour};display:inline-block;margin-right:6px;'
            f'border-radius:2px;"></span>{name}</span>'
            for name, colour in figures.legend_items(error=True)[-2:])
        st.markdown(f'<div style="font-size:0.85rem;">{legend}</div>', unsafe_allow_html=True)

# ---- correction ----------------------------------------------------------------------------------------------
st.subheader("Correct the labels")


@st.cache_data(max_entries=8, show_spinner=False)
def _hierarchy(digest: str, _labels: np.ndarray) -> dict[str, int]:
    return segstate.hierarchy_summary(_labels)


if current is None:
    st.info("Segment the whole volume first: corrections start from the model's labels.", icon=":material/info:")
else:
    if saved is not None and pred_labels is not None and not np.array_equal(saved.model_labels, pred_labels):
        w1, w2 = st.columns([3, 1], vertical_alignment="center")
        w1.warning("The saved corrections of this case started from another prediction"
                   + (f" (model `{saved.model_sha256[:12]}`)" if saved.model_sha256 else "")
                   + ". They are kept until you start again from the current prediction.", icon=":material/history:")
        if w2.button("Start again from this prediction", key="seg_restart"):
            store.start(case_key, pred_labels, pred.model_sha256, restart=True)
            _audit("correct", pred.model_sha256, action="restart", z=None, label=None, voxels_changed=0)
            st.rerun()
    edit_sha = saved.model_sha256 if saved is not None else (pred.model_sha256 if pred is not None else "")

    def _history_action(action: str, model_sha: str) -> None:
        """Undo / Reset, as a callback: done before the page runs, so one run shows the result (no second run)."""
        try:
            if action == "undo":
                store.undo(case_key)
                message = "Last action undone."
            else:
                store.reset(case_key)
                message = "Back to the model's labels (Undo restores the corrections)."
            _audit("correct", model_sha, action=action, z=None, label=None, voxels_changed=None)
        except BratsViewerError as err:
            st.session_state["seg_flash_error"] = str(err)
            return
        st.session_state[CANVAS_N] = int(st.session_state.get(CANVAS_N, 0)) + 1  # the canvas cleared
        st.session_state["seg_flash"] = message

    canvas_col, tools_col = st.columns([3, 2], gap="large")
    with tools_col:
        label = st.radio("Paint", PAINT_ORDER, format_func=figures_seg.label_choice_text, horizontal=True,
                         key="seg_paint_label", help="Erase (0) sets the stroked voxels to background.")
        brush = st.slider("Brush width (screen pixels)", 2, 40, 12, key="seg_brush")
        inside = st.checkbox("Only inside the existing tumour", value=default_inside_tumour_only(label),
                             key=f"seg_inside_{label}", disabled=label == 0,
                             help="On: the stroke changes only voxels already labelled tumour (default for "
                                  "NCR/NET and ET, so painted core stays inside the tumour). Off: it can grow "
                                  "the tumour.")
        b2, b3 = st.columns(2)
        b2.button("Undo", icon=":material/undo:", width="stretch", disabled=saved is None or saved.undo_depth == 0,
                  help="Step back one stroke (or a reset)", on_click=_history_action, args=("undo", edit_sha))
        b3.button("Reset to model", icon=":material/restart_alt:", width="stretch",
                  disabled=saved is None or not saved.corrected, on_click=_history_action, args=("reset", edit_sha))
        st.caption("Draw on the slice: each stroke is applied when you lift the mouse, saved at once and kept "
                   "for this session only (never shown to another user). **Undo** steps back one stroke or reset "
                   "(the one undo: the canvas starts empty after each stroke, so its own undo has nothing to do).")

    def _done(message: str) -> None:
        st.session_state[CANVAS_N] = int(st.session_state.get(CANVAS_N, 0)) + 1  # the canvas cleared
        st.session_state["seg_flash"] = message
        st.rerun()  # the whole page (scores, volumes, messages follow the new labels)

    @st.fragment
    def _canvas_and_strokes(label: int, brush: int, inside: bool) -> None:
        """The canvas and the stroke it sends, in a fragment: the values the canvas sends when it mounts or is
        cleared (its drawing and its background's fit) rerun this fragment only, not the page with its figures
        and scores (measured: benchmarks/bench_segment_click.py)."""
        from streamlit_drawable_canvas import st_canvas

        background = figures_seg.canvas_background(image, current, z, window)
        canvas_n = int(st.session_state.get(CANVAS_N, 0))
        # One canvas for the page's life (a new key remounted it after every stroke, undo and slice: about 1 s of
        # the browser's time on 2 cores); a new empty initial drawing (marked with the slice and the count of
        # strokes) clears it instead, and the background follows the labels and the slice.
        result = st_canvas(stroke_width=int(brush), stroke_color=figures_seg.stroke_colour(label),
                           background_image=background, width=background.width, height=background.height,
                           drawing_mode="freedraw", return_image_data=True, update_streamlit=True,
                           initial_drawing={"objects": [], "cleared": f"{z}:{canvas_n}"}, key=CANVAS_KEY)
        st.markdown(figures_seg.legend_html(), unsafe_allow_html=True)
        st.caption(f"Axial slice z={z}, radiological convention (patient's right on the image's left: letters "
                   "at the edges), current labels overlaid.")
        drawing = result.json_data if result is not None else None
        if not isinstance(drawing, dict) or not drawing.get("objects"):
            return
        # The canvas keeps sending its last drawing until its cleared one arrives: a stroke is applied once.
        digest = hashlib.blake2b(json.dumps(drawing, sort_keys=True, default=str).encode(), digest_size=16).hexdigest()
        if st.session_state.get(CANVAS_APPLIED) == digest:
            return
        st.session_state[CANVAS_APPLIED] = digest
        data = result.image_data
        if data is None or not np.any(np.asarray(data)[..., 3] > 0):
            return
        try:  # a stroke: applied at once
            mask = mask_from_canvas(np.asarray(data), (shape[0], shape[1]))
            if saved is None:
                store.start(case_key, pred_labels, edit_sha)
            before = store.load(case_key)
            after = store.apply(case_key, z, mask, int(label), inside if label != 0 else None)
            changed = int(np.count_nonzero(before[:, :, z] != after[:, :, z])) if before is not None else 0
            _audit("correct", edit_sha, action="erase" if label == 0 else "paint", z=z, label=int(label),
                   voxels_changed=changed, inside_tumour_only=bool(inside) if label != 0 else None)
        except BratsViewerError as err:
            st.error(str(err))
            return
        _done(f"{changed} voxel(s) changed on slice z={z}." if changed else
              "The stroke changed no voxel (already that label, or outside the tumour).")

    with canvas_col:
        _canvas_and_strokes(int(label), int(brush), bool(inside))

    flash_error = st.session_state.pop("seg_flash_error", None)
    if flash_error:
        st.error(flash_error)
    flash = st.session_state.pop("seg_flash", None)
    if flash:
        st.toast(flash, icon=":material/brush:")

    with tools_col:
        shown_source = segstate.choose_report_source(  # what ui.current_segmentation says, from what is here
            case_key, shape, corrected=saved.labels if saved is not None and saved.corrected else None,
            corrected_key=case_key, corrected_model_sha256=saved.model_sha256 if saved is not None else "",
            corrected_model_name=pred.model_name if pred is not None and saved is not None
            and saved.model_sha256 in ("", pred.model_sha256) else "",
            prediction=pred, prediction_key=st.session_state.get(ui.KEY_PREDICTION_CASE))
        st.markdown("**Volumes (mL)**" + (f"  \n{shown_source.description}" if shown_source is not None else ""))
        rows = volume_table(current, case.spacing_mm, gt, voxel_volume_ml=case.voxel_volume_ml)
        table = pd.DataFrame({
            "Structure": [r["structure"] for r in rows],
            "Volume (mL)": [r["volume_ml"] for r in rows],
            **({"Ground truth (mL)": [r["gt_volume_ml"] for r in rows]} if gt is not None else {}),
            **({"Model (mL)": [r["volume_ml"] for r in volume_table(saved.model_labels, case.spacing_mm,
                                                                              voxel_volume_ml=case.voxel_volume_ml)]}
               if saved is not None and saved.corrected else {}),
        })
        # short headers (mL is in the title): four columns fit this narrow column without a horizontal scroll
        heads = {"Volume (mL)": "Corrected" if saved is not None and saved.corrected else "Volume",
                 "Ground truth (mL)": "Ground truth", "Model (mL)": "Model"}
        st.dataframe(table, hide_index=True, width="stretch",
                     column_config={c: st.column_config.NumberColumn(heads[c], format="%.1f") for c in table.columns[1:]})
        st.caption(segstate.hierarchy_caption(_hierarchy(segstate.labels_digest(current), current)))

view_url.remember(st.session_state.get(ui.KEY_CURSOR))  # a reload keeps the slice
