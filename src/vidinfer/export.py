"""A results file in the formats other tools read: JSON Lines, CSV, Parquet, MOTChallenge, COCO, CVAT for
video 1.1, WebVTT and SRT captions.

Each writer takes the results JSON (the wire shape, see ``wire.py``) and writes to a binary file object,
line by line where the format allows; only Parquet needs an optional package (``pyarrow``, imported when
asked for). Which keys are models is ``wire.model_columns``'s answer. Boxes in the results are centre
``x``, ``y``, ``width``, ``height`` in source pixels; every format here gets them in its own convention.
"""

from __future__ import annotations

import csv
import io
import json
import math
from collections import Counter
from collections.abc import Callable, Iterator
from typing import Any, BinaryIO
from xml.sax.saxutils import XMLGenerator

from vidinfer import __version__
from vidinfer.errors import InvalidInput, ModelError
from vidinfer.wire import VIDEO_KEY, model_columns

#: format -> the extension a default output name gets (after the results file's stem)
FORMATS: dict[str, str] = {
    "jsonl": ".jsonl", "csv": ".csv", "parquet": ".parquet", "mot": ".mot.txt",
    "coco": ".coco.json", "cvat": ".cvat.xml", "webvtt": ".vtt", "srt": ".srt",
}
#: what a download of each format is served as
MEDIA_TYPES: dict[str, str] = {
    "jsonl": "application/x-ndjson", "csv": "text/csv", "parquet": "application/vnd.apache.parquet",
    "mot": "text/plain", "coco": "application/json", "cvat": "application/xml", "webvtt": "text/vtt",
    "srt": "application/x-subrip",
}
#: formats that hold one model's boxes (``model`` picks it when the results have several)
ONE_MODEL = frozenset({"mot", "coco", "cvat"})
#: the columns of the CSV and Parquet exports, one row per prediction
COLUMNS = ("time", "frame", "model", "class", "class_id", "confidence", "x", "y", "width", "height",
           "tracker_id", "text")
#: a keypoint at or above this confidence is "visible" (COCO's v=2); below it, labelled but not visible (1)
KEYPOINT_VISIBLE = 0.5


def check_results(results: Any) -> dict[str, Any]:
    """The results, or ``invalid_results`` when they are not a results file (parallel offset lists)."""
    if not isinstance(results, dict) or not isinstance(results.get("frame_offset"), list) \
            or not isinstance(results.get("time_offset"), list) \
            or len(results["frame_offset"]) != len(results["time_offset"]):
        raise InvalidInput("not a vidinfer results file: it needs frame_offset and time_offset lists of one length",
                           code="invalid_results")
    return results


def export(results: dict[str, Any], fmt: str, out: BinaryIO, model: str | None = None) -> None:
    """Write ``results`` to ``out`` in ``fmt`` (one of ``FORMATS``); ``model`` selects one model column.

    Raises ``InvalidInput`` for results a format cannot hold (``not_tracked`` for MOT from untracked
    results, ``no_detection_model`` without boxes, ``ambiguous_model`` when several models could be meant).
    """
    check_results(results)
    if fmt not in FORMATS:
        raise InvalidInput(f"unknown export format {fmt[:40]!r}; choose one of {', '.join(FORMATS)}",
                           code="invalid_export_format")
    if fmt == "parquet":
        _parquet(results, out, _columns(results, model))
        return
    if fmt in ONE_MODEL:
        key = box_model(results, model)
        writer: Callable[..., None] = {"mot": _mot, "coco": _coco, "cvat": _cvat}[fmt]
        if fmt == "cvat":
            writer(results, key, out)
            return
        text = io.TextIOWrapper(out, encoding="utf-8", newline="")
        writer(results, key, text)
    else:
        text = io.TextIOWrapper(out, encoding="utf-8", newline="")
        keys = _columns(results, model)
        {"jsonl": _jsonl, "csv": _csv, "webvtt": _webvtt, "srt": _srt}[fmt](results, keys, text)
    text.flush()
    text.detach()


def export_bytes(results: dict[str, Any], fmt: str, model: str | None = None) -> bytes:
    """``export`` into memory (what the API stores beside the results)."""
    buffer = io.BytesIO()
    export(results, fmt, buffer, model)
    return buffer.getvalue()


# -- which columns ---------------------------------------------------------------------------------------
def _columns(results: dict[str, Any], model: str | None) -> list[str]:
    keys = model_columns(results)
    if model is None:
        return keys
    if model not in keys:
        raise InvalidInput(f"the results have no model {model[:100]!r}; they have {', '.join(keys) or 'none'}",
                           code="unknown_results_key")
    return [model]


def _is_box_column(column: list[Any]) -> bool:
    for entry in column:
        preds = entry.get("predictions") if isinstance(entry, dict) else None
        if isinstance(preds, list) and preds:
            return isinstance(preds[0], dict) and "width" in preds[0] and "face" not in preds[0]
    return False


def box_model(results: dict[str, Any], model: str | None = None) -> str:
    """The model column a one-model format exports: ``model``, else the only one with boxes."""
    if model is not None:
        (key,) = _columns(results, model)
        return key
    boxes = [k for k in model_columns(results) if _is_box_column(results[k])]
    if len(boxes) == 1:
        return boxes[0]
    if not boxes:
        raise InvalidInput("these results have no model with boxes (object-detection, instance-segmentation, "
                           "keypoint-detection or ocr) to export", code="no_detection_model")
    raise InvalidInput(f"these results have several models with boxes ({', '.join(boxes)}): choose one with "
                       f"--model (API: model=)", code="ambiguous_model")


def _samples(results: dict[str, Any], key: str) -> Iterator[tuple[int, int, float, dict[str, Any]]]:
    """(sample index, frame, time, entry) for each sample whose entry is not null."""
    column = results[key]
    for i, (frame, time) in enumerate(zip(results["frame_offset"], results["time_offset"])):
        entry = column[i] if i < len(column) else None
        if isinstance(entry, dict):
            yield i, int(frame), float(time), entry


def _boxes(entry: dict[str, Any]) -> list[dict[str, Any]]:
    """The box-shaped predictions of an entry (detections, OCR lines, gaze faces)."""
    preds = entry.get("predictions")
    if not isinstance(preds, list):
        return []
    out = []
    for p in preds:
        if isinstance(p, dict) and isinstance(p.get("face"), dict):
            out.append(p["face"])
        elif isinstance(p, dict) and "width" in p:
            out.append(p)
    return out


def _xyxy(p: dict[str, Any]) -> tuple[float, float, float, float]:
    x, y, w, h = (float(p[k]) for k in ("x", "y", "width", "height"))
    return x - w / 2, y - h / 2, x + w / 2, y + h / 2


def _num(value: float) -> float:
    """A coordinate as the results give it (one decimal), without float noise from the centre maths."""
    return round(float(value), 2)


# -- rows: JSON Lines, CSV, Parquet ---------------------------------------------------------------------
def _jsonl(results: dict[str, Any], keys: list[str], out: io.TextIOWrapper) -> None:
    """One line per sample: its offsets and each model's entry (null where that model failed)."""
    for i, (frame, time) in enumerate(zip(results["frame_offset"], results["time_offset"])):
        line = {"frame_offset": frame, "time_offset": time}
        for key in keys:
            line[key] = results[key][i] if i < len(results[key]) else None
        out.write(json.dumps(line, separators=(",", ":"), ensure_ascii=False) + "\n")


def rows(results: dict[str, Any], keys: list[str]) -> Iterator[dict[str, Any]]:
    """One row per prediction (``COLUMNS``): boxes with their box, classifications with their classes."""
    for key in keys:
        for _, frame, time, entry in _samples(results, key):
            base = {"time": time, "frame": frame, "model": key}
            preds = entry.get("predictions")
            boxes = _boxes(entry)
            if boxes:
                for p in boxes:
                    tid = p.get("tracker_id")
                    yield {**base, "class": p.get("class"), "class_id": p.get("class_id"),
                           "confidence": p.get("confidence"), "x": p["x"], "y": p["y"], "width": p["width"],
                           "height": p["height"], "tracker_id": None if tid is None else int(tid),
                           "text": p.get("text")}
            elif isinstance(preds, list):  # single-label classification
                for p in preds:
                    if isinstance(p, dict) and "class" in p:
                        yield {**base, **_empty(), "class": p["class"], "class_id": p.get("class_id"),
                               "confidence": p.get("confidence")}
            elif isinstance(preds, dict):  # multi-label classification: every class with its confidence
                for name, value in preds.items():
                    conf = value.get("confidence") if isinstance(value, dict) else None
                    yield {**base, **_empty(), "class": name, "confidence": conf}


def _empty() -> dict[str, Any]:
    return {k: None for k in COLUMNS[3:]}


def _csv(results: dict[str, Any], keys: list[str], out: io.TextIOWrapper) -> None:
    writer = csv.DictWriter(out, fieldnames=COLUMNS, lineterminator="\n")
    writer.writeheader()
    for row in rows(results, keys):
        writer.writerow({k: "" if v is None else v for k, v in row.items()})


def _parquet(results: dict[str, Any], out: BinaryIO, keys: list[str]) -> None:
    try:
        import pyarrow as pa
        import pyarrow.parquet as pq
    except ImportError:
        raise ModelError("the parquet export needs pyarrow: pip install 'vidinfer[export]'",
                         code="export_dependency_missing") from None
    schema = pa.schema([("time", pa.float64()), ("frame", pa.int64()), ("model", pa.string()),
                        ("class", pa.string()), ("class_id", pa.int64()), ("confidence", pa.float64()),
                        ("x", pa.float64()), ("y", pa.float64()), ("width", pa.float64()),
                        ("height", pa.float64()), ("tracker_id", pa.int64()), ("text", pa.string())])
    table = pa.Table.from_pylist(list(rows(results, keys)), schema=schema)
    pq.write_table(table, out)


# -- MOTChallenge ----------------------------------------------------------------------------------------
def _tracked(results: dict[str, Any], key: str) -> None:
    tracks = results.get("tracks")
    if not isinstance(tracks, dict) or key not in tracks:
        raise InvalidInput(f"{key!r} was not tracked: MOT needs tracker ids; run with --track (API: "
                           f"\"tracker\": \"bytetrack\")", code="not_tracked")


def _mot(results: dict[str, Any], key: str, out: io.TextIOWrapper) -> None:
    """``frame,id,bb_left,bb_top,bb_width,bb_height,conf,-1,-1,-1``; tracked boxes only. MOTChallenge counts
    frames and pixels from 1 (its tools, motmetrics among them, subtract 1 from bb_left and bb_top)."""
    _tracked(results, key)
    for _, frame, _, entry in _samples(results, key):
        for p in _boxes(entry):
            if p.get("tracker_id") is None:
                continue
            x1, y1, _, _ = _xyxy(p)
            out.write(f"{frame + 1},{int(p['tracker_id'])},{_num(x1 + 1):g},{_num(y1 + 1):g},{_num(p['width']):g},"
                      f"{_num(p['height']):g},{float(p.get('confidence', 1)):g},-1,-1,-1\n")


# -- COCO ------------------------------------------------------------------------------------------------
def _size(results: dict[str, Any], entry: dict[str, Any] | None = None) -> tuple[int, int]:
    image = entry.get("image") if isinstance(entry, dict) else None
    if isinstance(image, dict) and "width" in image:
        return int(image["width"]), int(image["height"])
    video = results.get(VIDEO_KEY) or {}
    return int(video.get("width", 0)), int(video.get("height", 0))


def _polygon_area(points: list[dict[str, Any]]) -> float:
    xs, ys = [float(p["x"]) for p in points], [float(p["y"]) for p in points]
    n = len(xs)
    return abs(sum(xs[i] * ys[(i + 1) % n] - xs[(i + 1) % n] * ys[i] for i in range(n))) / 2


def coco_document(results: dict[str, Any], key: str) -> dict[str, Any]:
    """COCO JSON of one model: a video, an image per sample, an annotation per box (with its polygon and
    keypoints where the model gives them); category ids are ``class_id + 1`` (0 is no category in COCO)."""
    video = results.get(VIDEO_KEY) or {}
    width, height = _size(results)
    column = results[key]
    images, annotations, categories = [], [], {}
    for i, (frame, time) in enumerate(zip(results["frame_offset"], results["time_offset"])):
        entry = column[i] if i < len(column) else None
        w, h = _size(results, entry)
        images.append({"id": i + 1, "video_id": 1, "frame_id": int(frame), "time_offset": time,
                       "file_name": f"frame_{int(frame):06d}.jpg", "width": w or width, "height": h or height})
        for p in _boxes(entry) if isinstance(entry, dict) else []:
            x1, y1, _, _ = _xyxy(p)
            cid = int(p.get("class_id", 0)) + 1
            category = categories.setdefault(cid, {"id": cid, "name": str(p.get("class", cid - 1)),
                                                   "supercategory": key})
            bbox = [_num(x1), _num(y1), _num(p["width"]), _num(p["height"])]
            ann: dict[str, Any] = {"id": len(annotations) + 1, "image_id": i + 1, "video_id": 1,
                                   "category_id": cid, "bbox": bbox, "area": _num(bbox[2] * bbox[3]),
                                   "iscrowd": 0, "score": p.get("confidence")}
            if p.get("tracker_id") is not None:
                ann["track_id"] = int(p["tracker_id"])
            if p.get("text") is not None:
                ann["text"] = p["text"]
            points = p.get("points")
            if isinstance(points, list) and len(points) >= 3:
                ann["segmentation"] = [[v for q in points for v in (float(q["x"]), float(q["y"]))]]
                ann["area"] = _num(_polygon_area(points))
            keypoints = p.get("keypoints")
            if isinstance(keypoints, list) and keypoints:
                flat, visible = [], 0
                for k in keypoints:
                    v = 2 if float(k.get("confidence", 1)) >= KEYPOINT_VISIBLE else 1
                    visible += v == 2
                    flat += [float(k["x"]), float(k["y"]), v]
                ann["keypoints"] = flat
                ann["num_keypoints"] = visible
                ann["keypoint_scores"] = [k.get("confidence") for k in keypoints]
                category.setdefault("keypoints", [str(k.get("class", n)) for n, k in enumerate(keypoints)])
                category.setdefault("skeleton", [])
            annotations.append(ann)
    return {
        "info": {"description": f"vidinfer results, model {key}", "version": __version__},
        "licenses": [],
        "videos": [{"id": 1, "name": key, "width": width, "height": height,
                    "fps": video.get("fps"), "frame_count": video.get("frame_count")}],
        "images": images,
        "annotations": annotations,
        "categories": [categories[c] for c in sorted(categories)],
    }


def _coco(results: dict[str, Any], key: str, out: io.TextIOWrapper) -> None:
    json.dump(coco_document(results, key), out, separators=(",", ":"), ensure_ascii=False)


# -- CVAT for video 1.1 ----------------------------------------------------------------------------------
def _frame_count(results: dict[str, Any]) -> int:
    video = results.get(VIDEO_KEY) or {}
    frames = results["frame_offset"]
    return max(int(video.get("frame_count") or 0), int(frames[-1]) + 1 if frames else 0)


def cvat_tracks(results: dict[str, Any], key: str) -> list[tuple[str, list[dict[str, Any]]]]:
    """(label, shapes) per CVAT track: a tracked object's boxes as keyframes, ``outside`` at the next sample
    after each run it was seen in (so CVAT interpolates only between samples it was seen on); an untracked
    box is a track of its own, outside from the next frame."""
    frames = results["frame_offset"]
    size = _frame_count(results)
    by_track: dict[int, list[tuple[int, dict[str, Any]]]] = {}
    singles: list[tuple[int, dict[str, Any]]] = []
    for i, _, _, entry in _samples(results, key):
        for p in _boxes(entry):
            if p.get("tracker_id") is None:
                singles.append((i, p))
            else:
                by_track.setdefault(int(p["tracker_id"]), []).append((i, p))

    def shape(frame: int, p: dict[str, Any], outside: bool) -> dict[str, Any]:
        x1, y1, x2, y2 = _xyxy(p)
        return {"frame": frame, "outside": int(outside), "occluded": 0, "keyframe": 1,
                "xtl": x1, "ytl": y1, "xbr": x2, "ybr": y2}

    out = []
    for tid in sorted(by_track):
        seen = by_track[tid]
        shapes = []
        labels = Counter(str(p.get("class")) for _, p in seen)
        for n, (i, p) in enumerate(seen):
            shapes.append(shape(int(frames[i]), p, False))
            run_ends = n + 1 == len(seen) or seen[n + 1][0] != i + 1
            if run_ends:
                after = int(frames[i + 1]) if i + 1 < len(frames) else int(frames[i]) + 1
                if after < size:
                    shapes.append(shape(after, p, True))
        out.append((labels.most_common(1)[0][0], shapes))
    for i, p in singles:
        frame = int(frames[i])
        shapes = [shape(frame, p, False)]
        if frame + 1 < size:
            shapes.append(shape(frame + 1, p, True))
        out.append((str(p.get("class")), shapes))
    return out


def _cvat(results: dict[str, Any], key: str, out: BinaryIO) -> None:
    """CVAT for video 1.1 (``annotations.xml``), as CVAT's own exporter writes it: meta, then tracks."""
    tracks = cvat_tracks(results, key)
    width, height = _size(results)
    labels = sorted({label for label, _ in tracks})
    size = _frame_count(results)
    xml = XMLGenerator(out, "utf-8", short_empty_elements=True)
    xml.startDocument()
    xml.startElement("annotations", {})

    def leaf(name: str, text: str) -> None:
        xml.startElement(name, {})
        xml.characters(text)
        xml.endElement(name)

    leaf("version", "1.1")
    xml.startElement("meta", {})
    xml.startElement("task", {})
    for name, text in (("id", "1"), ("name", key), ("size", str(size)), ("mode", "interpolation"),
                       ("overlap", "0"), ("bugtracker", ""), ("flipped", "False"), ("created", ""),
                       ("updated", ""), ("start_frame", "0"), ("stop_frame", str(max(size - 1, 0))),
                       ("frame_filter", ""), ("z_order", "False")):
        leaf(name, text)
    xml.startElement("labels", {})
    for label in labels:
        xml.startElement("label", {})
        leaf("name", label)
        leaf("type", "rectangle")
        xml.startElement("attributes", {})
        xml.endElement("attributes")
        xml.endElement("label")
    xml.endElement("labels")
    xml.startElement("original_size", {})
    leaf("width", str(width))
    leaf("height", str(height))
    xml.endElement("original_size")
    xml.endElement("task")
    xml.endElement("meta")
    for n, (label, shapes) in enumerate(tracks):
        xml.ignorableWhitespace("\n")
        xml.startElement("track", {"id": str(n), "label": label, "source": "auto"})
        for s in shapes:
            attrs = {k: str(s[k]) for k in ("frame", "outside", "occluded", "keyframe")}
            attrs.update({k: f"{s[k]:.2f}" for k in ("xtl", "ytl", "xbr", "ybr")})
            attrs["z_order"] = "0"
            xml.startElement("box", attrs)
            xml.endElement("box")
        xml.endElement("track")
    xml.ignorableWhitespace("\n")
    xml.endElement("annotations")
    xml.endDocument()


# -- captions --------------------------------------------------------------------------------------------
def _caption_text(results: dict[str, Any], keys: list[str], samples: list[int]) -> str:
    """What is in view over these samples: per model, each class with the most seen at once, the top class
    of a classifier, and the text OCR read (quoted, each line once, in reading order)."""
    lines = []
    for key in keys:
        column = results[key]
        most: Counter = Counter()
        texts: list[str] = []
        for i in samples:
            entry = column[i] if i < len(column) else None
            if not isinstance(entry, dict):
                continue
            here: Counter = Counter()
            for p in _boxes(entry):
                if p.get("text") is not None:
                    if str(p["text"]) not in texts and str(p["text"]).strip():
                        texts.append(str(p["text"]))
                else:
                    here[str(p.get("class"))] += 1
            if not _boxes(entry) and entry.get("top"):
                here[str(entry["top"])] = max(here[str(entry["top"])], 1)
            if isinstance(entry.get("predicted_classes"), list):
                for name in entry["predicted_classes"]:
                    here[str(name)] = max(here[str(name)], 1)
            for name, count in here.items():
                most[name] = max(most[name], count)
        parts = [f"{count} {name}" for name, count in sorted(most.items(), key=lambda kv: (-kv[1], kv[0]))]
        parts += [f"\u201c{t}\u201d" for t in texts]
        if parts:
            prefix = f"{key}: " if len(keys) > 1 else ""
            lines.append(prefix + ", ".join(parts))
    return "\n".join(lines)


def captions(results: dict[str, Any], keys: list[str]) -> list[tuple[float, float, str]]:
    """(start, end, text) cues, one per second of video with something in view; consecutive seconds that
    read the same are one cue. The last second ends at the video's duration when known."""
    times = [float(t) for t in results["time_offset"]]
    if not times:
        return []
    duration = float((results.get(VIDEO_KEY) or {}).get("duration") or 0) or (math.floor(times[-1]) + 1.0)
    by_second: dict[int, list[int]] = {}
    for i, t in enumerate(times):
        by_second.setdefault(math.floor(t), []).append(i)
    cues: list[tuple[float, float, str]] = []
    for second in sorted(by_second):
        text = _caption_text(results, keys, by_second[second])
        start, end = float(second), min(float(second + 1), max(duration, second + 0.001))
        if not text:
            continue
        if cues and cues[-1][2] == text and cues[-1][1] == start:
            cues[-1] = (cues[-1][0], end, text)
        else:
            cues.append((start, end, text))
    return cues


def _timestamp(seconds: float, separator: str) -> str:
    ms = int(round(seconds * 1000))
    h, rest = divmod(ms, 3_600_000)
    m, rest = divmod(rest, 60_000)
    s, ms = divmod(rest, 1000)
    return f"{h:02d}:{m:02d}:{s:02d}{separator}{ms:03d}"


def _clean(text: str) -> str:
    """Cue text never holds a blank line or a ``-->`` (either would end the cue early)."""
    lines = [line.replace("-->", "->").strip() for line in text.splitlines()]
    return "\n".join(line for line in lines if line)


def _webvtt(results: dict[str, Any], keys: list[str], out: io.TextIOWrapper) -> None:
    out.write("WEBVTT\n")
    for start, end, text in captions(results, keys):
        text = _clean(text).replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
        out.write(f"\n{_timestamp(start, '.')} --> {_timestamp(end, '.')}\n{text}\n")


def _srt(results: dict[str, Any], keys: list[str], out: io.TextIOWrapper) -> None:
    for n, (start, end, text) in enumerate(captions(results, keys), start=1):
        out.write(f"{n}\n{_timestamp(start, ',')} --> {_timestamp(end, ',')}\n{_clean(text)}\n\n")
