"""The app as an ASGI application: ``streamlit run serve.py`` (what ``scripts/run_app.sh`` starts) or
``uvicorn serve:app``.

The same pages as ``streamlit run Home.py``, served by Streamlit's ASGI server (``st.App``) with one addition:
``core.app.base_url.BaseUrlMiddleware`` tells the browser where the server's root is, so a page opened by its own
URL or reloaded (``/Slice_viewer``) loads without the two 404s Streamlit's frontend otherwise requests first
(streamlit/streamlit#7074). See docs/deployment.md.
"""

from __future__ import annotations

from pathlib import Path

import streamlit as st
from starlette.middleware import Middleware

from core.app.base_url import BaseUrlMiddleware


def _base_url_path() -> str:
    """Streamlit's ``server.baseUrlPath`` at request time ("" when served at ``/``)."""
    return str(st.get_option("server.baseUrlPath") or "")


app = st.App(Path(__file__).resolve().parent / "Home.py",
             middleware=[Middleware(BaseUrlMiddleware, base_url_path=_base_url_path)])
