"""The demo page's static responder (``signaling/http_static.py``) as a function: its
allow-list, 404s, traversal attempts, content types, headers and the missing-``npm ci`` case.
Over HTTP from the real server: ``tests/browser/test_demo_page.py``."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from signaling import http_static
from signaling.http_static import NPM_FILES, StaticFiles
from signaling.http_types import HttpRequest
from tests.support.static_paths import TRAVERSALS


@pytest.fixture
def fake_node_modules(tmp_path: Path) -> Path:
    root = tmp_path / "node_modules"
    for rel, _type in NPM_FILES.values():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text(f"// {rel}\n")
    (root / "janus-gateway/package.json").write_text("{}")
    return root


def test_allow_list_serves_the_page_and_exactly_two_npm_files(fake_node_modules: Path) -> None:
    static = StaticFiles(fake_node_modules)
    expected = {
        "/": "text/html; charset=utf-8", "/index.html": "text/html; charset=utf-8",
        "/app.js": "text/javascript; charset=utf-8", "/style.css": "text/css; charset=utf-8",
        "/node_modules/janus-gateway/npm/dist/janus.es.js": "text/javascript; charset=utf-8",
        "/node_modules/webrtc-adapter/out/adapter.js": "text/javascript; charset=utf-8",
    }
    for path, content_type in expected.items():
        reply = static.get(path)
        assert (reply.status, reply.content_type) == (200, content_type), path
        assert reply.body
    assert static.get("/").body == (http_static.DEMO_DIR / "index.html").read_bytes()
    assert static.get("/node_modules/webrtc-adapter/out/adapter.js").body == b"// webrtc-adapter/out/adapter.js\n"
    assert static.get("/app.js?v=2").status == 200  # a query string is not part of the path


@pytest.mark.parametrize("path", TRAVERSALS)
def test_anything_else_is_404_traversal_included(fake_node_modules: Path, path: str) -> None:
    reply = StaticFiles(fake_node_modules).get(path)
    assert (reply.status, reply.content_type) == (404, "text/plain; charset=utf-8")
    assert b"[tool" not in reply.body and b"root:" not in reply.body


def test_without_npm_ci_the_page_loads_and_the_operator_is_told(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    static = StaticFiles(tmp_path / "node_modules")
    with caplog.at_level(logging.WARNING, logger="videocall.http"):
        assert static.get("/").status == 200  # the page says it in words (see app.js)
        reply = static.get("/node_modules/janus-gateway/npm/dist/janus.es.js")
        static.get("/node_modules/webrtc-adapter/out/adapter.js")
        static.get("/")
    assert reply.status == 404 and b"npm ci" in reply.body
    warnings = [r.getMessage() for r in caplog.records]
    assert len(warnings) == 1 and "npm ci" in warnings[0] and "janus.es.js" in warnings[0], warnings
    assert "npm ci" in (http_static.DEMO_DIR / "app.js").read_text()


def test_node_modules_location_is_configurable(fake_node_modules: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(http_static.NODE_MODULES_ENV, str(fake_node_modules))
    assert http_static.find_node_modules() == fake_node_modules
    assert StaticFiles().get("/node_modules/janus-gateway/npm/dist/janus.es.js").body.startswith(b"// janus-gateway")
    monkeypatch.delenv(http_static.NODE_MODULES_ENV)
    assert http_static.find_node_modules() in (http_static.REPO_NODE_MODULES, Path.cwd() / "node_modules")


async def test_response_headers_etag_and_csp(fake_node_modules: Path) -> None:
    static = StaticFiles(fake_node_modules)
    page = await static.handle(HttpRequest.from_target("GET", "/?x=1"))
    assert page is not None and page.status == 200
    headers = dict(page.headers)
    assert page.content_type == "text/html; charset=utf-8"
    assert headers["X-Content-Type-Options"] == "nosniff"
    assert "script-src 'self'" in headers["Content-Security-Policy"]
    again = await static.handle(HttpRequest.from_target("GET", "/", {"If-None-Match": headers["ETag"]}))
    assert again is not None and (again.status, again.body) == (304, b"")
    assert "Content-Security-Policy" not in dict(static.response("/app.js").headers)
    assert static.response("/nope").status == 404
    assert await static.handle(HttpRequest.from_target("POST", "/")) is None  # not ours: the next adapter's
