"""The Case browser's DICOM tab: upload a zip (or pick a folder inside the data roots), see the series with
their sequence guesses and refusals, set the sequences, convert, download the NIfTI files, open them as a case.

All the work is in ``core.data.dicom``; this module only lays out widgets. Patient identifiers never reach the
page, the session's case, the downloads or the audit log, with one exception the user asks for: when a case is
opened, the headers of the series it lies on (no pixel data) are kept in this session's memory
(``KEY_SEG_SOURCE``, never on disk) so that the Volume report can offer the labels as a DICOM SEG, which carries
the study's patient module as DICOM requires (``core.data.dicom_seg``).
"""

from __future__ import annotations

import hashlib
import tempfile
from collections.abc import Callable
from typing import Any

import pandas as pd
import streamlit as st

from core.app import ui
from core.data import dicom, dicom_seg, roots
from core.data.cases import Case, assemble_case
from core.errors import BratsViewerError, DicomError

KEY_STUDY = "dicom_study"  # (source id, dicom.Study) read in this session
KEY_FLASH = "dicom_flash"  # message shown once after the case was opened
KEY_SEG_SOURCE = "dicom_seg_source"  # (case content key, dicom_seg.SourceSeries or why there is none)
# How the labels were made -> DICOM Segment Algorithm Type (PS3.3 C.8.20.2.3).
ALGORITHM_TYPE_BY_SOURCE: dict[str, str] = {"prediction": "AUTOMATIC", "corrected": "SEMIAUTOMATIC",
                                            "ground_truth": "MANUAL"}
SOURCE_ZIP, SOURCE_FOLDER = "Upload a zip", "Folder in the data roots"
_CHOICES = ("flair", "t1", "t1ce", "t2", "none", "skip")
_CHOICE_HELP = "flair / t1 / t1ce / t2; none: keep it as series-<n>; skip: leave it out"


def _read_zip(blob: bytes) -> dicom.Study:
    with tempfile.NamedTemporaryFile(prefix="dicom-", suffix=".zip") as fh:  # a generated name, never the upload's
        fh.write(blob)
        fh.flush()
        return dicom.read_source(fh.name)


def _load_source() -> tuple[str, dicom.Study] | None:
    """The study of this session (read once per source), or None."""
    source = st.radio("DICOM source", [SOURCE_ZIP, SOURCE_FOLDER], horizontal=True, key="dicom_source")
    held = st.session_state.get(KEY_STUDY)
    if source == SOURCE_ZIP:
        up = st.file_uploader("Zip of one DICOM study", type=["zip"], key="dicom_zip",
                              help="One study, several series; folders inside the zip are fine.")
        if up is None:
            return None
        blob = up.getvalue()
        sid = "zip:" + hashlib.sha256(blob).hexdigest()
        if held and held[0] == sid:
            return held
        with st.spinner("Reading the DICOM files..."):
            study = _read_zip(blob)
    else:
        folder = ui.pick_folder_in_roots("dicom", "Sub-folder with the DICOM files")
        if folder is None:
            return held if held and str(held[0]).startswith("folder:") else None
        sid = f"folder:{folder}"
        with st.spinner("Reading the DICOM files..."):
            study = dicom.read_source(folder)
    st.session_state[KEY_STUDY] = (sid, study)
    return sid, study


def _table(study: dicom.Study) -> tuple[pd.DataFrame, pd.DataFrame]:
    names = dicom.resolve_names(study)
    usable, refused = [], []
    # listed by series number (as a PACS lists them), series without one last; the study keeps UID order
    for s in sorted(study.series, key=lambda s: (s.series_number is None, s.series_number or 0, str(s.n), s.index)):
        row: dict[str, Any] = {"Series": str(s.n), **({"Study": s.study} if study.n_studies > 1 else {}),
                               "Description": s.description or s.protocol, "Files": s.n_files,
                               "Guess": s.guess or "-"}
        if s.usable and s.shape and s.spacing_mm:
            name = names[s.index][0]
            row.update({"Shape": " x ".join(map(str, s.shape)),
                        "Voxel (mm)": " x ".join(f"{v:.3g}" for v in s.spacing_mm),
                        "Sequence": name if name in dicom.SEQUENCES else "none",
                        "Note": "; ".join([names[s.index][1], *s.warnings])})
            usable.append(row)
        else:
            row["Reason"] = s.refusal
            refused.append(row)
    return pd.DataFrame(usable), pd.DataFrame(refused)


def keep_seg_source(study: dicom.Study, overrides: dict[str, str], case: Case, sid: str) -> None:
    """Keep, in this session's memory only, the headers of the series the opened case lies on (or why not)."""
    held: dicom_seg.SourceSeries | str
    try:
        s, _same = dicom_seg.pick_series(study, match=case.reference, names=dicom.resolve_names(study, overrides))
        if sid.startswith("zip:"):
            up = st.session_state.get("dicom_zip")
            blob = up.getvalue() if up is not None else b""
            if "zip:" + hashlib.sha256(blob).hexdigest() != sid:
                raise DicomError("the uploaded zip is no longer at hand: upload it again to export a DICOM SEG")
            held = dicom_seg.series_headers(blob, s.uid)
        else:
            held = dicom_seg.series_headers(list(s.files), s.uid)
    except (BratsViewerError, OSError) as err:
        held = str(err).splitlines()[0] or type(err).__name__
    st.session_state[KEY_SEG_SOURCE] = (case.content_key, held)


def seg_source_for(case: Case) -> dicom_seg.SourceSeries | str | None:
    """The source series kept for ``case`` (or the reason there is none), None when it was not opened from DICOM
    in this session."""
    held = st.session_state.get(KEY_SEG_SOURCE)
    if not held or held[0] != case.content_key:
        return None
    return held[1]


def seg_download_bytes(case: Case, labels: Any, source_kind: str, model_name: str = "",
                       model_sha256: str = "", series: dicom_seg.SourceSeries | str | None = None) -> bytes:
    """The labels (internal 0/1/2/4 on the case grid) as a DICOM SEG referencing the case's source series.

    ``series``: the source series (``seg_source_for``, read during the script run); when None it is looked up in
    this session's state, which only works inside a script run, never in a deferred download callable.

    Raises:
        DicomError: the case has no source series in this session, or nothing to export.
    """
    if series is None:
        series = seg_source_for(case)
    if not isinstance(series, dicom_seg.SourceSeries):
        raise DicomError(series or "expected a case opened from DICOM in this session, got another case")
    blob, _info = dicom_seg.seg_bytes(
        series, labels, case.reference.affine, algorithm_type=ALGORITHM_TYPE_BY_SOURCE.get(source_kind, "AUTOMATIC"),
        algorithm_name=model_name or "BraTS viewer segmentation model", algorithm_version=model_sha256[:64])
    return blob


def seg_download(case: Case, labels: Any, source_kind: str, model_name: str, model_sha256: str, file_name: str,
                 wrap: Callable[[str, Callable[[], bytes]], Callable[[], bytes]] | None = None) -> None:
    """The DICOM SEG download (or why there is none) for a case opened from DICOM in this session; nothing
    otherwise. ``wrap(event, build)`` may wrap the deferred build (the report page records the export).

    The build runs when the button is pressed, outside the script run, where ``st.session_state`` is out of
    reach: it closes over the source series and the labels read here, and touches no session state."""
    series = seg_source_for(case)
    if series is None:
        return
    if isinstance(series, str):
        st.caption(f"DICOM SEG not available for this case: {series}")
        return
    import numpy as np

    if not np.isin(np.asarray(labels), (1, 2, 4)).any():
        st.caption("DICOM SEG: this segmentation holds no tumour label, so there is no segment to export.")
        return

    held = series  # read in this script run; the deferred build must not look it up again

    def build() -> bytes:
        return seg_download_bytes(case, labels, source_kind, model_name, model_sha256, series=held)

    st.download_button("Segmentation (DICOM SEG)", data=wrap("export_dicom_seg", build) if wrap else build,
                       file_name=file_name, mime="application/dicom", icon=":material/download:",
                       key="report_dl_dicom_seg", on_click="ignore")
    number = series.series_number if series.series_number is not None else "?"
    kind = ALGORITHM_TYPE_BY_SOURCE.get(source_kind, "AUTOMATIC").lower()
    st.caption(f"The DICOM SEG references series {number} ({series.description or 'no description'}, "
               f"{len(series.datasets)} images), the series this case lies on: one segment per label present, "
               f"frames on its own slices, algorithm type {kind}. {dicom_seg.SEG_PHI_NOTE}")


def dicom_tab() -> None:
    """The whole DICOM tab."""
    st.markdown("Convert one DICOM study (a zip of its files, or a folder inside the data roots) to NIfTI: one "
                "image per usable series, named by its sequence. Series that are not one consistent 3-D stack "
                "(localisers, mixed orientations, missing slices) are listed with the reason.")
    st.info(dicom.PHI_NOTE, icon=":material/shield_person:")
    st.caption("A case opened from here can be exported from the Volume report as a DICOM SEG for your PACS; "
               "the headers of its series are kept in this browser session's memory for that (never on disk). "
               + dicom_seg.SEG_PHI_NOTE)
    flash = st.session_state.pop(KEY_FLASH, None)
    if flash:
        st.success(flash, icon=":material/check_circle:")
    try:
        loaded = _load_source()
    except BratsViewerError as err:
        st.error(roots.redact_paths(str(err)).splitlines()[0], icon=":material/error:")
        return
    if loaded is None:
        return
    sid, study = loaded
    usable, refused = _table(study)
    st.caption(f"{len(study.series)} series in {study.dicom_files} DICOM files"
               + (f"; {study.skipped_files} other files skipped" if study.skipped_files else "")
               + (f"; {study.duplicate_files} exact duplicate files dropped" if study.duplicate_files else ""))
    if study.n_studies > 1:
        st.warning(study.studies_note()[0].upper() + study.studies_note()[1:] + ". Open one study at a time as a "
                   "case (set the others to skip).", icon=":material/group:")
    edited = None
    if len(usable):
        edited = st.data_editor(
            usable, hide_index=True, width="stretch", key=f"dicom_editor_{sid[-16:]}",
            disabled=[c for c in usable.columns if c != "Sequence"],
            column_config={"Sequence": st.column_config.SelectboxColumn("Sequence", options=list(_CHOICES),
                                                                        required=True, help=_CHOICE_HELP)},
        )
    if len(refused):
        st.markdown("**Refused series**")
        st.dataframe(refused, hide_index=True, width="stretch")
    if edited is None:
        st.warning("No series of this study can be converted.", icon=":material/warning:")
        return
    overrides = {str(n): str(v) for n, v in zip(edited["Series"], edited["Sequence"], strict=True)}
    try:
        dicom.resolve_names(study, overrides)
    except BratsViewerError as err:
        st.error(roots.redact_paths(str(err)), icon=":material/error:")
        return
    c1, c2 = st.columns(2)
    c1.download_button("Download the NIfTI files (zip)", data=lambda: dicom.conversion_zip(study, overrides),
                       file_name="dicom_converted.zip", mime="application/zip", icon=":material/download:",
                       key="dicom_download", width="stretch")
    if c2.button("Open as a case", type="primary", icon=":material/open_in_new:", key="dicom_open", width="stretch"):
        try:
            with st.spinner("Converting..."):
                images, note = dicom.open_as_case_volumes(study, overrides)
                case_id = "dicom-" + hashlib.sha256("".join(sorted(v.sha256 for v in images.values()))
                                                    .encode()).hexdigest()[:10]
                case = assemble_case(case_id, images, source="upload", notes=note)
        except BratsViewerError as err:
            st.error(roots.redact_paths(str(err)), icon=":material/error:")
            return
        from core.app import audit, ui

        try:
            audit.append_event("dicom_convert", case_id, {k: v.sha256 for k, v in images.items()},
                               extra={"series": len(study.series), "opened": sorted(images),
                                      "refused": int(sum(1 for s in study.series if not s.usable))})
        except (BratsViewerError, OSError) as err:
            st.warning(f"The audit log could not be written: {err}")
        ui.select_uploaded_case(case, "dicom")
        keep_seg_source(study, overrides, case, sid)
        st.session_state[KEY_FLASH] = (f"Case `{case_id}` ({', '.join(k.upper() for k in images)}) is ready; "
                                             "it is kept in this browser session only.")
        st.rerun()
