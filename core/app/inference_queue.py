"""Fair queueing of whole-volume predictions from many sessions of one server process (no Streamlit here).

One model instance serves every session; at most ``slots`` predictions run at once
(``$BRATS_MAX_CONCURRENT_PREDICTIONS``, default 1: on a CPU server a second concurrent prediction only slows
both). Requests are served first come, first served. While a request waits, ``on_wait(ahead)`` is called
about every ``poll_s`` seconds with the number of requests before it (running ones included), so the page can
show a place in the queue; an exception raised by ``on_wait`` (Streamlit stops a script whose session has left
by raising one) withdraws the request, so nobody's place is held by a user who is gone.
"""

from __future__ import annotations

import itertools
import os
import threading
from collections import deque
from collections.abc import Callable, Iterator
from contextlib import contextmanager

SLOTS_ENV = "BRATS_MAX_CONCURRENT_PREDICTIONS"


class FairQueue:
    """First come, first served admission of at most ``slots`` holders at once."""

    def __init__(self, slots: int = 1) -> None:
        self.slots = max(1, int(slots))
        self._cond = threading.Condition()
        self._waiting: deque[int] = deque()
        self._running: set[int] = set()
        self._tickets = itertools.count()

    def snapshot(self) -> tuple[int, int]:
        """(running, waiting) now."""
        with self._cond:
            return len(self._running), len(self._waiting)

    @contextmanager
    def turn(self, on_wait: Callable[[int], None] | None = None, poll_s: float = 0.5) -> Iterator[None]:
        """Wait for this request's turn, hold a slot inside the ``with`` block, give it back after.

        Args:
            on_wait: called outside the queue's lock with the number of requests ahead (>= 1) while waiting.
            poll_s: how often ``on_wait`` is called while waiting (seconds).
        """
        with self._cond:
            ticket = next(self._tickets)
            self._waiting.append(ticket)
        try:
            while True:
                with self._cond:
                    if self._admissible(ticket):
                        self._waiting.remove(ticket)
                        self._running.add(ticket)
                        break
                    ahead = len(self._running) + self._waiting.index(ticket)
                if on_wait is not None:
                    on_wait(ahead)
                with self._cond:
                    if not self._admissible(ticket):
                        self._cond.wait(timeout=poll_s)
            yield
        finally:
            with self._cond:
                if ticket in self._waiting:
                    self._waiting.remove(ticket)
                self._running.discard(ticket)
                self._cond.notify_all()

    def _admissible(self, ticket: int) -> bool:
        """The ticket is among the first ``free slots`` of the waiting line (call with the lock held)."""
        free = self.slots - len(self._running)
        return free > 0 and ticket in itertools.islice(self._waiting, free)


_shared: dict[str, FairQueue] = {}
_shared_lock = threading.Lock()


def configured_slots() -> int:
    """``$BRATS_MAX_CONCURRENT_PREDICTIONS`` (a positive integer), else 1."""
    try:
        return max(1, int(os.environ.get(SLOTS_ENV, "1")))
    except ValueError:
        return 1


def shared_queue() -> FairQueue:
    """The process's queue (one per process, like the model); a changed slot count takes a new queue (requests
    already in the old one finish there)."""
    with _shared_lock:
        queue = _shared.get("queue")
        if queue is None or queue.slots != configured_slots():
            queue = _shared["queue"] = FairQueue(configured_slots())
        return queue
