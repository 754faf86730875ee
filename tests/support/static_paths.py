"""Paths the demo page's static responder must answer 404 (traversal attempts and near
misses of the allow-list), shared by its unit tests and the over-HTTP tests."""

TRAVERSALS = [
    "/../pyproject.toml", "/%2e%2e/pyproject.toml", "/%2E%2E/%2E%2E/etc/passwd", "/..%2fpyproject.toml",
    "/node_modules/../pyproject.toml", "/node_modules/janus-gateway/package.json",
    "/node_modules/janus-gateway/npm/dist/../../package.json", "/node_modules/webrtc-adapter/out/",
    "/app.js/../../pyproject.toml", "/demo/index.html", "/signaling/server.py", "/index.html%00",
    "/style.css;.js", "//app.js", "/APP.JS", "/.git/config", "/./app.js",
]
