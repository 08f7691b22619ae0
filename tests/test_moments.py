"""Search returns moments: filters, merging into time ranges, thumbnails and clips, over real runs.

The demo video (four real photos, 2 s each: an astronaut, a cat, a coffee cup, a motorcycle) is run
with the built-in ``coco`` detector; its moments must be the scenes. Thumbnails and clips are cut from
real H.264 files and decoded back.
"""

from __future__ import annotations

import io
import json
from collections.abc import Iterator
from fractions import Fraction
from pathlib import Path

import httpx
import numpy as np
import pytest
from server import Server

from vidinfer.cli import main
from vidinfer.clips import cut, thumbnail
from vidinfer.core.tracking import AnalysisOptions, analyse
from vidinfer.core.video import iter_frames, probe
from vidinfer.demo import build_demo_video
from vidinfer.errors import InvalidInput
from vidinfer.inference import ModelRequest, resolve_runs, run_inference
from vidinfer.models.registry import ModelRegistry
from vidinfer.moments import Filters, check_filters, find_moments, inside, parse_zone

LEFT_HALF = "0,0,320,0,320,360,0,360"


# -- the pure logic, on hand-made results ---------------------------------------------------------------
def _det(cls: str, conf: float, x: float = 10, y: float = 10, track: int | None = None) -> dict:
    return {"x": x, "y": y, "width": 4, "height": 4, "class": cls, "confidence": conf, "tracker_id": track}


def _doc(entries: list[list[dict] | None], step: float = 0.5, duration: float | None = None) -> dict:
    n = len(entries)
    doc = {"frame_offset": [i * 15 for i in range(n)], "time_offset": [i * step for i in range(n)],
           "m": [None if e is None else {"predictions": e} for e in entries]}
    if duration is not None:
        doc["video"] = {"duration": duration}
    return doc


CAT, DOG = [_det("cat", 0.9)], [_det("dog", 0.6)]


@pytest.mark.parametrize(("entries", "filters", "expected"), [
    # consecutive samples merge; end = last sample + one interval
    ([CAT, CAT, DOG, CAT], Filters(classes=frozenset({"cat"})), [(0.0, 1.0, 2), (1.5, 2.0, 1)]),
    # a null (failed) sample breaks a run like a miss does
    ([CAT, None, CAT], Filters(classes=frozenset({"cat"})), [(0.0, 0.5, 1), (1.0, 1.5, 1)]),
    # --gap bridges a missed sample
    ([CAT, DOG, CAT], Filters(classes=frozenset({"cat"}), gap=0.5), [(0.0, 1.5, 2)]),
    # no filter: anything predicted
    ([CAT, [], DOG, DOG], Filters(), [(0.0, 0.5, 1), (1.0, 2.0, 2)]),
    ([CAT, DOG], Filters(min_confidence=0.7), [(0.0, 0.5, 1)]),
    ([[_det("cat", 0.9, track=3)], [_det("cat", 0.9, track=4)]], Filters(track_ids=frozenset({4})),
     [(0.5, 1.0, 1)]),
    ([[_det("cat", 0.9, x=100)], [_det("cat", 0.9, x=5)]], Filters(zone=parse_zone("0,0,50,0,50,50,0,50")),
     [(0.5, 1.0, 1)]),
    ([CAT, CAT, CAT, CAT], Filters(start=0.5, end=1.5), [(0.5, 1.5, 2)]),
])
def test_filters_and_merging(entries: list, filters: Filters, expected: list) -> None:
    found = find_moments([("doc", _doc(entries))], filters)
    got = sorted((m.start, m.end, m.samples) for m in found)
    assert got == sorted(expected)


def test_moments_rank_by_confidence_and_end_within_the_video() -> None:
    doc = _doc([DOG, DOG, [], CAT], duration=1.6)
    (best, second) = find_moments([("doc", doc)], Filters())
    assert (best.start, best.end, best.score, best.best_frame, best.classes) == (1.5, 1.6, 0.9, 45, ("cat",))
    assert (second.start, second.end, second.score, second.samples) == (0.0, 1.0, 0.6, 2)
    assert len(find_moments([("doc", doc)], Filters(), limit=1)) == 1


def test_a_named_zone_comes_from_the_counts() -> None:
    doc = _doc([[_det("cat", 0.9, x=100)], [_det("cat", 0.9, x=5)]])
    doc["counts"] = {"m": {"zones": [{"name": "zone 1", "points": [[0, 0], [50, 0], [50, 50], [0, 50]]}]}}
    assert [m.start for m in find_moments([("d", doc)], check_filters(zone="zone 1"))] == [0.5]
    assert find_moments([("d", doc)], check_filters(zone="zone 2")) == []


def test_text_ranks_moments_by_their_best_frame() -> None:
    doc = {"frame_offset": [0, 1, 2, 3, 4], "time_offset": [0.0, 1.0, 2.0, 3.0, 4.0],
           "clip": [{"embeddings": [v]} for v in ([1, 0], [0, 1], [0.1, 1], [1, 0], [0.99, 0.1])],
           "coco": [{"predictions": p} for p in (CAT, CAT, [], [], DOG)]}
    found = find_moments([("d", doc)], Filters(), query=np.array([0.0, 2.0]))
    assert [(m.start, m.end, m.samples) for m in found] == [(1.0, 3.0, 2)]
    assert found[0].best_frame == 1 and found[0].score == pytest.approx(1.0)
    # with a filter, the matching samples make the moments and the text ranks them
    found = find_moments([("d", doc)], Filters(classes=frozenset({"cat"})), query=np.array([0.0, 1.0]))
    assert [(m.start, m.end, m.best_frame) for m in found] == [(0.0, 2.0, 1)]
    with pytest.raises(InvalidInput, match="no CLIP embeddings"):
        find_moments([("d", {"frame_offset": [0], "time_offset": [0.0], "coco": [{}]})], Filters(),
                     query=np.array([1.0, 0.0]))


@pytest.mark.parametrize(("kwargs", "code"), [
    ({"zone": "1,2,3,4"}, "invalid_zone"), ({"zone": "1,2,3,4,5,x"}, None), ({"min_confidence": 1.5}, "invalid_filter"),
    ({"start": 3.0, "end": 2.0}, "invalid_filter"), ({"gap": float("nan")}, "invalid_filter"),
])
def test_bad_filters_are_refused_with_a_code(kwargs: dict, code: str | None) -> None:
    if code is None:  # not numbers: the name of a zone
        assert check_filters(**kwargs).zone == kwargs["zone"]
        return
    with pytest.raises(InvalidInput) as err:
        check_filters(**kwargs)
    assert err.value.code == code


def test_inside_is_the_even_odd_rule() -> None:
    square = ((0.0, 0.0), (10.0, 0.0), (10.0, 10.0), (0.0, 10.0))
    assert inside(square, 5, 5) and not inside(square, 15, 5) and not inside(square, 5, -1)


# -- real runs --------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    video = build_demo_video(tmp_path_factory.mktemp("moments") / "demo.mp4")
    runs = resolve_runs(ModelRegistry(), [ModelRequest("coco", "coco", {"confidence": 0.5})])
    return video, run_inference(str(video), runs, Fraction(2)).results_json


def test_coco_moments_are_the_scenes(demo: tuple[Path, dict]) -> None:
    _, results = demo
    (cat,) = find_moments([("demo", results)], check_filters(classes=["cat"]))
    assert (cat.start, cat.end, cat.samples) == (2.0, 4.0, 4) and 60 <= cat.best_frame < 120
    (person,) = find_moments([("demo", results)], check_filters(classes=["person"], min_confidence=0.5))
    assert (person.start, person.end) == (0.0, 2.0)
    (moto,) = find_moments([("demo", results)], check_filters(classes=["motorcycle"]))
    assert moto.end == 8.0  # the video's end
    assert find_moments([("demo", results)], check_filters(classes=["cat"], start=4.0)) == []
    # the astronaut is in the left half of the frame, the cat is not only there
    (left,) = find_moments([("demo", results)], check_filters(classes=["person"], zone=LEFT_HALF))
    assert (left.start, left.end) == (0.0, 2.0)


def test_tracked_moments_by_track_and_named_zone(demo: tuple[Path, dict]) -> None:
    _, results = demo
    tracked = analyse(json.loads(json.dumps(results)),
                      AnalysisOptions.from_dict({"tracker": "bytetrack", "zones": [[[0, 0], [320, 0], [320, 360],
                                                                                     [0, 360]]]}), 2.0)
    cat_track = next(t for t in tracked["tracks"]["coco"] if t["class"] == "cat")
    (moment,) = find_moments([("demo", tracked)], check_filters(track_ids=[cat_track["tracker_id"]]))
    assert moment.track_ids == (cat_track["tracker_id"],) and moment.classes == ("cat",)
    assert (moment.start, moment.end) == (cat_track["first_time"], cat_track["last_time"] + 0.5)
    in_zone = find_moments([("demo", tracked)], check_filters(classes=["person"], zone="zone 1"))
    assert [(m.start, m.end) for m in in_zone] == [(0.0, 2.0)]


def test_cli_prints_moments(demo: tuple[Path, dict], tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "demo.json"
    path.write_text(json.dumps(demo[1]))
    main(["search", str(path), "--class", "cat", "--json"])
    (moment,) = json.loads(capsys.readouterr().out)
    assert (moment["start"], moment["end"], moment["classes"], moment["source"]) == (2.0, 4.0, ["cat"], str(path))
    main(["search", str(path), "-c", "cup", "-c", "cat"])
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 1 and "2.000 - 6.000" in lines[0] and "cat, cup" in lines[0]
    with pytest.raises(SystemExit) as exit_:
        main(["search", str(path), "--zone", "1,2,3,4"])
    assert exit_.value.code == 2


def _mean_rgb(jpeg: bytes) -> np.ndarray:
    from PIL import Image

    return np.asarray(Image.open(io.BytesIO(jpeg)).convert("RGB"), dtype=np.float64)


def test_thumbnail_is_the_frame_at_that_time(demo: tuple[Path, dict]) -> None:
    video, _ = demo
    from PIL import Image

    jpeg = thumbnail(str(video), 2.5)
    assert Image.open(io.BytesIO(jpeg)).size == (320, 180)
    frame = next(f for f in iter_frames(probe(str(video))) if f.index == 75).to_rgb((320, 180)).astype(np.float64)
    other = next(f for f in iter_frames(probe(str(video))) if f.index == 15).to_rgb((320, 180)).astype(np.float64)
    got = _mean_rgb(jpeg)
    assert np.abs(got - frame).mean() < 8 < np.abs(got - other).mean()


def test_clips_copy_from_a_keyframe_else_re_encode(demo: tuple[Path, dict], tmp_path: Path) -> None:
    video, _ = demo
    info = probe(str(video))
    first, second = (float((pts - info.display_pts[0]) * info.time_base) for pts, _ in info.keyframes[1:3])
    assert cut(str(video), first, second, tmp_path / "copy.mp4") == "copy"
    copied = probe(str(tmp_path / "copy.mp4"))
    assert copied.codec == "h264" and copied.frame_count == round((second - first) * 30)
    assert [f.index for f in iter_frames(copied)] == list(range(copied.frame_count))
    copy_first = next(iter_frames(copied)).to_rgb((320, 180)).astype(np.float64)
    at_first = next(f for f in iter_frames(info) if f.index == round(first * 30)).to_rgb((320, 180))
    assert np.abs(copy_first - at_first).mean() < 1  # the very picture
    assert cut(str(video), 6.0, 8.0, tmp_path / "tail.mp4") == "copy"  # to the end
    assert probe(str(tmp_path / "tail.mp4")).frame_count == 60
    assert cut(str(video), first, second - 0.5, tmp_path / "short.mp4") == "encode"  # the end is no keyframe
    assert cut(str(video), 2.5, 3.5, tmp_path / "encode.mp4") == "encode"
    encoded = probe(str(tmp_path / "encode.mp4"))
    assert encoded.frame_count == 30 and (encoded.width, encoded.height) == (640, 360)
    first = next(iter_frames(encoded)).to_rgb((320, 180)).astype(np.float64)
    source = next(f for f in iter_frames(info) if f.index == 75).to_rgb((320, 180)).astype(np.float64)
    assert np.abs(first - source).mean() < 8
    with pytest.raises(InvalidInput) as err:
        cut(str(video), 0, 500, tmp_path / "long.mp4")
    assert err.value.code == "clip_too_long"


# -- the API -----------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def served(demo: tuple[Path, dict], tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Server, str, str]]:
    with Server(tmp_path_factory.mktemp("moments-api")) as srv:
        key = srv.key("acme")
        job_id = srv.submit(key, srv.upload(key, demo[0]), infer_fps=2).json()["job_id"]
        assert srv.wait(key, job_id)["status"] == 0
        yield srv, key, job_id


def test_api_search_returns_moments_with_thumbnails_and_clips(served: tuple[Server, str, str],
                                                              tmp_path: Path) -> None:
    srv, key, job_id = served
    found = httpx.get(f"{srv.url}/search", params={"api_key": key, "class": "cat", "clip": "true"}).json()
    assert found["jobs_searched"] == 1 and "hits" not in found
    (moment,) = found["moments"]
    assert (moment["job_id"], moment["start"], moment["end"], moment["classes"]) == (job_id, 2.0, 4.0, ["cat"])
    thumb = httpx.get(f"{srv.url}{moment['thumbnail_url']}&api_key={key}", follow_redirects=True)
    assert thumb.status_code == 200 and thumb.headers["content-type"] == "image/jpeg"
    assert thumb.content[:2] == b"\xff\xd8"
    clip = httpx.get(f"{srv.url}{moment['clip_url']}&api_key={key}", follow_redirects=True)
    assert clip.status_code == 200 and clip.headers["content-type"] == "video/mp4"
    (tmp_path / "clip.mp4").write_bytes(clip.content)
    assert probe(str(tmp_path / "clip.mp4")).duration == pytest.approx(2.0, abs=0.05)
    # made once: the second call redirects to the stored object
    again = httpx.get(f"{srv.url}{moment['clip_url']}&api_key={key}")
    assert again.status_code == 307 and "/blobs/moments/" in again.headers["location"]
    several = httpx.get(f"{srv.url}/search", params=[("api_key", key), ("class", "cat"), ("class", "person"),
                                                       ("job_id", job_id), ("end", "3")]).json()["moments"]
    assert sorted((m["start"], m["end"]) for m in several) == [(0.0, 3.0)]  # person then cat, back to back


def test_api_moments_stay_in_their_workspace_and_refuse_bad_filters(served: tuple[Server, str, str]) -> None:
    srv, key, job_id = served
    rival = srv.key("rival")
    assert httpx.get(f"{srv.url}/search", params={"api_key": rival, "class": "cat"}).json()["moments"] == []
    for path, extra in (("/search", {"job_id": job_id}), ("/search/thumbnail", {"job_id": job_id, "frame": 0}),
                        ("/search/clip", {"job_id": job_id, "start": 0, "end": 1})):
        answer = httpx.get(srv.url + path, params={"api_key": rival, **extra})
        assert (answer.status_code, answer.json()["error"]["code"]) == (404, "job_not_found"), path
    bad = [({"zone": "1,2,3,4"}, "invalid_zone"), ({"start": "3", "end": "2"}, "invalid_filter")]
    for params, code in bad:
        answer = httpx.get(f"{srv.url}/search", params={"api_key": key, **params})
        assert (answer.status_code, answer.json()["error"]["code"]) == (400, code)
    answer = httpx.get(f"{srv.url}/search/thumbnail", params={"api_key": key, "job_id": job_id, "frame": 7})
    assert (answer.status_code, answer.json()["error"]["code"]) == (400, "invalid_range")
    answer = httpx.get(f"{srv.url}/search/clip", params={"api_key": key, "job_id": job_id, "start": 1, "end": 500})
    assert (answer.status_code, answer.json()["error"]["code"]) == (400, "clip_too_long")
