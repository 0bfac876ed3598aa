"""ASGI middleware that tells Streamlit's frontend where the server's root is (used by ``serve.py``).

Opened by a page's own URL (``/Slice_viewer``, or a reload there), Streamlit's frontend does not know whether the
app is served at ``/`` or at ``/Slice_viewer/``: it tries ``/Slice_viewer/_stcore/health`` and ``host-config``
first and gets two 404s before it falls back to ``/`` (streamlit/streamlit#7074, open upstream). The frontend
skips that guessing when the page defines ``window.__streamlit.BACKEND_BASE_URL``; this middleware writes that
definition into every HTML page the server sends (Streamlit's ``index.html``, served for every page URL).

Pure ASGI: no Streamlit import, so it is tested with a hand-written ASGI app (``tests/test_base_url.py``).
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

HEAD_TAG = b"<head>"
# Paths whose responses are never an HTML page: Streamlit's endpoints, its bundled assets, media and components.
NOT_PAGES = ("/_stcore/", "/static/", "/media/", "/component/", "/app/static/")


def base_url_script(base_url_path: str = "") -> bytes:
    """The ``<script>`` that sets ``window.__streamlit.BACKEND_BASE_URL`` to the server's root.

    Args:
        base_url_path: Streamlit's ``server.baseUrlPath`` ("" when the app is served at ``/``).

    Returns:
        UTF-8 bytes of one ``<script>`` element; the URL is built in the browser from ``location.origin``, so it
        holds behind any host name or port.
    """
    path = "/" + "/".join(part for part in base_url_path.split("/") if part)
    if not path.endswith("/"):
        path += "/"
    js = ("window.__streamlit=Object.assign({},window.__streamlit||{},"
          f"{{BACKEND_BASE_URL:location.origin+{json.dumps(path)}}});")
    return f"<script>{js}</script>".encode()


def is_page_request(scope: Scope) -> bool:
    """True for a GET whose answer can be Streamlit's ``index.html`` (a page URL, not an endpoint or an asset)."""
    if scope.get("type") != "http" or scope.get("method") != "GET":
        return False
    path = str(scope.get("path", "/"))
    if any(marker in path for marker in NOT_PAGES):
        return False
    last = path.rstrip("/").rsplit("/", 1)[-1]
    return "." not in last or last == "index.html"


class BaseUrlMiddleware:
    """Insert ``base_url_script`` right after ``<head>`` in the HTML pages an ASGI app sends.

    Only page requests (``is_page_request``) are touched, and their ``Accept-Encoding`` is dropped so that the
    page comes back uncompressed (it is a few kB) and can be edited; ``Content-Length`` is set to the new size.
    Every other request and every non-HTML answer passes through unchanged, streamed as it comes.
    """

    def __init__(self, app: ASGIApp, base_url_path: str | Callable[[], str] = "") -> None:
        self.app = app
        self._base_url_path = base_url_path

    def _script(self) -> bytes:
        path = self._base_url_path() if callable(self._base_url_path) else self._base_url_path
        return base_url_script(path or "")

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if not is_page_request(scope):
            await self.app(scope, receive, send)
            return
        scope = dict(scope)
        scope["headers"] = [(k, v) for k, v in scope.get("headers", []) if bytes(k).lower() != b"accept-encoding"]
        start: Message = {}
        chunks: list[bytes] = []
        passthrough = False

        async def send_edited(message: Message) -> None:
            nonlocal passthrough
            if message["type"] == "http.response.start":
                headers = {bytes(k).lower(): bytes(v) for k, v in message.get("headers", [])}
                is_html = headers.get(b"content-type", b"").startswith(b"text/html")
                passthrough = not is_html or b"content-encoding" in headers
                if passthrough:
                    await send(message)
                else:
                    start.update(message)
                return
            if passthrough or message["type"] != "http.response.body":
                await send(message)
                return
            chunks.append(bytes(message.get("body", b"")))
            if message.get("more_body", False):
                return
            body = b"".join(chunks)
            if HEAD_TAG in body:
                body = body.replace(HEAD_TAG, HEAD_TAG + self._script(), 1)
            headers_out = [(k, v) for k, v in start.get("headers", []) if bytes(k).lower() != b"content-length"]
            headers_out.append((b"content-length", str(len(body)).encode()))
            await send({**start, "headers": headers_out})
            await send({"type": "http.response.body", "body": body, "more_body": False})

        await self.app(scope, receive, send_edited)
