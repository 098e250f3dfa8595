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
