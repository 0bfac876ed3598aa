"""Follow-up comparison: two studies of one patient, the follow-up registered rigidly to the baseline, linked
side-by-side views with one slice control, the volume and bidimensional-product table, the suggested response
category with its caveat, and the PDF. Logic in core.analysis.compare, core.views.followup and core.app.followup."""

from __future__ import annotations

import pandas as pd
import streamlit as st

from core import config
from core.analysis.compare import CAVEAT, STRUCTURE_NAMES, Change, focus_voxel
from core.analysis.report_followup import build_followup_pdf, followup_file_name
from core.app import followup, ui
from core.data import roots
from core.errors import BratsViewerError
from core.views import figures
from core.views.followup import common_modalities, linked_pair

ui.page_header("Follow-up comparison", icon=":material/compare_arrows:")
st.markdown("Compare a **baseline** and a **follow-up** study of one patient: the follow-up is registered to the "
            "baseline (rigid), both are shown on the baseline's grid with one slice control, and the volumes and "
            "bidimensional products are compared. Each study needs a segmentation: its own, a label file "
            "uploaded here, or the model's (a study without one is offered a Segment button).")

options, problems = followup.study_options()
for line in problems:
    st.error(line)
if len(options) < 2:
    st.info("Two studies are needed. Pick a data folder holding both studies in the **Case browser**, or upload "
            "one of them there.", icon=":material/info:")
    st.page_link("pages/1_Case_browser.py", label="Go to the case browser", icon=":material/folder_open:")
    st.stop()

by_id = {o.option_id: o for o in options}
ids = list(by_id)
first = followup.default_choice(options)
col_a, col_b = st.columns(2, gap="large")
with col_a:
    base_id = st.selectbox("Baseline study", ids, index=first, format_func=lambda i: by_id[i].label,
                           key="followup_baseline")
    seg_a_file = st.file_uploader("Baseline segmentation (optional; default: the study's own)", type=["nii", "gz"],
                                  key="followup_seg_a")
with col_b:
    follow_id = st.selectbox("Follow-up study", ids, index=followup.default_followup(options, first),
                             format_func=lambda i: by_id[i].label,
                             key="followup_followup")
    seg_b_file = st.file_uploader("Follow-up segmentation (optional; default: the study's own)", type=["nii", "gz"],
                                  key="followup_seg_b")
modality = st.selectbox("Register on", [None, *config.MODALITIES], key="followup_modality",
                        format_func=lambda k: "Automatic (T1CE, else FLAIR)" if k is None else config.MODALITY_TITLES[k])

if base_id == follow_id:
    st.warning("Choose two different studies.", icon=":material/warning:")
    st.stop()
try:
    baseline = followup.load_study(by_id[base_id])
    follow_case = followup.load_study(by_id[follow_id])
    seg_a = followup.segmentation_upload(seg_a_file)
    seg_b = followup.segmentation_upload(seg_b_file)
except BratsViewerError as err:
    st.error(roots.redact_paths(str(err)))
    st.stop()

# A study without a segmentation of its own and no label file: the model's, made here on request.
missing = False
for role, case, seg_file, slot in (("baseline", baseline, seg_a, "a"), ("follow-up", follow_case, seg_b, "b")):
    if seg_file is not None or case.seg is not None:
        continue
    prediction = followup.model_segmentation(case)
    if prediction is not None:
        volume = followup.prediction_volume(case, prediction)
        if slot == "a":
            seg_a = volume
        else:
            seg_b = volume
        st.caption(f"The {role} study `{case.case_id}` has no segmentation of its own: its volumes come from the "
                   f"{volume.source_name} (computed on request; review it before relying on the numbers).")
        continue
    missing = True
    w1, w2 = st.columns([3, 1], vertical_alignment="center")
    w1.warning(f"The {role} study `{case.case_id}` has no segmentation of its own: segment it with the model, or "
               "upload a label file above.", icon=":material/warning:")
    if w2.button(f"Segment the {role} study", key=f"followup_segment_{slot}", icon=":material/neurology:",
                 width="stretch"):
        if followup.segment_study(case) is not None:
            st.rerun()
if missing:
    st.stop()

request = followup.request_key(baseline, follow_case, seg_a, seg_b, modality)
if st.button("Compare", type="primary", icon=":material/compare_arrows:", key="followup_run"):
    try:
        followup.run_comparison(baseline, follow_case, seg_a, seg_b, modality)
    except BratsViewerError as err:
        st.error(roots.redact_paths(str(err)))
        st.stop()
comparison = followup.session_comparison(request)
if comparison is None:
    st.info("Press **Compare** to register the follow-up to the baseline (a few seconds per study pair).",
            icon=":material/info:")
    st.stop()

# ---- registration ----------------------------------------------------------------------------------------
reg = comparison.registration
st.subheader("Registration")
m1, m2, m3, m4 = st.columns(4)
m1.metric("Registered on", config.MODALITY_TITLES[reg.modality])
m2.metric("Translation (mm)", ", ".join(f"{round(v, 1) + 0.0:+.1f}" for v in reg.translation_mm))  # no "-0.0"
m3.metric("Rotation (degrees)", ", ".join(f"{round(v, 1) + 0.0:+.1f}" for v in reg.rotation_deg))
m4.metric("Alignment (correlation in brain)", f"{reg.ncc:.2f}",
          help=f"Normalised cross-correlation of the baseline and the registered follow-up inside the baseline "
               f"brain (brain overlap Dice {reg.brain_dice:.2f}; final Mattes mutual information "
               f"{reg.final_metric:.3f}). Below the threshold the comparison is refused.")

st.caption(f"Final Mattes mutual information {reg.final_metric:.3f} (lower is better); brain overlap Dice "
           f"{reg.brain_dice:.2f}; translation and rotation map the baseline onto the follow-up (RAS, mm).")

# ---- linked views ------------------------------------------------------------------------------------------
st.subheader("Side by side (follow-up registered onto the baseline grid)")
shape = comparison.baseline.shape
focus = dict(zip(figures.AXIS_NAMES, focus_voxel(comparison), strict=True))
c1, c2, c3 = st.columns([2, 2, 1], vertical_alignment="bottom")
plane = c1.radio("Plane", list(figures.PLANES), horizontal=True, key="followup_plane")
shown = c2.selectbox("Image", list(common_modalities(comparison)), key="followup_image",
                     format_func=lambda k: config.MODALITY_TITLES[k])
overlay = c3.toggle("Labels", value=True, key="followup_overlay")
axis = figures.PLANE_AXIS[plane]
slider_key = f"followup_slice_{plane}"
index = st.slider(f"{plane.capitalize()} slice (counted from 0)", 0, shape[axis] - 1,
                  value=int(focus[figures.AXIS_NAMES[axis]]), key=slider_key)
wins = followup.windows(request, comparison, shown)
left, right = linked_pair(comparison, plane, index, shown, overlay=overlay, windows=wins)
letters = figures.orientation_letters(plane)
caption = f"{letters['left']} on the left, {letters['top']} at the top"
v1, v2 = st.columns(2)
v1.image(left, caption=f"Baseline {comparison.baseline.case_id} - {plane} {index} ({caption})", width="stretch")
v2.image(right, caption=f"Follow-up {comparison.followup.case_id} (registered) - {plane} {index}", width="stretch")
st.markdown(" &nbsp; ".join(f'<span style="color:{colour}">&#9632;</span> {name}'
                            for name, colour in figures.legend_items()), unsafe_allow_html=True)


# ---- table and category --------------------------------------------------------------------------------------
def _row(name: str, c: Change, digits: int) -> dict[str, object]:
    return {"Structure": name, "Baseline": round(c.baseline, digits), "Follow-up": round(c.followup, digits),
            "Change": round(c.change, digits) + 0.0,  # + 0.0: no "-0"
            "Change (%)": "undefined (baseline 0)" if c.change_pct is None else f"{round(c.change_pct, 1) + 0.0:+.1f} %"}


st.subheader("Volumes and bidimensional products")
rows = [_row(f"{STRUCTURE_NAMES[c.name]} (mL)", c, 2) for c in comparison.volumes]
rows.append(_row("Sum of products of enhancing tumour (mm²)", comparison.products, 0))
st.dataframe(pd.DataFrame(rows), hide_index=True, width="stretch")
sources = comparison.label_sources
st.caption(f"Segmentations: baseline - {sources.get('baseline', '?')}; follow-up - {sources.get('followup', '?')}. "
           "Volumes from each study's segmentation and voxel size; products from the RANO-style measurement "
           f"(axial slices of each study's own grid). New measurable enhancing lesions: {comparison.new_lesions}.")

st.subheader("Response category the numbers suggest")
response = comparison.response
st.info(f"**{response.category} - {response.name}**: " + "; ".join(response.reasons), icon=":material/insights:")
st.warning(CAVEAT + ".", icon=":material/warning:")
st.download_button("Download the follow-up report (PDF)", data=lambda: build_followup_pdf(comparison),
                   file_name=followup_file_name(comparison), mime="application/pdf", icon=":material/download:",
                   key="followup_pdf")
