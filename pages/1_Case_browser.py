"""Case browser: cases of the data folder (or the bundled demo), uploads, and a summary of the selected case."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pandas as pd
import streamlit as st

from core import config
from core.analysis import metrics
from core.app import dicom_panel, study_panel, ui
from core.app.engine import check_modalities
from core.data import roots
from core.errors import BratsViewerError
from core.views import figures, viewer

ui.page_header("Case browser", icon=":material/folder_open:")

SOURCE_DEMO, SOURCE_FOLDER = "Bundled demo", "Data folder"
CHECKS_KEY = "browser_upload_checks"  # sha256 of an upload's bytes -> viewer.UploadCheck (this session only)
TABLE_IDS_KEY = "browser_table_ids"  # (folder, [(case id, case key)] in table order) of the table shown
FLASH_KEY = "browser_flash"  # message shown once after a rerun
PICK_SEEN_KEY = "browser_pick_seen"  # the selected case's key the "Case" dropdown last followed


def folder_table(folder: Path) -> None:
    """Searchable, sortable table of the cases under ``folder`` and the controls to open one."""
    try:
        rows = ui.list_cases(str(folder))
    except (BratsViewerError, OSError) as err:
        st.error(roots.redact_paths(str(err)))
        return
    if not rows:
        st.info(f"No BraTS cases (e.g. `<id>_flair.nii.gz`, `<id>-t2f.nii.gz`) found under `{roots.display_name(folder)}`.",
                icon=":material/info:")
        return
    query = st.text_input("Search case id", placeholder="e.g. 00014", key="browser_search")
    table = pd.DataFrame(rows)
    if query.strip():
        matched = table[table["case_id"].str.contains(query.strip(), case=False, regex=False)]
        if matched.empty:  # never filter the list (and the Open button) away without saying so
            h1, h2 = st.columns([4, 1], vertical_alignment="center")
            h1.warning(f"No case matches '{query.strip()}': "
                       + ("the only case is listed below." if len(rows) == 1 else f"all {len(rows)} cases are listed "
                          "below."), icon=":material/search_off:")
            h2.button("Clear search", icon=":material/backspace:", on_click=_clear_search, width="stretch")
        else:
            table = matched
    # in three quarters of the width: the table's toolbar (shown on hover, top right) covered the caption's end
    st.columns([3, 1])[0].caption(f"{len(table)} of {len(rows)} cases. Click any cell of a row (or its checkbox) "
                                  "to open that case, or choose it under Case and press Open case; click a column "
                                  "header to sort.")
    picks = [(str(i), str(k)) for i, k in zip(table["case_id"], table["key"], strict=True)]
    st.session_state[TABLE_IDS_KEY] = (str(folder), picks)  # what the rows of the table are, for the callback
    cols = [c for c in ("case_id", "location", "modalities", "ground_truth", "shape", "voxel_mm", "error")
            if c in table]
    st.dataframe(
        table[cols], hide_index=True, width="stretch", on_select=_on_table_pick,
        selection_mode=["single-row", "single-cell"],  # a click on a cell opens its row's case too
        key="browser_table",
        column_config={
            "case_id": st.column_config.TextColumn("Case"),
            "location": st.column_config.TextColumn("Folder", help="Folder of the case, relative to the data folder"),
            "modalities": st.column_config.TextColumn("Modalities"),
            "ground_truth": st.column_config.CheckboxColumn("Ground truth"),
            "shape": st.column_config.TextColumn("Shape (voxels)"),
            "voxel_mm": st.column_config.TextColumn("Voxel size (mm)"),
        },
    )
    if picks:
        sel = st.session_state.get(ui.KEY_CASE) or {}
        keys = [k for _, k in picks]
        id_of = dict((k, i) for i, k in picks)
        repeated = {i for i in id_of.values() if list(id_of.values()).count(i) > 1}
        current = None
        if sel.get("folder") == str(folder):  # a case opened by a link or a reload may carry its id only
            current = sel.get("key") or next((k for i, k in picks if i == sel.get("case_id")), None)
        if current in keys and st.session_state.get(PICK_SEEN_KEY) != current:
            st.session_state["browser_pick"] = current  # the dropdown names the case opened (table, URL, ...)
        st.session_state[PICK_SEEN_KEY] = current
        c1, c2 = st.columns([3, 1], vertical_alignment="bottom")
        choice = c1.selectbox("Case", keys, index=keys.index(current) if current in keys else 0, key="browser_pick",
                              format_func=lambda k: f"{id_of[k]} ({Path(k).parent.as_posix()})"
                              if id_of.get(k) in repeated else id_of.get(k, k))
        c2.button("Open case", type="primary", icon=":material/open_in_new:", width="stretch",
                  on_click=ui.select_folder_case, args=(str(folder), id_of.get(choice, choice), choice))


def _clear_search() -> None:
    """Empty the search box (a callback: the widget's value may only change before it is drawn)."""
    st.session_state["browser_search"] = ""


def _on_table_pick() -> None:
    """Open the case of a clicked table row or cell (runs before the page, so the sidebar shows it at once), and
    make the "Case" dropdown name it."""
    folder, picks = st.session_state.get(TABLE_IDS_KEY, ("", []))
    selection = st.session_state["browser_table"]["selection"]
    picked = [*selection.get("rows", []), *(cell[0] for cell in selection.get("cells", []))]
    if picked and 0 <= int(picked[0]) < len(picks):
        case_id, key = picks[int(picked[0])]
        ui.select_folder_case(folder, case_id, key)
        st.session_state["browser_pick"] = key
        st.session_state[PICK_SEEN_KEY] = key


def _on_folder_pick(options: dict[str, Path]) -> None:
    """Use the picked folder at once: a callback runs before the page, so the sidebar (drawn first) shows the
    new folder in this run rather than one pick late."""
    try:
        st.session_state[ui.KEY_DATA_DIR] = str(roots.resolve_folder(options[st.session_state["browser_folder_pick"]]))
    except (BratsViewerError, KeyError):
        pass  # the page body says what is wrong


def browse_tab() -> None:
    source = st.radio("Source", [SOURCE_FOLDER, SOURCE_DEMO], horizontal=True, key="browser_source",
                      help="The bundled demo case is always available, whatever the data folder.")
    if source == SOURCE_DEMO:
        folder = config.DEMO_DATA_DIR
    else:
        options = roots.picker_folders()  # folders inside the administrator's data roots only
        labels = list(options)
        if not labels:
            st.error("No data folder is available: the administrator allows none (BRATS_DATA_ROOTS).")
            return
        current = roots.folder_label(ui.data_dir(), options)
        label = st.selectbox("Data folder on the server", labels, key="browser_folder_pick",
                             index=labels.index(current) if current in labels else 0,
                             help="Folders inside the data roots the server's administrator allows.",
                             on_change=_on_folder_pick, args=(options,))
        try:
            folder = roots.resolve_folder(options[label])
        except BratsViewerError as err:
            st.error(roots.redact_paths(str(err)))
            return
        st.session_state[ui.KEY_DATA_DIR] = str(folder)
    folder_table(folder)


def upload_tab() -> None:
    st.markdown("Upload the four modalities of one study (FLAIR, T1, T1CE, T2; to segment it, FLAIR or T1CE "
                "and at least one other) and, optionally, "
                "a segmentation, as NIfTI files (`.nii` or `.nii.gz`). Each file is checked on its own; the "
                "modality is guessed from the name and can be corrected.")
    flash = st.session_state.pop(FLASH_KEY, None)
    if flash:
        st.success(flash, icon=":material/check_circle:")
    files = st.file_uploader("NIfTI files", type=["nii", "gz"], accept_multiple_files=True, key="browser_uploads")
    if not files:
        return
    cache: dict = st.session_state.setdefault(CHECKS_KEY, {})
    blobs, checks, choices, status = [], [], [], []
    for i, f in enumerate(files):
        blob = f.getvalue()
        digest = hashlib.sha256(blob).hexdigest()
        if digest not in cache:
            with st.spinner(f"Checking {f.name}..."):
                cache[digest] = viewer.check_upload(f.name, blob)
        chk: viewer.UploadCheck = cache[digest]
        c1, c2, c3 = st.columns([3, 2, 5], vertical_alignment="center")
        c1.markdown(f"`{f.name}`")
        options = [None, *viewer.UPLOAD_KEYS]
        key = c2.selectbox("Modality", options, index=options.index(chk.guess) if chk.guess in options else 0,
                           format_func=lambda k: "choose..." if k is None else viewer.UPLOAD_TITLES[k],
                           key=f"browser_upload_mod_{i}_{digest[:12]}", label_visibility="collapsed")
        blobs.append(blob)
        checks.append(chk)
        choices.append((f.name, key))
        status.append(c3.empty())
    # Keep only the checks of the files now uploaded (bounded memory per session).
    keep = {hashlib.sha256(b).hexdigest() for b in blobs}
    for digest in [d for d in cache if d not in keep]:
        del cache[digest]
    errors = viewer.upload_file_errors(choices, checks)
    for i, slot in enumerate(status):
        if i in errors:
            slot.error(errors[i], icon=":material/error:")
        else:
            slot.success(checks[i].message, icon=":material/check_circle:")
    if errors:
        st.warning(f"{len(errors)} of {len(files)} files need attention before a case can be built.")
    if st.button("Use these files as the case", type="primary", disabled=bool(errors), icon=":material/upload:"):
        with st.spinner("Building the case..."):
            result = viewer.build_upload_case([(n, b, k) for (n, k), b in zip(choices, blobs, strict=True)], checks)
        if result.case is None:
            st.error(result.error or "The files do not form one case.")
        else:
            ui.select_uploaded_case(result.case)
            st.session_state[FLASH_KEY] = (f"Case `{result.case.case_id}` is ready; it is kept in this browser "
                                           "session only.")
            st.rerun()  # so the sidebar and the panel below show the new case


def selected_case_panel() -> None:
    st.divider()
    case = ui.current_case()
    if case is None:
        st.subheader("Selected case")
        problem = ui.url_case_problem()  # the URL names a case that could not be opened: say why
        if problem:
            st.warning(problem, icon=":material/link_off:")
        st.info("No case selected yet. Pick one in the table above, open the bundled demo, or upload files.",
                icon=":material/info:")
        return
    st.subheader(f"Selected case: {case.case_id}")
    stats = ui.case_display_stats(case)
    z = (stats.tumour_cursor or stats.centre)["z"]
    where = "the axial slice with most tumour" if stats.tumour_cursor else "the mid-brain axial slice"
    st.caption(f"Axial slice z={z} ({where}), radiological convention (patient right on screen left)"
               + (", ground-truth outline" if case.has_seg else ""))
    overlays = [figures.Overlay(case.seg.data, contour=True)] if case.seg is not None else []
    cols = st.columns(max(4, len(case.modalities)))
    for col, key in zip(cols, case.modalities, strict=False):
        lo, hi = figures.window_from_percentiles(stats.percentiles[key], *figures.AUTO_PERCENTILES)
        rgb = figures.compose_plane(case.images[key].data, "axial", z, (lo, hi), True, overlays)
        col.image(rgb, caption=config.MODALITY_TITLES[key], width="stretch")

    geo, vols = st.columns(2, gap="large")
    with geo:
        st.markdown("**Geometry**")
        ref = case.reference
        rows = [
            ("Grid (RAS, voxels)", " x ".join(str(s) for s in case.shape)),
            ("Voxel size (mm)", " x ".join(f"{s:g}" for s in case.spacing_mm)),
            ("Stored orientation", "".join(ref.original_axcodes)),
            ("Stored shape", " x ".join(str(s) for s in ref.original_shape)),
            ("Modalities", ", ".join(config.MODALITY_TITLES[k] for k in case.modalities)),
            ("Ground truth", f"yes (labels as BraTS {case.label_convention})" if case.has_seg else "no"),
            ("Source", _source_text(case)),
        ]
        st.dataframe(pd.DataFrame(rows, columns=["Property", "Value"]), hide_index=True, width="stretch")
        missing = [k for k in config.MODALITIES if k not in case.modalities]
        if missing:
            try:
                check_modalities(case.modalities, config.MODALITIES)
                st.info(f"This case lacks {', '.join(config.MODALITY_TITLES[k] for k in missing)}: the model "
                        "segments it without them, and the result, the report and the PDF say so.",
                        icon=":material/info:")
            except BratsViewerError as err:
                st.warning(f"This case cannot be segmented: {err}", icon=":material/warning:")
        warnings = sorted({w for v in [*case.images.values(), case.seg] if v is not None for w in v.warnings})
        for w in warnings:
            st.warning(w, icon=":material/warning:")
    with vols:
        if case.seg is not None:
            st.markdown("**Ground-truth volumes (mL)**")
            ml = metrics.label_volumes_ml(case.seg.data, case.spacing_mm, voxel_volume_ml=case.voxel_volume_ml)
            ml = {k: ml[k] for k in ("NCR", "ED", "ET", "TC", "WT") if k in ml}  # the order of every other table
            mcols = st.columns(len(ml))
            for col, (name, value) in zip(mcols, ml.items(), strict=True):
                col.metric(name, f"{value:.1f}")
            st.markdown(figures_legend_html(), unsafe_allow_html=True)
        else:
            st.info("No ground-truth segmentation with this case.", icon=":material/info:")
        if case.notes:
            st.warning(case.notes, icon=":material/sticky_note_2:")
        st.page_link("pages/2_Slice_viewer.py", label="Open in the slice viewer", icon=":material/view_in_ar:")


def _source_text(case) -> str:
    """Where the case came from: a folder's label or name (never its server path), or what this session made it
    from ("DICOM series (this session)"; a DICOM or raw-study case is not an upload)."""
    sel = st.session_state.get(ui.KEY_CASE) or {}
    if sel.get("kind") == "upload":  # short: a longer text is cut in the table's column
        made = {"upload": "uploaded files", "dicom": "DICOM series", "study": "raw study"}
        return f"{made.get(str(sel.get('origin') or 'upload'), 'made here')} (this session)"
    if not case.source:
        return "-"
    return roots.display_name(case.source) if Path(case.source).is_absolute() else case.source


def figures_legend_html() -> str:
    items = "".join(
        f'<span style="display:inline-flex;align-items:center;margin-right:14px;">'
        f'<span style="width:12px;height:12px;background:{colour};display:inline-block;margin-right:5px;'
        f'border-radius:2px;"></span>{name}</span>' for name, colour in figures.legend_items())
    return f'<div style="font-size:0.85rem;">{items}</div>'


tab_browse, tab_upload, tab_dicom, tab_study = st.tabs([":material/folder: Cases in a folder",
                                                        ":material/upload_file: Upload files",
                                                        ":material/radiology: DICOM study",
                                                        ":material/transform: Raw study to BraTS"])
with tab_browse:
    browse_tab()
with tab_upload:
    upload_tab()
with tab_dicom:
    dicom_panel.dicom_tab()
with tab_study:
    study_panel.study_tab()
selected_case_panel()
