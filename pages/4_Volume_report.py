"""Volume report: tumour volumes (NCR, ED, ET and the regions TC, WT) in mL from the header's voxel size and the
number of lesions of each region (``core.analysis.lesionwise.count_lesions``), beside the ground truth when there
is one, with a bar chart and downloads (PDF summary, CSV table, segmentation NIfTI
in the input's own geometry, and a DICOM SEG when the case was opened from DICOM in this session).

Which segmentation (``core.app.ui.current_segmentation``, named by ``segstate.describe_segmentation``): the
hand-corrected labels of this case (from the session, else from this session's saved edit session), else the
model's prediction of this case, else - on request - the expert label (ground truth). Session state read: ``ui.KEY_CASE``, ``ui.KEY_PREDICTION`` + ``ui.KEY_PREDICTION_CASE``,
``ui.KEY_CORRECTED`` + ``ui.KEY_CORRECTED_CASE``, ``ui.KEY_TTA``; the "Segment" button here sets the prediction
keys like the segmentation page does. TensorFlow is imported only when that button is pressed.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pandas as pd
import streamlit as st

from core.analysis.lesionwise import count_lesions
from core.analysis.report import report_file_name, table_csv, volume_table
from core.app import audit, dicom_panel, measurement, segstate, ui
from core.errors import BratsViewerError
from core.views import figures, figures_measure, figures_seg

ui.page_header("Volume report", icon=":material/summarize:")
case = ui.require_case()
case_key = case.content_key
shape = case.shape
gt = case.seg.data if case.seg is not None else None


def _audit(event: str, model_sha: str, **extra: Any) -> None:
    ui.audit_event(case, event, model_sha, **extra)


# ---- which segmentation ----------------------------------------------------------------------------------------
prediction = ui.session_prediction(case)
source = ui.current_segmentation(case, use_ground_truth=bool(st.session_state.get("report_use_gt")))

if source is None or source.kind == segstate.SOURCE_GROUND_TRUTH:
    st.info("No segmentation of this case yet. Run the model here (the same cached segmentation as on the "
            "Segmentation page)" + (", or report the ground-truth volumes." if gt is not None else "."),
            icon=":material/info:")
    c1, c2, _ = st.columns([1, 1, 2])
    tta = ui.use_tta()
    if c1.button("Segment whole volume", type="primary", icon=":material/view_in_ar:", width="stretch",
                 help="Test-time augmentation " + ("on" if tta else "off") + " (set on the Segmentation page)"):
        if ui.segment_volume(case, tta, page="report") is not None:
            st.session_state["report_use_gt"] = False
            st.rerun()
    if gt is not None:
        c2.toggle("Show the ground truth", key="report_use_gt")
    if source is None:
        st.stop()

st.markdown(f"**Segmentation:** {source.description}"
            + (f"  \n**Model SHA-256:** `{source.model_sha256}`" if source.model_sha256 else ""))
if source.kind != segstate.SOURCE_GROUND_TRUTH:
    earlier = ui.earlier_prediction_note(prediction) if source.kind == segstate.SOURCE_PREDICTION else None
    if earlier:
        st.info(earlier, icon=":material/history:")
    if source.corrected:
        st.success("Corrected by hand on the Segmentation page: the report says so.", icon=":material/brush:")
if case.notes:
    st.caption(f"Case note: {case.notes}")
quality = None
if source.kind != segstate.SOURCE_GROUND_TRUTH and getattr(prediction, "quality", None) is not None:
    quality = prediction.quality.to_dict()
    ui.show_quality(prediction)

# ---- volumes ---------------------------------------------------------------------------------------------------
with_gt = gt is not None and source.kind != segstate.SOURCE_GROUND_TRUTH
rows = volume_table(source.labels, case.spacing_mm, gt if with_gt else None, voxel_volume_ml=case.voxel_volume_ml)
lesions = count_lesions(source.labels, case.spacing_mm)  # WT, TC, ET: the region rows
gt_lesions = count_lesions(gt, case.spacing_mm) if with_gt else {}
spacing = " x ".join(f"{s:g}" for s in case.spacing_mm)
st.subheader("Volumes")
st.caption(f"Voxel size {spacing} mm from the image header ({case.reference.voxel_volume_ml * 1000:g} mm^3 per "
           "voxel); 1 mL = 1000 mm^3, rounded to 0.1 mL.")
source_name = {"corrected": "Corrected", "prediction": "Model prediction", "ground_truth": "Reference label"}[source.kind]
SHORT_NAMES = {"NCR": "NCR/NET (label 1)", "ED": "ED (label 2)", "ET": "ET (label 4)", "TC": "TC (labels 1+4)",
               "WT": "WT (labels 1+2+4)"}
def _count_text(n: int | None) -> str:
    """A lesion count as shown: the number, or an en dash where none is counted (a bare None read "None")."""
    return "\u2013" if n is None else str(int(n))


# The table spans the page (its lesion columns need the width); the chart sits below it.
table = pd.DataFrame({
    "Structure": [SHORT_NAMES.get(r["structure"], r["structure"]) for r in rows],
    "Voxels": [r["voxels"] for r in rows],
    f"{source_name} (mL)": [r["volume_ml"] for r in rows],
    **({"Ground truth (mL)": [r["gt_volume_ml"] for r in rows],
        "Difference (mL)": [r["difference_ml"] for r in rows]} if with_gt else {}),
    "Lesions": [_count_text(lesions.get(r["structure"])) for r in rows],
    **({"Ground-truth lesions": [_count_text(gt_lesions.get(r["structure"])) for r in rows]} if with_gt else {}),
})
st.dataframe(table, hide_index=True, width="stretch",
             column_config={c: st.column_config.TextColumn(alignment="right") if "lesions" in c.lower()
                            else st.column_config.NumberColumn(format="%.1f") for c in table.columns[2:]})
st.caption("NCR/NET: necrotic / non-enhancing core; ED: peritumoral edema; ET: enhancing tumour (label and "
           "region); TC: tumour core; WT: whole tumour. Lesions: 3-D connected components (26-connected) of "
           "each region (ET, TC, WT), however small; \u2013: not counted for a single label.")
c_col, _ = st.columns([1, 1])
with c_col:
    st.plotly_chart(figures_seg.volume_bar_figure(rows, source_name), config={"displaylogo": False},
                    key="report_bar_fig")

scores = None
if with_gt:
    scores = ui.cached_scores(case, source.labels)
    st.subheader("Agreement with the ground truth")
    if (seen := ui.training_case_note(case.case_id)) is not None:
        st.warning(seen, icon=":material/school:")
    score_table = pd.DataFrame([{"Region": region, "Dice": s.dice, "HD95 (mm)": s.hd95_mm,
                                 "Sensitivity": s.sensitivity, "Precision": s.precision}
                                for region, s in scores.regions.items()])
    st.dataframe(score_table, hide_index=True,
                 column_config={"Dice": st.column_config.NumberColumn(format="%.3f"),
                                "HD95 (mm)": st.column_config.NumberColumn(format="%.1f"),
                                "Sensitivity": st.column_config.NumberColumn(format="%.3f"),
                                "Precision": st.column_config.NumberColumn(format="%.3f")})

# ---- RANO-style measurement of enhancing tumour -----------------------------------------------------------------
st.subheader("Enhancing tumour: bidimensional measurement (RANO-style)")
try:
    rano = measurement.cached_rano(case, source.labels)
except BratsViewerError as err:
    st.error(f"Cannot measure this segmentation: {err}", icon=":material/error:")
    rano = None
if rano is not None and not rano.lesions:
    st.info("No enhancing tumour (label 4) in this segmentation: nothing to measure.", icon=":material/straighten:")
elif rano is not None:
    if rano.targets:
        parts = " + ".join(f"lesion {t.index}: {t.product_mm2:.0f}" for t in rano.targets)
        st.markdown(f"**Sum of the products of the target lesions:** {rano.sum_products_mm2:.0f} mm² ({parts})")
    else:
        st.markdown("**No measurable lesion** (both diameters ≥ 10 mm): no target lesion, no sum of products.")
    st.dataframe(pd.DataFrame(figures_measure.lesion_rows(rano)), hide_index=True, width="stretch")
    m_table, m_fig = st.columns([1, 1.4], gap="large")
    with m_table:
        shown = st.selectbox("Lesion drawn", [les.index for les in rano.lesions], key="report_rano_lesion",
                             format_func=lambda i: f"Lesion {i} (axial slice z = {rano.lesions[i - 1].slice_z})")
        st.caption("Each enhancing lesion is a 3-D connected component of label 4, measured on the axial slice where "
                   "it is largest: the longest diameter (yellow) and the longest diameter perpendicular to it "
                   "(cyan), in mm from the voxel size. Measurable: both ≥ 10 mm; targets: up to two measurable "
                   "lesions with the largest products (RANO 2.0). Slices count from 0, as in the viewer. The "
                   "picture opens zoomed on the lesion (double-click: back to this view). An automatic "
                   "measurement: a response assessment also needs a reader and clinical data.")
    with m_fig:
        bg = next((k for k in ("t1ce", "flair") if k in case.images), case.modalities[0])
        window = figures.window_from_percentiles(ui.case_display_stats(case).percentiles[bg],
                                                 *figures.AUTO_PERCENTILES)
        st.plotly_chart(figures_measure.measurement_figure(case.images[bg].data, source.labels, rano, shown, window,
                                                           spacing_mm=case.spacing_mm),
                        config={"displaylogo": False}, key="report_rano_fig")

# ---- downloads -------------------------------------------------------------------------------------------------
st.subheader("Downloads")
notes = "TTA on" if source.kind == segstate.SOURCE_PREDICTION and getattr(prediction, "tta", False) else ""
kind_extra = {"source": source.kind, "corrected": source.corrected,
              "labels_digest": segstate.labels_digest(source.labels)}


def _audited(event: str, build: Callable[[], bytes]) -> Callable[[], bytes]:
    """Build a download's bytes when it is requested and record the export then. The buttons do not rerun
    the page (``on_click="ignore"``): a rerun racing the download can drop the deferred file."""

    def data() -> bytes:
        payload = build()
        try:
            audit.append_event(event, case.case_id, case.input_hashes(), source.model_sha256, extra=kind_extra)
        except (BratsViewerError, OSError):
            pass  # runs outside the script: nothing to show; the download itself must not fail
        return payload

    return data


csv_bytes = table_csv(rows, case.case_id)
d1, d2, d3 = st.columns(3)
d1.download_button("PDF summary", data=_audited("export_pdf", lambda: segstate.report_pdf_bytes(case, source, scores, notes, quality)),
                   file_name=report_file_name(case.case_id, "report.pdf"), mime="application/pdf",
                   icon=":material/picture_as_pdf:", width="stretch", key="report_dl_pdf", on_click="ignore")
d2.download_button("Volume table (CSV)", data=_audited("export_csv", lambda: csv_bytes),
                   file_name=report_file_name(case.case_id, "volumes.csv"), mime="text/csv",
                   icon=":material/table:", width="stretch", key="report_dl_csv", on_click="ignore")
d3.download_button("Segmentation (NIfTI)",
                   data=_audited("export_nifti", lambda: segstate.nifti_download_bytes(case, source.labels)),
                   file_name=report_file_name(case.case_id, "seg.nii.gz"), mime="application/gzip",
                   icon=":material/download:", width="stretch", key="report_dl_nifti", on_click="ignore")
dicom_panel.seg_download(case, source.labels, source.kind, source.model_name, source.model_sha256,
                         report_file_name(case.case_id, "seg.dcm"), _audited)
st.caption("The PDF and the NIfTI file are built when you press their button. The NIfTI file is written in the "
           f"input's own orientation and label convention (BraTS {case.label_convention}: enhancing tumour = "
           f"{3 if case.label_convention == '2023' else 4}).")
