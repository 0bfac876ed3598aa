"""core.app.base_url: the ASGI middleware that writes the server's root into Streamlit's index.html (serve.py)."""

from __future__ import annotations

import asyncio
from typing import Any

from core.app.base_url import BaseUrlMiddleware, base_url_script, is_page_request

INDEX = b"<!doctype html><html><head><title>x</title></head><body></body></html>"


class FakeApp:
    """An ASGI app that answers every request with ``body`` (in ``parts`` chunks) and records the scope it got."""

    def __init__(self, body: bytes = INDEX, content_type: bytes = b"text/html", parts: int = 1,
                 extra_headers: list[tuple[bytes, bytes]] | None = None) -> None:
        self.body, self.content_type, self.parts = body, content_type, parts
        self.extra_headers = extra_headers or []
        self.scope: dict[str, Any] = {}

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        self.scope = dict(scope)
        headers = [(b"content-type", self.content_type), (b"content-length", str(len(self.body)).encode()),
                   *self.extra_headers]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        step = -(-len(self.body) // self.parts)
        for i in range(self.parts):
            await send({"type": "http.response.body", "body": self.body[i * step:(i + 1) * step],
                        "more_body": i < self.parts - 1})


def _call(app: Any, path: str, method: str = "GET",
          headers: list[tuple[bytes, bytes]] | None = None) -> tuple[dict[bytes, bytes], bytes]:
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: Any) -> None:
        sent.append(dict(message))

    scope = {"type": "http", "method": method, "path": path, "headers": headers or []}
    asyncio.run(app(scope, receive, send))
    start = next(m for m in sent if m["type"] == "http.response.start")
    body = b"".join(m.get("body", b"") for m in sent if m["type"] == "http.response.body")
    return {k: v for k, v in start["headers"]}, body


def test_script_points_the_frontend_at_the_root() -> None:
    assert base_url_script("") == (b'<script>window.__streamlit=Object.assign({},window.__streamlit||{},'
                                   b'{BACKEND_BASE_URL:location.origin+"/"});</script>')
    assert b'location.origin+"/viewer/"' in base_url_script("viewer")
    assert b'location.origin+"/a/b/"' in base_url_script("/a/b/")


def test_page_requests_are_pages_and_endpoints_are_not() -> None:
    page = {"type": "http", "method": "GET"}
    assert is_page_request({**page, "path": "/"})
    assert is_page_request({**page, "path": "/Slice_viewer"})
    assert is_page_request({**page, "path": "/Slice_viewer/"})
    assert is_page_request({**page, "path": "/index.html"})
    assert not is_page_request({**page, "path": "/_stcore/health"})
    assert not is_page_request({**page, "path": "/Slice_viewer/_stcore/host-config"})
    assert not is_page_request({**page, "path": "/static/js/index.js"})
    assert not is_page_request({**page, "path": "/media/abc.png"})
    assert not is_page_request({**page, "path": "/favicon.png"})
    assert not is_page_request({"type": "http", "method": "POST", "path": "/"})
    assert not is_page_request({"type": "websocket", "path": "/_stcore/stream"})


def test_index_gets_the_script_after_head_with_a_true_length() -> None:
    inner = FakeApp(parts=3)
    headers, body = _call(BaseUrlMiddleware(inner), "/Slice_viewer",
                          headers=[(b"accept-encoding", b"gzip"), (b"host", b"x")])
    assert body == INDEX.replace(b"<head>", b"<head>" + base_url_script(""), 1)
    assert headers[b"content-length"] == str(len(body)).encode()
    # the page is asked for uncompressed, other headers kept
    assert inner.scope["headers"] == [(b"host", b"x")]


def test_base_url_path_is_read_at_request_time() -> None:
    setting = {"path": ""}
    app = BaseUrlMiddleware(FakeApp(), base_url_path=lambda: setting["path"])
    setting["path"] = "brats"
    _, body = _call(app, "/")
    assert b'location.origin+"/brats/"' in body


def test_everything_else_passes_through_unchanged() -> None:
    js = b"console.log('<head>')"
    inner = FakeApp(body=js, content_type=b"application/javascript")
    headers, body = _call(BaseUrlMiddleware(inner), "/static/js/a.js", headers=[(b"accept-encoding", b"gzip")])
    assert body == js and headers[b"content-length"] == str(len(js)).encode()
    assert inner.scope["headers"] == [(b"accept-encoding", b"gzip")]
    # an HTML answer that is compressed anyway, or JSON on a page-like path, is not edited
    gz = FakeApp(extra_headers=[(b"content-encoding", b"gzip")])
    assert _call(BaseUrlMiddleware(gz), "/")[1] == INDEX
    as_json = FakeApp(body=b'{"<head>": 1}', content_type=b"application/json")
    assert _call(BaseUrlMiddleware(as_json), "/api")[1] == b'{"<head>": 1}'
