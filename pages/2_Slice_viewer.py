"""Slice viewer: linked axial / coronal / sagittal views of one cursor, overlays, window/level, montage and 3-D.

The three planes are drawn in the browser by default (``core.app.slice_client``: the case is sent once, paging,
window/level and overlays need no rerun; a click moves the shared cursor and shows the exact readout here); the
server-drawn plotly views stay available (sidebar "Three planes drawn").

Session state used: ``ui.KEY_CASE`` (selected case), ``ui.KEY_CURSOR`` ({x, y, z} shared with other pages),
``"prediction"`` (a ``core.engine.inference.Prediction`` stored by the segmentation page, optional) and
``"corrected_labels"`` (an (X, Y, Z) label array or an object with ``.labels``, optional), each shown only when
``"prediction_case_key"`` / ``"corrected_case_key"`` (when set) equal the case's ``content_key``.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import streamlit as st

from core import config
from core.app import ui, view_url
from core.app.slice_client import case_payload, slice_client
from core.errors import BratsViewerError
from core.views import coords, figures, viewer

ui.page_header("Slice viewer", icon=":material/view_in_ar:")
case = ui.require_case()
stats = ui.case_display_stats(case)
shape = case.shape

ALL_FOUR = "all"
SLIDER_KEYS = {n: f"viewer_cursor_{n}" for n in figures.AXIS_NAMES}
PLANE_OF_AXIS = {"x": "sagittal", "y": "coronal", "z": "axial"}
ENGINE_CLIENT, ENGINE_SERVER = "In the browser (fast)", "On the server (plotly)"
CLIENT_KEY = "viewer_client"  # the component's value (last click); dropped when the page is left
CLIENT_START = "viewer_client_start"  # cursor the component opened at (fixed while it stays on screen)
CLIENT_SEQ = "viewer_client_seq"  # last click applied to the shared cursor
CLIENT_RULER = "viewer_client_ruler"  # last two-point ruler [[x, y, z], [x, y, z]] of the component
CLIENT_VIEW = "viewer_client_view"  # {"case": content_key, "view": the reader's choices in the browser viewer,
#   "seed": the sidebar's settings then}: kept across the Montage / 3-D tabs, which unmount the viewer
PLOT_CONFIG = {"displaylogo": False, "scrollZoom": True,
               "modeBarButtonsToRemove": ["select2d", "lasso2d", "autoScale2d", "toImage"]}


def _labels_of(obj: Any, owner_key: str) -> np.ndarray | None:
    """Labels (X, Y, Z) of a stored prediction / correction when they belong to this case (the segmentation page
    records the owner's ``content_key`` under ``owner_key``) and fit its grid, else None."""
    owner = st.session_state.get(owner_key)
    if owner is not None and owner != case.content_key:
        return None
    arr = getattr(obj, "labels", obj)
    if isinstance(arr, np.ndarray) and arr.shape == shape:
        return arr
    return None


gt = case.seg.data if case.seg is not None else None
ui.session_prediction(case)  # after a reload: this case's prediction, when still cached in this process
pred = _labels_of(st.session_state.get("prediction"), "prediction_case_key")
corrected = _labels_of(st.session_state.get("corrected_labels"), "corrected_case_key")


@st.cache_data(max_entries=8, show_spinner=False)
def _most_tumour(digest: str, _labels: np.ndarray) -> dict[str, int] | None:
    return figures.most_tumour_cursor(_labels)


# "Most tumour": the expert label's, else (a case without one, e.g. a raw study after segmenting) the model's
jump_target, jump_source = stats.tumour_cursor, "ground truth"  # not always an expert's (the demo)
if jump_target is None:
    from core.app.segstate import labels_digest

    for name, lab in (("corrected segmentation", corrected), ("prediction", pred)):
        if lab is not None and (target := _most_tumour(labels_digest(lab), lab)) is not None:
            jump_target, jump_source = target, name
            break

# ---- the shared cursor ---------------------------------------------------------------------------------------
cursor = viewer.clamp_cursor(st.session_state.get(ui.KEY_CURSOR), shape)
if cursor is None:  # a new session (a reload): the URL's cursor, checked against the grid
    cursor = view_url.restore_cursor(shape) or dict(jump_target or stats.centre)
st.session_state[ui.KEY_CURSOR] = cursor
for n, key in SLIDER_KEYS.items():  # widgets follow the cursor (set before they are created)
    if st.session_state.get(key) != cursor[n]:
        st.session_state[key] = cursor[n]


def _on_slider(axis_name: str) -> None:
    st.session_state[ui.KEY_CURSOR] = viewer.move_cursor(
        st.session_state[ui.KEY_CURSOR], axis_name, st.session_state[SLIDER_KEYS[axis_name]], shape)


def _jump(target: dict[str, int] | None) -> None:
    if target is not None:
        st.session_state[ui.KEY_CURSOR] = dict(target)


# ---- sidebar: display controls -------------------------------------------------------------------------------
mod_options = [*case.modalities, ALL_FOUR] if len(case.modalities) > 1 else list(case.modalities)
view_url.seed_settings(mod_options)  # a reload brings the image, convention and overlays back from the URL
with st.sidebar:
    st.divider()
    engine = st.radio("Three planes drawn", [ENGINE_CLIENT, ENGINE_SERVER], key="viewer_engine",
                      help="In the browser: the case is sent once and paging (wheel, arrow keys), window/level "
                      "(right-drag) and overlays run on your computer. On the server: each change is redrawn by "
                      "the server (slower; zoomable plotly figures).")
    st.markdown("**Display**")
    if engine == ENGINE_CLIENT:
        st.caption("The browser viewer has its own controls above the views and opens with the image, convention "
                   "and overlays chosen here; these settings drive the montage and the plotly views.")
    modality = st.selectbox("Image", mod_options, key="viewer_modality",
                            format_func=lambda k: "All modalities (2x2)" if k == ALL_FOUR else config.MODALITY_TITLES[k])
    radiological = st.radio("Convention", ["Radiological", "Neurological"], key="viewer_convention",
                            horizontal=True, help="Radiological: patient right on screen left. "
                            "Neurological: patient left on screen left.") == "Radiological"
    plane_2x2 = st.session_state.get("viewer_plane", figures.PLANES[0])
    if modality == ALL_FOUR:
        plane_2x2 = st.radio("Plane", figures.PLANES, key="viewer_plane", horizontal=True,
                             format_func=str.capitalize)
        preset = st.selectbox("Window (all)", list(figures.presets_for("flair")), key="viewer_preset_all")
        windows = {}
        for key in case.modalities:
            pct = figures.presets_for(key).get(preset, figures.AUTO_PERCENTILES)
            windows[key] = figures.window_from_percentiles(stats.percentiles[key], *pct)
    else:
        presets = figures.presets_for(modality)
        preset = st.selectbox("Window preset", list(presets), key=f"viewer_preset_{modality}")
        lo, hi = figures.window_from_percentiles(stats.percentiles[modality], *presets[preset])
        vmin, vmax = stats.value_range[modality]
        vmax = max(vmax, vmin + 1.0)
        lo, hi = max(lo, vmin), min(hi, vmax)
        lo, hi = (lo, hi) if hi > lo else (vmin, vmax)
        step = float(max((vmax - vmin) / 500.0, 1e-3))
        win = st.slider("Window (low - high intensity)", float(vmin), float(vmax), (float(lo), float(hi)),
                        step=step, key=f"viewer_window_{modality}_{preset}")
        windows = {modality: (win[0], max(win[1], win[0] + step))}

    st.markdown("**Overlays**")
    show_gt = st.checkbox("Ground truth", value=gt is not None, disabled=gt is None, key="viewer_show_gt",
                          help=None if gt is not None else "This case has no ground-truth segmentation.")
    show_pred = st.checkbox("Prediction", value=pred is not None, disabled=pred is None, key="viewer_show_pred",
                            help=None if pred is not None else "Run the model on the Segmentation page first.")
    show_corr = st.checkbox("Corrected segmentation", value=False, disabled=corrected is None,
                            key="viewer_show_corr")
    can_err = gt is not None and pred is not None
    show_err = st.checkbox("Prediction errors vs ground truth (WT)", value=False, disabled=not can_err,
                           key="viewer_show_err", help="Yellow: predicted but not in the ground truth (FP). "
                           "Magenta: ground truth the prediction missed (FN).")
    any_labels = gt is not None or pred is not None or corrected is not None
    opacity = st.slider("Opacity", 0.0, 1.0, 0.4, 0.05, key="viewer_opacity", disabled=not any_labels)
    classes = tuple(config.TUMOUR_LABELS)
    if any_labels:  # NCR / ED / ET choices only when there is a segmentation to draw
        c1, c2, c3 = st.columns(3)
        classes = tuple(v for v, col in zip(config.TUMOUR_LABELS, (c1, c2, c3), strict=True)
                        if col.checkbox(config.LABEL_NAMES[v].split("/")[0], value=True, key=f"viewer_class_{v}"))
    contour = st.checkbox("Outlines only", value=False, key="viewer_contour", disabled=not any_labels)

layers: list[figures.Overlay] = []
n_label_layers = sum(bool(x) for x in (show_gt and gt is not None, show_pred and pred is not None,
                                       show_corr and corrected is not None))
if show_gt and gt is not None:  # drawn as outline under a prediction so both stay visible
    layers.append(figures.Overlay(gt, opacity, classes, contour or n_label_layers > 1))
if show_pred and pred is not None:
    layers.append(figures.Overlay(pred, opacity, classes, contour))
if show_corr and corrected is not None:
    layers.append(figures.Overlay(corrected, opacity, classes, contour or (show_pred and pred is not None)))
if show_err and can_err:
    layers.append(figures.Overlay(pred, max(opacity, 0.5), classes, contour, reference=gt))

# ---- cursor controls (the browser viewer has its own) ----------------------------------------------------------
client = engine == ENGINE_CLIENT
if not client:
    cols = st.columns([1, 1, 1, 0.9], vertical_alignment="bottom")
    for col, n in zip(cols[:3], figures.AXIS_NAMES, strict=True):
        col.slider(f"{PLANE_OF_AXIS[n].capitalize()} slice ({n})", 0, shape[figures.AXIS_NAMES.index(n)] - 1,
                   key=SLIDER_KEYS[n], on_change=_on_slider, args=(n,))
    with cols[3]:
        st.button("Most tumour", icon=":material/my_location:", on_click=_jump, args=(jump_target,),
                  disabled=jump_target is None, width="stretch",
                  help=f"Jump to the slices with most tumour ({jump_source})" if jump_target else "No tumour labels")
        st.button("Centre", icon=":material/center_focus_strong:", on_click=_jump, args=(stats.centre,),
                  width="stretch", help="Jump to the centre of the brain")

legend = "".join(
    f'<span style="display:inline-flex;align-items:center;margin-right:16px;">'
    f'<span style="width:12px;height:12px;background:{colour};display:inline-block;margin-right:6px;'
    f'border-radius:2px;"></span>{name}</span>' for name, colour in figures.legend_items(error=show_err and can_err))

def sources_caption() -> str | None:
    """Which segmentation each overlay is (``segstate.describe_segmentation``), or None without any."""
    from core.app import segstate

    obj = st.session_state.get(ui.KEY_PREDICTION)
    name = str(getattr(obj, "model_name", "")) if pred is not None else ""
    parts = []
    if gt is not None:
        parts.append("Ground truth = " + segstate.describe_segmentation(segstate.SOURCE_GROUND_TRUTH))
    if pred is not None:
        parts.append("Prediction = " + segstate.describe_segmentation(
            segstate.SOURCE_PREDICTION, model_name=name, tta=bool(getattr(obj, "tta", False)),
            runtime=str(getattr(obj, "runtime", "") or "")))
    if corrected is not None:
        parts.append("Corrected = " + segstate.describe_segmentation(segstate.SOURCE_CORRECTED, model_name=name))
    return "Overlays: " + "; ".join(parts) + "." if parts else None


def show_sources() -> None:
    line = sources_caption()
    if line:
        st.caption(line)
    earlier = ui.earlier_prediction_note(st.session_state.get(ui.KEY_PREDICTION)) if pred is not None else None
    if earlier:
        st.info(earlier, icon=":material/history:")


tab_views, tab_montage, tab_3d = st.tabs([":material/grid_view: Three planes", ":material/view_module: Montage",
                                          ":material/3d_rotation: 3-D"], key="viewer_tab", on_change="rerun")


def cursor_caption() -> str:
    x, y, z = cursor["x"], cursor["y"], cursor["z"]
    ras = coords.voxel_to_ras_mm(case.reference.affine, (x, y, z))
    parts = [f"Cursor voxel ({x}, {y}, {z}), RAS ({ras[0]:.1f}, {ras[1]:.1f}, {ras[2]:.1f}) mm"]
    for key in case.modalities:
        parts.append(f"{config.MODALITY_TITLES[key]} {case.images[key].data[x, y, z]:.4g}")
    for name, lab in (("GT", gt), ("prediction", pred)):
        if lab is not None:
            value = int(lab[x, y, z])
            parts.append(f"{name}: {config.LABEL_NAMES.get(value, 'background')}")
    return " | ".join(parts)


def browser_view() -> None:
    """The in-browser viewer; a click there moves the shared cursor (and may close a two-point ruler)."""
    global cursor
    if CLIENT_KEY not in st.session_state:  # (re)opened: start at the shared cursor, count clicks afresh
        st.session_state[CLIENT_START] = dict(cursor)
        st.session_state[CLIENT_SEQ] = None
    overlays = {name: lab for name, lab in (("Ground truth", gt), ("Prediction", pred), ("Corrected", corrected))
                if lab is not None}
    from core.app.segstate import labels_digest

    label_keys = "|".join(f"{n}:{labels_digest(v) if n != 'Ground truth' else ''}" for n, v in overlays.items())
    payload = case_payload(case, overlays, label_keys, stats, jump_target)
    shown = [n for n, on in (("Ground truth", show_gt), ("Prediction", show_pred), ("Corrected", show_corr))
             if on and n in overlays]
    sidebar_settings = {"modality": modality, "plane": plane_2x2, "show": shown, "radiological": radiological,
                        "opacity": opacity, "outline": bool(contour),
                        "hidden": [str(v) for v in config.TUMOUR_LABELS if v not in classes]}
    stored = st.session_state.get(CLIENT_VIEW)
    mine = isinstance(stored, dict) and stored.get("case") == case.content_key
    settings = viewer.client_settings(sidebar_settings, stored["view"] if mine else None,
                                      stored.get("seed") if mine else None)
    value = slice_client(payload, st.session_state[CLIENT_START], settings,
                         height=720 if settings.get("modality") == ALL_FOUR else 620, key=CLIENT_KEY)
    st.markdown(f'<div style="font-size:0.85rem;">{legend}</div>', unsafe_allow_html=True)
    show_sources()
    if value and value.get("seq") != st.session_state.get(CLIENT_SEQ):
        st.session_state[CLIENT_SEQ] = value.get("seq")
        moved = viewer.clamp_cursor(value.get("cursor"), shape)
        if moved is not None:
            cursor = moved
            st.session_state[ui.KEY_CURSOR] = moved
        st.session_state[CLIENT_RULER] = value.get("ruler")
        view = viewer.parse_client_view(value.get("view"), case.modalities, list(overlays))
        if view:
            st.session_state[CLIENT_VIEW] = {"case": case.content_key, "view": view, "seed": sidebar_settings}
    st.caption("At the last click (exact intensities; paging does not reach the server): " + cursor_caption())
    ruler = st.session_state.get(CLIENT_RULER)
    if ruler:
        try:
            d_mm = coords.distance_mm(ruler[0], ruler[1], case.spacing_mm)
            st.caption(f"Ruler: {d_mm:.1f} mm from voxel {tuple(ruler[0])} to {tuple(ruler[1])} "
                       f"(voxel size {' x '.join(f'{v:g}' for v in case.spacing_mm)} mm)")
        except (BratsViewerError, TypeError, IndexError, KeyError):  # the browser's value is untrusted
            st.session_state[CLIENT_RULER] = None


if tab_views.open and client:
    with tab_views:
        browser_view()
elif tab_views.open:
    with tab_views:
        if modality == ALL_FOUR:
            index = cursor[figures.AXIS_NAMES[figures.PLANE_AXIS[plane_2x2]]]
            rgbs = {k: figures.compose_plane(case.images[k].data, plane_2x2, index, windows[k], radiological, layers)
                    for k in case.modalities}
            fig = figures.four_view_figure(rgbs, plane_2x2, cursor, shape, radiological,
                                           spacing_mm=case.spacing_mm)
            st.plotly_chart(fig, config=PLOT_CONFIG, key="viewer_fig_all")
        else:
            image = case.images[modality].data
            view_cols = st.columns(3, gap="small")
            for col, plane in zip(view_cols, ("axial", "coronal", "sagittal"), strict=True):
                index = cursor[figures.AXIS_NAMES[figures.PLANE_AXIS[plane]]]
                rgb = figures.compose_plane(image, plane, index, windows[modality], radiological, layers)
                raw = figures.extract_slice(image, plane, index, radiological)
                title = f"{plane.capitalize()} {figures.AXIS_NAMES[figures.PLANE_AXIS[plane]]}={index}"
                fig = figures.slice_figure(rgb, raw, plane, index, cursor, shape, radiological, title=title,
                                           spacing_mm=case.spacing_mm)
                col.plotly_chart(fig, config=PLOT_CONFIG, key=f"viewer_fig_{plane}")
        st.markdown(f'<div style="font-size:0.85rem;">{legend}</div>', unsafe_allow_html=True)
        show_sources()
        st.caption(cursor_caption())
        if n_label_layers > 1 and show_gt:
            st.caption("With several segmentations shown, the ground truth is drawn as an outline.")

if tab_montage.open:
    with tab_montage:
        c1, c2, c3 = st.columns(3)
        m_plane = c1.selectbox("Plane", figures.PLANES, key="viewer_montage_plane", format_func=str.capitalize)
        count = c2.slider("Slices", 4, 24, 12, 1, key="viewer_montage_count")
        ncols = c3.slider("Columns", 2, 8, 4, 1, key="viewer_montage_cols")
        m_mod = modality if modality != ALL_FOUR else case.modalities[0]
        axis = figures.PLANE_AXIS[m_plane]
        labels_for_extent = gt if gt is not None else pred
        extent = figures.nonzero_extent(labels_for_extent, axis) if labels_for_extent is not None else None
        extent = extent or figures.nonzero_extent(case.images[m_mod].data, axis)
        indices = figures.montage_indices(shape[axis], count, extent)
        window = windows.get(m_mod) or figures.window_from_percentiles(stats.percentiles[m_mod],
                                                                       *figures.AUTO_PERCENTILES)
        st.caption(f"{config.MODALITY_TITLES[m_mod]}, {len(indices)} {m_plane} slices evenly spaced over the "
                   + ("tumour" if labels_for_extent is not None and figures.nonzero_extent(labels_for_extent, axis)
                      else "brain") + f" ({'radiological' if radiological else 'neurological'} convention).")
        fig = figures.montage_figure(case.images[m_mod].data, m_plane, indices, window, radiological, layers, ncols,
                                     spacing_mm=case.spacing_mm)
        st.plotly_chart(fig, config=PLOT_CONFIG, key="viewer_montage_fig")
        st.markdown(f'<div style="font-size:0.85rem;">{legend}</div>', unsafe_allow_html=True)


@st.cache_resource(max_entries=4, show_spinner="Building the 3-D view...")
def _tumour_3d(key: str, _labels: np.ndarray, spacing_mm: tuple[float, float, float], _brain: np.ndarray | None,
               classes: tuple[int, ...]) -> Any:
    return figures.tumour_3d_figure(_labels, spacing_mm, brain=_brain, classes=classes)


if tab_3d.open:
    with tab_3d:
        sources = {name: lab for name, lab in (("Ground truth", gt), ("Prediction", pred),
                                                ("Corrected segmentation", corrected)) if lab is not None}
        if not sources:
            st.info("No segmentation to show in 3-D: this case has no ground truth and no prediction yet.",
                    icon=":material/info:")
        else:
            c1, c2 = st.columns([2, 1], vertical_alignment="bottom")
            src = c1.radio("Segmentation", list(sources), horizontal=True, key="viewer_3d_source")
            outline = c2.checkbox("Brain outline", value=True, key="viewer_3d_brain")
            labels = sources[src]
            key = f"{ui.case_cache_key(case)}:{src}:{outline}:{hash(labels.tobytes()) if src != 'Ground truth' else ''}"
            fig = _tumour_3d(key, labels, tuple(case.spacing_mm), case.reference.data if outline else None, classes)
            st.plotly_chart(fig, config={"displaylogo": False}, key="viewer_3d_fig")
            st.caption("Drag to rotate, scroll to zoom. Surfaces are drawn from block-averaged masks "
                       "(coarser than the voxels) - use the slice views for detail.")

view_url.remember(st.session_state.get(ui.KEY_CURSOR),
                  {k: st.session_state[k] for k in [*view_url.SETTINGS, *view_url.OVERLAY_KEYS] if k in st.session_state})
