"""The web UI end to end in a real headless Chromium, against a real server."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
from seaweed import missing_service
from server import Server

CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--autoplay-policy=no-user-gesture-required"]


@pytest.fixture(scope="module")
def browser() -> Iterator[object]:
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if chromium is None:
        missing_service("Chromium is not installed (Debian: apt-get install chromium)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        instance = pw.chromium.launch(executable_path=chromium, headless=True, args=CHROMIUM_ARGS)
        yield instance
        instance.close()


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    with Server(tmp_path_factory.mktemp("ui"), workers=1) as srv:
        yield srv


@pytest.fixture(scope="module")
def clip(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from vidinfer.demo import build_demo_video

    return build_demo_video(tmp_path_factory.mktemp("ui-clip") / "photos.mp4")


#: JavaScript: how many pixels of the canvas ``sel`` are not transparent
PAINTED = """(sel) => {
    const c = document.querySelector(sel);
    const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
    let n = 0; for (let i = 3; i < d.length; i += 4) if (d[i] > 0) n++;
    return n; }"""


def _painted(page, selector: str) -> int:  # noqa: ANN001
    return page.evaluate(PAINTED, selector)


def test_sign_in_upload_run_and_watch_the_predictions_play(browser, server: Server, clip: Path,  # noqa: ANN001
                                                           tmp_path: Path) -> None:
    page = browser.new_page(viewport={"width": 1280, "height": 900})
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    page.goto(server.url + "/")

    page.fill("#key", "vi_not_a_key")
    page.click("#signin-btn")
    page.wait_for_selector("#signin-error:has-text('not valid')")

    page.fill("#key", server.key("acme"))
    page.click("#signin-btn")
    page.wait_for_selector("#app:not([hidden])")
    assert "acme" in page.inner_text("#who")
    assert page.is_checked("#models input[data-model=coco]")
    assert page.is_disabled("#start")

    page.set_input_files("#file", str(clip))
    assert "photos.mp4" in page.inner_text("#drop-text")
    page.fill("#fps", "2")
    page.click("#start")
    page.wait_for_selector("#job-message:has-text('started')", timeout=60_000)
    assert page.eval_on_selector("#upload-progress", "e => e.style.width") == "100%"
    page.wait_for_selector("#jobs tr[data-state=done]", timeout=180_000)
    page.wait_for_selector("body[data-player=ready]", timeout=30_000)

    legend = page.inner_text("#legend")
    assert "person" in legend and "cat" in legend
    assert "/results/acme/" in page.get_attribute("#download-results", "href")
    assert _painted(page, "#timeline") > 500

    # seek into the astronaut's scene: the overlay draws her box over the playing video
    page.wait_for_function("document.querySelector('#video').readyState >= 1", timeout=30_000)
    page.evaluate("document.querySelector('#video').currentTime = 0.6")
    page.wait_for_function("document.querySelector('#video').videoWidth > 0 && !document.querySelector('#video').seeking",
                           timeout=30_000)
    page.wait_for_function(PAINTED, arg="#overlay", timeout=10_000)
    assert _painted(page, "#overlay") > 200

    # render the job with its predictions drawn, and offer the MP4
    page.click("#render")
    page.wait_for_selector("#download-render:not([hidden])", timeout=180_000)
    rendered = page.get_attribute("#download-render", "href")
    assert "/renders/acme/" in rendered and ".mp4" in rendered
    page.screenshot(path=str(tmp_path / "ui.png"))
    assert (tmp_path / "ui.png").stat().st_size > 10_000
    assert not errors, errors


def test_a_failed_job_shows_its_reason(browser, server: Server, tmp_path: Path) -> None:  # noqa: ANN001
    junk = tmp_path / "notes.mp4"
    junk.write_text("not a video\n" * 200)
    page = browser.new_page()
    page.goto(server.url + "/")
    page.fill("#key", server.key("other"))
    page.click("#signin-btn")
    page.wait_for_selector("#app:not([hidden])")
    page.set_input_files("#file", str(junk))
    page.click("#start")
    row = page.wait_for_selector("#jobs tr[data-state=failed]", timeout=120_000)
    text = row.inner_text()
    assert "notes.mp4 is not a readable video" in text  # the decoder's reason, naming the user's file
    assert "/blobs/" not in text and "/tmp" not in text  # never the server's own paths
