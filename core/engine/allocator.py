"""Keep a process's memory from creeping (glibc's malloc; elsewhere nothing): the app server and batch workers.

Streamlit runs each session's script in a thread of its own, and glibc gives threads their own malloc arenas (up
to 8 per core); the page runs free their arrays, but the freed memory stays spread over those arenas and is not
given back to the system. Measured with ``benchmarks/load_test.py`` (see docs/deployment.md, "Many users at once"): RSS stayed
a few hundred MB over its level before the sessions, growing with their number, and ``malloc_trim`` gave little
of it back; with two arenas it comes back to within tens of MB. ``limit_arenas()`` sets that limit from inside the
process (``mallopt(M_ARENA_MAX)``, the same as ``MALLOC_ARENA_MAX=2`` in the environment), before sessions start.
A batch worker (``core.engine.batch``) loads files and runs the network in helper threads, case after case: with
two arenas its peak over 8 cases fell from 835 to 673 MB (``segment FOLDER --workers 1``).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os

M_ARENA_MAX = -8  # glibc's mallopt parameter number
ARENAS_ENV = "MALLOC_ARENA_MAX"
DEFAULT_ARENAS = 2

_done: dict[str, bool] = {}


def _libc() -> ctypes.CDLL | None:
    name = ctypes.util.find_library("c")
    if not name:
        return None
    try:
        libc = ctypes.CDLL(name)
    except OSError:
        return None
    return libc if hasattr(libc, "mallopt") and hasattr(libc, "gnu_get_libc_version") else None


def limit_arenas(arenas: int = DEFAULT_ARENAS) -> bool:
    """Limit glibc's malloc arenas to ``arenas`` (once per process; an administrator's ``MALLOC_ARENA_MAX`` wins).

    Returns:
        True when the limit was set now, False when there is no glibc, it was set before, or the environment sets
        one already.
    """
    if _done.get("arenas") or os.environ.get(ARENAS_ENV):
        return False
    _done["arenas"] = True
    libc = _libc()
    if libc is None:
        return False
    return bool(libc.mallopt(M_ARENA_MAX, int(max(1, arenas))))


def trim() -> bool:
    """Give the free memory at the ends and inside malloc's heaps back to the system (``malloc_trim(0)``)."""
    libc = _libc()
    return bool(libc is not None and libc.malloc_trim(0))
