"""A one-page Streamlit app showing the bundled demo case in NiiVue (``niivue-streamlit``), for
``benchmarks/bench_viewer_client.py`` only (not part of the app).

NiiVue gets the same data the in-browser viewer gets: the FLAIR cropped to the brain and scaled to 8 bits, and
the ground truth as a label overlay, each as an in-memory gzipped NIfTI.
"""

from __future__ import annotations

import gzip
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import streamlit as st

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from core import config  # noqa: E402
from core.data.cases import load_case_folder  # noqa: E402
from core.views import client_volume, figures  # noqa: E402

st.set_page_config(page_title="NiiVue benchmark", layout="wide")


@st.cache_resource
def _nifti_bytes() -> tuple[bytes, bytes]:
    case = load_case_folder(config.DEMO_DATA_DIR / "TCIA-example")
    flair = case.images["flair"].data
    start, stop = client_volume.crop_box([case.images[k].data for k in case.modalities])
    sl = tuple(slice(a, b) for a, b in zip(start, stop, strict=True))
    low, high = client_volume.scale_range(figures.brain_percentiles(flair))
    affine = case.reference.affine.copy()
    affine[:3, 3] += affine[:3, :3] @ np.array(start, dtype=float)  # the crop's corner keeps its place in mm
    img = nib.Nifti1Image(client_volume.to_uint8(flair[sl], low, high), affine)
    seg = nib.Nifti1Image(np.asarray(case.seg.data[sl], dtype=np.uint8), affine)
    return gzip.compress(img.to_bytes(), 6), gzip.compress(seg.to_bytes(), 6)


from niivue_component import niivue_viewer  # noqa: E402

image, labels = _nifti_bytes()
st.title("NiiVue")
niivue_viewer(nifti_data=image, filename="flair.nii.gz",
              overlays=[{"data": labels, "name": "seg.nii.gz", "colormap": "red", "opacity": 0.4}],
              height=420, view_mode="multiplanar", styled=False,
              settings={"crosshair": True, "radiological": True, "interpolation": False},
              update_interval_ms=None, key="nv")
