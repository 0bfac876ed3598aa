"""The cursor and the slice viewer's display settings in the URL, so that a browser reload keeps them.

The URL holds ``cur=x,y,z`` (voxel indices on the case's RAS grid) and the viewer's settings as short query
parameters (``img``, ``conv``, ``ov``, ``op``, ``outline``; see ``SETTINGS``; ``wp``: the window preset of each
image). The in-browser viewer's own toolbar choices stay in the browser tab (its sessionStorage). Everything read from the URL is
untrusted text: it is parsed and checked here (numbers in range, names from fixed lists) and what does not pass
is ignored. The URL only seeds a session that has no value of its own (a reload, or a shared link); the session's
values win afterwards and are written back to the URL.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import streamlit as st

PARAM_CURSOR = "cur"
MAX_INDEX = 4096  # larger than any MRI grid; a longer number is not an index

# widget key -> (URL parameter, kind). Kinds: "bool" (0/1), "opacity" (0..1 in steps of 0.05), "convention",
# "image" (a modality key or "all", checked against the case's own list by the page).
SETTINGS: dict[str, tuple[str, str]] = {
    "viewer_modality": ("img", "image"),
    "viewer_convention": ("conv", "convention"),
    "viewer_opacity": ("op", "opacity"),
    "viewer_contour": ("outline", "bool"),
}
OVERLAY_KEYS: dict[str, str] = {"viewer_show_gt": "gt", "viewer_show_pred": "pred", "viewer_show_corr": "corr",
                                "viewer_show_err": "err"}  # widget key -> name in ``ov=gt.pred``
PARAM_OVERLAYS = "ov"
# window presets: widget ``viewer_preset_<image>`` (``all`` for the 2x2 view) -> ``wp=flair:2,all:1`` (the index of
# the preset among core.views.figures.presets_for(image), so the URL never carries free text)
PRESET_PREFIX = "viewer_preset_"
PARAM_PRESETS = "wp"
CONVENTIONS: dict[str, str] = {"rad": "Radiological", "neuro": "Neurological"}


# ---------------------------------------------------------------------------------------- pure parsing ---

def parse_cursor(text: Any, shape: Sequence[int]) -> dict[str, int] | None:
    """``"x,y,z"`` as a cursor {x, y, z} inside a grid of ``shape`` (X, Y, Z); None for anything else."""
    parts = str(text or "").split(",")
    if len(parts) != 3 or not all(p.isdigit() and len(p) <= 4 for p in parts):
        return None
    values = [int(p) for p in parts]
    if any(v >= min(int(n), MAX_INDEX) for v, n in zip(values, shape, strict=True)):
        return None
    return dict(zip(("x", "y", "z"), values, strict=True))


def format_cursor(cursor: Mapping[str, int]) -> str:
    return f"{int(cursor['x'])},{int(cursor['y'])},{int(cursor['z'])}"


def parse_settings(params: Mapping[str, Any], images: Sequence[str]) -> dict[str, Any]:
    """Widget key -> value of the viewer settings in ``params`` that pass their checks (``images``: the choices
    of the image selector for this case). Overlays named in ``ov`` are on, the others off."""
    out: dict[str, Any] = {}
    for widget, (name, kind) in SETTINGS.items():
        raw = params.get(name)
        if raw is None:
            continue
        raw = str(raw)
        if kind == "bool" and raw in ("0", "1"):
            out[widget] = raw == "1"
        elif kind == "opacity":
            try:
                value = float(raw)
            except ValueError:
                continue
            if 0.0 <= value <= 1.0:
                out[widget] = round(round(value / 0.05) * 0.05, 2)
        elif kind == "convention" and raw in CONVENTIONS:
            out[widget] = CONVENTIONS[raw]
        elif kind == "image" and raw in images:
            out[widget] = raw
    raw_ov = params.get(PARAM_OVERLAYS)
    if raw_ov is not None:
        shown = set(str(raw_ov).split(".")) if raw_ov else set()
        if shown <= set(OVERLAY_KEYS.values()):
            out.update({widget: name in shown for widget, name in OVERLAY_KEYS.items()})
    return out


def settings_params(values: Mapping[str, Any]) -> dict[str, str]:
    """The URL parameters of the viewer settings ``values`` (widget key -> value), the inverse of
    ``parse_settings``."""
    out: dict[str, str] = {}
    for widget, (name, kind) in SETTINGS.items():
        if widget not in values:
            continue
        value = values[widget]
        if kind == "bool":
            out[name] = "1" if value else "0"
        elif kind == "opacity":
            out[name] = f"{float(value):.2f}"
        elif kind == "convention":
            out[name] = next((k for k, v in CONVENTIONS.items() if v == value), "rad")
        else:
            out[name] = str(value)
    if any(w in values for w in OVERLAY_KEYS):
        out[PARAM_OVERLAYS] = ".".join(n for w, n in OVERLAY_KEYS.items() if values.get(w))
    return out


def _preset_names(image: str) -> list[str]:
    from core.views.figures import presets_for

    return list(presets_for("flair" if image == "all" else image))


def parse_presets(text: Any, images: Sequence[str]) -> dict[str, str]:
    """Widget key -> preset name of the ``wp`` parameter's entries that name an image of ``images`` and an index
    of its presets; anything else is ignored."""
    out: dict[str, str] = {}
    for part in str(text or "").split(",")[:8]:
        image, _, index = part.partition(":")
        if image not in images or not index.isdigit() or len(index) > 2:
            continue
        names = _preset_names(image)
        if int(index) < len(names):
            out[f"{PRESET_PREFIX}{image}"] = names[int(index)]
    return out


def preset_params(values: Mapping[str, Any]) -> dict[str, str]:
    """The ``wp`` parameter of the window presets among ``values`` (widget key -> value); the inverse of
    ``parse_presets``. Empty when none is set."""
    parts = []
    for widget in sorted(values):
        if not widget.startswith(PRESET_PREFIX):
            continue
        image = widget[len(PRESET_PREFIX):]
        names = _preset_names(image)
        if values[widget] in names:
            parts.append(f"{image}:{names.index(values[widget])}")
    return {PARAM_PRESETS: ",".join(parts)} if parts else {}


# -------------------------------------------------------------------------------------- Streamlit glue ---

def restore_cursor(shape: Sequence[int]) -> dict[str, int] | None:
    """The URL's cursor when it fits ``shape`` (only used when the session has none of its own)."""
    return parse_cursor(st.query_params.get(PARAM_CURSOR), shape)


def seed_settings(images: Sequence[str]) -> None:
    """Before the viewer's widgets are drawn: give each widget that has no value of its own (a reload starts a
    new session) the URL's value."""
    params = st.query_params.to_dict()
    seeds = {**parse_settings(params, images), **parse_presets(params.get(PARAM_PRESETS), images)}
    for widget, value in seeds.items():
        if widget not in st.session_state:
            st.session_state[widget] = value


def remember(cursor: Mapping[str, int] | None, settings: Mapping[str, Any] | None = None) -> None:
    """Write the cursor (and the viewer's settings) to the URL, changing only what differs."""
    want = dict(settings_params(settings or {}))
    # the window presets of every image shown in this session (their widget keys depend on the image)
    want.update(preset_params({k: v for k, v in st.session_state.items()
                               if isinstance(k, str) and k.startswith(PRESET_PREFIX)}))
    if cursor is not None:
        want[PARAM_CURSOR] = format_cursor(cursor)
    params = st.query_params
    for name, value in want.items():
        if params.get(name) != value:
            params[name] = value
