"""Streamlit glue of the follow-up page: the studies the app knows (cases of the session's data folder and of the
bundled demo, and this session's upload), their optional segmentation uploads, and the comparison, computed once
per (studies, segmentations, modality) and shared read-only (``st.cache_resource``, at most 2 kept).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import streamlit as st

from core import config
from core.analysis.compare import Comparison, compare_studies
from core.app import session_cases, ui
from core.data import roots
from core.data.cases import Case
from core.data.io import Volume, load_volume_bytes
from core.errors import BratsViewerError

KEY_RESULT = "followup_result"  # dict: {"request": str, "comparison": Comparison} of this session's last run
UPLOAD_OPTION = "upload"
SESSION_PREFIX = "session:"  # option id of a case this session made: SESSION_PREFIX + its session id
KEY_MODEL_SEGS = "followup_model_segs"  # dict: Case.content_key -> Prediction made here for a study without labels
MAX_MODEL_SEGS = 2


@dataclass(frozen=True)
class StudyOption:
    """A study the page offers: a discovered case of a folder (``key`` = ``cases.case_key``) or the upload."""

    option_id: str
    label: str
    kind: str
    folder: str = ""
    case_id: str = ""
    key: str | None = None
    has_seg: bool = False  # the study holds its own segmentation (ground truth)


def study_options() -> tuple[list[StudyOption], list[str]]:
    """The studies to choose from, and one line per folder that could not be listed.

    Folder cases of the session's data folder, then of the bundled demo (when it is another folder), then this
    session's uploaded case. Option ids are unique (folder + case key)."""
    folders: list[tuple[str, Path]] = []
    sel = st.session_state.get(ui.KEY_CASE) or {}
    candidates = [("data folder", ui.data_dir()), ("demo", config.DEMO_DATA_DIR)]
    if sel.get("kind") == "folder" and sel.get("folder"):  # the open case's folder, when the data folder is another
        try:
            opened = roots.resolve_folder(str(sel["folder"]))
            candidates.insert(1, (roots.display_name(opened), opened))
        except BratsViewerError:
            pass
    for label, folder in candidates:
        if all(Path(folder).resolve() != Path(f).resolve() for _, f in folders):
            folders.append((label, Path(folder)))
    options: list[StudyOption] = []
    problems: list[str] = []
    for label, folder in folders:
        try:
            rows = ui.list_cases(folder)
        except (BratsViewerError, OSError) as err:
            problems.append(f"{label}: {err}")
            continue
        for row in rows:
            where = row.get("location", "")
            text = row["case_id"] + (f" ({label}: {where})" if where not in ("", ".") else f" ({label})")
            options.append(StudyOption(f"folder:{folder}:{row.get('key', row['case_id'])}", text, "folder",
                                       str(folder), row["case_id"], row.get("key"), bool(row.get("ground_truth"))))
    # every case this session made: uploads, DICOM series and raw studies converted
    made = session_cases.all_cases()
    for entry in made:
        options.append(StudyOption(f"{SESSION_PREFIX}{entry.sid}", entry.label, "session", case_id=entry.case.case_id,
                                   key=entry.sid, has_seg=entry.case.seg is not None))
    uploaded = st.session_state.get(ui.KEY_UPLOADED)
    if uploaded is not None and all(e.case is not uploaded for e in made):
        options.append(StudyOption(UPLOAD_OPTION, f"{uploaded.case_id} (uploaded in this session)", "upload",
                                   case_id=uploaded.case_id, has_seg=uploaded.seg is not None))
    return options, problems


def default_choice(options: list[StudyOption]) -> int:
    """Index of the option of the case selected in this session (the baseline's default), else 0."""
    sel = st.session_state.get(ui.KEY_CASE) or {}
    for i, opt in enumerate(options):
        if sel.get("kind") == "upload" and opt.kind == "session" and opt.key == sel.get("sid"):
            return i
        if sel.get("kind") == "upload" and opt.kind == "upload":
            return i
        if (opt.kind == "folder" and opt.case_id == sel.get("case_id")
                and Path(opt.folder).resolve() == Path(str(sel.get("folder", ""))).resolve()
                and (sel.get("key") is None or sel.get("key") == opt.key)):
            return i
    return 0


def default_followup(options: list[StudyOption], baseline: int) -> int:
    """Index of the default follow-up among the options after ``baseline`` (list order, wrapping): the first of
    the baseline's own folder with a segmentation, else the first of that folder (a Segment button is offered),
    else the first with a segmentation, else simply the next one."""
    n = len(options)
    if n < 2:
        return 0
    base = options[baseline]
    after = [(baseline + step) % n for step in range(1, n)]
    same = [i for i in after if options[i].kind == base.kind and options[i].folder == base.folder]
    for group in ([i for i in same if options[i].has_seg], same, [i for i in after if options[i].has_seg], after):
        if group:
            return group[0]
    return after[0]


def model_segmentation(case: Case) -> Any:
    """The model's Prediction of ``case`` made on this page (or the session's own of it), or None."""
    made = st.session_state.get(KEY_MODEL_SEGS) or {}
    if case.content_key in made:
        return made[case.content_key]
    return ui.session_prediction(case)


def segment_study(case: Case) -> Any:
    """Segment a study without labels with the active model (the session's TTA setting); kept for this page
    (the last ``MAX_MODEL_SEGS``). Returns the Prediction, or None with the error shown."""
    prediction = ui.segment_volume(case, ui.use_tta(), page="follow_up")
    if prediction is not None:
        made = dict(st.session_state.get(KEY_MODEL_SEGS) or {})
        made.pop(case.content_key, None)
        made[case.content_key] = prediction
        while len(made) > MAX_MODEL_SEGS:
            made.pop(next(iter(made)))
        st.session_state[KEY_MODEL_SEGS] = made
    return prediction


def prediction_volume(case: Case, prediction: Any) -> Volume:
    """The model's labels as a label volume on the case's RAS grid, named after the model (for the comparison
    and its report)."""
    import dataclasses

    name = f"model {prediction.model_name}" + (" with TTA" if getattr(prediction, "tta", False) else "")
    labels = np.asarray(prediction.labels, dtype=np.uint8)
    sha = hashlib.sha256(labels.tobytes()).hexdigest()
    return dataclasses.replace(case.reference, data=labels, sha256=sha, source_name=name, stored_dtype="uint8",
                               warnings=())


def load_study(option: StudyOption) -> Case:
    """The case of an option (folder cases through the shared case cache).

    Raises:
        BratsViewerError: the case cannot be loaded or the upload is gone.
    """
    if option.kind == "session":
        entry = session_cases.get(option.key)
        if entry is None:
            raise BratsViewerError("expected a case made in this session, found it gone (convert or upload it again)")
        return entry.case
    if option.kind == "upload":
        case = st.session_state.get(ui.KEY_UPLOADED)
        if case is None:
            raise BratsViewerError("expected this session's uploaded case, found none (upload it again)")
        return case
    return ui.load_folder_case(option.folder, option.case_id, option.key)


def segmentation_upload(uploaded: Any) -> Volume | None:
    """The volume of an optional segmentation upload (its name is used in messages only, never as a path).

    Raises:
        BratsViewerError: the file is not an acceptable NIfTI image.
    """
    if uploaded is None:
        return None
    return load_volume_bytes(uploaded.getvalue(), uploaded.name)


def _seg_key(seg: Volume | None) -> str:
    return seg.sha256 if seg is not None else "own"


def request_key(baseline: Case, followup: Case, seg_a: Volume | None, seg_b: Volume | None,
                modality: str | None) -> str:
    """What a comparison depends on: both studies' contents, the segmentations and the modality."""
    parts = (ui.case_cache_key(baseline), ui.case_cache_key(followup), _seg_key(seg_a), _seg_key(seg_b),
             modality or "auto")
    return hashlib.sha256("|".join(parts).encode()).hexdigest()[:32]


@st.cache_resource(max_entries=2, show_spinner=False)
def _comparison_cached(key: str, _baseline: Case, _followup: Case, _seg_a: Volume | None, _seg_b: Volume | None,
                       modality: str | None) -> Comparison:
    return compare_studies(_baseline, _followup, _seg_a, _seg_b, modality)


def run_comparison(baseline: Case, followup: Case, seg_a: Volume | None, seg_b: Volume | None,
                   modality: str | None) -> Comparison:
    """The comparison (computed once per request key) kept in this session with its request.

    Raises:
        BratsViewerError: the project's refusals (no segmentation, no common modality, poor alignment, ...).
    """
    key = request_key(baseline, followup, seg_a, seg_b, modality)
    with st.spinner("Registering the follow-up to the baseline and comparing..."):
        result = _comparison_cached(key, baseline, followup, seg_a, seg_b, modality)
    st.session_state[KEY_RESULT] = {"request": key, "comparison": result}
    return result


def session_comparison(key: str) -> Comparison | None:
    """The session's last comparison when it answers request ``key``, else None."""
    stored = st.session_state.get(KEY_RESULT) or {}
    return stored.get("comparison") if stored.get("request") == key else None


@st.cache_resource(max_entries=4, show_spinner=False)
def _windows_cached(key: str, modality: str, _comparison: Comparison) -> tuple[tuple[float, float], tuple[float, float]]:
    from core.views import figures

    base = np.asarray(_comparison.baseline.images[modality].data)
    return figures.auto_window(base), figures.auto_window(np.asarray(_comparison.followup_images[modality]))


def windows(key: str, comparison: Comparison, modality: str) -> tuple[tuple[float, float], tuple[float, float]]:
    """(baseline, follow-up) display windows of a modality, computed once per comparison."""
    return _windows_cached(key, modality, comparison)
