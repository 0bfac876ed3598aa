"""The in-browser slice viewer as a Streamlit component (``slice_client/index.html``, no external resource).

The page sends one case at a time (``core.views.client_volume.pack_case``: cropped, 8-bit, deflated, as bytes),
cached here per case content so that a rerun re-sends an identical message, which Streamlit's message cache
turns into a reference. Paging, window/level and overlays then run in the browser; the component returns
``{"cursor": {x, y, z}, "seq": int, "ruler": [[x, y, z], [x, y, z]] | None, "view": {...}}`` after a click or a
change of its own controls (``view``: the reader's choices, ``core.views.viewer.parse_client_view``), never while
paging.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import streamlit as st
import streamlit.components.v1 as components

from core.data.cases import Case

_FRONTEND = Path(__file__).with_name("slice_client")
_component = components.declare_component("brats_slice_client", path=str(_FRONTEND))


@st.cache_resource(max_entries=3, show_spinner="Preparing the case for the browser...")
def _payload_cached(key: str, _case: Case, _labels: dict[str, np.ndarray], _stats: Any,
                    _tumour: dict[str, int] | None) -> tuple[dict[str, Any], bytes]:
    from core.views.client_volume import pack_case

    return pack_case({k: _case.images[k].data for k in _case.modalities}, _stats.percentiles, _labels,
                     _case.reference.affine, _case.spacing_mm,
                     cursors={"tumour": _tumour, "centre": _stats.centre})


def case_payload(case: Case, labels: dict[str, np.ndarray], label_keys: str, stats: Any,
                 tumour_cursor: dict[str, int] | None = None) -> tuple[dict[str, Any], bytes]:
    """``pack_case`` of a case with its overlays, once per (case content, ``label_keys``: a digest of the
    overlays' content, the "Most tumour" cursor) and shared read-only (at most 3 kept).

    ``tumour_cursor`` is where "Most tumour" jumps: the expert label's (``stats.tumour_cursor``) when None, so a
    case without one but with a prediction passes the prediction's."""
    from core.app.ui import case_cache_key

    tumour = tumour_cursor if tumour_cursor is not None else stats.tumour_cursor
    where = ",".join(str(tumour[n]) for n in ("x", "y", "z")) if tumour else "-"
    return _payload_cached(f"{case_cache_key(case)}|{label_keys}|{where}", case, labels, stats, tumour)


def slice_client(payload: tuple[dict[str, Any], bytes], cursor: dict[str, int] | None, settings: dict[str, Any],
                 height: int, key: str) -> dict[str, Any] | None:
    """Show the viewer; returns the last click's ``{"cursor", "seq", "ruler"}`` or None before any click.

    Args:
        payload: ``case_payload`` (metadata, blob): the blob goes as binary, the metadata as JSON.
        cursor: where to open ({x, y, z} on the full grid); the client keeps its own cursor afterwards.
        settings: {"modality": key or "all" (2x2), "plane": plane of the 2x2, "show": [overlay names shown],
            "radiological": bool, "opacity": float, "outline": bool, "hidden": [label values not drawn],
            "windows": {key: [low, high] 8-bit} (optional)}; on a rerun with the same case the viewer applies
            only the fields that changed since the last settings it received.
        height: pixels of the component.
    """
    meta, blob = payload
    return _component(payload=meta, blob=blob, cursor=cursor, settings=settings, height=height, key=key, default=None)
