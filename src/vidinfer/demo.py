"""``vidinfer demo``: a job a newcomer can judge at a glance, fully offline.

Builds a short video from real photos that scikit-image ships (an astronaut, a
cat, a coffee table, a motorcycle), slowly zooming like a camera would, runs the
built-in COCO detector over it at 5 fps, and writes next to each other: the
video, the results JSON, a rendered preview MP4 and a contact sheet PNG.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Callable
from fractions import Fraction
from pathlib import Path

import av
import cv2
import numpy as np

from vidinfer.errors import ModelError
from vidinfer.inference import ModelRequest, resolve_runs, run_inference
from vidinfer.models.registry import ModelRegistry
from vidinfer.render import annotate, render_video

SIZE = (640, 360)
FPS = 30
SECONDS_PER_SCENE = 2
SCENES = ("astronaut", "chelsea", "coffee", "stereo_motorcycle")


def _photos() -> list[np.ndarray]:
    try:
        from skimage import data
    except ImportError as exc:  # pragma: no cover - the demo extra is missing
        raise ModelError("the demo needs scikit-image for its photos: pip install 'vidinfer[demo]'",
                         code="demo_dependency_missing") from exc
    photos = []
    for name in SCENES:
        image = getattr(data, name)()
        photos.append(image[0] if isinstance(image, tuple) else image)
    return photos


def _scene_frames(photo: np.ndarray, frames: int) -> list[np.ndarray]:
    """A slow zoom into the photo, letterboxed to SIZE: real motion for the codec."""
    out = []
    h, w = photo.shape[:2]
    for i in range(frames):
        zoom = 1.0 + 0.15 * i / max(1, frames - 1)
        cw, ch = w / zoom, h / zoom
        x0, y0 = (w - cw) / 2, (h - ch) / 2
        crop = photo[int(y0): int(y0 + ch), int(x0): int(x0 + cw)]
        scale = min(SIZE[0] / crop.shape[1], SIZE[1] / crop.shape[0])
        resized = cv2.resize(crop, (int(crop.shape[1] * scale), int(crop.shape[0] * scale)),
                             interpolation=cv2.INTER_AREA)
        canvas = np.zeros((SIZE[1], SIZE[0], 3), dtype=np.uint8)
        oy, ox = (SIZE[1] - resized.shape[0]) // 2, (SIZE[0] - resized.shape[1]) // 2
        canvas[oy: oy + resized.shape[0], ox: ox + resized.shape[1]] = resized
        out.append(canvas)
    return out


def build_demo_video(path: Path) -> Path:
    """Encode the demo video (H.264 MP4, 640x360, 30 fps, 8 s)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=FPS)
        stream.width, stream.height = SIZE
        stream.pix_fmt = "yuv420p"
        for photo in _photos():
            for rgb in _scene_frames(photo, FPS * SECONDS_PER_SCENE):
                for packet in stream.encode(av.VideoFrame.from_ndarray(rgb, format="rgb24")):
                    container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path


def contact_sheet(video: Path, results: dict, key: str, out: Path, columns: int = 2) -> Path:
    """A PNG grid of one annotated frame per scene's middle, for a quick look."""
    from vidinfer.core.video import iter_frames, probe

    wanted = {FPS * SECONDS_PER_SCENE * s + FPS for s in range(len(SCENES))}
    by_index = dict(zip(results["frame_offset"], results[key]))
    tiles = []
    for decoded in iter_frames(probe(str(video))):
        if decoded.index in wanted:
            tiles.append(annotate(decoded.to_rgb(), by_index.get(decoded.index)))
    rows = [np.hstack(tiles[i: i + columns] + [np.zeros_like(tiles[0])] * (columns - len(tiles[i: i + columns])))
            for i in range(0, len(tiles), columns)]
    cv2.imwrite(str(out), cv2.cvtColor(np.vstack(rows), cv2.COLOR_RGB2BGR))
    return out


def run_demo(registry: ModelRegistry, output_dir: Path, echo: Callable[[str], None] = print) -> dict[str, Path]:
    """Run the whole demo and return the paths it wrote."""
    video = build_demo_video(output_dir / "demo.mp4")
    echo(f"built {video} ({len(SCENES) * SECONDS_PER_SCENE} s of real photos, {SIZE[0]}x{SIZE[1]}, {FPS} fps)")
    runs = resolve_runs(registry, [ModelRequest("coco", "coco")])
    out = run_inference(str(video), runs, Fraction(5))
    results_path = output_dir / "demo.results.json"
    results_path.write_text(json.dumps(out.results_json))
    preview = render_video(str(video), out.results_json, output_dir / "demo.preview.mp4", models=["coco"]).output
    sheet = contact_sheet(video, out.results_json, "coco", output_dir / "demo.preview.png")
    counts = Counter(p["class"] for e in out.results_json["coco"] if e for p in e["predictions"])
    echo(f"{len(out.result)} frames at 5 fps in {out.result.stats['wall_seconds']:.1f} s; "
         f"found: {', '.join(f'{k} x{v}' for k, v in counts.most_common(6))}")
    for label, path in (("results", results_path), ("preview video", preview), ("contact sheet", sheet)):
        echo(f"{label:>14}: {path}")
    return {"video": video, "results": results_path, "preview": preview, "sheet": sheet}
