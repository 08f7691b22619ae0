"""Tiny ONNX graphs that emit the exact output layouts of YOLO exports, with known values.

Real exports of random-weight models produce meaningless numbers; these graphs
emit tensors the test chooses (a planted box at known input pixels), repeated
to the input's batch size through ``Shape`` -> ``Expand``, so tests can assert
on real decoding. ``metadata`` mirrors what Ultralytics writes: ``str()`` of
Python values in ``metadata_props``.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

OPSET = 17
IR_VERSION = 8


def ultralytics_metadata(task: str, names: Sequence[str], *, imgsz: tuple[int, int] = (640, 640), stride: int = 32,
                         end2end: bool = False, batch: int = 1, kpt_shape: tuple[int, int] | None = None,
                         ) -> dict[str, str]:
    """The ``metadata_props`` an Ultralytics ONNX export carries (8.4: every value is ``str(value)``)."""
    values: dict[str, Any] = {
        "description": f"Ultralytics test {task} model", "author": "Ultralytics", "version": "8.4.190",
        "stride": stride, "task": task, "batch": batch, "imgsz": list(imgsz),
        "names": dict(enumerate(names)), "end2end": end2end, "channels": 3,
        "args": {"batch": batch, "dynamic": False, "nms": None},
    }
    if kpt_shape is not None:
        values["kpt_shape"] = list(kpt_shape)
    return {key: str(value) for key, value in values.items()}


def _input(batch: int | None, hw: tuple[int, int] | None) -> onnx.ValueInfoProto:
    """``images [N,3,H,W]``; ``None`` makes the batch, or height and width, symbolic."""
    height, width = hw if hw is not None else ("height", "width")
    return helper.make_tensor_value_info("images", TensorProto.FLOAT, [batch or "batch", 3, height, width])


def _save(path: Path, nodes: list[onnx.NodeProto], inputs: list[onnx.ValueInfoProto],
          outputs: list[onnx.ValueInfoProto], initializers: list[onnx.TensorProto],
          metadata: dict[str, str] | None) -> Path:
    graph = helper.make_graph(nodes, "test", inputs, outputs, initializers)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)])
    model.ir_version = IR_VERSION
    if metadata:
        helper.set_model_props(model, metadata)
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    return path


def _batch_nodes() -> tuple[list[onnx.NodeProto], list[onnx.TensorProto]]:
    """Nodes that compute ``n = Shape(images)[0:1]``, the batch size as a 1-D int64 tensor."""
    inits = [numpy_helper.from_array(np.array([0], np.int64), "zero"),
             numpy_helper.from_array(np.array([1], np.int64), "one")]
    nodes = [helper.make_node("Shape", ["images"], ["shape"]),
             helper.make_node("Slice", ["shape", "zero", "one"], ["n"])]
    return nodes, inits


def _expand_to_batch(value: str, rest: Sequence[int], output: str) -> tuple[list[onnx.NodeProto],
                                                                            list[onnx.TensorProto]]:
    """``value`` (batch 1) repeated to ``[n, *rest]``."""
    rest_name = f"{output}_rest"
    return ([helper.make_node("Concat", ["n", rest_name], [f"{output}_shape"], axis=0),
             helper.make_node("Expand", [value, f"{output}_shape"], [output])],
            [numpy_helper.from_array(np.array(rest, np.int64), rest_name)])


def constant_model(path: Path, outputs: Sequence[np.ndarray], *, batch: int | None = None,
                   hw: tuple[int, int] | None = (640, 640), metadata: dict[str, str] | None = None) -> Path:
    """A model whose outputs (``output0``, ``output1``, ...) are fixed tensors given with a batch of 1.

    ``batch=None`` and ``hw=None`` make those input dimensions symbolic (dynamic exports).
    """
    nodes, inits = _batch_nodes()
    infos = []
    for k, value in enumerate(outputs):
        value = np.asarray(value, dtype=np.float32)
        assert value.shape[0] == 1, "give outputs with a leading batch of 1"
        inits.append(numpy_helper.from_array(value, f"value{k}"))
        more_nodes, more_inits = _expand_to_batch(f"value{k}", value.shape[1:], f"output{k}")
        nodes += more_nodes
        inits += more_inits
        infos.append(helper.make_tensor_value_info(f"output{k}", TensorProto.FLOAT,
                                                   [batch or "batch", *value.shape[1:]]))
    return _save(path, nodes, [_input(batch, hw)], infos, inits, metadata)


def input_size_box_model(path: Path, *, batch: int | None = None, hw: tuple[int, int] | None = (640, 640),
                         metadata: dict[str, str] | None = None) -> Path:
    """End-to-end ``[N,1,6]`` whose one box is (W/4, H/4, 3W/4, 3H/4) of the *input it receives*, score 0.9, class 0.

    Shows which canvas the adapter built (square or stride-padded rectangle) and where it put the image.
    """
    nodes, inits = _batch_nodes()
    inits += [
        numpy_helper.from_array(np.array([3, 2, 3, 2], np.int64), "whwh_index"),
        numpy_helper.from_array(np.array([0.25, 0.25, 0.75, 0.75], np.float32), "fractions"),
        numpy_helper.from_array(np.array([0.9, 0.0], np.float32), "score_class"),
        numpy_helper.from_array(np.array([1, 1, 6], np.int64), "row_shape"),
    ]
    nodes += [
        helper.make_node("Gather", ["shape", "whwh_index"], ["whwh"], axis=0),
        helper.make_node("Cast", ["whwh"], ["whwh_f"], to=TensorProto.FLOAT),
        helper.make_node("Mul", ["whwh_f", "fractions"], ["box"]),
        helper.make_node("Concat", ["box", "score_class"], ["row"], axis=0),
        helper.make_node("Reshape", ["row", "row_shape"], ["row1"]),
    ]
    more_nodes, more_inits = _expand_to_batch("row1", (1, 6), "output0")
    out = helper.make_tensor_value_info("output0", TensorProto.FLOAT, [batch or "batch", 1, 6])
    return _save(path, nodes + more_nodes, [_input(batch, hw)], [out], inits + more_inits, metadata)


def channel_mean_classifier(path: Path, *, batch: int | None = None, hw: tuple[int, int] = (224, 224),
                            metadata: dict[str, str] | None = None) -> Path:
    """Classifier ``[N,3]`` = the mean of each input channel: a red image scores class 0, and so on.

    Shows the crop, the RGB order, the 0-1 scaling and that batch order is kept.
    """
    nodes = [helper.make_node("ReduceMean", ["images"], ["output0"], axes=[2, 3], keepdims=0)]
    out = helper.make_tensor_value_info("output0", TensorProto.FLOAT, [batch or "batch", 3])
    return _save(path, nodes, [_input(batch, hw)], [out], [], metadata)


def anchors_output(channels: int, anchors: int, planted: dict[int, Sequence[float]]) -> np.ndarray:
    """``[1, C, A]`` (v8/11 head): column ``a`` holds ``planted[a]`` (cx, cy, w, h, scores, extra); zeros elsewhere."""
    out = np.zeros((1, channels, anchors), np.float32)
    for anchor, column in planted.items():
        out[0, :len(column), anchor] = column
    return out


def rows_output(rows: int, columns: int, planted: dict[int, Sequence[float]]) -> np.ndarray:
    """``[1, rows, columns]`` (end-to-end or YOLOv5 head): row ``r`` holds ``planted[r]``; zeros elsewhere."""
    out = np.zeros((1, rows, columns), np.float32)
    for row, values in planted.items():
        out[0, row, :len(values)] = values
    return out
