"""The web UI end to end in a real headless Chromium, against a real server."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from seaweed import missing_service
from server import Server
from videos import make_video

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
    # the results in another tool's format: a COCO file of the job's boxes; MOT needs a tracked job
    page.select_option("#export-format", "coco")
    page.click("#export")
    page.wait_for_selector("#download-export:not([hidden])", timeout=30_000)
    coco = httpx.get(page.get_attribute("#download-export", "href")).json()
    assert coco["annotations"] and "person" in {c["name"] for c in coco["categories"]}
    assert page.get_attribute("#download-export", "download").endswith(".coco.json")
    page.select_option("#export-format", "mot")
    page.click("#export")
    page.wait_for_selector("#export-state:has-text('not_tracked')", timeout=30_000)
    assert page.is_hidden("#download-export")
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


def _sign_in(page, server: Server, key: str) -> None:  # noqa: ANN001
    page.goto(server.url + "/")
    page.fill("#key", key)
    page.click("#signin-btn")
    page.wait_for_selector("#app:not([hidden])")


def test_signed_out_the_page_shows_only_the_sign_in(browser, server: Server) -> None:  # noqa: ANN001
    page = browser.new_page()
    page.goto(server.url + "/")
    page.wait_for_selector("#signin-form")
    assert page.is_visible("#signin")
    for hidden in ("#app", "#start", "#jobs", "#player", "#who", "#signout"):
        assert not page.is_visible(hidden), f"{hidden} shows while signed out"

    _sign_in(page, server, server.key("signout"))
    assert page.is_visible("#start") and page.is_visible("#jobs") and page.is_visible("#signout")
    assert not page.is_visible("#signin")
    with page.expect_navigation():
        page.click("#signout")
    page.wait_for_selector("#signin-form")
    for hidden in ("#app", "#start", "#jobs", "#signout"):
        assert not page.is_visible(hidden), f"{hidden} shows after signing out"


def _mpeg4_avi(source: Path, path: Path, frames: int) -> Path:
    """The first ``frames`` frames of ``source`` as MPEG-4 Part 2 in AVI: a video Chromium cannot play."""
    import av

    with av.open(str(source)) as src, av.open(str(path), "w") as out:
        stream = out.add_stream("mpeg4", rate=30)
        stream.width, stream.height = src.streams.video[0].width, src.streams.video[0].height
        stream.pix_fmt = "yuv420p"
        for i, frame in enumerate(src.decode(video=0)):
            if i == frames:
                break
            for packet in stream.encode(av.VideoFrame.from_ndarray(frame.to_ndarray(format="rgb24"), format="rgb24")):
                out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)
    return path


@pytest.fixture(scope="module")
def player_jobs(server: Server, clip: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[str, dict[str, str]]:
    """Workspace ``player``: finished jobs on the demo clip, on an AVI of its first second and on an MPEG-4 Part 2
    MP4, and a failed job."""
    key = server.key("player")
    folder = tmp_path_factory.mktemp("player")
    avi = _mpeg4_avi(clip, folder / "astronaut.avi", frames=30)
    # MPEG-4 Part 2 in MP4, with AAC sound: Chromium plays the sound but shows no picture
    mp4v = make_video(folder / "mp4v.mp4", codec="mpeg4", frames=15, size=(160, 120), audio=True)
    junk = folder / "junk.mp4"
    junk.write_text("not a video\n" * 200)
    jobs = {}
    for name, path, fps in (("demo", clip, 1), ("avi", avi, 2), ("mp4v", mp4v, 1), ("failed", junk, 1)):
        response = server.submit(key, server.upload(key, path), infer_fps=fps)
        response.raise_for_status()
        jobs[name] = response.json()["job_id"]
    ends = {name: server.wait(key, job)["status"] for name, job in jobs.items()}
    assert ends["demo"] == ends["avi"] == ends["mp4v"] == 0 and ends["failed"] != 0, ends
    return key, jobs


def _open(page, job_id: str) -> None:  # noqa: ANN001
    page.click(f"#jobs tr[data-job='{job_id}']")
    page.wait_for_function("id => document.querySelector('#player-job').textContent === id", arg=job_id[:8])


def _seek_and_see_boxes(page, t: float) -> None:  # noqa: ANN001
    page.wait_for_selector("body[data-player=ready]", timeout=30_000)
    page.wait_for_function("document.querySelector('#video').readyState >= 1", timeout=30_000)
    page.evaluate("t => { document.querySelector('#video').currentTime = t; }", t)
    page.wait_for_function("(v => v.videoWidth > 0 && !v.seeking)(document.querySelector('#video'))", timeout=30_000)
    page.wait_for_function(PAINTED, arg="#overlay", timeout=10_000)


def test_switching_jobs_clears_the_previous_jobs_boxes(browser, server: Server, player_jobs) -> None:  # noqa: ANN001
    key, jobs = player_jobs
    page = browser.new_page(viewport={"width": 1280, "height": 900})
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    _sign_in(page, server, key)
    cleared = f"!({PAINTED})('#overlay')"
    for other in ("failed", "avi"):
        _open(page, jobs["demo"])
        _seek_and_see_boxes(page, 0.6)  # the astronaut's box
        _open(page, jobs[other])
        page.wait_for_function(cleared, timeout=5_000)  # the boxes went with their job...
        page.wait_for_timeout(500)
        assert _painted(page, "#overlay") == 0  # ...and stay gone
        if other == "failed":
            assert page.inner_text("#legend") == ""
            assert not page.get_attribute("#video", "src")  # the demo video does not keep playing
            assert page.is_hidden("#download-results")
    assert not errors, errors


def test_a_video_the_browser_cannot_play_gets_a_playable_preview(browser, server: Server,  # noqa: ANN001
                                                                  player_jobs, tmp_path: Path) -> None:
    key, jobs = player_jobs
    page = browser.new_page(viewport={"width": 1280, "height": 900})
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    _sign_in(page, server, key)
    _open(page, jobs["avi"])

    # no silent black player: the reason, and the offer of a copy the browser plays
    page.wait_for_selector("#video-message:not([hidden])", timeout=30_000)
    assert "cannot play" in page.inner_text("#video-message")
    assert page.is_visible("#preview")
    assert not page.is_visible("#video")  # not a black player stuck at 0:00
    assert "person" in page.inner_text("#legend")  # the predictions themselves are there
    assert _painted(page, "#timeline") > 100

    page.screenshot(path=str(tmp_path / "unplayable.png"))
    page.click("#preview")
    page.wait_for_function("document.querySelector('#video').src.includes('/renders/')", timeout=180_000)
    assert not page.is_visible("#preview")
    assert "/renders/" in page.get_attribute("#download-render", "href")
    h264 = page.evaluate("""document.querySelector('#video').canPlayType('video/mp4; codecs="avc1.42E01E"')""")
    if h264:  # Chrome, and Debian's Chromium, play H.264; a build without it says so in the message instead
        page.wait_for_function("document.querySelector('#video').readyState >= 2", timeout=30_000)
        assert page.evaluate("document.querySelector('#video').videoWidth") == 640
        page.evaluate("document.querySelector('#video').currentTime = 0.6")
        page.wait_for_function("(v => !v.seeking && v.readyState >= 2)(document.querySelector('#video'))",
                               timeout=30_000)
        assert "predictions drawn" in page.inner_text("#video-message")
        page.wait_for_timeout(500)
        assert _painted(page, "#overlay") == 0  # drawn into the picture: not drawn a second time over it
        assert _painted(page, "#timeline") > 100
    else:
        page.wait_for_selector("#video-message:has-text('H.264')", timeout=30_000)
    page.screenshot(path=str(tmp_path / "preview.png"))

    # opened again, the job plays the copy made before at once: nothing to click, nothing rendered again
    def render() -> dict:
        return httpx.get(f"{server.url}/videoinfer/render", params={"api_key": key, "job_id": jobs["avi"]}).json()

    made = render()
    _open(page, jobs["demo"])
    _open(page, jobs["avi"])
    page.wait_for_function("document.querySelector('#video').src.includes('/renders/')", timeout=30_000)
    assert not page.is_visible("#preview") and page.is_visible("#video")
    assert render()["created_at"] == made["created_at"] and made["status"] == 0

    # a picture Chromium cannot decode beside sound it can: the same message, not a silent black player
    _open(page, jobs["mp4v"])
    page.wait_for_selector("#video-message:not([hidden])", timeout=30_000)
    assert "cannot play" in page.inner_text("#video-message") and page.is_visible("#preview")
    assert not errors, errors


def test_the_job_page_finds_moments_and_plays_one(browser, server: Server, player_jobs) -> None:  # noqa: ANN001
    """The Moments panel: a class and a confidence give the job's moments (GET /search), each with its
    thumbnail; clicking one plays the video from its start and pauses at its end."""
    key, jobs = player_jobs
    page = browser.new_page(viewport={"width": 1280, "height": 900})
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    _sign_in(page, server, key)
    _open(page, jobs["demo"])
    page.wait_for_selector("body[data-player=ready]", timeout=30_000)
    assert page.is_visible("#moments")
    page.select_option("#moments-class", "cat")
    page.fill("#moments-confidence", "0.5")
    page.click("#moments-find")
    page.wait_for_selector("#moments-list li", timeout=30_000)
    items = page.query_selector_all("#moments-list li")
    assert [(li.get_attribute("data-start"), li.get_attribute("data-end")) for li in items] == [("2", "4")]
    assert "cat" in items[0].inner_text()
    page.wait_for_function("(i => i.complete && i.naturalWidth === 320)(document.querySelector('#moments-list img'))",
                           timeout=60_000)
    if page.evaluate("""document.querySelector('#video').canPlayType('video/mp4; codecs="avc1.42E01E"')"""):
        page.wait_for_function("document.querySelector('#video').readyState >= 1", timeout=30_000)
        items[0].click()
        page.wait_for_function("(v => !v.paused && v.currentTime >= 2)(document.querySelector('#video'))",
                               timeout=30_000)
        page.wait_for_function("(v => v.paused && v.currentTime >= 3.9)(document.querySelector('#video'))",
                               timeout=60_000)
        assert page.evaluate("document.querySelector('#video').currentTime") == pytest.approx(4.0, abs=0.1)
    # a class nothing matches says so
    page.select_option("#moments-class", "person")
    page.fill("#moments-confidence", "1")
    page.click("#moments-find")
    page.wait_for_selector("#moments-state:has-text('No moment')", timeout=30_000)
    assert page.query_selector_all("#moments-list li") == []
    # another job's page starts without the last job's moments
    _open(page, jobs["failed"])
    page.wait_for_function("document.querySelector('#moments').hidden", timeout=10_000)
    assert not errors, errors
