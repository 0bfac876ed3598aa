"""Several Segmentation page sessions at once (AppTest instances in threads, one process: the page code and the
caches are shared, each session has its own state), as under the load test: each session moves its axial slider
and the slider must keep the session's slice, on the server and in what a browser shows when it (re)mounts it.

The load test found sessions whose slider had gone back to z=0: the slider had no default of its own (0), and a
browser that mounts it without a value of its own shows the default and sends it with the next rerun.
"""

from __future__ import annotations

import threading
from pathlib import Path

import pytest
from apptest_threads import concurrent_apptests
from conftest import DEMO_SELECTION, run_page

from core.app import ui

PAGE = "pages/3_Segmentation.py"
SESSIONS = 4
MOVES = 3


@pytest.fixture(autouse=True)
def _isolated(app_env: Path) -> Path:
    return app_env


def _slider(at):
    return at.slider(key="seg_z")


def _session(index: int, results: dict[int, list[tuple[int, int, int, list[float], bool]]],
             errors: dict[int, str]) -> None:
    try:
        at = run_page(PAGE, DEMO_SELECTION)
        seen = []
        for step in range(MOVES):
            target = _slider(at).value + index + 1  # each session goes its own way
            _slider(at).set_value(target).run()
            assert not at.exception, at.exception
            s = _slider(at)
            seen.append((target, s.value, at.session_state[ui.KEY_CURSOR]["z"], list(s.proto.default),
                         bool(s.proto.set_value)))
            if step == 0:
                at.run()  # a rerun with nothing changed (another widget, a rerun cut short) keeps it too
                s = _slider(at)
                seen.append((target, s.value, at.session_state[ui.KEY_CURSOR]["z"], list(s.proto.default),
                             bool(s.proto.set_value)))
        results[index] = seen
    except Exception as err:  # noqa: BLE001 - reported by the test below
        errors[index] = f"{type(err).__name__}: {err}"


def test_concurrent_sessions_keep_their_slice() -> None:
    results: dict[int, list] = {}
    errors: dict[int, str] = {}
    with concurrent_apptests():
        threads = [threading.Thread(target=_session, args=(i, results, errors)) for i in range(SESSIONS)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=300)
    assert not errors, errors
    assert sorted(results) == list(range(SESSIONS))
    for index, seen in results.items():
        for target, value, cursor_z, default, set_value in seen:
            assert value == target and cursor_z == target, (index, seen)
            assert default == [float(target)], f"session {index}: a browser mounting the slider shows {default}"
            assert not set_value, f"session {index}: the server overrode the slider the user moved"


def test_jump_moves_the_slider_and_its_default() -> None:
    at = run_page(PAGE, DEMO_SELECTION)
    _slider(at).set_value(3).run()
    target = next(b for b in at.button if b.label == "Most tumour")
    target.click().run()
    z = at.session_state[ui.KEY_CURSOR]["z"]
    assert z != 3 and _slider(at).value == z
    assert _slider(at).proto.set_value  # a jump is the server's move: the browser must follow
    at.run()
    assert _slider(at).value == z and list(_slider(at).proto.default) == [float(z)]
