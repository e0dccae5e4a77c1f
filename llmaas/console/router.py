"""Serves the web console: `/` (the page) and `/console/<asset>` (its scripts, styles, icon). Nothing else.

The console is a static ES-module app that talks to the same public API as the SDK, with the user's own key in the
Authorization header (kept in the tab's sessionStorage). So this router has no data routes, sets no cookies and
keeps no sessions; CSRF does not apply because the browser never attaches a credential on its own.

Assets are read once from the package and looked up by exact name: no client-supplied path ever reaches the
filesystem. Every response carries a strict Content-Security-Policy (scripts and styles from this origin only,
no inline script, no framing) so that even a bug that rendered data as HTML could not run it.
"""

from __future__ import annotations

import functools
import mimetypes
from pathlib import Path

from fastapi import APIRouter, Response

STATIC_DIR = Path(__file__).parent / "static"

# connect-src 'self': the console only ever calls this server's own API.
CONTENT_SECURITY_POLICY = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; "
    "font-src 'self'; object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
)
SECURITY_HEADERS = {
    "Content-Security-Policy": CONTENT_SECURITY_POLICY,
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
    "Cross-Origin-Opener-Policy": "same-origin",
    # no-cache = revalidate each time, so an upgraded server never runs a stale mix of old and new modules.
    "Cache-Control": "no-cache",
}
_TYPES = {
    ".js": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".html": "text/html; charset=utf-8",
    ".svg": "image/svg+xml",
    ".png": "image/png",
    ".ico": "image/x-icon",
}

# The console's routes, for the app's explicit list of public (unauthenticated) routes.
PUBLIC_PATHS = ("/", "/console/{asset:path}")


@functools.cache
def assets() -> dict[str, tuple[bytes, str]]:
    """Relative path (e.g. "js/app.js") -> (bytes, content type), for every file shipped under static/."""
    found: dict[str, tuple[bytes, str]] = {}
    for path in sorted(STATIC_DIR.rglob("*")):
        if path.is_file() and not path.name.startswith("."):
            media = _TYPES.get(path.suffix) or mimetypes.guess_type(path.name)[0] or "application/octet-stream"
            found[path.relative_to(STATIC_DIR).as_posix()] = (path.read_bytes(), media)
    return found


def _asset_response(name: str) -> Response:
    item = assets().get(name)
    if item is None:
        # Plain text, not the API's JSON error: this is a page resource, and its path is not echoed back.
        return Response("Not found", status_code=404, media_type="text/plain", headers=SECURITY_HEADERS)
    body, media = item
    return Response(body, media_type=media, headers=SECURITY_HEADERS)


router = APIRouter(include_in_schema=False)


@router.get("/")
def console_page() -> Response:
    """The console's single page."""
    return _asset_response("index.html")


@router.get("/console/{asset:path}")
def console_asset(asset: str) -> Response:
    """One of the console's static files, by exact name."""
    return _asset_response(asset)
