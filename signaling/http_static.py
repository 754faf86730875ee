"""The demo page over plain HTTP GET: a fixed allow-list of files, nothing else.

``videocall serve`` answers WebSocket upgrades on any path with the Janus API; every other
GET comes here (the last ``HttpHandler`` of the API listener, ``http_listener``). What can be served is a table of URL paths:

- ``/`` (and ``/index.html``), ``/style.css`` and the page's ES modules (``/app.js``, which
  imports ``/phases.js``, ``/view.js`` and ``/words.js``) from the ``signaling/demo/`` package
  folder;
- exactly two files of the installed npm packages (``npm ci``, from ``package-lock.json``):
  the official janus.js as its ES module and webrtc-adapter's browser bundle.

A path is looked up as the exact string the client sent (query string dropped), never
decoded or joined onto a directory, so ``/../x``, ``/%2e%2e/x`` or ``/demo/../..`` are
just unknown paths: 404. ``node_modules`` is ``$VIDEOCALL_NODE_MODULES`` when set, else the
one next to this package (the repository root of a ``pip install -e .``), else the
current directory's. When the npm files are missing the page still loads and says so, the
two paths answer 404 with the ``npm ci`` hint, and the server logs it once.
"""

from __future__ import annotations

import hashlib
import logging
import os
from dataclasses import dataclass
from pathlib import Path

from signaling.http_types import HttpRequest, HttpResponse

log = logging.getLogger("videocall.http")

DEMO_DIR = Path(__file__).resolve().parent / "demo"
#: Where ``npm ci`` puts the packages when this is a checkout (``pip install -e .``).
REPO_NODE_MODULES = Path(__file__).resolve().parents[1] / "node_modules"
NODE_MODULES_ENV = "VIDEOCALL_NODE_MODULES"

HTML = "text/html; charset=utf-8"
JS = "text/javascript; charset=utf-8"
CSS = "text/css; charset=utf-8"
TEXT = "text/plain; charset=utf-8"

#: URL path -> (file in signaling/demo/, content type).
DEMO_FILES: dict[str, tuple[str, str]] = {
    "/": ("index.html", HTML),
    "/index.html": ("index.html", HTML),
    "/app.js": ("app.js", JS),
    "/phases.js": ("phases.js", JS),
    "/view.js": ("view.js", JS),
    "/words.js": ("words.js", JS),
    "/style.css": ("style.css", CSS),
}
#: URL path -> (file under node_modules/, content type). The page imports these by URL.
NPM_FILES: dict[str, tuple[str, str]] = {
    "/node_modules/janus-gateway/npm/dist/janus.es.js": ("janus-gateway/npm/dist/janus.es.js", JS),
    "/node_modules/webrtc-adapter/out/adapter.js": ("webrtc-adapter/out/adapter.js", JS),
}

#: Scripts and styles only from this server; the API WebSocket goes back to it too.
CONTENT_SECURITY_POLICY = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "media-src 'self' blob: mediastream:; connect-src 'self' ws: wss:; object-src 'none'; "
    "base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
)
NPM_HINT = "run `npm ci` in the repository (it installs janus-gateway and webrtc-adapter from package-lock.json)"


def find_node_modules() -> Path:
    """``$VIDEOCALL_NODE_MODULES``, else the repository's ``node_modules``, else ``./node_modules``."""
    configured = os.environ.get(NODE_MODULES_ENV, "").strip()
    if configured:
        return Path(configured).expanduser()
    if REPO_NODE_MODULES.is_dir():
        return REPO_NODE_MODULES
    return Path.cwd() / "node_modules"


@dataclass(frozen=True)
class Reply:
    status: int
    content_type: str
    body: bytes
    etag: str | None = None


class StaticFiles:
    """Answers a GET path from the allow-list; files are read per request (small, and an
    ``npm ci`` run after the server started is picked up without a restart)."""

    def __init__(self, node_modules: Path | None = None, demo_dir: Path = DEMO_DIR) -> None:
        self._node_modules = node_modules
        self.demo_dir = demo_dir
        self._warned = False

    @property
    def node_modules(self) -> Path:
        return self._node_modules if self._node_modules is not None else find_node_modules()

    def missing_npm_files(self) -> list[Path]:
        root = self.node_modules
        return [root / rel for rel, _ in NPM_FILES.values() if not (root / rel).is_file()]

    def warn_if_missing(self) -> bool:
        """Log (once) that the npm packages are missing; True when they are."""
        missing = self.missing_npm_files()
        if missing and not self._warned:
            self._warned = True
            log.warning("the demo page cannot work: %s missing; %s", ", ".join(map(str, missing)), NPM_HINT)
        elif not missing:
            self._warned = False
        return bool(missing)

    def get(self, target: str) -> Reply:
        """The reply to ``GET target`` (a request target as sent: path plus query)."""
        path = target.split("?", 1)[0].split("#", 1)[0]
        if path in DEMO_FILES:
            name, content_type = DEMO_FILES[path]
            if content_type == HTML:
                self.warn_if_missing()
            return self._file(self.demo_dir / name, content_type, "demo page file")
        if path in NPM_FILES:
            rel, content_type = NPM_FILES[path]
            file = self.node_modules / rel
            if not file.is_file():
                self.warn_if_missing()
                return Reply(404, TEXT, f"{file} is not installed: {NPM_HINT}\n".encode())
            return self._file(file, content_type, "npm file")
        return Reply(404, TEXT, b"Not found. The demo page is at /; the Janus API is a WebSocket on any path.\n")

    def _file(self, file: Path, content_type: str, what: str) -> Reply:
        try:
            body = file.read_bytes()
        except OSError as exc:
            log.error("cannot read %s %s: %s", what, file, exc)
            return Reply(404, TEXT, f"{what} missing on the server\n".encode())
        return Reply(200, content_type, body, etag='"' + hashlib.sha256(body).hexdigest()[:32] + '"')

    async def handle(self, request: HttpRequest) -> HttpResponse | None:
        """The ``HttpHandler``: every GET (and HEAD) is answered, from the allow-list or
        with 404; other methods are not ours."""
        if request.method not in ("GET", "HEAD"):
            return None
        return self.response(request.path, request.header("if-none-match") or None)

    def response(self, target: str, if_none_match: str | None = None) -> HttpResponse:
        """``get`` as an HTTP answer, with its caching and safety headers."""
        reply = self.get(target)
        status, body = reply.status, reply.body
        if reply.etag is not None and if_none_match is not None and reply.etag in _etags(if_none_match):
            status, body = 304, b""
        headers = [("Cache-Control", "no-cache"), ("X-Content-Type-Options", "nosniff"), ("Referrer-Policy", "no-referrer")]
        if reply.etag is not None:
            headers.append(("ETag", reply.etag))
        if reply.content_type == HTML:
            headers.append(("Content-Security-Policy", CONTENT_SECURITY_POLICY))
        return HttpResponse(status, body, reply.content_type, tuple(headers))


def _etags(header: str) -> set[str]:
    return {tag.strip().removeprefix("W/") for tag in header.split(",")}


def demo_url(host: str, port: int, *, tls: bool = False) -> str:
    """Where a person opens the page (a wildcard bind is reachable on localhost)."""
    shown = "127.0.0.1" if host in ("", "0.0.0.0") else "[::1]" if host == "::" else host
    if ":" in shown and not shown.startswith("["):
        shown = f"[{shown}]"
    return f"{'https' if tls else 'http'}://{shown}:{port}/"
