"""Export random-weight YOLOv8n ONNX files for the engine benchmark (speed only).

Needs ultralytics and torch, which vidinfer itself never imports; install them in
a separate environment (see bench/README.md). Weights are random (built from the
model's YAML with a fixed seed: nothing is downloaded), so outputs are meaningless
but the compute graph, and therefore the cost, is exactly YOLOv8n's. Both files
come from the same model object, so they hold the same weights: the fixed 640x640
export and the dynamic-shape one (for the rectangular letterbox) differ only in
their input shapes.
"""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

CACHE = Path(__file__).resolve().parent / ".cache"


def export_all() -> list[Path]:
    import torch
    from ultralytics import YOLO

    torch.manual_seed(0)
    model = YOLO("yolov8n.yaml")
    CACHE.mkdir(parents=True, exist_ok=True)
    written = []
    for dynamic, name in ((False, "yolov8n.onnx"), (True, "yolov8n-dynamic.onnx")):
        exported = Path(model.export(format="onnx", imgsz=640, dynamic=dynamic, simplify=True, opset=17))
        target = CACHE / name
        shutil.move(str(exported), target)
        written.append(target)
    return written


if __name__ == "__main__":
    for path in export_all():
        print(path)
    sys.exit(0)
