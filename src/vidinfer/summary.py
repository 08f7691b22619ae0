"""What a results file says, in numbers: counts per class, per line, per zone and per minute, and a chart.

``vidinfer summary results.json [--png chart.png]`` prints these with rich. Reading a file needs only the
standard library (it must stay fast on an hour of results); the chart imports matplotlib (installed with
supervision) when asked for.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from vidinfer.core.tracking import ANALYSIS_KEYS, COUNTS_KEY, TRACKS_KEY


@dataclass
class ModelSummary:
    key: str
    #: class -> detections over every sample
    detections: Counter = field(default_factory=Counter)
    #: class -> tracks (None without tracking)
    tracks: Counter | None = None
    #: minute -> class -> detections (untracked) or distinct tracks seen (tracked)
    per_minute: dict[int, Counter] = field(default_factory=lambda: defaultdict(Counter))
    #: one per sample: class -> detections in that sample
    per_sample: list[Counter] = field(default_factory=list)
    lines: list[dict[str, Any]] = field(default_factory=list)
    zones: list[dict[str, Any]] = field(default_factory=list)


def summarise(results: dict[str, Any]) -> list[ModelSummary]:
    """One summary per model whose entries carry class predictions."""
    times: list[float] = results.get("time_offset") or []
    out = []
    for key, column in results.items():
        if key in ("frame_offset", "time_offset", *ANALYSIS_KEYS) or not isinstance(column, list):
            continue
        tracks = (results.get(TRACKS_KEY) or {}).get(key)
        s = ModelSummary(key, tracks=Counter(t["class"] for t in tracks) if tracks is not None else None)
        seen: dict[int, set] = defaultdict(set)
        for i, entry in enumerate(column):
            sample: Counter = Counter()
            preds = entry.get("predictions") if isinstance(entry, dict) else None
            if isinstance(preds, list):
                for p in preds:
                    if isinstance(p, dict) and "class" in p and "x" in p:
                        sample[p["class"]] += 1
                        minute = int(times[i] // 60) if i < len(times) else 0
                        if tracks is None:
                            s.per_minute[minute][p["class"]] += 1
                        elif p.get("tracker_id") is not None and p["tracker_id"] not in seen[minute]:
                            seen[minute].add(p["tracker_id"])
                            s.per_minute[minute][p["class"]] += 1
            s.detections.update(sample)
            s.per_sample.append(sample)
        if not s.detections and tracks is None:
            continue
        counts = (results.get(COUNTS_KEY) or {}).get(key) or {}
        s.lines, s.zones = counts.get("lines") or [], counts.get("zones") or []
        out.append(s)
    return out


@dataclass
class Findings:
    """What one model found, whatever its kind: counts under a heading (README: "vidinfer summary")."""

    key: str
    #: "detections", "poses", "top classes", "predicted classes", "faces", "text lines", "embeddings" or "nothing"
    kind: str
    total: int = 0
    #: class (or text) -> count: detections per class, samples a class topped, texts read
    counts: Counter = field(default_factory=Counter)

    def line(self, top: int = 5) -> str:
        """One line: ``coco: person 12, car 3``, ``imagenet: top classes tabby 30``, ``gaze: 14 faces``."""
        if self.kind == "nothing":
            return f"{self.key}: nothing found"
        quote = '"' if self.kind == "text lines" else ""
        shown = ", ".join(f"{quote}{c}{quote} {n}" for c, n in self.counts.most_common(top))
        if self.kind == "detections":
            return f"{self.key}: {shown}"
        if self.kind in ("top classes", "predicted classes"):
            return f"{self.key}: {self.kind} {shown}"
        return f"{self.key}: {self.total} {self.kind}" + (f" ({shown})" if shown else "")


def findings(results: dict[str, Any]) -> list[Findings]:
    """What each model column found, read from the shape of its entries (the wire shapes of CONTRACT.md)."""
    out = []
    for key, column in results.items():
        if key in ("frame_offset", "time_offset", *ANALYSIS_KEYS) or not isinstance(column, list):
            continue
        f = Findings(key, "nothing")
        for entry in column:
            if not isinstance(entry, dict):
                continue
            preds = entry.get("predictions")
            if isinstance(entry.get("embeddings"), list):
                f.kind, f.total = "embeddings", f.total + len(entry["embeddings"])
            elif isinstance(entry.get("predicted_classes"), list):
                f.kind, f.total = "predicted classes", f.total + 1
                f.counts.update(map(str, entry["predicted_classes"]))
            elif entry.get("top"):
                f.kind, f.total = "top classes", f.total + 1
                f.counts[str(entry["top"])] += 1
            elif isinstance(preds, list):
                for p in preds:
                    if not isinstance(p, dict):
                        continue
                    if isinstance(p.get("face"), dict):
                        f.kind, f.total = "faces", f.total + 1
                    elif isinstance(p.get("keypoints"), list):
                        f.kind, f.total = "poses", f.total + 1
                        f.counts[str(p.get("class", ""))] += 1
                    elif "text" in p:
                        f.kind, f.total = "text lines", f.total + 1
                        f.counts[str(p["text"])] += 1
                    elif "class" in p and "x" in p:
                        f.kind, f.total = "detections", f.total + 1
                        f.counts[str(p["class"])] += 1
        out.append(f)
    return out


def _per_class(counts: dict[str, Any]) -> str:
    return ", ".join(f"{c} {n}" for c, n in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))) or "-"


def print_summary(results: dict[str, Any], console: Any) -> None:  # noqa: ANN401 - a rich Console
    """Tables: classes, lines, zones, minutes, per model."""
    from rich.table import Table

    times: list[float] = results.get("time_offset") or []
    span = f"{len(times)} samples, {times[-1]:.1f} s" if times else "no samples"
    summaries = summarise(results)
    others = [f for f in findings(results) if f.kind != "detections" and f.key not in {s.key for s in summaries}]
    if not summaries and not others:
        console.print(f"{span}; no detections")
        return
    for f in others:  # classifiers, gaze, OCR, CLIP, and models that found nothing
        console.print(f"{span}; {f.line(top=10)}")
    for s in summaries:
        tracked = s.tracks is not None
        table = Table(title=f"{s.key}: {span}", title_justify="left")
        table.add_column("class")
        table.add_column("detections", justify="right")
        if tracked:
            table.add_column("tracks", justify="right")
        for cls in sorted(set(s.detections) | set(s.tracks or {}), key=lambda c: (-s.detections[c], c)):
            table.add_row(cls, str(s.detections[cls]), *([str(s.tracks[cls])] if tracked else []))
        console.print(table)
        if s.lines:
            lines = Table(title=f"{s.key}: lines", title_justify="left")
            for col in ("line", "points", "in", "out", "in per class", "out per class"):
                lines.add_column(col, justify="right" if col in ("in", "out") else "left")
            for line in s.lines:
                lines.add_row(line["name"], _points(line["points"]), str(line["total_in"]), str(line["total_out"]),
                              _per_class(line["in"]), _per_class(line["out"]))
            console.print(lines)
        if s.zones:
            zones = Table(title=f"{s.key}: zones", title_justify="left")
            for col in ("zone", "objects", "max present", "objects per class", "dwell per class"):
                zones.add_column(col, justify="right" if col in ("objects", "max present") else "left")
            for zone in s.zones:
                dwell = ", ".join(f"{c} {v:.1f} s" for c, v in sorted(zone["dwell_seconds"].items())) or "-"
                zones.add_row(zone["name"], str(zone["total_objects"]), str(zone["max_present"]),
                              _per_class(zone["objects"]), dwell)
            console.print(zones)
        minutes = Table(title=f"{s.key}: per minute ({'tracks seen' if tracked else 'detections'}"
                              f"{', line crossings in/out' if s.lines else ''})", title_justify="left")
        minutes.add_column("minute")
        minutes.add_column("per class")
        for line in s.lines:
            minutes.add_column(f"{line['name']} in/out", justify="right")
        last = int(times[-1] // 60) if times else 0
        crossings = [Counter((int(c["time_offset"] // 60), c["direction"]) for c in line["crossings"])
                     for line in s.lines]
        for minute in range(last + 1):
            minutes.add_row(f"{minute:d}:00", _per_class(s.per_minute.get(minute, {})),
                            *[f"{c[(minute, 'in')]}/{c[(minute, 'out')]}" for c in crossings])
        console.print(minutes)


def _points(points: list[list[float]]) -> str:
    return " ".join(f"{x:g},{y:g}" for x, y in points)


def write_chart(results: dict[str, Any], path: Path) -> None:
    """A PNG of counts over time: detections per class per sample, line crossings so far, zone occupancy."""
    times: list[float] = results.get("time_offset") or []
    summaries = summarise(results)
    panels: list[tuple[str, list[tuple[str, list[float]]]]] = []
    for s in summaries:
        top = [c for c, _ in s.detections.most_common(8)]
        panels.append((f"{s.key}: objects per sample", [(c, [sample[c] for sample in s.per_sample]) for c in top]))
        if s.lines:
            panels.append((f"{s.key}: line crossings so far",
                           [(f"{line['name']} {d}", line[f"cumulative_{d}"]) for line in s.lines for d in ("in", "out")]))
        if s.zones:
            panels.append((f"{s.key}: objects in zone", [(zone["name"], zone["present"]) for zone in s.zones]))
    if not panels:
        panels.append(("no detections", []))
    plot_panels(times, panels, path)


def plot_panels(times: list[float], panels: list[tuple[str, list[tuple[str, list[float]]]]], path: Path,
                xlabel: str = "time (s)") -> None:
    """Stacked step charts sharing the time axis, one titled panel per ``(title, [(label, values)])``, as a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(len(panels), 1, figsize=(10, 2.6 * len(panels)), sharex=True, squeeze=False)
    for ax, (title, series) in zip(axes[:, 0], panels):
        for label, values in series:
            ax.step(times[:len(values)], values, where="post", label=label)
        ax.set_title(title, loc="left", fontsize=10)
        ax.yaxis.get_major_locator().set_params(integer=True)
        if series:
            ax.legend(loc="upper left", fontsize=8, ncol=min(4, len(series)))
        ax.grid(alpha=0.3)
    axes[-1, 0].set_xlabel(xlabel)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)
