"""Training: configure and start a background training run, watch it live, stop it, and pick the active model.

The run is a separate process (core.app.jobs), so it goes on when this page is left or the browser reloads; the
live part re-reads its progress file and CSV log every two seconds.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import plotly.graph_objects as go
import streamlit as st

from core import config
from core.app import jobs, ui
from core.data import roots
from core.errors import BratsViewerError

KEY_WAS_ALIVE = "training_job_was_alive"
KEY_CURVES_MODEL = "training_curves_model"
KEY_NAME = "train_name"  # the output name box: its default is set once per session, a typed name is kept
CURVES: tuple[tuple[str, str], ...] = (("loss", "Loss"), ("dice_coef", "Dice (mean of tumour classes)"),
                                       ("accuracy", "Accuracy"))
NORMALISATIONS = ("robust_brain", "zscore_brain", "slice_max")
CROPS = ("brain_bbox", "none")
INPUT_SIZES = (128, 96, 64, 160, 192)
BASE_FILTERS = (4, 8, 16, 32, 64)
LOSSES = ("ce_dice", "ce")
CONTEXTS = (0, 1, 2)
SPLIT_FRACTIONS, SPLIT_CASES = "By fractions", "Choose validation cases"


def default_data_folder() -> Path:
    """``shared/data/brats/train`` when present and inside the data roots, else the session's data folder."""
    shared = config.shared_data_dir()
    if shared is not None and (shared / "brats" / "train").is_dir():
        try:
            return roots.resolve_folder(str(shared / "brats" / "train"))
        except BratsViewerError:
            pass
    return ui.data_dir()


def default_model_name() -> str:
    """``unet2d_<date>_<time>`` of now: set once per session (``KEY_NAME``), so it does not change each minute."""
    return f"unet2d_{time.strftime('%Y%m%d_%H%M')}"


def curve_figure(rows: list[dict[str, float]], key: str, title: str) -> go.Figure:
    """Train and validation curves of one metric over epochs (1-based) from history.csv rows."""
    fig = go.Figure()
    epochs = [int(r.get("epoch", i)) + 1 for i, r in enumerate(rows)]
    for name, col, dash in (("train", key, "solid"), ("validation", f"val_{key}", "dash")):
        values = [r.get(col) for r in rows]
        if any(v is not None for v in values):
            fig.add_trace(go.Scatter(x=epochs, y=values, mode="lines+markers", name=name, line={"dash": dash}))
    fig.update_layout(title=title, xaxis_title="epoch", height=280, margin={"l": 10, "r": 10, "t": 40, "b": 10},
                      legend={"orientation": "h", "y": -0.3})
    return fig


def show_curves(out_dir: str | Path, key_prefix: str) -> None:
    rows = jobs.history(out_dir)
    if not rows:
        st.caption("No finished epoch yet: curves appear after the first epoch.")
        return
    cols = st.columns(len(CURVES))
    for col, (key, title) in zip(cols, CURVES, strict=True):
        with col:
            st.plotly_chart(curve_figure(rows, key, title), key=f"{key_prefix}_{key}", width="stretch")


def show_progress(status: dict[str, Any]) -> None:
    prog = status.get("progress", {})
    epoch, epochs = int(prog.get("epoch", 0) or 0), int(prog.get("epochs", 0) or 0)
    batch, batches = int(prog.get("batch", 0) or 0), int(prog.get("batches", 0) or 0)
    if epochs:
        done = (max(epoch - 1, 0) + (batch / batches if batches else 0.0)) / epochs
        st.progress(min(max(done, 0.0), 1.0),
                    text=f"Epoch {epoch} of {epochs}" + (f", batch {batch} of {batches}" if batches else ""))
    else:
        st.progress(0.0, text="Preparing: reading and caching the cases...")
    logs = prog.get("logs") or {}
    if logs:
        cols = st.columns(4)
        for col, (label, key) in zip(cols, (("loss", "loss"), ("val loss", "val_loss"), ("Dice", "dice_coef"),
                                            ("val Dice", "val_dice_coef")), strict=True):
            if key in logs:
                col.metric(label, f"{logs[key]:.4f}")
    if prog.get("elapsed_s"):
        st.caption(f"Training time so far: {prog['elapsed_s'] / 60:.1f} min")


@st.fragment(run_every=2)
def live_job() -> None:
    """The recorded job: state, progress, curves, stop button (reruns itself every 2 s)."""
    status = jobs.job_status()
    state = status["state"]
    was_alive = st.session_state.get(KEY_WAS_ALIVE, False)
    st.session_state[KEY_WAS_ALIVE] = status["alive"]
    if was_alive and not status["alive"]:
        st.rerun()  # refresh the whole page: the form unlocks and a finished model joins the list
    if state == "idle":
        st.info("No training run yet. Configure one below.", icon=":material/info:")
        return
    out = status.get("out_dir", "")
    name = Path(out).name
    started = time.strftime("%Y-%m-%d %H:%M", time.localtime(float(status.get("started", 0))))
    st.markdown(f"**Run `{name}`** (started {started}, pid {status.get('pid')}): **{state}**")
    if status["alive"]:
        show_progress(status)
        if st.button("Stop training", icon=":material/stop_circle:", type="secondary"):
            with st.spinner("Stopping (the last finished epoch's checkpoint is kept)..."):
                try:
                    jobs.stop_training()
                except BratsViewerError as err:
                    st.error(roots.redact_paths(str(err)))
            st.rerun()
    elif state == "finished":
        st.success(f"Finished: model `{name}` saved in the models folder.", icon=":material/check_circle:")
    elif state.startswith("stopped"):
        note = " (the process ended without finishing)" if state != "stopped" else ""
        st.warning(f"Stopped{note}. The last checkpoint and the CSV log are kept in the model folder `{name}`.",
                   icon=":material/stop_circle:")
    else:
        error = status.get("progress", {}).get("error") or f"exit code {status.get('returncode')}"
        st.error(f"Training failed: {error}", icon=":material/error:")
        st.code(status.get("log_tail") or "(no log)", language="text")
    show_curves(out, "live")
    with st.expander("Log (last lines)"):
        st.code(status.get("log_tail") or "(empty)", language="text")


def training_form(job_alive: bool) -> None:
    """The settings of a new run; starts it in the background."""
    st.subheader("New training run")
    if job_alive:
        st.info("A training run is in progress: one run at a time. Stop it above to start another.")
    options = roots.picker_folders()  # folders inside the administrator's data roots only
    labels = list(options)
    if not labels:
        st.error("No data folder is available: the administrator allows none (BRATS_DATA_ROOTS).",
                 icon=":material/folder_off:")
        return
    current = roots.folder_label(default_data_folder(), options)
    label = st.selectbox("Data folder (labelled BraTS cases)", labels, disabled=job_alive, key="train_folder_pick",
                         index=labels.index(current) if current in labels else 0,
                         help="Folders inside the data roots the server's administrator allows.")
    try:
        folder = roots.resolve_folder(options[label])
        rows = ui.list_cases(str(folder))
    except BratsViewerError as err:
        st.error(roots.redact_paths(str(err)))
        return
    labelled = [r["case_id"] for r in rows if r.get("ground_truth")]
    if not labelled:
        st.warning(f"No labelled cases (with a segmentation file) in `{roots.display_name(folder)}`: nothing to train on.",
                   icon=":material/folder_off:")
        return
    st.caption(f"{len(labelled)} labelled case(s) found: {', '.join(labelled[:12])}"
               + (" ..." if len(labelled) > 12 else ""))
    recipe = jobs.recipe_defaults()  # the shipped model's settings (config.json), not numbers typed here

    def pick(options: tuple, key: str, fallback: Any) -> int:
        """Index of the recipe's value among ``options`` (else of ``fallback``)."""
        value = recipe.get(key, fallback)
        return options.index(value) if value in options else options.index(fallback)

    st.caption("Defaults: the recipe of the shipped model `" + config.DEFAULT_MODEL_NAME + "` (its config.json)"
               if recipe else "The shipped model's recipe was not found: generic defaults.")
    split_mode = st.radio("Validation split", (SPLIT_FRACTIONS, SPLIT_CASES), horizontal=True, disabled=job_alive,
                          key="train_split_mode",
                          help="Either random fractions of the cases, or validation cases you name (the rest "
                               "train; no test cases). Only the inputs of the chosen way are shown.")
    # Plain widgets, not an st.form: in a form, Enter in a number box submits it and starts a run. Here only a
    # click on "Start training" starts one; every widget has its own key so its value survives reruns.
    st.session_state.setdefault(KEY_NAME, default_model_name())
    with st.container(border=True):
        f_val = f_test = 0.0
        val_cases: list[str] = []
        if split_mode == SPLIT_FRACTIONS:
            c1, c2 = st.columns(2)
            f_val = c1.number_input("Validation fraction", 0.0, 0.9, 0.15, 0.05, key="train_f_val",
                                    disabled=job_alive)
            f_test = c2.number_input("Test fraction", 0.0, 0.9, 0.15, 0.05, key="train_f_test", disabled=job_alive)
        else:
            val_cases = st.multiselect("Validation cases", labelled,
                                       default=labelled[-1:] if len(labelled) > 1 else [], key=f"train_val_cases_{label}",
                                       disabled=job_alive,
                                       help="The other labelled cases train the model; none is kept for testing.")
        c1, c2, c3, c4 = st.columns(4)
        epochs = c1.number_input("Epochs", 1, 500, int(min(max(recipe.get("epochs", 25), 1), 500)),
                                 key="train_epochs", disabled=job_alive)
        batch_size = c2.number_input("Batch size", 1, 64, int(min(max(recipe.get("batch_size", 8), 1), 64)),
                                     key="train_batch_size", disabled=job_alive)
        input_size = c3.selectbox("Slice size (pixels)", INPUT_SIZES, index=pick(INPUT_SIZES, "input_size", 128),
                                  key="train_input_size", disabled=job_alive)
        max_minutes = c4.number_input("Time limit (minutes, 0 = none)", 0.0, 24 * 60.0,
                                      float(min(max(recipe.get("max_minutes", 0.0), 0.0), 24 * 60.0)), 5.0,
                                      key="train_max_minutes", disabled=job_alive)
        channels = st.multiselect("Input channels", list(config.MODALITIES),
                                  default=list(recipe.get("channels", config.MODALITIES)),
                                  format_func=lambda m: config.MODALITY_TITLES[m], key="train_channels",
                                  disabled=job_alive)
        c1, c2, c3 = st.columns(3)
        base_filters = c1.select_slider("Network width (base filters)", BASE_FILTERS,
                                        value=BASE_FILTERS[pick(BASE_FILTERS, "base_filters", 16)],
                                        key="train_base_filters", disabled=job_alive)
        depth = c2.slider("Depth (poolings)", 2, 5, int(min(max(recipe.get("depth", 4), 2), 5)), key="train_depth",
                          disabled=job_alive)
        loss = c3.radio("Loss", LOSSES, horizontal=True, index=pick(LOSSES, "loss", "ce_dice"), key="train_loss",
                        format_func=lambda v: {"ce": "cross-entropy", "ce_dice": "cross-entropy + Dice"}[v],
                        disabled=job_alive)
        c1, c2 = st.columns(2)
        normalisation = c1.selectbox("Normalisation", NORMALISATIONS, index=pick(NORMALISATIONS, "normalisation",
                                                                                  "robust_brain"),
                                     key="train_normalisation", disabled=job_alive,
                                     help="robust_brain: z-score over brain voxels after clipping to the 0.5-99.5th "
                                          "percentiles; zscore_brain: z-score over brain voxels; slice_max: divide "
                                          "by slice max")
        crop = c2.selectbox("Crop", CROPS, index=pick(CROPS, "crop", "brain_bbox"), key="train_crop",
                            disabled=job_alive, help="brain_bbox: crop to the brain's bounding box before resizing")
        c1, c2, c3, c4 = st.columns(4)
        context = c1.selectbox("Context slices each side", CONTEXTS, index=pick(CONTEXTS, "context", 0),
                               key="train_context", disabled=job_alive,
                               help="Neighbouring axial slices given as extra channels (2.5-D)")
        modality_dropout = c2.number_input("Modality dropout", 0.0, 0.9,
                                           float(min(max(recipe.get("modality_dropout", 0.3), 0.0), 0.9)), 0.1,
                                           key="train_modality_dropout", disabled=job_alive,
                                           help="Share of training samples with some sequences zero-filled, so the "
                                                "model segments cases that lack them")
        bias_field = c3.number_input("Bias-field augmentation", 0.0, 1.0,
                                     float(min(max(recipe.get("bias_field", 0.3), 0.0), 1.0)), 0.1,
                                     key="train_bias_field", disabled=job_alive)
        strong_augment = c4.checkbox("Strong augmentation", value=bool(recipe.get("strong_augment", True)),
                                     key="train_strong_augment", disabled=job_alive,  # a longer label is cut
                                     help="Strong intensity augmentation: gamma, contrast, noise, blur and low "
                                          "resolution")
        name = st.text_input("Output name (letters, digits, - and _)", key=KEY_NAME, disabled=job_alive,
                             help="Kept while you change the other settings; the default is fixed when the page "
                                  "is first opened in this session.")
        submitted = st.button("Start training", type="primary", disabled=job_alive, icon=":material/play_arrow:",
                              key="train_start")
    if not submitted:
        return
    try:
        jobs.validate_model_name(name)
        out = roots.resolve_under(config.MODELS_DIR, name)  # outputs only under the writable models folder
        folder = roots.resolve_folder(str(folder))  # checked again at the start: the roots may have changed
        if out.exists() and any(out.iterdir()):
            raise jobs.JobError(f"expected a new output name, got {name!r} which already exists in models/")
        if not channels:
            raise jobs.JobError("expected at least one input channel, got none")
        cfg: dict[str, Any] = {"data_dir": str(folder), "channels": tuple(channels), "input_size": int(input_size),
                               "normalisation": normalisation, "crop": crop, "base_filters": int(base_filters),
                               "depth": int(depth), "epochs": int(epochs), "batch_size": int(batch_size),
                               "loss": loss, "max_minutes": float(max_minutes), "context": int(context),
                               "modality_dropout": float(modality_dropout), "bias_field": float(bias_field),
                               "strong_augment": bool(strong_augment)}
        if split_mode == SPLIT_FRACTIONS:
            f_train = round(1.0 - f_val - f_test, 6)
            if f_train <= 0:
                raise jobs.JobError(f"expected validation + test fractions below 1, got {f_val + f_test:.2f}")
            cfg["split"] = (f_train, float(f_val), float(f_test))
        else:
            if not val_cases or len(val_cases) >= len(labelled):
                raise jobs.JobError(f"expected 1 to {len(labelled) - 1} validation cases, got {len(val_cases)}")
            cfg["val_cases"] = tuple(val_cases)
        jobs.start_training(cfg, out)
    except BratsViewerError as err:
        st.error(roots.redact_paths(str(err)))
        return
    st.session_state[KEY_WAS_ALIVE] = True
    st.session_state.pop(KEY_NAME, None)  # the next run gets a fresh default name
    st.toast(f"Training {name} started in the background.", icon=":material/play_arrow:")
    st.rerun()


def card_summary(card: dict[str, Any]) -> None:
    split = card.get("split", {})
    dice = card.get("validation_mean_dice") or {}
    cols = st.columns(4)
    cols[0].metric("Training cases", len(split.get("train", [])))
    cols[1].metric("Epochs run", f"{card.get('epochs_run', '?')} of {card.get('epochs_requested', '?')}")
    wall = card.get("total_wall_time_s")
    cols[2].metric("Wall time", f"{wall / 60:.1f} min" if isinstance(wall, (int, float)) else "?")
    cols[3].metric("Parameters", f"{card['parameters']:,}" if isinstance(card.get("parameters"), int) else "?")
    st.markdown("Validation Dice: " + ", ".join(
        f"{r} {dice[r]:.3f}" if isinstance(dice.get(r), (int, float)) else f"{r} n/a" for r in ("WT", "TC", "ET")))
    if card.get("weights_sha256"):
        st.markdown(f"Weights SHA-256 `{card['weights_sha256']}`")


def model_list() -> None:
    st.subheader("Trained models")
    models = jobs.list_models(config.MODELS_DIR)
    busy = jobs.other_live_runs(config.MODELS_DIR)
    if busy:
        st.info("Being trained by another process right now: " + ", ".join(f"`{b}`" for b in busy))
    if not models:
        st.info("No trained models in the models folder yet. Train one above.", icon=":material/info:")
        return
    active = ui.active_model_dir().resolve()
    for m in models:
        is_active = Path(m["path"]).resolve() == active
        with st.expander(f"{m['name']}" + (" (active)" if is_active else ""), expanded=is_active):
            card = m["card"]
            if card:
                card_summary(card)
            else:
                st.caption("No model card (model_card.json) in this folder.")
            if is_active:
                st.caption("This is the model the viewer uses.")
            elif st.button("Make this the active model", key=f"activate_{m['name']}", icon=":material/star:"):
                try:
                    folder = jobs.set_active_model(m["name"], config.MODELS_DIR)
                except BratsViewerError as err:
                    st.error(roots.redact_paths(str(err)))
                else:
                    ui.load_model_cached.clear()
                    st.session_state[ui.KEY_MODEL_DIR] = str(folder)
                    st.rerun()
            if jobs.history(m["path"]) and st.toggle("Show training curves", key=f"curves_{m['name']}"):
                show_curves(m["path"], f"model_{m['name']}")
            if m["card_markdown"]:
                st.markdown("---")
                st.markdown(m["card_markdown"])


ui.page_header("Training", icon=":material/model_training:")
st.caption("Train a 2D U-Net on labelled cases in the background, follow its curves, and choose the model the "
           "viewer uses. Training runs as a separate process: you can leave this page while it runs.")
live_job()
training_form(jobs.job_status()["alive"])
model_list()
