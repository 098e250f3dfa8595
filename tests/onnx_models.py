"""Small ONNX models built with onnx.helper for the tests (no downloads): the SpinePose SimCC contract
([N, 3, 256, 192] -> simcc_x [N, 37, 384], simcc_y [N, 37, 512]), its NHWC and fixed-batch variants, a
heatmap model and a detector with its NMS exported."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper


def _save(graph: onnx.GraphProto, path: Path) -> Path:
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    return path


def simcc_model(path: Path, k: int = 37, hw: tuple[int, int] = (256, 192), seed: int = 0, layout: str = "nchw",
                batch: int | str = "batch", hidden: int = 32) -> Path:
    """Pool to 8 x 6, two random dense layers, reshape to SimCC logits (with negative maxima too)."""
    rng = np.random.default_rng(seed)
    h, w = hw
    feat = 3 * (h // 32) * (w // 32)
    inits = [
        numpy_helper.from_array(rng.normal(0, 1, (feat, hidden)).astype(np.float32), "w1"),
        numpy_helper.from_array(rng.normal(0, 1, (hidden, k * w * 2)).astype(np.float32), "wx"),
        numpy_helper.from_array(rng.normal(0, 1, (hidden, k * h * 2)).astype(np.float32), "wy"),
        numpy_helper.from_array(np.array([-1, feat], np.int64), "flat"),
        numpy_helper.from_array(np.array([-1, k, w * 2], np.int64), "shape_x"),
        numpy_helper.from_array(np.array([-1, k, h * 2], np.int64), "shape_y"),
    ]
    nodes = []
    src = "input"
    if layout == "nhwc":
        nodes.append(helper.make_node("Transpose", ["input"], ["nchw"], perm=[0, 3, 1, 2]))
        src = "nchw"
    nodes += [
        helper.make_node("AveragePool", [src], ["pooled"], kernel_shape=[32, 32], strides=[32, 32]),
        helper.make_node("Reshape", ["pooled", "flat"], ["f"]),
        helper.make_node("MatMul", ["f", "w1"], ["h0"]),
        helper.make_node("Tanh", ["h0"], ["h1"]),
        helper.make_node("MatMul", ["h1", "wx"], ["x0"]),
        helper.make_node("MatMul", ["h1", "wy"], ["y0"]),
        helper.make_node("Reshape", ["x0", "shape_x"], ["simcc_x"]),
        helper.make_node("Reshape", ["y0", "shape_y"], ["simcc_y"]),
    ]
    shape = [batch, 3, h, w] if layout == "nchw" else [batch, h, w, 3]
    graph = helper.make_graph(
        nodes, "simcc", [helper.make_tensor_value_info("input", TensorProto.FLOAT, shape)],
        [helper.make_tensor_value_info("simcc_x", TensorProto.FLOAT, [batch, k, w * 2]),
         helper.make_tensor_value_info("simcc_y", TensorProto.FLOAT, [batch, k, h * 2])], inits)
    return _save(graph, path)


def heatmap_model(path: Path, k: int = 37, hw: tuple[int, int] = (256, 192), seed: int = 0) -> Path:
    """Pool by 4 and a random 3x3 convolution to K heatmaps of 64 x 48."""
    rng = np.random.default_rng(seed)
    h, w = hw
    inits = [numpy_helper.from_array(rng.normal(0, 0.3, (k, 3, 3, 3)).astype(np.float32), "wc")]
    nodes = [
        helper.make_node("AveragePool", ["input"], ["p"], kernel_shape=[4, 4], strides=[4, 4]),
        helper.make_node("Conv", ["p", "wc"], ["c"], pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c"], ["heatmaps"]),
    ]
    graph = helper.make_graph(
        nodes, "heatmap", [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["batch", 3, h, w])],
        [helper.make_tensor_value_info("heatmaps", TensorProto.FLOAT, ["batch", k, h // 4, w // 4])], inits)
    return _save(graph, path)


def detector_model(path: Path, dets: np.ndarray, labels: np.ndarray, size: int = 640) -> Path:
    """Constant detections (input pixels of the letterboxed image), as an end2end export returns them."""
    inits = [numpy_helper.from_array(dets[None].astype(np.float32), "d"),
             numpy_helper.from_array(labels[None].astype(np.int64), "l"),
             numpy_helper.from_array(np.array(0, np.float32), "zero")]
    nodes = [
        helper.make_node("ReduceMean", ["input"], ["m"], keepdims=0),
        helper.make_node("Mul", ["m", "zero"], ["z"]),
        helper.make_node("Add", ["d", "z"], ["dets"]),
        helper.make_node("Identity", ["l"], ["labels"]),
    ]
    graph = helper.make_graph(
        nodes, "detector", [helper.make_tensor_value_info("input", TensorProto.FLOAT, [1, 3, size, size])],
        [helper.make_tensor_value_info("dets", TensorProto.FLOAT, [1, len(dets), 5]),
         helper.make_tensor_value_info("labels", TensorProto.INT64, [1, len(dets)])], inits)
    return _save(graph, path)


def rfdetr_model(path: Path, boxes: np.ndarray, logits: np.ndarray, size: int = 384, seed: int = 0,
                 input_weight: float = 0.005) -> Path:
    """An RF-DETR-shaped detector: ``input [1, 3, S, S]`` -> ``dets [1, Q, 4]`` (cx, cy, w, h in 0..1) and
    ``labels [1, Q, C]`` (logits, class 0 background): the given constants plus a small random linear
    function of the input pooled to 4 x 4, so that the pre-processing matters."""
    rng = np.random.default_rng(seed)
    q, c = logits.shape
    inits = [
        numpy_helper.from_array(np.array([1, 48], np.int64), "flat"),
        numpy_helper.from_array(rng.normal(0, input_weight, (48, q * c)).astype(np.float32), "wl"),
        numpy_helper.from_array(rng.normal(0, input_weight / 10, (48, q * 4)).astype(np.float32), "wb"),
        numpy_helper.from_array(np.array([1, q, c], np.int64), "shape_l"),
        numpy_helper.from_array(np.array([1, q, 4], np.int64), "shape_b"),
        numpy_helper.from_array(logits[None].astype(np.float32), "l0"),
        numpy_helper.from_array(boxes[None].astype(np.float32), "b0"),
    ]
    nodes = [
        helper.make_node("AveragePool", ["input"], ["pooled"], kernel_shape=[size // 4] * 2, strides=[size // 4] * 2),
        helper.make_node("Reshape", ["pooled", "flat"], ["f"]),
        helper.make_node("MatMul", ["f", "wl"], ["l1"]),
        helper.make_node("Reshape", ["l1", "shape_l"], ["l2"]),
        helper.make_node("Add", ["l2", "l0"], ["labels"]),
        helper.make_node("MatMul", ["f", "wb"], ["b1"]),
        helper.make_node("Reshape", ["b1", "shape_b"], ["b2"]),
        helper.make_node("Add", ["b2", "b0"], ["dets"]),
    ]
    graph = helper.make_graph(
        nodes, "rfdetr", [helper.make_tensor_value_info("input", TensorProto.FLOAT, [1, 3, size, size])],
        [helper.make_tensor_value_info("dets", TensorProto.FLOAT, [1, q, 4]),
         helper.make_tensor_value_info("labels", TensorProto.FLOAT, [1, q, c])], inits)
    return _save(graph, path)


# The persons of the default RF-DETR stand-in: (query, person logit, box cx, cy, w, h); others score below
# the threshold or belong to other classes. Boxes are placed where people stand in tests/data/photos.
RFDETR_PERSONS = ((0, 3.0, 0.61, 0.52, 0.34, 0.82), (1, 2.5, 0.22, 0.60, 0.30, 0.60),
                  (2, 2.0, 0.78, 0.58, 0.28, 0.70), (3, 0.0, 0.45, 0.50, 0.15, 0.40))


def rfdetr_tables(crowded: bool = False, q: int = 100, c: int = 5, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Boxes [Q, 4] and logits [Q, C] for ``rfdetr_model``.

    Default: the four ``RFDETR_PERSONS`` above the 0.3 threshold; persons at 0.08 and 0.14 below it; other
    classes above it (one on a person's query); background high everywhere (it must be ignored).
    ``crowded``: 300 other-class scores of 0.88 fill the top 300, so a person at 0.73 is cut by the top-k and
    only the 0.95 one stays."""
    rng = np.random.default_rng(seed)
    boxes = np.column_stack([rng.uniform(0.2, 0.8, (q, 2)), rng.uniform(0.05, 0.3, (q, 2))])
    logits = np.full((q, c), -6.0)
    logits[:, 0] = 4.0
    if crowded:
        logits[:, 2:] = 2.0
        logits[0, 1], logits[1, 1] = 3.0, 1.0
        return boxes, logits
    for i, lg, *b in RFDETR_PERSONS:
        logits[i, 1] = lg
        boxes[i] = b
    logits[4, 1], logits[5, 1] = -2.5, -1.8
    logits[6, 2], logits[7, 3], logits[0, 4] = 3.0, 2.0, 1.0
    logits[8, 0] = 6.0
    return boxes, logits


def released_repos(folder: Path, names: tuple[str, ...], seed: int = 0) -> dict[str, dict[str, bytes]]:
    """Random-weight stand-ins of released models (``hub`` names) under their real repository paths, for
    ``hub_server.FakeHub(models=...)``: SimCC pose models of the right input size, RF-DETR-shaped detectors
    with the ``RFDETR_PERSONS``."""
    from spinetrack_tools.inference import hub

    repos: dict[str, dict[str, bytes]] = {}
    for i, name in enumerate(names):
        spec = hub.spec_for(name)
        out = folder / f"{spec.name.replace('@', '_')}.onnx"
        if spec.kind == "pose":
            simcc_model(out, hw=spec.input_wh[::-1], seed=seed + i)
        else:
            rfdetr_model(out, *rfdetr_tables(), size=spec.input_wh[0], seed=seed + i)
        repos.setdefault(spec.repo_id, {})[spec.filename] = out.read_bytes()
    return repos
