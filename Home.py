"""Home: what the tool is and is not, the active model's card, the data folder in use, and where to start.

Imports no TensorFlow (the model card is read as JSON), so the app opens fast.
"""

from __future__ import annotations

import streamlit as st

from core import config
from core.app import ui
from core.data import roots
from core.errors import BratsViewerError

PAGES: tuple[tuple[str, str, str], ...] = (
    ("pages/1_Case_browser.py", "Case browser - pick a case or upload NIfTI files", ":material/folder_open:"),
    ("pages/2_Slice_viewer.py", "Slice viewer - three linked planes, overlays, montage, 3-D", ":material/view_in_ar:"),
    ("pages/3_Segmentation.py", "Segmentation - run the model and correct labels", ":material/auto_fix_high:"),
    ("pages/4_Volume_report.py", "Volume report - volumes, scores and PDF/CSV downloads", ":material/summarize:"),
    ("pages/5_Training.py", "Training - train or fine-tune the model", ":material/model_training:"),
    ("pages/6_Follow_up.py", "Follow-up - compare two studies of one patient (registration, volumes, RANO)",
     ":material/compare_arrows:"),
)

ui.page_header("Brain tumour MRI viewer", icon=":material/neurology:")

left, right = st.columns([3, 2], gap="large")

with left:
    st.subheader("What this is")
    st.markdown(
        "A research tool to look at brain MRI studies of glioma patients (BraTS-style: FLAIR, T1, T1CE and T2, "
        "co-registered and skull-stripped) together with tumour segmentations:\n"
        "- browse cases and upload your own NIfTI files;\n"
        "- view any modality in three linked planes with ground truth and predicted labels "
        "(necrotic core, edema, enhancing tumour);\n"
        "- segment a case with a small 2-D U-Net (also when T1 or T2 is missing), see its quality flag (**ok** or "
        "**review**, with the reasons), correct the result, and compute tumour volumes and overlap scores;\n"
        "- train or fine-tune the model on a folder of labelled cases."
    )
    st.subheader("What this is not")
    st.markdown(
        "- **Not a medical device.** Results must not inform diagnosis, treatment or any clinical decision.\n"
        "- The model was trained on a handful of public cases; its output can be wrong in ways that look "
        "plausible. Volumes and scores are for research comparison only.\n"
        "- Images are processed on the server running this app; do not upload identifiable patient data."
    )

    st.subheader("Where to start")
    for page, label, icon in PAGES:
        if (config.PROJECT_ROOT / page).is_file():  # pages written later appear when present
            st.page_link(page, label=label, icon=icon)

with right:
    st.subheader("Active model")
    model_dir = ui.active_model_dir()
    card = ui.model_card()
    if not card:
        st.info(f"No model card in `{model_dir.name}`. The model may still be training or be missing; the viewer "
                "works without it, segmentation needs it.", icon=":material/info:")
    else:
        st.markdown(f"**{card.get('name', model_dir.name)}**  \n{card.get('architecture', '')}")
        split = card.get("split") or {}
        n_train = len(split.get("train") or [])
        n_val = len(split.get("val") or [])
        cols = st.columns(3)
        cols[0].metric("Training cases", n_train)
        cv = card.get("cross_validation") or {}
        if cv.get("mean_dice") and not n_val:  # every case was held out once: "0 validation cases" misleads
            cols[1].metric("CV folds", str(cv.get("folds", "?")),  # "3-fold CV" as a value was cut
                           help=f"Cross-validation: each of {cv.get('cases', '?')} cases was held out once and "
                                "scored by a model trained on the others; the model shown was then trained on "
                                "all of them.")
        else:
            cols[1].metric("Validation cases", n_val)
        cols[2].metric("Epochs", card.get("epochs_run", "-"))
        dice = cv.get("mean_dice") or card.get("validation_mean_dice") or {}
        if cv.get("mean_dice"):
            st.markdown(f"**Cross-validation Dice** (mean over {cv.get('cases', '?')} held-out cases, "
                        f"{cv.get('folds', '?')} folds)")
        elif dice:
            st.markdown("**Validation Dice** (mean over validation cases)")
        if dice:
            dcols = st.columns(3)
            for col, region in zip(dcols, ("WT", "TC", "ET"), strict=True):
                value = dice.get(region)
                col.metric(region, "-" if value is None else f"{float(value):.3f}",
                           help=f"{config.REGION_LONG_NAMES[region]} Dice")
        lw = cv.get("lesionwise_brats2023_mean_dice") or {}
        if lw:
            st.markdown("**Lesion-wise Dice** (BraTS 2023 rule, same held-out cases)")
            lcols = st.columns(3)
            for col, region in zip(lcols, ("WT", "TC", "ET"), strict=True):
                value = lw.get(region)
                col.metric(region, "-" if value is None else f"{float(value):.3f}",  # a longer label is cut
                           help=f"{config.REGION_LONG_NAMES[region]}: mean Dice over lesions, a missed or false "
                                "lesion counting 0 (reference lesions under 50 mm³ left out, as BraTS 2023 does)")
        if card.get("small_data_warning"):
            st.caption(card["small_data_warning"])
        if card.get("created"):
            st.caption(f"Created {card['created']}")

    st.subheader("Data folder")
    folder = ui.data_dir()
    st.markdown(f"`{roots.display_name(folder)}`" + (" (bundled demo)" if folder == config.DEMO_DATA_DIR else ""))
    if folder.is_dir():
        try:
            n_cases = len(ui.list_cases(str(folder)))
            st.caption(f"{n_cases} case{'s' if n_cases != 1 else ''} found. Change it on the case browser.")
        except (BratsViewerError, OSError) as err:
            st.error(f"Could not read the data folder: {roots.redact_paths(str(err))}")
    else:
        st.error(f"The data folder `{roots.display_name(folder)}` does not exist; choose another on the case browser.")
