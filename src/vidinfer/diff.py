"""Where two detection runs on one video disagree: ``vidinfer diff A.json B.json`` and ``GET /videoinfer/diff``.

Two results files (two models, or two versions or thresholds of one) are aligned by sample
(``frame_offset``), and in each sample the boxes of each class are paired greedily by IoU, highest
first (the COCO evaluation's rule, without its confidence order: both sides are predictions).
Per class it counts matched pairs, boxes only in A and only in B, the mean confidence shift
(B - A) over matched pairs, and B's precision and recall with A as the reference; per minute, the
disagreements (only-in-A + only-in-B); and it lists the samples where the two disagree most.

``compare`` is pure (standard library, NumPy and supervision's box IoU): no HTTP, no database, no
video. ``write_chart`` and ``write_contact_sheet`` draw the document as PNGs (matplotlib through
``summary.plot_panels``; frames decoded from the video, boxes drawn with supervision).
"""

from __future__ import annotations

from collections import Counter, defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from vidinfer.errors import InvalidInput
from vidinfer.wire import RESERVED_KEYS, VIDEO_KEY

#: the version of the document ``compare`` returns (README: "Compare two runs: vidinfer diff")
DIFF_VERSION = 1
#: frames by which the two files' videos may differ and still pass for one (as ``render.FRAME_TOLERANCE``)
FRAME_TOLERANCE = 2
#: BGR colours of A's and B's boxes on the contact sheet (orange and blue: told apart by most colour-blind eyes)
COLOR_A = (0, 128, 255)
COLOR_B = (255, 96, 0)


@dataclass(frozen=True)
class Box:
    """One detection of one sample, as the results file gives it (centre x, y, width, height, pixels)."""

    cls: str
    x: float
    y: float
    width: float
    height: float
    confidence: float

    @property
    def xyxy(self) -> tuple[float, float, float, float]:
        return (self.x - self.width / 2, self.y - self.height / 2, self.x + self.width / 2, self.y + self.height / 2)

    def as_dict(self) -> dict[str, Any]:
        return {"class": self.cls, "x": self.x, "y": self.y, "width": self.width, "height": self.height,
                "confidence": self.confidence}


# -- which column ------------------------------------------------------------------------------
def _is_box(p: Any) -> bool:
    return isinstance(p, dict) and "x" in p and "width" in p and "class" in p and "face" not in p


def detection_columns(results: dict[str, Any]) -> list[str]:
    """The model columns whose entries hold boxes with classes (detection, segmentation, pose, OCR):
    a column with a box anywhere, or whose every entry is a ``predictions`` list (a detector that
    found nothing)."""
    found = []
    for key, column in results.items():
        if key in RESERVED_KEYS or not isinstance(column, list):
            continue
        entries = [e for e in column if isinstance(e, dict)]
        lists = [e.get("predictions") for e in entries]
        if any(isinstance(p, list) and any(_is_box(b) for b in p) for p in lists) or (
                entries and all(isinstance(p, list) and not p for p in lists)
                and not any("top" in e or "embeddings" in e for e in entries)):
            found.append(key)
    return found


def pick_column(results: dict[str, Any], key: str | None, side: str) -> str:
    """``key`` if it is a detection column of ``results``, else the only one; else a clear error."""
    columns = detection_columns(results)
    if key is not None:
        if key not in columns:
            shown = ", ".join(columns) or "none"
            raise InvalidInput(f"{side} has no detection column {key!r} (its detection columns: {shown})",
                               code="unknown_model_column")
        return key
    if len(columns) != 1:
        what = "no detection column" if not columns else f"several detection columns ({', '.join(columns)})"
        raise InvalidInput(f"{side} has {what}: name one with --model-{side.lower()} (API: model_{side.lower()})",
                           code="unknown_model_column")
    return columns[0]


def _boxes(entry: Any) -> list[Box]:
    preds = entry.get("predictions") if isinstance(entry, dict) else None
    out = []
    for p in preds if isinstance(preds, list) else ():
        if not _is_box(p):
            continue
        try:
            out.append(Box(str(p["class"]), float(p["x"]), float(p["y"]), float(p["width"]), float(p["height"]),
                           float(p.get("confidence", 1.0))))
        except (TypeError, ValueError):
            raise InvalidInput("a prediction's x, y, width, height and confidence must be numbers",
                               code="invalid_results") from None
    return out


# -- which samples ---------------------------------------------------------------------------
def _offsets(results: dict[str, Any], side: str) -> tuple[list[int], list[float]]:
    frames, times = results.get("frame_offset"), results.get("time_offset")
    if not isinstance(frames, list) or not isinstance(times, list) or len(frames) != len(times):
        raise InvalidInput(f"{side} is not a vidinfer results file (frame_offset and time_offset lists of one length)",
                           code="invalid_results")
    try:
        return [int(f) for f in frames], [float(t) for t in times]
    except (TypeError, ValueError):
        raise InvalidInput(f"{side}'s frame_offset and time_offset must hold numbers", code="invalid_results") from None


def check_same_video(a: dict[str, Any], b: dict[str, Any], force: bool = False) -> list[str]:
    """Refuse two files made from different videos (their ``video`` keys), unless ``force``; return warnings."""
    va, vb = a.get(VIDEO_KEY), b.get(VIDEO_KEY)
    if not isinstance(va, dict) or not isinstance(vb, dict):
        return ["a results file does not say which video it was made from (an older file): not checked"]
    try:
        same = ((int(va["width"]), int(va["height"])) == (int(vb["width"]), int(vb["height"]))
                and abs(int(va["frame_count"]) - int(vb["frame_count"])) <= FRAME_TOLERANCE
                and abs(float(va["duration"]) - float(vb["duration"])) <= 0.1)
    except (KeyError, TypeError, ValueError):
        raise InvalidInput("a results file's \"video\" key needs width, height, frame_count and duration numbers",
                           code="invalid_results") from None
    if same:
        return []

    def described(v: dict[str, Any]) -> str:
        return f"{v['width']}x{v['height']}, {v['frame_count']} frames, {float(v['duration']):.3f} s"

    message = f"A and B were made from different videos ({described(va)} vs {described(vb)})"
    if not force:
        raise InvalidInput(f"{message}; pass --force to compare them anyway", code="results_mismatch")
    return [f"{message}: compared anyway (--force)"]


# -- matching ----------------------------------------------------------------------------------
def match(a: list[Box], b: list[Box], iou: float) -> list[tuple[int, int, float]]:
    """Pairs ``(i, j, iou)`` of same-class boxes, greedily by IoU (highest first, ties by index), IoU >= ``iou``."""
    from supervision import box_iou_batch

    if not a or not b:
        return []
    ious = box_iou_batch(np.array([x.xyxy for x in a], np.float64), np.array([x.xyxy for x in b], np.float64))
    same = np.array([[x.cls == y.cls for y in b] for x in a])
    candidates = sorted(((-float(ious[i, j]), i, j) for i, j in zip(*np.nonzero(same & (ious >= iou)))))
    used_a, used_b, pairs = set(), set(), []
    for neg, i, j in candidates:
        if i not in used_a and j not in used_b:
            used_a.add(i)
            used_b.add(j)
            pairs.append((int(i), int(j), -neg))
    return pairs


def _ratio(n: int, d: int) -> float | None:
    return round(n / d, 4) if d else None


def _mean(values: list[float]) -> float | None:
    return round(sum(values) / len(values), 4) if values else None


@dataclass
class _Tally:
    matched: int = 0
    only_a: int = 0
    only_b: int = 0

    @property
    def disagreements(self) -> int:
        return self.only_a + self.only_b

    def rate(self) -> float:
        """The share of objects the two do not agree on: disagreements / (matched + disagreements)."""
        return round(self.disagreements / (self.matched + self.disagreements), 4) if self.disagreements else 0.0


def compare(a: dict[str, Any], b: dict[str, Any], *, model_a: str | None = None, model_b: str | None = None,
            iou: float = 0.5, top: int = 8, force: bool = False,
            sources: tuple[str, str] = ("A", "B")) -> dict[str, Any]:
    """The diff document (README: "Compare two runs: vidinfer diff"): ``params``, ``samples``, ``totals``,
    ``per_class``, ``per_minute``, ``top_samples``, ``warnings``."""
    if not 0 < iou <= 1:
        raise InvalidInput(f"iou must be in (0, 1], got {iou:g}", code="invalid_input")
    if not isinstance(a, dict) or not isinstance(b, dict):
        raise InvalidInput("a results file must be a JSON object", code="invalid_results")
    named = [side if src == side else f"{side} ({src})" for side, src in zip("AB", sources)]
    frames_a, times_a = _offsets(a, named[0])
    frames_b = _offsets(b, named[1])[0]
    warnings = check_same_video(a, b, force)
    key_a, key_b = pick_column(a, model_a, "A"), pick_column(b, model_b, "B")
    col_a, col_b = a[key_a], b[key_b]
    if len(col_a) != len(frames_a) or len(col_b) != len(frames_b):
        raise InvalidInput("a model column must have one entry per sample", code="invalid_results")
    index_b = {f: i for i, f in enumerate(frames_b)}
    common = [(i, index_b[f]) for i, f in enumerate(frames_a) if f in index_b]
    if not common:
        raise InvalidInput("A and B have no sample (frame_offset) in common", code="results_mismatch")
    if any(col_a[ia] is None or col_b[ib] is None for ia, ib in common):
        warnings.append("samples with a null entry (a frame that failed in A or B) were left out")
    if len(common) < max(len(frames_a), len(frames_b)):
        warnings.append(f"{len(frames_a) - len(common)} samples only in A and {len(frames_b) - len(common)} only "
                        f"in B were left out (another infer_fps or range?)")

    classes: dict[str, _Tally] = defaultdict(_Tally)
    counts_a: Counter = Counter()
    counts_b: Counter = Counter()
    shifts: dict[str, list[float]] = defaultdict(list)
    ious: dict[str, list[float]] = defaultdict(list)
    minutes: dict[int, _Tally] = defaultdict(_Tally)
    minute_classes: dict[int, Counter] = defaultdict(Counter)
    minute_samples: Counter = Counter()
    samples = []
    nulls = 0
    for ia, ib in common:
        if col_a[ia] is None or col_b[ib] is None:  # a frame one side failed to decode or infer: no verdict
            nulls += 1
            continue
        boxes_a, boxes_b = _boxes(col_a[ia]), _boxes(col_b[ib])
        pairs = match(boxes_a, boxes_b, iou)
        paired_a, paired_b = {i for i, _, _ in pairs}, {j for _, j, _ in pairs}
        only_a = [x for i, x in enumerate(boxes_a) if i not in paired_a]
        only_b = [y for j, y in enumerate(boxes_b) if j not in paired_b]
        minute = int(times_a[ia] // 60)
        minute_samples[minute] += 1
        counts_a.update(x.cls for x in boxes_a)
        counts_b.update(y.cls for y in boxes_b)
        for i, j, v in pairs:
            cls = boxes_a[i].cls
            classes[cls].matched += 1
            minutes[minute].matched += 1
            shifts[cls].append(boxes_b[j].confidence - boxes_a[i].confidence)
            ious[cls].append(v)
        for box in only_a:
            classes[box.cls].only_a += 1
            minutes[minute].only_a += 1
        for box in only_b:
            classes[box.cls].only_b += 1
            minutes[minute].only_b += 1
        minute_classes[minute].update(box.cls for box in only_a + only_b)
        samples.append({"frame_offset": frames_a[ia], "time_offset": times_a[ia], "matched": len(pairs),
                        "only_a": len(only_a), "only_b": len(only_b), "disagreements": len(only_a) + len(only_b),
                        "only_a_boxes": [x.as_dict() for x in only_a],
                        "only_b_boxes": [y.as_dict() for y in only_b]})

    per_class = {}
    for cls in sorted(set(counts_a) | set(counts_b)):
        t = classes[cls]
        per_class[cls] = {"count_a": counts_a[cls], "count_b": counts_b[cls], "matched": t.matched,
                          "only_a": t.only_a, "only_b": t.only_b, "confidence_shift": _mean(shifts[cls]),
                          "mean_iou": _mean(ious[cls]), "precision": _ratio(t.matched, counts_b[cls]),
                          "recall": _ratio(t.matched, counts_a[cls])}
    total = _Tally(sum(t.matched for t in classes.values()), sum(t.only_a for t in classes.values()),
                   sum(t.only_b for t in classes.values()))
    all_shifts = [s for v in shifts.values() for s in v]
    totals = {"count_a": sum(counts_a.values()), "count_b": sum(counts_b.values()), "matched": total.matched,
              "only_a": total.only_a, "only_b": total.only_b, "disagreements": total.disagreements,
              "disagreement_rate": total.rate(), "confidence_shift": _mean(all_shifts),
              "precision": _ratio(total.matched, sum(counts_b.values())),
              "recall": _ratio(total.matched, sum(counts_a.values())),
              "samples_with_disagreement": sum(1 for s in samples if s["disagreements"])}
    last = max(minute_samples) if minute_samples else 0
    per_minute = [{"minute": m, "samples": minute_samples[m], "matched": minutes[m].matched,
                   "only_a": minutes[m].only_a, "only_b": minutes[m].only_b,
                   "disagreements": minutes[m].disagreements, "disagreement_rate": minutes[m].rate(),
                   "per_class": dict(sorted(minute_classes[m].items()))} for m in range(last + 1)]
    ranked = sorted((s for s in samples if s["disagreements"]), key=lambda s: (-s["disagreements"], s["frame_offset"]))
    return {
        "version": DIFF_VERSION,
        "params": {"a": sources[0], "b": sources[1], "model_a": key_a, "model_b": key_b, "iou": iou, "top": top},
        "samples": {"compared": len(common) - nulls, "only_in_a": len(frames_a) - len(common),
                    "only_in_b": len(frames_b) - len(common), "null": nulls},
        "totals": totals,
        "per_class": per_class,
        "per_minute": per_minute,
        "top_samples": ranked[:top],
        "warnings": warnings,
    }


# -- human output and pictures ------------------------------------------------------------------
def _num(v: float | None, fmt: str = ".2f", signed: bool = False) -> str:
    return "-" if v is None else format(v, ("+" if signed else "") + fmt)


def print_diff(doc: dict[str, Any], console: Any) -> None:  # noqa: ANN401 - a rich Console
    """Tables like ``vidinfer summary``'s: per class, per minute, the worst samples."""
    from rich.table import Table

    p, t, s = doc["params"], doc["totals"], doc["samples"]
    for w in doc["warnings"]:
        console.print(f"warning: {w}")
    title = (f"A {p['a']} [{p['model_a']}] vs B {p['b']} [{p['model_b']}]: {s['compared']} samples, "
             f"IoU >= {p['iou']:g}")
    table = Table(title=title, title_justify="left")
    for col in ("class", "A", "B", "matched", "only A", "only B", "conf shift B-A", "mean IoU", "precision",
                "recall"):
        table.add_column(col, justify="left" if col == "class" else "right")
    rows = [(cls, c) for cls, c in doc["per_class"].items()] + [("all", {**t, "mean_iou": None})]
    for cls, c in rows:
        table.add_row(cls, str(c["count_a"]), str(c["count_b"]), str(c["matched"]), str(c["only_a"]),
                      str(c["only_b"]), _num(c["confidence_shift"], ".3f", True), _num(c["mean_iou"]),
                      _num(c["precision"]), _num(c["recall"]))
    console.print(table)
    minutes = Table(title="per minute", title_justify="left")
    for col in ("minute", "samples", "disagreements", "rate", "per class"):
        minutes.add_column(col, justify="left" if col in ("minute", "per class") else "right")
    for m in doc["per_minute"]:
        shown = ", ".join(f"{c} {n}" for c, n in sorted(m["per_class"].items(), key=lambda kv: (-kv[1], kv[0])))
        minutes.add_row(f"{m['minute']}:00", str(m["samples"]), str(m["disagreements"]),
                        f"{m['disagreement_rate']:.0%}", shown or "-")
    console.print(minutes)
    if not doc["top_samples"]:
        console.print("A and B agree on every sample")
        return
    worst = Table(title="where they disagree most", title_justify="left")
    for col in ("time (s)", "frame", "only A", "only B", "matched"):
        worst.add_column(col, justify="right")
    for x in doc["top_samples"]:
        worst.add_row(f"{x['time_offset']:.2f}", str(x["frame_offset"]), _classes(x["only_a_boxes"]),
                      _classes(x["only_b_boxes"]), str(x["matched"]))
    console.print(worst)


def _classes(boxes: list[dict[str, Any]]) -> str:
    counts = Counter(b["class"] for b in boxes)
    return ", ".join(f"{c} {n}" for c, n in sorted(counts.items())) or "-"


def write_chart(doc: dict[str, Any], path: Path) -> None:
    """A PNG: disagreements (only A + only B) per minute per class, and only-A / only-B per minute."""
    from vidinfer.summary import plot_panels

    # one more step at the end, so that the last minute is drawn as a step, not a point
    minutes = doc["per_minute"] + doc["per_minute"][-1:]
    times = [60.0 * i for i in range(len(minutes))]
    totals = Counter({cls: c["only_a"] + c["only_b"] for cls, c in doc["per_class"].items()})
    top = [cls for cls, n in totals.most_common(8) if n]
    panels = [("disagreements per minute, per class", [(cls, [m["per_class"].get(cls, 0) for m in minutes])
                                                       for cls in top]),
              ("per minute", [("only in A", [m["only_a"] for m in minutes]),
                              ("only in B", [m["only_b"] for m in minutes]),
                              ("matched", [m["matched"] for m in minutes])])]
    plot_panels(times, panels, path, xlabel="minute start (s)")


def sheet_path(chart: Path) -> Path:
    """Where ``--png CHART --video V`` writes its contact sheet: ``CHART_NAME.sheet.png`` beside it."""
    return chart.with_name(f"{chart.stem}.sheet.png")


def write_contact_sheet(doc: dict[str, Any], a: dict[str, Any], b: dict[str, Any], video: str, path: Path,
                        *, columns: int = 2, tile_width: int = 480, threads: int = 0) -> int:
    """A PNG grid of the frames of ``doc``'s top samples, A's boxes in orange, B's in blue; returns the tiles drawn."""
    import cv2
    import supervision as sv

    from vidinfer.core.video import iter_frames, probe
    from vidinfer.render import parse_entry

    wanted = {s["frame_offset"]: s for s in doc["top_samples"]}
    if not wanted:
        return 0
    p = doc["params"]
    entries_a = dict(zip(a["frame_offset"], a[p["model_a"]]))
    entries_b = dict(zip(b["frame_offset"], b[p["model_b"]]))
    info = probe(video)
    short = min(info.width, info.height)
    thickness = max(2, round(short / 240))
    boxes = {side: sv.BoxAnnotator(color=sv.Color(*color[::-1]), thickness=thickness,
                                   color_lookup=sv.ColorLookup.INDEX)
             for side, color in (("a", COLOR_A), ("b", COLOR_B))}
    tiles: dict[int, np.ndarray] = {}
    kwargs = {"threads": threads} if threads else {}
    for frame in iter_frames(info, **kwargs):
        if frame.index not in wanted:
            continue
        bgr = np.ascontiguousarray(frame.to_rgb()[:, :, ::-1])
        for side, entries in (("a", entries_a), ("b", entries_b)):
            shapes = parse_entry(entries.get(frame.index))
            if len(shapes):
                bgr = boxes[side].annotate(bgr, sv.Detections(xyxy=shapes.xyxy.astype(np.float32)))
        scale = tile_width / bgr.shape[1]
        tile = cv2.resize(bgr, (tile_width, max(1, round(bgr.shape[0] * scale))), interpolation=cv2.INTER_AREA)
        s = wanted[frame.index]
        caption = f"{s['time_offset']:.2f}s  only A {s['only_a']}  only B {s['only_b']}"
        band = np.zeros((24, tile_width, 3), np.uint8)
        cv2.putText(band, caption, (6, 17), cv2.FONT_HERSHEY_SIMPLEX, 0.5, (255, 255, 255), 1, cv2.LINE_AA)
        tiles[frame.index] = np.vstack([band, tile])
        if len(tiles) == len(wanted):
            break
    ordered = [tiles[s["frame_offset"]] for s in doc["top_samples"] if s["frame_offset"] in tiles]
    if not ordered:
        return 0
    height = max(t.shape[0] for t in ordered)
    padded = [np.vstack([t, np.zeros((height - t.shape[0], tile_width, 3), np.uint8)]) for t in ordered]
    padded += [np.zeros_like(padded[0])] * (-len(padded) % columns)
    rows = [np.hstack(padded[i: i + columns]) for i in range(0, len(padded), columns)]
    path.parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(path), np.vstack(rows))
    return len(ordered)
