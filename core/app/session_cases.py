"""The cases this browser session made itself: NIfTI uploads, DICOM series converted and raw studies brought to
BraTS space. They live in the session's server-side state only (never on disk under a name a URL could reach),
the last ``MAX_KEPT`` of them, each under a random session-scoped id, so that the Follow-up page can offer them
all and the selection can name one.

A browser reload starts a new Streamlit session, which holds none of them: the URL then carries only what kind
of case was shown (``?sess=dicom``), never its id or name, and the page says plainly that the case has to be
converted or uploaded again (``reload_problem``).
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from typing import Any

import streamlit as st

KEY_SESSION_CASES = "session_cases"  # dict: sid -> SessionCase, oldest first
PARAM_SESSION = "sess"  # URL: the kind of session case shown before a reload (no id, no name)
MAX_KEPT = 2  # a baseline and a follow-up; each holds its volumes in memory (~150 MB for four 240x240x155 float32)
ORIGINS: dict[str, str] = {"upload": "uploaded", "dicom": "converted from DICOM", "study": "converted from a raw study"}


@dataclass(frozen=True)
class SessionCase:
    """One case of this session: ``sid`` (random, server-side), ``origin`` (a key of ``ORIGINS``), the Case."""

    sid: str
    origin: str
    case: Any

    @property
    def label(self) -> str:
        return f"{self.case.case_id} ({ORIGINS.get(self.origin, 'made')} in this session)"


def new_sid() -> str:
    """A fresh random id (64 bits, hex) for a session case."""
    return secrets.token_hex(8)


def add(case: Any, origin: str) -> SessionCase:
    """Keep ``case`` among this session's cases (the oldest is forgotten beyond ``MAX_KEPT``; the same content
    added again replaces its earlier entry) and return its entry."""
    if origin not in ORIGINS:
        raise ValueError(f"expected a session case origin among {sorted(ORIGINS)}, got {origin!r}")
    kept: dict[str, SessionCase] = dict(st.session_state.get(KEY_SESSION_CASES) or {})
    key = getattr(case, "content_key", None)
    for sid in [s for s, e in kept.items() if key is not None and getattr(e.case, "content_key", None) == key]:
        kept.pop(sid)
    entry = SessionCase(new_sid(), origin, case)
    kept[entry.sid] = entry
    while len(kept) > MAX_KEPT:
        kept.pop(next(iter(kept)))
    st.session_state[KEY_SESSION_CASES] = kept
    return entry


def get(sid: Any) -> SessionCase | None:
    """The entry of ``sid`` in this session, or None."""
    kept = st.session_state.get(KEY_SESSION_CASES) or {}
    return kept.get(sid) if isinstance(sid, str) else None


def all_cases() -> list[SessionCase]:
    """This session's cases, oldest first."""
    return list((st.session_state.get(KEY_SESSION_CASES) or {}).values())


def forget_all() -> None:
    st.session_state.pop(KEY_SESSION_CASES, None)


def reload_problem(params: Any) -> str | None:
    """What to say when the URL shows that a session case was open before a reload (``?sess=<origin>``)."""
    origin = str(params.get(PARAM_SESSION) or "")
    if origin not in ORIGINS:
        return None
    how = {"upload": "upload its files again", "dicom": "convert the DICOM series again",
           "study": "convert the raw study again"}[origin]
    return (f"The case shown before the reload was {ORIGINS[origin]}. Such a case is kept only in the browser "
            "session that made it, never in a link, and a reload starts a new session: in the Case browser, "
            f"{how}.")
