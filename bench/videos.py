"""Benchmark videos: generated once with PyAV and cached under bench/.cache/.

A 1080p30 H.264 clip like PERFORMANCE.md's (a moving test pattern plus noise,
~8 Mb/s, GOP 250), and longer versions made by remuxing the same packets with
shifted timestamps, so a 10-minute video costs seconds, not an encode.
``small_clip`` is a 2 s 160x120 clip for the API benchmark's many cheap jobs; ``photo_clip`` a few
seconds over one of scikit-image's photos, for the fault benchmark's jobs (different predictions each).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from fractions import Fraction
from pathlib import Path

import av
import numpy as np

CACHE = Path(__file__).resolve().parent / ".cache"
SIZE = (1920, 1080)
FPS = 30


def _pattern(i: int, noise: np.ndarray) -> np.ndarray:
    """A moving colour-bar pattern with a bouncing box and a frame of noise."""
    w, h = SIZE
    x = (np.arange(w, dtype=np.int32) + 8 * i) % w
    bars = np.stack([(x * 255 // w), ((w - x) * 255 // w), ((x * 3) % 256)], axis=-1).astype(np.uint8)
    frame = np.broadcast_to(bars[None, :, :], (h, w, 3)).copy()
    bx, by = (37 * i) % (w - 300), (23 * i) % (h - 300)
    frame[by: by + 300, bx: bx + 300] = (255, 255, 255)
    frame[by + 100: by + 200, bx + 60: bx + 240] = (20, 20, 160)
    return np.clip(frame.astype(np.int16) + noise, 0, 255).astype(np.uint8)


def one_minute_1080p() -> Path:
    """The 60 s 1080p30 H.264 clip (cached)."""
    path = CACHE / "bench_1080p30_60s.mp4"
    if path.exists():
        return path
    CACHE.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    noises = [rng.integers(-12, 13, size=(SIZE[1], SIZE[0], 3), dtype=np.int16) for _ in range(8)]
    tmp = path.with_suffix(".tmp.mp4")
    with av.open(str(tmp), "w") as out:
        stream = out.add_stream("libx264", rate=FPS)
        stream.width, stream.height = SIZE
        stream.pix_fmt = "yuv420p"
        stream.options = {"preset": "veryfast", "b": "8M", "maxrate": "9M", "bufsize": "16M",
                          "x264-params": "keyint=250:min-keyint=250:scenecut=0"}
        for i in range(FPS * 60):
            frame = av.VideoFrame.from_ndarray(_pattern(i, noises[i % len(noises)]), format="rgb24")
            for packet in stream.encode(frame):
                out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)
    tmp.rename(path)
    return path


def repeated(source: Path, times: int) -> Path:
    """``source`` played ``times`` times in a row, by remuxing packets (no re-encode)."""
    path = CACHE / f"{source.stem}_x{times}.mp4"
    if path.exists():
        return path
    tmp = path.with_suffix(".tmp.mp4")
    span: int | None = None  # the clip's length in stream time-base units, from the first pass
    with av.open(str(source)) as first:
        in_stream = first.streams.video[0]
        with av.open(str(tmp), "w") as out:
            out_stream = out.add_stream_from_template(in_stream)
            for rep in range(times):
                with av.open(str(source)) as src:
                    stream = src.streams.video[0]
                    last = 0
                    for packet in src.demux(stream):
                        if packet.dts is None:
                            continue
                        shift = rep * (span or 0)
                        last = max(last, packet.pts + (packet.duration or 0))
                        packet.pts += shift
                        packet.dts += shift
                        packet.stream = out_stream
                        out.mux(packet)
                    if span is None:
                        span = last
    tmp.rename(path)
    return path


def encode_rgb(path: Path, frames: Iterable[np.ndarray], size: tuple[int, int], fps: int,
               options: dict[str, str] | None = None) -> Path:
    """RGB frames as an H.264 yuv420p MP4 (libx264 ``options``), written to a temporary name and renamed
    (a cache never holds half a clip)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp.mp4")
    with av.open(str(tmp), "w") as out:
        stream = out.add_stream("libx264", rate=fps)
        stream.width, stream.height = size
        stream.pix_fmt = "yuv420p"
        if options:
            stream.options = options
        for frame in frames:
            for packet in stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")):
                out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)
    tmp.rename(path)
    return path


def small_clip(seconds: int = 2, size: tuple[int, int] = (160, 120), fps: int = 30) -> Path:
    """A short, small H.264 clip (default 2 s 160x120 at 30 fps, cached): cheap jobs for the API benchmark."""
    w, h = size
    path = CACHE / f"small_{w}x{h}_{seconds}s.mp4"
    if path.exists():
        return path
    x = np.arange(w, dtype=np.int32)

    def frames() -> Iterator[np.ndarray]:
        for i in range(fps * seconds):
            shifted = (x + 4 * i) % w
            bars = np.stack([shifted * 255 // w, (w - shifted) * 255 // w, (shifted * 3) % 256], axis=-1)
            frame = np.broadcast_to(bars[None].astype(np.uint8), (h, w, 3)).copy()
            bx, by = (5 * i) % (w - 40), (3 * i) % (h - 40)
            frame[by: by + 40, bx: bx + 40] = (255, 255, 255)
            yield frame

    return encode_rgb(path, frames(), size, fps)


PHOTOS = ("astronaut", "chelsea", "coffee", "stereo_motorcycle")


def photo_clip(photo: str, seconds: int = 4, size: tuple[int, int] = (320, 240), fps: int = 15) -> Path:
    """A short H.264 clip zooming slowly into one of scikit-image's photos (cached): something for
    ``coco`` to find (a person, a cat, a cup, a motorcycle), so two videos give different predictions."""
    import cv2
    from skimage import data

    w, h = size
    path = CACHE / f"photo_{photo}_{w}x{h}_{seconds}s.mp4"
    if path.exists():
        return path
    image = getattr(data, photo)()
    image = image[0] if isinstance(image, tuple) else image
    ih, iw = image.shape[:2]
    count = fps * seconds

    def frames() -> Iterator[np.ndarray]:
        for i in range(count):
            zoom = 1.0 + 0.2 * i / max(1, count - 1)  # a slow zoom: real motion for the codec
            cw, ch = int(iw / zoom), int(ih / zoom)
            x0, y0 = (iw - cw) // 2, (ih - ch) // 2
            yield cv2.resize(np.ascontiguousarray(image[y0: y0 + ch, x0: x0 + cw, :3]), size,
                             interpolation=cv2.INTER_AREA)

    return encode_rgb(path, frames(), size, fps)

if __name__ == "__main__":
    clip = one_minute_1080p()
    print(clip, repeated(clip, 10))
    for p in (clip, repeated(clip, 10)):
        with av.open(str(p)) as c:
            s = c.streams.video[0]
            print(p.name, s.frames, float(c.duration / 1e6), Fraction(s.average_rate))
