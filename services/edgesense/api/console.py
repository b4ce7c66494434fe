"""The web console's static files, served at /console by the REST API's process.

The files ship inside the package (edgesense/api/console/: index.html, the CSS,
the JavaScript modules and vendor/), are read once when the application is
built, and are answered from memory: a request names one of them or gets a
404, so no path ever reaches the file system (no traversal, nothing else
served). `/console` and `/console/` are the page. Every answer carries a strict
Content-Security-Policy (the page holds an API key: only our own scripts,
styles and API, no inline script or style, no framing, no string ever
parsed as markup: Trusted Types with no policy), nosniff and
no-referrer, and an ETag so a reload costs a 304.
"""

from __future__ import annotations

import hashlib
import mimetypes
from dataclasses import dataclass
from pathlib import Path

from aiohttp import web

CONSOLE_DIR = Path(__file__).with_name("console")
CONSOLE_PATH = "/console"

CONTENT_SECURITY_POLICY = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'; "
    # Trusted Types with no policy: the browser refuses any string as markup
    # or script (innerHTML, insertAdjacentHTML, document.write, ...).
    "require-trusted-types-for 'script'; trusted-types 'none'"
)
SECURITY_HEADERS = {
    "Content-Security-Policy": CONTENT_SECURITY_POLICY,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "X-Frame-Options": "DENY",
}
_TYPES = {
    ".html": "text/html",
    ".js": "text/javascript",
    ".css": "text/css",
    ".png": "image/png",
    ".svg": "image/svg+xml",
    ".md": "text/markdown",
    ".txt": "text/plain",
}


@dataclass(frozen=True)
class StaticFile:
    body: bytes
    content_type: str
    etag: str


def load_files(root: Path = CONSOLE_DIR) -> dict[str, StaticFile]:
    """Every file under `root`, by its path relative to it ("js/app.js")."""
    files: dict[str, StaticFile] = {}
    for path in sorted(root.rglob("*")):
        if not path.is_file():
            continue
        body = path.read_bytes()
        suffix = path.suffix.lower()
        kind = (
            _TYPES.get(suffix) or mimetypes.guess_type(path.name)[0] or "application/octet-stream"
        )
        if kind.startswith("text/") or kind == "image/svg+xml":
            kind += "; charset=utf-8"
        etag = '"' + hashlib.sha256(body).hexdigest()[:32] + '"'
        files[path.relative_to(root).as_posix()] = StaticFile(body, kind, etag)
    return files


class Console:
    """The request handler of /console and /console/{path}."""

    def __init__(self, files: dict[str, StaticFile] | None = None) -> None:
        self.files = load_files() if files is None else files

    async def handle(self, request: web.Request) -> web.Response:
        name = request.match_info.get("path", "") or "index.html"
        found = self.files.get(name)
        if found is None:
            return web.Response(
                status=404,
                text=f"Not Found: no console file {name!r}\n",
                headers=SECURITY_HEADERS,
            )
        headers = {
            **SECURITY_HEADERS,
            "ETag": found.etag,
            # Always revalidated: an upgrade is seen at once, a reload costs a 304.
            "Cache-Control": "no-cache",
        }
        if found.etag in request.headers.get("If-None-Match", ""):
            return web.Response(status=304, headers=headers)
        headers["Content-Type"] = found.content_type
        return web.Response(body=found.body, headers=headers)  # aiohttp drops it for HEAD


def add_console_routes(app: web.Application, console: Console | None = None) -> None:
    """GET (and HEAD) /console, /console/ and /console/{path}; before the API's catch-all."""
    handler = (console or Console()).handle
    app.router.add_get(CONSOLE_PATH, handler)
    app.router.add_get(CONSOLE_PATH + "/", handler)
    app.router.add_get(CONSOLE_PATH + "/{path:.+}", handler)
