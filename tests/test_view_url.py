"""The URL's cursor and viewer settings (core/app/view_url.py): parsing of untrusted text and the round trip."""

from __future__ import annotations

import pytest

from core.app import view_url

SHAPE = (240, 240, 155)


@pytest.mark.parametrize("text", ["", None, "1,2", "1,2,3,4", "-1,2,3", "1.5,2,3", "a,b,c", "240,0,0", "0,0,155",
                                  "00000001,2,3", " 1,2,3", "1,2,3\n"])
def test_parse_cursor_refuses_anything_but_indices_inside_the_grid(text: object) -> None:
    assert view_url.parse_cursor(text, SHAPE) is None


def test_parse_cursor_round_trip() -> None:
    cursor = {"x": 239, "y": 0, "z": 154}
    assert view_url.format_cursor(cursor) == "239,0,154"
    assert view_url.parse_cursor("239,0,154", SHAPE) == cursor


def test_settings_round_trip_and_checks() -> None:
    values = {"viewer_modality": "t1ce", "viewer_convention": "Neurological", "viewer_opacity": 0.65,
              "viewer_contour": True, "viewer_show_gt": False, "viewer_show_pred": True, "viewer_show_corr": False,
              "viewer_show_err": True}
    params = view_url.settings_params(values)
    assert params == {"img": "t1ce", "conv": "neuro", "op": "0.65", "outline": "1", "ov": "pred.err"}
    assert view_url.parse_settings(params, ["flair", "t1ce", "all"]) == values
    # an image the case lacks, an unknown convention, opacity out of range or not a number, unknown overlays
    bad = {"img": "t2", "conv": "sideways", "op": "1.5", "outline": "yes", "ov": "gt.script"}
    assert view_url.parse_settings(bad, ["flair", "t1ce"]) == {}
    assert view_url.parse_settings({"op": "nan"}, ["flair"]) == {}
    assert view_url.parse_settings({"op": "0.33"}, ["flair"]) == {"viewer_opacity": 0.35}  # the slider's step
    assert view_url.parse_settings({"ov": ""}, ["flair"]) == {k: False for k in view_url.OVERLAY_KEYS}


def test_window_presets_round_trip_and_checks() -> None:
    values = {"viewer_preset_flair": "Full range", "viewer_preset_all": "Lesion (bright edema)",
              "viewer_preset_t1ce": "no such preset", "viewer_modality": "flair"}
    params = view_url.preset_params(values)
    assert params == {"wp": "all:1,flair:2"}  # the unknown preset is left out
    assert view_url.parse_presets(params["wp"], ["flair", "t1ce", "all"]) == {
        "viewer_preset_flair": "Full range", "viewer_preset_all": "Lesion (bright edema)"}
    for bad in ("t2:1", "flair:9", "flair:-1", "flair:x", "../x:1", "flair:001", ""):
        assert view_url.parse_presets(bad, ["flair", "t1ce", "all"]) == {}, bad


def test_a_reload_keeps_the_window_preset(app_env) -> None:
    """Bug: a reload kept the image and overlays but not the window chosen for it."""
    from conftest import DEMO_SELECTION, HOME, run_page
    from streamlit.testing.v1 import AppTest

    at = run_page("pages/2_Slice_viewer.py", DEMO_SELECTION, timeout=60)
    at.selectbox(key="viewer_preset_flair").set_value("Full range").run()
    assert not at.exception, at.exception
    assert at.query_params["wp"] in ("flair:2", ["flair:2"])
    again = AppTest.from_file(HOME, default_timeout=60)
    again.switch_page("pages/2_Slice_viewer.py")
    for name in at.query_params:
        again.query_params[name] = at.query_params[name]
    again.run()
    assert not again.exception, again.exception
    assert again.selectbox(key="viewer_preset_flair").value == "Full range"
