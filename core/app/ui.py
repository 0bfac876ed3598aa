"""The only Streamlit glue in ``core/``: session-state keys, cached loaders, the shared header and sidebar.

Caches: volumes and models live in ``st.cache_resource`` (one shared, read-only object per process, bounded
by ``max_entries``); nothing large goes into ``st.cache_data`` (which copies on every hit). Uploaded cases are
kept in the uploading session's own state only, so sessions never see each other's uploads.
"""

from __future__ import annotations

import json
import logging
import re
import threading
from pathlib import Path
from typing import Any

import streamlit as st

from core import config
from core.data import roots
from core.data.cases import Case, CaseRef, case_key, discover_cases, load_case
from core.engine import allocator
from core.errors import BratsViewerError

allocator.limit_arenas()  # before sessions start: their threads would each hold on to memory of their own

# ---- session-state keys (one place) -----------------------------------------------------------------------
KEY_DATA_DIR = "data_dir"  # str: folder of cases in use
KEY_CASE = "selected_case"  # dict: {"kind": "folder", "folder": str, "case_id": str, "key": str (cases.case_key)}
#                               or {"kind": "upload", "case_id": str}
KEY_UPLOADED = "uploaded_case"  # Case built from this session's uploads
KEY_CURSOR = "cursor"  # dict: {"x": int, "y": int, "z": int} shared cross-hair on the RAS grid
KEY_TTA = "use_tta"  # bool: test-time augmentation on (a setting, not a widget key: it must survive pages)
KEY_MODEL_DIR = "model_dir"  # str: active model folder
KEY_PRIVATE = "private_token"  # str: token of this session's private folder (server-side only, never shown)
KEY_LAST_ACTIVE = "last_active_s"  # float: time.time() of this session's last page run
KEY_URL_FAILED = "url_case_failed"  # ((case, src, key), reason): the URL's case that could not be opened


PAGE_ICON: Path = config.PROJECT_ROOT / "assets" / "icon.png"  # served by the app itself


def page_header(title: str, icon: str = ":material/neurology:") -> None:
    """Page config, title and the research-use disclaimer (on every page), and the shared sidebar.

    The favicon is the bundled ``assets/icon.png``, never ``icon``: Streamlit fetches a ``:material/...:``
    favicon from fonts.gstatic.com, which fails offline (``icon`` names the page's Material icon for callers;
    icons inside the page come from the font Streamlit serves itself)."""
    st.set_page_config(page_title=f"{title} - BraTS viewer", page_icon=str(PAGE_ICON), layout="wide")
    st.title(title)
    st.warning(config.DISCLAIMER, icon=":material/warning:")
    expire_idle_uploads()
    sidebar()


def _sync_case_with_url() -> None:
    """Keep a folder case's id in the URL (``?case=ID&src=LABEL[&key=KEY]``) so a browser reload reopens it
    (``key``, the ``cases.case_key`` of the selection, tells apart cases sharing an id; it is only compared with
    the keys of discovered cases, never used as a path).

    ``src`` is the label of one of the data-root folders of the picker (``demo``, ``data``, ``<root>/<sub>``),
    never a path. On a fresh session the URL's case is accepted only if ``src`` is one of the picker's folders
    and the case is a discovered case of it: the URL cannot reach anything outside the data roots.
    """
    sel = st.session_state.get(KEY_CASE)
    params = st.query_params
    if sel is None and params.get("case"):
        src = str(params.get("src") or "data")
        case_id = str(params.get("case"))
        key = str(params.get("key")) if params.get("key") else None
        failed = st.session_state.get(KEY_URL_FAILED)
        if failed and failed[0] == (case_id, src, key):
            return  # already tried in this session: the page says why (url_case_problem)
        folder = roots.picker_folders().get(src)
        reason = None
        # the URL's text is echoed only when it is a plain id (never a path or markup)
        named = f" `{case_id}`" if re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]{0,99}", case_id) else ""
        try:
            if folder is None:
                reason = ("The link names a case in a folder that is not one of the data folders this server allows "
                          "(BRATS_DATA_ROOTS): pick a case in the Case browser.")
            elif _refs_of(str(folder), case_id, key):
                select = {"kind": "folder", "folder": str(folder), "case_id": case_id}
                st.session_state[KEY_CASE] = {**select, "key": key} if key else select
                st.session_state[KEY_DATA_DIR] = str(folder)  # the data folder follows the case (sidebar, pickers)
                st.session_state.pop(KEY_URL_FAILED, None)
            else:
                reason = (f"The link names case{named}, which is no longer in the data folder `{src}` (moved or "
                          "deleted): pick a case in the Case browser.")
        except (BratsViewerError, OSError):
            reason = f"The link's case{named} cannot be opened from the data folder `{src}`: pick a case in the Case browser."
        if reason:
            st.session_state[KEY_URL_FAILED] = ((case_id, src, key), reason)
        return
    if sel and sel.get("kind") == "folder":
        src = roots.folder_label(sel["folder"]) or "data"
        want = {"case": sel["case_id"], "src": src, **({"key": sel["key"]} if sel.get("key") else {})}
        if {k: params.get(k) for k in ("case", "src", "key", "sess") if params.get(k)} != want:
            params.from_dict(want)
    elif sel and sel.get("kind") == "upload":
        # a case this session made: its id and name stay on the server; the URL says only what kind it was, so
        # that a reload can say why it is gone instead of silently showing another case
        want = {"sess": str(sel.get("origin") or "upload")}
        if {k: params.get(k) for k in ("case", "src", "key", "sess") if params.get(k)} != want:
            params.from_dict(want)
    elif params.get("case"):
        params.clear()


def sidebar() -> None:
    """The data folder, active model and selected case, on every page."""
    _sync_case_with_url()
    with st.sidebar:
        st.caption("Research software - not for diagnosis")
        st.markdown(f"**Data folder**  \n`{roots.display_name(data_dir())}`")  # never a server path
        model_dir = active_model_dir()
        st.markdown(f"**Model**  \n`{model_dir.name}`" + ("" if model_dir.exists() else " (missing)"))
        sel = st.session_state.get(KEY_CASE)
        where = Path(sel["key"]).parent.as_posix() if sel and sel.get("key") else ""
        where = f" in `{where}`" if where not in ("", ".", sel and sel.get("case_id")) else ""  # ids can repeat
        st.markdown(f"**Case**  \n`{sel['case_id']}`{where}" if sel else "**Case**  \nnone selected")


def data_dir() -> Path:
    """The data folder of this session (picked on the case browser, always inside the data roots), else
    ``$BRATS_DATA_DIR`` or the demo."""
    for value in (st.session_state.get(KEY_DATA_DIR), str(config.data_dir())):
        if value:
            try:
                return roots.resolve_folder(value)
            except BratsViewerError:
                continue
    return config.DEMO_DATA_DIR


def use_tta() -> bool:
    """Whether segmentations of this session use test-time augmentation (set on the Segmentation page)."""
    return bool(st.session_state.get(KEY_TTA, False))


def set_tta_from(widget_key: str) -> None:
    """Widget callback: copy a toggle's value (under its own ``widget_key``) into the ``KEY_TTA`` setting."""
    st.session_state[KEY_TTA] = bool(st.session_state.get(widget_key, False))


def active_model_dir() -> Path:
    """The session's model folder when it lies inside the model roots (``roots.model_roots``: ``models/`` and
    the administrator's), else the default: a session cannot point the app at another folder."""
    value = st.session_state.get(KEY_MODEL_DIR)
    if value:
        try:
            roots.resolve_model_folder(str(value))
            return Path(value)
        except BratsViewerError:
            pass
    return config.active_model_dir()


def list_cases(folder: str | Path) -> list[dict[str, Any]]:
    """Table rows of the cases under ``folder`` (headers only): id, modalities, ground truth, shape, voxel size.

    Raises:
        DataFolderError: ``folder`` is not inside the data roots.
    """
    return _list_cases_cached(str(roots.resolve_folder(folder)))


@st.cache_data(ttl=60, max_entries=16, show_spinner=False)
def _list_cases_cached(folder: str) -> list[dict[str, Any]]:
    rows = []
    for ref in discover_cases(folder):
        rel = Path(case_key(ref, folder)).parent.as_posix()
        rows.append({"case_id": ref.case_id, "modalities": ", ".join(ref.modalities),
                     "ground_truth": ref.has_seg, **ref.header_summary(), "folder": str(ref.folder),
                     "location": rel, "key": case_key(ref, folder)})
    return rows


def case_notes(folder: str | Path) -> dict[str, str]:
    """Optional ``CASE_NOTES.json`` of a data folder: case id -> note (e.g. pseudo-label warnings)."""
    path = Path(folder) / "CASE_NOTES.json"
    if path.is_symlink():  # a link could read a file outside the data roots
        return {}
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        return {str(k): str(v) for k, v in data.items()} if isinstance(data, dict) else {}
    except (OSError, json.JSONDecodeError):
        return {}


@st.cache_resource(max_entries=3, show_spinner="Loading case...")
def _load_case_cached(folder: str, case_id: str, stamp: float, key: str | None = None) -> Case:
    refs = _refs_of(folder, case_id, key)
    if not refs:
        raise BratsViewerError(f"expected case {case_id!r} in {folder!r}, found none")
    ref: CaseRef = refs[0]
    parent = ref.folder.parent.resolve()
    inside = parent == Path(folder) or Path(folder) in parent.parents  # never read notes above the root
    notes = case_notes(folder).get(case_id, "") or (case_notes(parent).get(case_id, "") if inside else "")
    return load_case(ref, notes=notes)


def _refs_of(folder: str, case_id: str, key: str | None) -> list[CaseRef]:
    """Discovered cases of ``folder`` with ``case_id`` (and the unique ``key`` when given: ids can repeat in a
    folder tree)."""
    return [r for r in discover_cases(folder)
            if r.case_id == case_id and (key is None or case_key(r, folder) == key)]


def load_folder_case(folder: str, case_id: str, key: str | None = None) -> Case:
    """A case of a data folder, loaded once per process and shared read-only (at most 3 kept). ``key``
    (``cases.case_key``) picks one case among several sharing ``case_id``; without it, the first is taken.

    Raises:
        DataFolderError: the folder is outside the data roots; BratsViewerError: no such case.
    """
    folder = str(roots.resolve_folder(folder))
    refs = _refs_of(folder, case_id, key)
    if not refs:  # ids come from the discovered list only: nothing outside the chosen folder is read
        raise BratsViewerError(f"expected case {case_id!r} in the data folder, found none")
    stamp = max(p.stat().st_mtime for p in refs[0].files.values())
    return _load_case_cached(str(folder), case_id, stamp, key)


def select_folder_case(folder: str, case_id: str, key: str | None = None) -> None:
    """Select a case of a data folder; ``key`` (``cases.case_key``) tells apart cases that share an id."""
    sel = {"kind": "folder", "folder": str(folder), "case_id": case_id}
    if key is not None:
        sel["key"] = key
    st.session_state[KEY_CASE] = sel
    st.session_state.pop(KEY_CURSOR, None)


def select_uploaded_case(case: Case, origin: str = "upload") -> None:
    """Select a case this session made (``origin``: "upload", "dicom" or "study"), kept among the session's
    cases (``core.app.session_cases``) under a random id."""
    from core.app import session_cases

    entry = session_cases.add(case, origin)
    st.session_state[KEY_UPLOADED] = case
    st.session_state[KEY_CASE] = {"kind": "upload", "case_id": case.case_id, "sid": entry.sid, "origin": origin}
    st.session_state.pop(KEY_CURSOR, None)


def select_session_case(sid: str) -> bool:
    """Select one of this session's own cases again by its id; False when the session no longer holds it."""
    from core.app import session_cases

    entry = session_cases.get(sid)
    if entry is None:
        return False
    st.session_state[KEY_UPLOADED] = entry.case
    st.session_state[KEY_CASE] = {"kind": "upload", "case_id": entry.case.case_id, "sid": entry.sid,
                                  "origin": entry.origin}
    st.session_state.pop(KEY_CURSOR, None)
    return True


def current_case() -> Case | None:
    """The case selected in this session, or None. Errors are shown and give None."""
    sel = st.session_state.get(KEY_CASE)
    if not sel:
        return None
    if sel.get("kind") == "upload":
        from core.app import session_cases

        entry = session_cases.get(sel.get("sid"))
        return entry.case if entry is not None else st.session_state.get(KEY_UPLOADED)
    try:
        return load_folder_case(sel["folder"], sel["case_id"], sel.get("key"))
    except BratsViewerError as err:
        st.error(roots.redact_paths(str(err)))
        return None


def url_case_problem() -> str | None:
    """Why the case the URL names was not opened (outside the allowed data roots, or gone), while no case is
    selected and the URL still names it; else None."""
    from core.app import session_cases

    failed = st.session_state.get(KEY_URL_FAILED)
    params = st.query_params
    if st.session_state.get(KEY_CASE) is None and not params.get("case"):
        return session_cases.reload_problem(params)  # a converted or uploaded case was shown before a reload
    if not failed or st.session_state.get(KEY_CASE) is not None or not params.get("case"):
        return None
    key = str(params.get("key")) if params.get("key") else None
    return failed[1] if failed[0] == (str(params.get("case")), str(params.get("src") or "data"), key) else None


def require_case() -> Case:
    """The selected case, or an empty state that says what to do, and stop the page."""
    case = current_case()
    if case is None:
        problem = url_case_problem()
        if problem:
            st.warning(problem, icon=":material/link_off:")
        st.info("No case selected. Open the **Case browser** to pick a case or upload your own NIfTI files.",
                icon=":material/info:")
        st.page_link("pages/1_Case_browser.py", label="Go to the case browser", icon=":material/folder_open:")
        st.stop()
    return case


@st.cache_resource(max_entries=2, show_spinner="Loading model...")
def load_model_cached(model_dir: str, stamp: float) -> Any:
    """The model of a folder, loaded once per process (TensorFlow is imported here, not at page import)."""
    from core.engine.model import load_model

    return load_model(model_dir)


def get_model() -> Any:
    """The active model, or None with an error shown."""
    folder = active_model_dir()
    try:
        from core.engine.model import resolve_weights

        weights, _ = resolve_weights(folder)
        return load_model_cached(str(folder), weights.stat().st_mtime)
    except BratsViewerError as err:
        st.error(roots.redact_paths(str(err)))
        return None


def model_card(folder: Path | None = None) -> dict[str, Any]:
    """The card of the active (or given) model folder; empty dict when absent. Does not import TensorFlow."""
    path = (folder or active_model_dir()) / "model_card.json"
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        return {}


def training_case_note(case_id: str, card: dict[str, Any] | None = None) -> str | None:
    """What to say beside scores of ``case_id`` when the active model (or ``card``) was trained or validated on
    it: the scores then overstate how the model does on a new case. None otherwise."""
    split = (model_card() if card is None else card).get("split") or {}
    for part, what in (("train", "training"), ("val", "validation")):
        if case_id in (split.get(part) or []):
            return (f"This case was one of the model's {what} cases: these scores overstate how it does on a new "
                    "case (see the held-out scores on Home).")
    return None


# ---- viewer helpers (case browser, slice viewer) ------------------------------------------------------------

def case_cache_key(case: Case) -> str:
    """Content key of a case including its segmentation (``Case.content_key`` covers the images only)."""
    return case.content_key + (f":{case.seg.sha256}" if case.seg is not None else "")


@st.cache_resource(max_entries=4, show_spinner=False)
def _display_stats_cached(key: str, _case: Case) -> Any:
    from core.views.viewer import display_stats

    return display_stats(_case)


def case_display_stats(case: Case) -> Any:
    """``core.views.viewer.CaseDisplayStats`` of a case (window percentiles, most-tumour cursor), once per case content."""
    return _display_stats_cached(case_cache_key(case), case)


# ---- segmentation helpers (segmentation and report pages) ---------------------------------------------------
KEY_PREDICTION = "prediction"  # core.engine.inference.Prediction of the selected case (shared cached object)
KEY_PREDICTION_CASE = "prediction_case_key"  # Case.content_key the prediction belongs to
KEY_CORRECTED = "corrected_labels"  # (X, Y, Z) uint8 labels corrected by hand
KEY_CORRECTED_CASE = "corrected_case_key"  # Case.content_key the corrected labels belong to
KEY_PREDICTION_EARLIER = "prediction_from_earlier"  # True: the prediction was found in the process's cache (made
#                                                      earlier, by another session or before a reload), not asked for here


@st.cache_resource(max_entries=2, show_spinner="Preparing the case for the model...")
def _prepared_cached(case_key: str, model_sha: str, _case: Case, _loaded: Any) -> Any:
    from core.engine.preprocess import prepare_case

    return prepare_case(_case, _loaded.spec)


def prepared_for(case: Case, loaded: Any) -> Any:
    """``core.engine.preprocess.Prepared`` of a case for a model's spec, once per (case content, model weights)."""
    return _prepared_cached(case.content_key, loaded.sha256, case, loaded)


KEY_WARMED = "segment_warmed"  # (case content key, model folder, weights stamp) this session last warmed up
WARMUP_THREAD = "segment-warmup"  # name prefix of the warm-up threads


class _WarmupWarnings(logging.Filter):
    """Drops Streamlit's "missing ScriptRunContext" warning in the warm-up threads only: they call the cached
    loaders outside a script run on purpose (no spinner to show, nothing drawn)."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not (threading.current_thread().name.startswith(WARMUP_THREAD)
                    and "missing ScriptRunContext" in record.getMessage())


def warm_segmentation(case: Case) -> threading.Thread | None:
    """Load the active model and prepare ``case`` for it in a background thread, once per session and (case,
    model), when the model runs in ONNX Runtime (a model that needs TensorFlow is left to the click), so that a *Segment* click pays for the model alone. The thread fills the same cached loaders a click
    uses (``load_model_cached``, ``prepared_for``); a click made meanwhile waits for that computation instead of
    repeating it (Streamlit computes a cached value once per key). Errors are left to the click, which shows
    them. Returns the started thread, or None (no model, or already warmed in this session)."""
    from core.engine.model import resolve_weights

    folder = active_model_dir()
    try:
        weights, _ = resolve_weights(folder)
        stamp = weights.stat().st_mtime
    except (BratsViewerError, OSError):
        return None
    key = (case.content_key, str(folder), stamp)
    if st.session_state.get(KEY_WARMED) == key:
        return None
    st.session_state[KEY_WARMED] = key

    def _warm() -> None:
        from core.engine.model import runs_without_tensorflow

        if not runs_without_tensorflow(folder):  # a Keras-only model: TensorFlow is imported on a click only
            return
        try:
            prepared_for(case, load_model_cached(str(folder), stamp))
        except Exception:  # noqa: BLE001 - the click runs the same loaders and shows their error
            return

    logger = logging.getLogger("streamlit.runtime.scriptrunner_utils.script_run_context")
    if not any(isinstance(f, _WarmupWarnings) for f in logger.filters):
        logger.addFilter(_WarmupWarnings())
    thread = threading.Thread(target=_warm, name=f"{WARMUP_THREAD}-{case.content_key[:8]}", daemon=True)
    thread.start()
    return thread


@st.cache_resource(max_entries=3, show_spinner=False)
def _prediction_slot(case_key: str, model_sha: str, tta: bool) -> dict[str, Any]:
    """A holder for one prediction (filled on first use, outside the cached call so that the progress bar the
    caller passes is not replayed by the cache); evicting the slot frees the prediction."""
    import threading

    return {"lock": threading.Lock(), "value": None}


def cached_prediction(case: Case, loaded: Any, tta: bool, progress: Any = None, on_wait: Any = None) -> Any:
    """The whole-volume ``Prediction`` of a case, computed once per (case content, model weights, TTA) and
    shared read-only; ``progress(fraction, message)`` is called only when it is computed.

    Predictions of all sessions take turns in the process's fair queue (``inference_queue.shared_queue``);
    while this one waits, ``on_wait(message)`` is called about twice a second with its place. A session that
    asks for a case another session is computing waits for that result instead of computing it again."""
    from core.app.inference_queue import shared_queue
    from core.engine.inference import predict_case

    slot = _prediction_slot(case.content_key, loaded.sha256, bool(tta))
    while not slot["lock"].acquire(timeout=0.5):  # polling, so a session that leaves stops waiting
        if on_wait is not None:
            on_wait("Another session is segmenting this case; its result will be shown here...")
    try:
        if slot["value"] is None:
            def _waiting(ahead: int) -> None:
                if on_wait is not None:
                    on_wait(f"Waiting for the model: {ahead} segmentation{'s' if ahead != 1 else ''} ahead of "
                            "yours...")

            with shared_queue().turn(on_wait=_waiting):
                slot["value"] = predict_case(loaded, case, tta=bool(tta), progress=progress,
                                             prepared=prepared_for(case, loaded))
        return slot["value"]
    finally:
        slot["lock"].release()


@st.cache_resource(show_spinner=False)
def _recent_predictions() -> dict[tuple[str, str, bool], Any]:
    """Process-wide index of the predictions kept in sessions: (case content key, model stamp, TTA) -> weak
    reference. A reloaded page (a new session) finds its case's prediction here instead of losing it; the
    index holds no prediction alive by itself (the prediction caches and sessions do)."""
    return {}


def _model_stamp() -> str | None:
    """The active model's folder and weights modification time (no model load, no TensorFlow), or None."""
    from core.engine.model import resolve_weights

    try:
        weights, _ = resolve_weights(active_model_dir())
        return f"{weights.resolve()}:{weights.stat().st_mtime_ns}"
    except (BratsViewerError, OSError):
        return None


def store_prediction(case: Case, prediction: Any) -> None:
    """Keep a prediction (a reference to the cached object) in the session with the case it belongs to, and
    index it for a later session of the same case and model (``session_prediction``).

    A case without a reference label (a raw study, an upload) has no other tumour to open on: when the shared
    cursor's axial slice holds none of the predicted tumour, the cursor moves to the slices of most predicted
    tumour, so the pages (and the viewer) show it."""
    import weakref

    st.session_state[KEY_PREDICTION] = prediction
    st.session_state[KEY_PREDICTION_CASE] = case.content_key
    st.session_state.pop(KEY_PREDICTION_EARLIER, None)
    labels = getattr(prediction, "labels", None)
    if case.seg is None and labels is not None and getattr(labels, "shape", None) == tuple(case.shape):
        from core.views import figures, viewer

        cursor = viewer.clamp_cursor(st.session_state.get(KEY_CURSOR), case.shape)
        if cursor is None or not labels[:, :, int(cursor["z"])].any():
            target = figures.most_tumour_cursor(labels)
            if target is not None:
                st.session_state[KEY_CURSOR] = dict(target)
    stamp = _model_stamp()
    if stamp is None:
        return
    index = _recent_predictions()
    for k in [k for k, ref in index.items() if ref() is None]:
        index.pop(k, None)
    try:
        index[(case.content_key, stamp, bool(getattr(prediction, "tta", False)))] = weakref.ref(prediction)
    except TypeError:  # not weak-referenceable: not indexed
        pass


def session_prediction(case: Case) -> Any:
    """The session's prediction when it belongs to ``case``; else (a reload, or the case opened again) the
    prediction of this case by the active model still cached in this process (with the session's TTA setting
    when there are both), kept in the session from then on; else None. Never computes one."""
    if st.session_state.get(KEY_PREDICTION_CASE) == case.content_key:
        return st.session_state.get(KEY_PREDICTION)
    stamp = _model_stamp()
    if stamp is None:
        return None
    index = _recent_predictions()
    for tta in (use_tta(), not use_tta()):
        ref = index.get((case.content_key, stamp, tta))
        prediction = ref() if ref is not None else None
        if prediction is not None:
            st.session_state[KEY_PREDICTION] = prediction
            st.session_state[KEY_PREDICTION_CASE] = case.content_key
            st.session_state[KEY_PREDICTION_EARLIER] = True
            return prediction
    return None


def earlier_prediction_note(prediction: Any) -> str | None:
    """When the session's prediction was not asked for in this session (``session_prediction`` found it in the
    process's cache: computed earlier by the same model, in another session or before a reload), one plain
    sentence saying so, with the model, its settings and when; else None."""
    if prediction is None or not st.session_state.get(KEY_PREDICTION_EARLIER):
        return None
    from core.app.segstate import runtime_name

    when = str(getattr(prediction, "created_utc", "") or "")
    when = f" at {when.replace('T', ' ').replace('+00:00', '')} UTC" if when else ""
    runtime = runtime_name(str(getattr(prediction, "runtime", "") or ""))
    tta = bool(getattr(prediction, "tta", False))
    mine = use_tta()
    text = (f"This segmentation was computed earlier on this server{when} (before a reload, or in another "
            f"session) by the same model, `{getattr(prediction, 'model_name', '')}`, with TTA {'on' if tta else 'off'}"
            + (f" ({runtime})" if runtime else "") + ". It is shown because it is still cached; hand corrections "
            "are never shared.")
    if tta != mine:
        text += (f" Your TTA setting is {'on' if mine else 'off'}: press **Segment whole volume** to compute it "
                 "with your setting.")
    return text


def current_segmentation(case: Case, use_ground_truth: bool = False) -> Any:
    """The segmentation whose volumes this session shows for ``case``, as a ``segstate.ReportSource``
    (``.description`` names it: expert label, model with its name, TTA and runtime, or corrected by hand), or
    None when there is none yet.

    Order: this session's hand corrections of the case (from the session, else from its saved edit session),
    else the model's prediction (``session_prediction``), else with ``use_ground_truth`` the case's expert label.
    """
    from core.app import segstate

    shape = case.shape
    key = case.content_key
    prediction = session_prediction(case)
    saved = segstate.saved_corrections(edit_store(case), key, shape)
    corrected, corrected_key, corrected_sha = None, None, ""
    if st.session_state.get(KEY_CORRECTED_CASE) == key:
        corrected, corrected_key = st.session_state.get(KEY_CORRECTED), key
        corrected_sha = saved.model_sha256 if saved is not None else ""
    elif saved is not None and saved.corrected:
        corrected, corrected_key, corrected_sha = saved.labels, key, saved.model_sha256
    corrected_name = ""
    if prediction is not None and (not corrected_sha or prediction.model_sha256 == corrected_sha):
        corrected_name, corrected_sha = prediction.model_name, prediction.model_sha256
    return segstate.choose_report_source(
        key, shape, corrected=corrected, corrected_key=corrected_key, corrected_model_name=corrected_name,
        corrected_model_sha256=corrected_sha, prediction=prediction,
        prediction_key=st.session_state.get(KEY_PREDICTION_CASE),
        ground_truth=case.seg.data if case.seg is not None else None, use_ground_truth=use_ground_truth)


@st.cache_resource(max_entries=6, show_spinner="Scoring against the ground truth...")
def _scores_cached(case_key: str, labels_key: str, _labels: Any, _gt: Any, spacing_mm: tuple[float, ...],
                   voxel_volume_ml: float) -> Any:
    from core.analysis.metrics import score_case

    return score_case(_labels, _gt, spacing_mm, voxel_volume_ml=voxel_volume_ml)


def cached_scores(case: Case, labels: Any) -> Any:
    """``core.analysis.metrics.CaseScore`` of ``labels`` against the case's ground truth (None without one), computed
    once per (case, labels content)."""
    if case.seg is None:
        return None
    from core.app.segstate import labels_digest

    return _scores_cached(case_cache_key(case), labels_digest(labels), labels, case.seg.data,
                          tuple(case.spacing_mm), case.voxel_volume_ml)


# ---- the quality flag, shown next to every whole-volume result ------------------------------------------------
def show_quality(prediction: Any) -> None:
    """The prediction's quality flag: a green "ok" line or an orange "review" box with its reasons, and which
    modalities were missing."""
    from core.config import MODALITY_TITLES

    q = getattr(prediction, "quality", None)
    missing = tuple(getattr(prediction, "missing", ()) or ())
    if missing:
        st.info(f"Segmented without {', '.join(MODALITY_TITLES[k] for k in missing)}: this case lacks "
                f"{'it' if len(missing) == 1 else 'them'} (zero-filled for the model).", icon=":material/info:")
    if q is None:
        return
    if q.status == "review":
        st.warning("**Quality check: review.** Check this segmentation before using its volumes:\n"
                   + "\n".join(f"- {r}" for r in q.reasons), icon=":material/warning:")
    else:
        st.success("**Quality check: ok.** No warning sign found (input like the training data, plausible "
                   "output, low uncertainty); this is not a guarantee of accuracy.", icon=":material/verified:")
    with st.expander("Quality measures"):
        names = {"max_spacing_deviation": "Voxel size: largest difference from 1 mm (mm)",
                 "brain_ml": "Brain volume (mL)", "intensity_shift": "Intensity shift from the training cases (z)",
                 "intensity_shift_modality": "... largest for", "wt_ml": "Whole tumour (mL)",
                 "symmetry": "Tumour mirrored across the midline (fraction)",
                 "islands": "Separate tumour regions", "mean_entropy": "Mean uncertainty over the tumour (0-1)"}
        st.table({"Measure": [names.get(k, k) for k in q.measures],
                  "Value": [str(v) for v in q.measures.values()]})


# ---- audit and whole-volume segmentation shared by the segmentation and report pages -------------------------
def audit_event(case: Case, event: str, model_sha: str, /, **extra: Any) -> None:
    """Append an audit event ``event`` (segment, correct, export_pdf, ...) for ``case``; ``extra`` may hold any
    keys (``action`` included). A failure to write it is shown, never fatal."""
    from core.app import audit

    try:
        audit.append_event(event, case.case_id, case.input_hashes(), model_sha, extra=extra)
    except (BratsViewerError, OSError) as err:
        st.warning(f"The audit log could not be written: {err}")


def segment_volume(case: Case, tta: bool, page: str) -> Any:
    """Segment the whole case with a live progress bar (or take it from the cache), keep it in the session
    and audit it. Returns the Prediction, or None (with the error shown) when there is no model or it fails."""
    loaded = get_model()
    if loaded is None:
        return None
    bar = st.progress(0.0, text="Preparing the case for the model...")
    computed: list[float] = []

    def _progress(frac: float, message: str) -> None:
        computed.append(frac)
        bar.progress(float(min(max(frac, 0.0), 1.0)), text=message)

    def _wait(message: str) -> None:
        bar.progress(0.0, text=message)

    try:
        prediction = cached_prediction(case, loaded, tta, _progress, on_wait=_wait)
    except BratsViewerError as err:
        st.error(roots.redact_paths(str(err)))
        return None
    finally:
        bar.empty()
    store_prediction(case, prediction)
    audit_event(case, "segment", prediction.model_sha256, scope="volume", tta=bool(prediction.tta),
                elapsed_s=round(float(prediction.elapsed_s), 3), from_cache=not computed, page=page)
    if computed:
        st.toast(f"Segmented in {prediction.elapsed_s:.1f} s", icon=":material/check_circle:")
    return prediction


# ---- uploads and their corrections belong to the session -----------------------------------------------------
_SWEEP_EVERY_S = 60.0
_last_sweep: dict[str, float] = {"at": 0.0}


def _release_private(tokens: set[str]) -> None:
    """Release hook of the session-scoped token set: the session ended, its private folders go."""
    from core.app import private_store

    for token in list(tokens):
        try:
            private_store.remove(token)
        except (BratsViewerError, OSError):
            pass


@st.cache_resource(scope="session", on_release=_release_private, show_spinner=False)
def _session_tokens() -> set[str]:
    """The private tokens of this session; Streamlit drops the set (and calls ``_release_private``) when the
    session disconnects or shuts down."""
    return set()


def private_dir() -> Path:
    """This session's private folder (``work_dir()/sessions/<token>``, created and marked used). The token is
    random and kept in the session's server-side state only."""
    from core.app import private_store

    token = st.session_state.get(KEY_PRIVATE)
    if not isinstance(token, str) or len(token) != 32:
        token = private_store.new_token()
        st.session_state[KEY_PRIVATE] = token
    _session_tokens().add(token)
    return private_store.touch(token)


def is_upload_selected() -> bool:
    sel = st.session_state.get(KEY_CASE) or {}
    return sel.get("kind") == "upload"


def edit_store(case: Case) -> Any:
    """The ``EditStore`` of a case's corrections: this session's private one, for every case (another session, a
    reload included, cannot open it: hand corrections of one user are never shown to another; it is removed with
    the session). The corrected segmentation leaves the session through the report's downloads."""
    from core.analysis.edits import EditStore

    return EditStore(private_dir() / "corrections")


def drop_uploads() -> None:
    """Forget this session's uploaded case (and what was derived from it) and delete its private folder."""
    from core.app import private_store, session_cases

    upload = st.session_state.pop(KEY_UPLOADED, None)
    session_cases.forget_all()
    if is_upload_selected():
        st.session_state.pop(KEY_CASE, None)
        st.session_state.pop(KEY_CURSOR, None)
    if upload is not None:
        key = getattr(upload, "content_key", None)
        for value_key, case_key_key in ((KEY_PREDICTION, KEY_PREDICTION_CASE), (KEY_CORRECTED, KEY_CORRECTED_CASE)):
            if st.session_state.get(case_key_key) == key:
                st.session_state.pop(value_key, None)
                st.session_state.pop(case_key_key, None)
    st.session_state.pop("browser_upload_checks", None)
    token = st.session_state.pop(KEY_PRIVATE, None)
    if token:
        try:
            private_store.remove(token)
        except (BratsViewerError, OSError):
            pass


def expire_idle_uploads() -> None:
    """On every page run: a session idle for longer than the administrator's limit
    (``roots.upload_ttl_minutes``) loses its uploads and their corrections; once a minute per process, private
    folders idle for longer than the limit are swept (sessions that ended without their release hook)."""
    import time

    from core.app import private_store

    now = time.time()
    ttl_min = roots.upload_ttl_minutes()
    last = st.session_state.get(KEY_LAST_ACTIVE)
    if isinstance(last, (int, float)) and now - float(last) > ttl_min * 60.0 and (
            KEY_UPLOADED in st.session_state or KEY_PRIVATE in st.session_state):
        drop_uploads()
        st.info(f"Your uploaded files and their corrections were removed after {ttl_min:g} minutes without "
                "activity.", icon=":material/timer_off:")
    st.session_state[KEY_LAST_ACTIVE] = now
    token = st.session_state.get(KEY_PRIVATE)
    if token and private_store.session_dir(token).exists():
        private_store.touch(token)
    if now - _last_sweep["at"] > _SWEEP_EVERY_S:
        _last_sweep["at"] = now
        try:
            private_store.sweep(ttl_min)
        except OSError:
            pass


def pick_folder_in_roots(prefix: str, sub_label: str) -> Path | None:
    """A data root and one of its sub-folders chosen from pickers (never free text), and a "Read folder" button.

    Widget keys are ``<prefix>_root``, ``<prefix>_sub`` and ``<prefix>_read``.

    Returns:
        The chosen folder (checked again against the roots) when the button was pressed this run, else None.

    Raises:
        DataFolderError: no root to choose, or the folder is not inside the allowed roots.
    """
    from core.errors import DataFolderError

    # the roots only: their sub-folders are offered by the second picker (listing them here too named every
    # sub-folder twice)
    options = {lb: path for lb, path in roots.picker_folders().items() if "/" not in lb}
    c1, c2, c3 = st.columns([2, 3, 1], vertical_alignment="bottom")
    label = c1.selectbox("Data root", list(options), key=f"{prefix}_root")
    subs = roots.subfolders(options[label]) if label else []
    sub = c2.selectbox(sub_label, ["", *subs], key=f"{prefix}_sub", format_func=lambda s: s or "(the folder itself)")
    if not c3.button("Read folder", key=f"{prefix}_read", width="stretch"):
        return None
    if not label:
        raise DataFolderError("expected a data root, got none")
    return roots.resolve_folder(str(options[label] / sub) if sub else str(options[label]))
