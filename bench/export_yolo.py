"""Export random-weight YOLOv8n ONNX files for the engine benchmark (speed only).

Needs ultralytics and torch, which vidinfer itself never imports; install them in
a separate environment (see bench/README.md). Weights are random (built from the
model's YAML: nothing is downloaded), so outputs are meaningless but the compute
graph, and therefore the cost, is exactly YOLOv8n's.
"""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

CACHE = Path(__file__).resolve().parent / ".cache"


def export(dynamic: bool, name: str) -> Path:
    from ultralytics import YOLO

    model = YOLO("yolov8n.yaml")
    exported = Path(model.export(format="onnx", imgsz=640, dynamic=dynamic, simplify=True, opset=17))
    CACHE.mkdir(parents=True, exist_ok=True)
    target = CACHE / name
    shutil.move(str(exported), target)
    return target


if __name__ == "__main__":
    print(export(False, "yolov8n.onnx"))
    print(export(True, "yolov8n-dynamic.onnx"))
    sys.exit(0)
