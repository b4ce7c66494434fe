"""The console's files as the REST API serves them (over a real socket), and
what they may contain: no inline script or style (the CSP forbids them), no
markup built from strings, well under 300 KB, every file shipped as package data."""

from __future__ import annotations

import fnmatch
import re
import tomllib
from collections.abc import AsyncIterator
from html.parser import HTMLParser
from pathlib import Path

import httpx
import pytest

from edgesense.api.console import CONSOLE_DIR, CONTENT_SECURITY_POLICY
from edgesense.api.server import start_api

ROOT = Path(__file__).resolve().parents[2]
NOWHERE = "127.0.0.1:1"  # no backend is needed to serve files


@pytest.fixture
async def http() -> AsyncIterator[httpx.AsyncClient]:
    api = await start_api(
        {
            "edgesense.v1.WebhookRegistry": NOWHERE,
            "edgesense.v1.AlertRules": NOWHERE,
            "edgesense.v1.Delivery": NOWHERE,
        }
    )
    try:
        async with httpx.AsyncClient(base_url=api.url, timeout=10) as client:
            yield client
    finally:
        await api.stop()


def assert_secure_headers(response: httpx.Response) -> None:
    assert response.headers["content-security-policy"] == CONTENT_SECURITY_POLICY
    assert response.headers["x-content-type-options"] == "nosniff"
    assert response.headers["referrer-policy"] == "no-referrer"


@pytest.mark.parametrize("path", ["/console", "/console/", "/console/index.html"])
async def test_the_page(http: httpx.AsyncClient, path: str) -> None:
    response = await http.get(path)
    assert response.status_code == 200
    assert response.headers["content-type"] == "text/html; charset=utf-8"
    assert '<script type="module" src="/console/js/app.js">' in response.text
    assert_secure_headers(response)


@pytest.mark.parametrize(
    ("path", "content_type"),
    [
        ("/console/js/app.js", "text/javascript; charset=utf-8"),
        ("/console/console.css", "text/css; charset=utf-8"),
        ("/console/vendor/uplot/uPlot.iife.min.js", "text/javascript; charset=utf-8"),
    ],
)
async def test_assets(http: httpx.AsyncClient, path: str, content_type: str) -> None:
    response = await http.get(path)
    assert response.status_code == 200
    assert response.headers["content-type"] == content_type
    assert_secure_headers(response)
    again = await http.get(path, headers={"If-None-Match": response.headers["etag"]})
    assert again.status_code == 304
    assert again.content == b""
    head = await http.head(path)
    assert head.status_code == 200
    assert head.content == b""


@pytest.mark.parametrize(
    "path",
    [
        "/console/nope.js",
        "/console/js/",
        "/console/%2e%2e/console.py",
        "/console/..%2fconsole.py",
        "/console/js%2f..%2f..%2fconsole.py",
        "/console//etc/passwd",
        "/console/vendor/uplot/",
    ],
)
async def test_anything_else_is_404(http: httpx.AsyncClient, path: str) -> None:
    # httpx would resolve "..": send the raw path as written.
    response = await http.request(
        "GET", httpx.URL(http.base_url.join("/")).copy_with(raw_path=path.encode())
    )
    assert response.status_code == 404, path
    assert_secure_headers(response)
    assert "no console file" in response.text


@pytest.mark.parametrize(
    "path",
    [
        "/console/../pyproject.toml",
        "/console/js/../../../api/console.py",
        "/console/%2e%2e/%2e%2e/README.md",
    ],
)
async def test_no_way_out_of_the_folder(http: httpx.AsyncClient, path: str) -> None:
    response = await http.request(
        "GET", httpx.URL(http.base_url.join("/")).copy_with(raw_path=path.encode())
    )
    assert response.status_code == 404, path
    assert "import" not in response.text
    assert "[project]" not in response.text


async def test_the_api_routes_still_answer_beside_it(http: httpx.AsyncClient) -> None:
    response = await http.get("/consoles")  # not the console: the transcoder's 404
    assert response.status_code == 404
    assert response.json()["message"] == "Not Found: no route for GET /consoles"
    assert (await http.get("/openapi.json")).status_code == 200


class _Inline(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.problems: list[str] = []
        self._in_script = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        names = {name for name, _ in attrs}
        if tag == "style":
            self.problems.append("a <style> element")
        if "style" in names:
            self.problems.append(f"a style attribute on <{tag}>")
        self.problems += [f"{name} on <{tag}>" for name in names if name.startswith("on")]
        if tag == "script":
            if "src" not in names:
                self.problems.append("an inline <script>")
            self._in_script = True
        for name, value in attrs:
            if name in ("src", "href") and value and re.match(r"(https?:)?//", value):
                self.problems.append(f"{value} from another origin")

    def handle_endtag(self, tag: str) -> None:
        self._in_script = False if tag == "script" else self._in_script

    def handle_data(self, data: str) -> None:
        if self._in_script and data.strip():
            self.problems.append("script content inline")


def test_the_page_has_nothing_inline() -> None:
    parser = _Inline()
    parser.feed((CONSOLE_DIR / "index.html").read_text())
    assert parser.problems == []


def test_the_scripts_build_no_markup_from_strings() -> None:
    for path in (CONSOLE_DIR / "js").glob("*.js"):
        text = path.read_text()
        for risky in (
            "innerHTML",
            "outerHTML",
            "insertAdjacentHTML",
            "document.write",
            "eval(",
            "new Function",
        ):
            assert risky not in text, f"{path.name} uses {risky}"
        assert "localStorage" not in text.replace("sessionStorage", ""), path.name
        assert "document.cookie" not in text, path.name


def test_the_console_is_small() -> None:
    total = sum(p.stat().st_size for p in CONSOLE_DIR.rglob("*") if p.is_file())
    assert total < 200_000, f"{total} bytes"


def test_every_file_ships_as_package_data() -> None:
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    patterns = pyproject["tool"]["setuptools"]["package-data"]["edgesense.api"]
    package = CONSOLE_DIR.parent
    for path in CONSOLE_DIR.rglob("*"):
        if path.is_file():
            name = path.relative_to(package).as_posix()
            assert any(
                fnmatch.fnmatch(name, p) and name.count("/") == p.count("/") for p in patterns
            ), name


def test_the_vendored_uplot_is_the_version_written_down() -> None:
    vendor = CONSOLE_DIR / "vendor"
    header = (vendor / "uplot" / "uPlot.iife.min.js").read_text()[:100]
    version = re.search(r"\(v(\d+\.\d+\.\d+)\)", header)
    assert version, header
    assert f"| uPlot | {version.group(1)} |" in (vendor / "README.md").read_text()
    assert f"?v={version.group(1)}" in (CONSOLE_DIR / "index.html").read_text()
    assert "MIT License" in (vendor / "uplot" / "LICENSE").read_text()


def test_every_link_the_scripts_make_is_a_route_of_the_console() -> None:
    # A link built from API data (a webhook's URL, an id) could carry a
    # javascript: URL. Every href the scripts set is a literal "#/..." (ids
    # escaped with enc()), and no other way of setting one is used.
    hrefs = 0
    for path in (CONSOLE_DIR / "js").glob("*.js"):
        text = path.read_text()
        for value in re.findall(r"""\bhref:\s*("[^"]*"|`[^`]*`|[^,}\s]+)""", text):
            hrefs += 1
            assert re.match(r"""["`]#/""", value), f"{path.name}: href: {value}"
            assert re.fullmatch(r"""[^$]*(\$\{enc\([^)]*\)\}[^$]*)*""", value), (
                f"{path.name}: href: {value} puts in a value without enc()"
            )
        for risky in ('setAttribute("href"', ".href =", "location.href", "window.open"):
            assert risky not in text, f"{path.name} uses {risky}"
    assert hrefs > 10
