"""``/docs`` and ``/redoc`` render with no network: their scripts come from a package, not a CDN
(issue 14.14). A real headless Chromium loads them from a real server; every request to a host other
than the server's loopback address is recorded and refused, as on an offline host."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import pytest
from server import Server
from test_web_ui import browser  # noqa: F401  (the module-scoped headless Chromium of the web UI's tests)


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    with Server(tmp_path_factory.mktemp("docs"), workers=0) as srv:
        yield srv


class Offline:
    """A page whose requests reach the server only: any other that goes out to the network (a CDN, fonts,
    a validator) is recorded in ``sent`` and aborted. One the page's own Content-Security-Policy stops
    before it is sent (failure "csp") goes to ``blocked``: it never leaves the browser."""

    def __init__(self, browser, server: Server) -> None:  # noqa: F811
        self.sent: list[str] = []
        self.blocked: list[str] = []
        self.errors: list[str] = []
        self.here = urlsplit(server.url).netloc
        self.page = browser.new_page(viewport={"width": 1280, "height": 900})
        self.page.route("**/*", self._route)
        self.page.on("requestfailed", self._failed)
        self.page.on("pageerror", lambda exc: self.errors.append(str(exc)))

    def _route(self, route) -> None:
        if urlsplit(route.request.url).netloc == self.here:
            route.continue_()
        else:
            self.sent.append(route.request.url)
            route.abort()

    def _failed(self, request) -> None:
        if urlsplit(request.url).netloc != self.here and request.url not in self.sent:
            reason = (request.failure or "").lower()
            (self.blocked if reason == "csp" or "blocked_by_csp" in reason else self.sent).append(request.url)


def test_swagger_ui_renders_every_operation_offline(browser, server: Server, tmp_path: Path) -> None:  # noqa: F811
    offline = Offline(browser, server)
    page = offline.page
    page.goto(server.url + "/docs")
    page.wait_for_selector(".opblock-summary-path[data-path='/videoinfer']", timeout=30_000)
    spec = httpx.get(f"{server.url}/openapi.json").json()
    operations = sum(len(ops) for ops in spec["paths"].values())
    assert page.locator(".opblock").count() == operations
    assert page.locator(".opblock-post .opblock-summary-path[data-path='/videoinfer']").count() == 1
    page.screenshot(path=str(tmp_path / "docs.png"))
    assert offline.sent == [] and offline.blocked == [] and offline.errors == []
    page.close()


def test_redoc_renders_offline(browser, server: Server, tmp_path: Path) -> None:  # noqa: F811
    offline = Offline(browser, server)
    page = offline.page
    page.goto(server.url + "/redoc")
    page.wait_for_selector("[data-section-id='operation/submit_videoinfer_post']", state="attached", timeout=30_000)
    assert "vidinfer" in page.inner_text("h1")
    assert page.locator("[data-section-id^='operation/']").count() >= 5
    page.wait_for_load_state("networkidle")
    page.screenshot(path=str(tmp_path / "redoc.png"))
    assert offline.sent == [] and offline.errors == []
    # redoc's footer asks a CDN for its logo; the page's policy stops it in the browser (nothing hangs offline)
    assert all(url.startswith("https://cdn.redoc.ly/") for url in offline.blocked), offline.blocked
    page.close()


def test_the_pages_name_no_other_host(server: Server) -> None:
    """Without a browser too: the HTML of both pages loads its scripts, styles and icon from this server."""
    for page in ("/docs", "/redoc"):
        html = httpx.get(server.url + page).text
        assert "http://" not in html and "https://" not in html, html
        for asset in ("swagger-ui-bundle.js", "swagger-ui.css", "redoc.standalone.js", "favicon.png"):
            if asset in html:
                assert httpx.get(f"{server.url}/static/docs/{asset}").status_code == 200, asset
    assert httpx.get(f"{server.url}/docs/oauth2-redirect").status_code == 200
