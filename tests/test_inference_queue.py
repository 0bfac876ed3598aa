"""core/app/inference_queue.py: first come, first served, bounded, and a request that gives up leaves no trace.

Threads stand in for sessions; they are synchronised with events and by watching the queue's own counts
(no sleeps whose length decides the outcome).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

import pytest

from core.app import inference_queue
from core.app.inference_queue import FairQueue


def until(condition: Callable[[], bool], limit_s: float = 20.0) -> None:
    """Wait for ``condition`` (a synchronisation helper, not a timing assertion)."""
    deadline = time.monotonic() + limit_s
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached")
        time.sleep(0.005)


class Session(threading.Thread):
    """Takes a turn, records that it entered, holds it until released."""

    def __init__(self, queue: FairQueue, name: str, entered: list[str], fail_on_wait: bool = False) -> None:
        super().__init__(daemon=True)
        self.queue, self.name_, self.entered, self.fail_on_wait = queue, name, entered, fail_on_wait
        self.places: list[int] = []
        self.release = threading.Event()
        self.error: BaseException | None = None

    def _on_wait(self, ahead: int) -> None:
        self.places.append(ahead)
        if self.fail_on_wait:
            raise RuntimeError("the session left")

    def run(self) -> None:
        try:
            with self.queue.turn(on_wait=self._on_wait, poll_s=0.01):
                self.entered.append(self.name_)
                self.release.wait(20)
        except RuntimeError as err:
            self.error = err


def test_one_slot_serves_in_arrival_order_and_tells_each_its_place() -> None:
    queue, entered = FairQueue(1), []
    a = Session(queue, "a", entered)
    a.start()
    until(lambda: entered == ["a"])
    b = Session(queue, "b", entered)
    b.start()
    until(lambda: queue.snapshot() == (1, 1) and b.places)
    c = Session(queue, "c", entered)
    c.start()
    until(lambda: queue.snapshot() == (1, 2) and c.places)
    assert set(b.places) == {1} and set(c.places) == {2}  # one running ahead of b; it and b ahead of c
    a.release.set()
    until(lambda: len(entered) == 2)
    assert entered == ["a", "b"] and queue.snapshot() == (1, 1)  # b first, c still waits
    until(lambda: c.places[-1] == 1)  # c moves up
    b.release.set()
    until(lambda: len(entered) == 3)
    c.release.set()
    for s in (a, b, c):
        s.join(20)
    assert entered == ["a", "b", "c"] and queue.snapshot() == (0, 0)


def test_two_slots_run_two_at_once() -> None:
    queue, entered = FairQueue(2), []
    sessions = [Session(queue, n, entered) for n in "abc"]
    for s in sessions:
        s.start()
    until(lambda: len(entered) == 2 and queue.snapshot() == (2, 1))
    waiting = next(s for s in sessions if s.name_ not in entered)
    until(lambda: bool(waiting.places))
    assert set(waiting.places) == {2}
    for s in sessions:
        s.release.set()
    for s in sessions:
        s.join(20)
    assert sorted(entered) == ["a", "b", "c"] and queue.snapshot() == (0, 0)


def test_a_request_whose_session_leaves_gives_its_place_up() -> None:
    queue, entered = FairQueue(1), []
    a = Session(queue, "a", entered)
    a.start()
    until(lambda: entered == ["a"])
    gone = Session(queue, "gone", entered, fail_on_wait=True)
    gone.start()
    gone.join(20)
    assert isinstance(gone.error, RuntimeError) and queue.snapshot() == (1, 0)
    a.release.set()
    a.join(20)
    assert entered == ["a"] and queue.snapshot() == (0, 0)


def test_an_error_inside_the_turn_frees_the_slot() -> None:
    queue = FairQueue(1)
    with pytest.raises(ValueError), queue.turn():
        raise ValueError("prediction failed")
    assert queue.snapshot() == (0, 0)
    with queue.turn():
        assert queue.snapshot() == (1, 0)


@pytest.mark.parametrize(("value", "slots"), [("", 1), ("3", 3), ("0", 1), ("-2", 1), ("many", 1)])
def test_slots_come_from_the_environment(monkeypatch: pytest.MonkeyPatch, value: str, slots: int) -> None:
    monkeypatch.setenv(inference_queue.SLOTS_ENV, value)
    assert inference_queue.configured_slots() == slots
    assert inference_queue.shared_queue().slots == slots


def test_a_segmentation_waits_its_turn_and_says_its_place(monkeypatch: pytest.MonkeyPatch) -> None:
    """ui.cached_prediction goes through the shared queue and reports the wait (stand-ins for the model)."""
    from types import SimpleNamespace

    import streamlit as st

    from core.app import ui
    from core.engine import inference

    monkeypatch.setenv(inference_queue.SLOTS_ENV, "1")
    monkeypatch.setattr(ui, "prepared_for", lambda case, loaded: None)
    monkeypatch.setattr(inference, "predict_case", lambda loaded, case, **kw: ("prediction of", case.content_key))
    st.cache_resource.clear()
    queue = inference_queue.shared_queue()
    holder = Session(queue, "other user", [])
    holder.start()
    until(lambda: queue.snapshot() == (1, 0))
    case, loaded = SimpleNamespace(content_key="k" * 32), SimpleNamespace(sha256="m" * 64)
    messages: list[str] = []
    out: list[object] = []
    mine = threading.Thread(target=lambda: out.append(ui.cached_prediction(case, loaded, False,
                                                                          on_wait=messages.append)), daemon=True)
    mine.start()
    until(lambda: bool(messages))
    assert messages[0] == "Waiting for the model: 1 segmentation ahead of yours..."
    assert out == []  # not before its turn
    holder.release.set()
    mine.join(20)
    assert out == [("prediction of", "k" * 32)] and queue.snapshot() == (0, 0)
    st.cache_resource.clear()
