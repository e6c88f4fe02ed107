"""The web UI's files, served at /ui by the hub.

The UI is a static page that talks to the public API with the signed-in user's token, so serving
it needs no authentication and reveals nothing: the files are the same for everyone. They are
built from ``ui/`` by ``make ui`` (esbuild, packages from the npm registry) into
``edgefleet/hub/ui_assets``; a hub without them answers /ui with how to build them.

Every answer carries a strict Content-Security-Policy: scripts only from the hub itself, and
connections only to the hub, so the page can fetch nothing from anywhere else.
"""

from __future__ import annotations

from pathlib import Path

from starlette.responses import FileResponse, PlainTextResponse, Response
from starlette.types import Receive, Scope, Send

ASSETS = Path(__file__).with_name("ui_assets")
"""Where ``make ui`` puts the built page."""

FILES = {
    "": ("index.html", "text/html; charset=utf-8"),
    "index.html": ("index.html", "text/html; charset=utf-8"),
    "app.js": ("app.js", "text/javascript; charset=utf-8"),
    "app.css": ("app.css", "text/css; charset=utf-8"),
}
"""The only paths served: /ui/ (the page) and its bundle."""

HEADERS = {
    "Content-Security-Policy": (
        "default-src 'none'; script-src 'self'; style-src 'self' 'unsafe-inline'; "
        "img-src 'self' data:; connect-src 'self'; base-uri 'none'; form-action 'none'; "
        "frame-ancestors 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    # The page is small and changes with the hub's version: always ask.
    "Cache-Control": "no-cache",
}


class WebUi:
    """ASGI app for /ui: the built page, or a 503 that says how to build it."""

    def __init__(self, assets: Path = ASSETS) -> None:
        self.assets = assets

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        response = self._answer(scope)
        await response(scope, receive, send)

    def _answer(self, scope: Scope) -> Response:
        if scope["type"] != "http":  # pragma: no cover - no websockets here
            return PlainTextResponse("not found", status_code=404)
        if scope["method"] not in ("GET", "HEAD"):
            return PlainTextResponse(
                "the web UI's files are read-only", status_code=405, headers={"Allow": "GET, HEAD"}
            )
        # Mounted at /ui: the mount's prefix is in root_path, and the path may still carry it.
        path, prefix = scope["path"], scope.get("root_path", "")
        if prefix and path.startswith(prefix):
            path = path[len(prefix) :]
        entry = FILES.get(path.lstrip("/"))
        if entry is None:
            return PlainTextResponse("not found", status_code=404, headers=HEADERS)
        name, media_type = entry
        file = self.assets / name
        if not file.is_file():
            return PlainTextResponse(
                f"the web UI is not built ({file} is missing): run 'make ui' in the source tree "
                "(it needs npm and the npm registry), then reload",
                status_code=503,
                headers=HEADERS,
            )
        return FileResponse(file, media_type=media_type, headers=HEADERS)
