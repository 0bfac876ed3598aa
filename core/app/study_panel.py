"""The Case browser's raw-study tab: a folder of NIfTI series inside the data roots (skull on, each on its own
grid) is listed with its sequence guesses, the user may change them, and ``core.data.study`` brings it to BraTS
space with a progress bar; the result opens as a case of this session.

All the work is in ``core.data.study``; this module only lays out widgets. Outputs go to a fresh folder under
the work folder (``preprocessed/``), never to a path made from a file name.
"""

from __future__ import annotations

import hashlib
import tempfile
from pathlib import Path

import pandas as pd
import streamlit as st

from core.app import ui
from core.config import MODALITY_TITLES, work_dir
from core.data import roots, study
from core.data.cases import load_case_folder
from core.errors import BratsViewerError

KEY_FILES = "study_files"  # (folder, StudyFiles) read in this session
KEY_FLASH = "study_flash"  # message shown once after the case was opened
_CHOICES = ("flair", "t1", "t1ce", "t2", "skip")


def _pick_folder() -> tuple[Path, study.StudyFiles] | None:
    held = st.session_state.get(KEY_FILES)
    folder = ui.pick_folder_in_roots("study", "Sub-folder with the NIfTI series")
    if folder is None:
        return held
    files = study.find_series(folder)
    st.session_state[KEY_FILES] = (folder, files)
    return folder, files


def study_tab() -> None:
    """The whole raw-study tab."""
    st.markdown("Bring a raw study to BraTS space: one NIfTI file per sequence as a converter writes it (each on its "
                "own grid, skull on, scanner orientation). The sequences are co-registered to the T1CE, registered "
                "to the SRI24 atlas, resampled to the 1 mm BraTS grid and brain-extracted (about half a minute). A "
                "study already in BraTS space is taken as it is. To write a segmentation back onto the original "
                "series, use `python -m core preprocess` and `segment --native-study` (docs/raw-studies-and-dicom.md).")
    flash = st.session_state.pop(KEY_FLASH, None)
    if flash:
        st.success(flash, icon=":material/check_circle:")
    try:
        picked = _pick_folder()
    except (BratsViewerError, FileNotFoundError, NotADirectoryError) as err:
        st.error(roots.redact_paths(str(err)).splitlines()[0], icon=":material/error:")
        return
    if picked is None:
        return
    folder, files = picked
    rows = [{"File": p.name, "Sequence": seq} for seq, p in files.series.items()]
    rows += [{"File": name, "Sequence": "skip"} for name in files.ignored]
    if not rows:
        st.warning("No NIfTI file in this folder.", icon=":material/warning:")
        return
    # a line between the folder pickers and the table: the table's hover toolbar otherwise covers "Read folder"
    st.caption(f"{len(rows)} NIfTI file{'s' if len(rows) != 1 else ''} in `{roots.display_name(folder)}`: check "
               "the sequence of each below.")
    edited = st.data_editor(
        pd.DataFrame(rows), hide_index=True, width="stretch", key="study_editor",
        disabled=["File"],
        column_config={"Sequence": st.column_config.SelectboxColumn(
            "Sequence", options=list(_CHOICES), required=True, help="flair / t1 / t1ce / t2; skip: leave it out")},
    )
    chosen: dict[str, Path] = {}
    for name, seq in zip(edited["File"], edited["Sequence"], strict=True):
        if seq == "skip":
            continue
        if seq in chosen:
            st.error(f"Two files are set to {MODALITY_TITLES[seq]}: choose one.", icon=":material/error:")
            return
        chosen[str(seq)] = folder / str(name)
    if not st.button("Preprocess and open as a case", type="primary", icon=":material/open_in_new:",
                     key="study_run"):
        return
    bar = st.progress(0.0, text="starting")
    base = work_dir() / "preprocessed"
    base.mkdir(parents=True, exist_ok=True)
    out = Path(tempfile.mkdtemp(prefix="study-", dir=base))
    case_id = "study-" + hashlib.sha256(str(folder).encode()).hexdigest()[:10]
    try:
        def progress(fraction: float, message: str) -> None:
            bar.progress(min(1.0, max(0.0, fraction)), text=message)

        result = study.preprocess_study(chosen, out, case_id, progress=progress)
        case = load_case_folder(result.case_dir, required=())
    except BratsViewerError as err:
        st.error(roots.redact_paths(str(err)).splitlines()[0], icon=":material/error:")
        return
    from core.app import audit, ui

    try:
        audit.append_event("study_preprocess", case.case_id, case.input_hashes(),
                           extra={"passthrough": bool(result.record.get("passthrough")),
                                  "sequences": sorted(result.images), "time_s": result.record["time_s"]})
    except (BratsViewerError, OSError) as err:
        st.warning(f"The audit log could not be written: {err}")
    ui.select_uploaded_case(case, "study")
    how = ("already in BraTS space: taken untouched" if result.record.get("passthrough")
           else f"preprocessed in {result.record['time_s']['total']:.0f} s")
    st.session_state[KEY_FLASH] = (f"Case `{case.case_id}` ({', '.join(MODALITY_TITLES[s] for s in result.images)}) "
                                   f"is ready, {how}; it is kept in this browser session only.")
    st.rerun()
