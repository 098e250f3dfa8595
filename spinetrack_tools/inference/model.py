"""ONNX Runtime sessions for top-down pose models and person detectors; everything read from the session."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import numpy as np

from ..io import InputError
from . import transforms as T


def make_session(model: str | Path | bytes, threads: int = 2, providers: list[str] | None = None):
    """An onnxruntime session of an ONNX file (or its bytes): ``threads`` intra-op threads, all graph
    optimisations, on ``providers`` (default: the CPU)."""
    import onnxruntime as ort

    path = None if isinstance(model, bytes) else Path(model)
    if path is not None and not path.is_file():
        raise InputError(path, "model file not found")
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    opts.log_severity_level = 3
    # idle workers stop spinning when a run returns (they still spin within a run), leaving the cores to
    # the image preparation between runs
    opts.add_session_config_entry("session.force_spinning_stop", "1")
    try:
        return ort.InferenceSession(model if path is None else str(path), opts,
                                    providers=providers or ["CPUExecutionProvider"])
    except Exception as e:  # onnxruntime raises its own exception types for unreadable graphs
        raise InputError(path, f"not a loadable ONNX model ({str(e).splitlines()[0]})") from None


def best_providers() -> list[str]:
    """The CUDA execution provider when this onnxruntime has it (then the CPU), else the CPU."""
    import onnxruntime as ort

    return ["CUDAExecutionProvider", "CPUExecutionProvider"] if "CUDAExecutionProvider" in \
        ort.get_available_providers() else ["CPUExecutionProvider"]


def _dim(v: object) -> int | None:
    return v if isinstance(v, int) and v > 0 else None


@dataclass
class PoseModel:
    """A SpinePose / RTMPose-style (SimCC) or HRNet-style (heatmap) top-down model."""

    path: Path
    session: object
    input_name: str
    layout: str  # "nchw" or "nhwc"
    input_wh: tuple[int, int]
    fixed_batch: int | None
    kind: str  # "simcc" or "heatmap"
    num_keypoints: int
    output_names: list[str]
    spine_chain: tuple[int, ...] = ()  # smoothed after decoding (the package's v1 post-process) when set

    @classmethod
    def load(cls, path: str | Path, threads: int = 2) -> "PoseModel":
        sess = make_session(path, threads)
        inp = sess.get_inputs()[0]
        shape = list(inp.shape)
        if len(shape) != 4:
            raise InputError(path, f"expected one 4-D image input, got shape {shape}")
        d1, d3 = _dim(shape[1]), _dim(shape[3])
        layout = "nhwc" if (d3 in (1, 3, 4) and d1 not in (1, 3, 4)) else "nchw"
        h, w = (shape[2], shape[3]) if layout == "nchw" else (shape[1], shape[2])
        if _dim(h) is None or _dim(w) is None:
            raise InputError(path, f"the model's input size is not fixed ({shape})")
        outs = sess.get_outputs()
        shapes = [list(o.shape) for o in outs]
        if any(_dim(d) is None for sh in shapes for d in sh[1:]):  # symbolic dims: probe with one blank crop
            blank = np.zeros((1, 3, int(h), int(w)) if layout == "nchw" else (1, int(h), int(w), 3), np.float32)
            shapes = [[None, *o.shape[1:]] for o in sess.run(None, {inp.name: blank})]
        if len(outs) >= 2 and len(shapes[0]) == 3 and len(shapes[1]) == 3:
            kind, k = "simcc", shapes[0][1]
        elif len(outs) >= 1 and len(shapes[0]) == 4:
            kind, k = "heatmap", shapes[0][1]
        else:
            raise InputError(path, f"outputs {shapes} are neither SimCC (two [N, K, L]) nor heatmaps ([N, K, h, w])")
        if _dim(k) is None:
            raise InputError(path, f"the model's keypoint count is not fixed ({shapes})")
        return cls(Path(path), sess, inp.name, layout, (int(w), int(h)), _dim(shape[0]), kind, int(k),
                   [o.name for o in outs[:2 if kind == "simcc" else 1]])

    def run(self, x: np.ndarray) -> list[np.ndarray]:
        """Run a batch (split into single items when the model's batch size is fixed to 1)."""
        if self.fixed_batch == 1 and len(x) != 1:
            parts = [self.session.run(self.output_names, {self.input_name: x[i:i + 1]}) for i in range(len(x))]
            return [np.concatenate([p[j] for p in parts]) for j in range(len(self.output_names))]
        return self.session.run(self.output_names, {self.input_name: x})

    def decode(self, outputs: list[np.ndarray], center: np.ndarray, scale: np.ndarray,
               score: str = "mean") -> tuple[np.ndarray, np.ndarray]:
        """Image-pixel keypoints [N, K, 2] and confidences [N, K] of a batch's outputs."""
        if self.kind == "simcc":
            sx, sy = outputs
            ratio = sx.shape[2] / self.input_wh[0]
            locs, vals = T.decode_simcc(sx, sy, ratio, score)
            return T.to_image(locs, center, scale, self.input_wh), vals
        hm = outputs[0]
        locs, vals = T.decode_heatmap(hm)
        return T.to_image(locs, center, scale, (hm.shape[3], hm.shape[2])), vals

    def postprocess(self, keypoints: np.ndarray) -> np.ndarray:
        """Image-pixel keypoints after the model's own post-process (v1 SpinePose: the smoothed spine)."""
        return T.smooth_chain(keypoints, self.spine_chain) if self.spine_chain else keypoints


class PersonDetector(Protocol):
    """What ``predict`` needs of a detector: one BGR image in, person boxes (x, y, w, h) and scores out."""

    def __call__(self, image_bgr: np.ndarray) -> tuple[np.ndarray, np.ndarray]: ...


@dataclass
class Detector:  # the NMS-exported format (RF-DETR's raw queries: ``RFDETR``)
    """A person detector exported with its NMS (mmdeploy 'end2end' / rtmlib YOLOX style): one letterboxed
    image in, ``dets [1, N, 5]`` (x1, y1, x2, y2, score in input pixels) and optionally ``labels [1, N]`` out."""

    session: object
    input_name: str
    input_hw: tuple[int, int]
    score_thr: float = 0.5
    path: Path | None = None  # the ONNX file (for a copy of the session elsewhere, e.g. a Ray actor)

    @classmethod
    def load(cls, path: str | Path, threads: int = 2, score_thr: float = 0.5) -> "Detector":
        det = load_detector(path, threads, score_thr)
        if not isinstance(det, cls):
            raise InputError(path, "expected a detector with its NMS exported (dets [1, N, 5])")
        return det

    def __call__(self, image_bgr: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Person boxes [M, 4] as x, y, w, h in image pixels and their scores [M]."""
        import cv2

        h, w = self.input_hw
        ratio = min(h / image_bgr.shape[0], w / image_bgr.shape[1])
        resized = cv2.resize(image_bgr, (int(image_bgr.shape[1] * ratio), int(image_bgr.shape[0] * ratio)),
                             interpolation=cv2.INTER_LINEAR)
        padded = np.full((h, w, 3), 114, dtype=np.uint8)
        padded[:resized.shape[0], :resized.shape[1]] = resized
        x = padded.transpose(2, 0, 1)[None].astype(np.float32)
        outs = self.session.run(None, {self.input_name: x})
        dets = outs[0][0]
        keep = dets[:, 4] > self.score_thr
        if len(outs) > 1 and outs[1].ndim == 2:
            keep &= outs[1][0] == 0  # person class
        boxes = dets[keep, :4] / ratio
        return np.hstack([boxes[:, :2], boxes[:, 2:] - boxes[:, :2]]), dets[keep, 4]


@dataclass
class RFDETR:
    """An RF-DETR person detector, as the spinepose package (2.1.0) runs it: the image resized to the square
    input (no letterbox), scaled to 0..1 and normalised with the ImageNet mean/std in its stored (BGR) channel
    order; ``boxes [1, Q, 4]`` (cx, cy, w, h in 0..1) and ``logits [1, Q, C]`` (class 0 background) out;
    sigmoid, background excluded, the top ``num_select`` (query, class) pairs, person (class 1) above
    ``score_thr`` kept in score order."""

    session: object
    input_name: str
    input_hw: tuple[int, int]
    score_thr: float = 0.3
    num_select: int = 300
    path: Path | None = None  # the ONNX file (for a copy of the session elsewhere, e.g. a Ray actor)

    MEAN = np.array([0.485, 0.456, 0.406], dtype=np.float32)
    INV_STD = (1.0 / np.array([0.229, 0.224, 0.225], dtype=np.float32)).astype(np.float32)

    def __call__(self, image_bgr: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Person boxes [M, 4] as x, y, w, h in image pixels and their scores [M]."""
        import cv2

        h, w = self.input_hw
        x = cv2.resize(image_bgr, (w, h), interpolation=cv2.INTER_LINEAR).astype(np.float32)
        np.multiply(x, np.float32(1.0 / 255.0), out=x)
        np.subtract(x, self.MEAN, out=x)
        np.multiply(x, self.INV_STD, out=x)
        boxes, logits = self.session.run(None, {self.input_name: x.transpose(2, 0, 1)[None]})[:2]
        probs = 1.0 / (1.0 + np.exp(-logits[0]))
        probs[:, 0] = -1.0  # background
        flat = probs.reshape(-1)
        k = min(self.num_select, flat.size)
        top = np.argpartition(flat[None], -k, axis=1)[0, -k:]  # the package's selection and order, exactly
        top = top[np.argsort(-flat[top][None], axis=1)[0]]
        scores = flat[top]
        query, label = top // probs.shape[1], top % probs.shape[1]
        keep = (scores > self.score_thr) & (label == 1)
        cx, cy, bw, bh = (boxes[0][query[keep]].T.astype(np.float32))
        bw, bh = np.clip(bw, 0.0, None), np.clip(bh, 0.0, None)
        size = np.array([image_bgr.shape[1], image_bgr.shape[0]] * 2, dtype=np.float32)
        xyxy = np.stack([cx - 0.5 * bw, cy - 0.5 * bh, cx + 0.5 * bw, cy + 0.5 * bh], axis=-1) * size
        xyxy = xyxy.astype(np.float64)
        return np.hstack([xyxy[:, :2], xyxy[:, 2:] - xyxy[:, :2]]), scores[keep].astype(np.float64)


def load_detector(path: str | Path, threads: int = 2, score_thr: float | None = None) -> PersonDetector:
    """The detector an ONNX file holds, told apart by its outputs: RF-DETR (``boxes [1, Q, 4]``, ``logits
    [1, Q, C]``; default threshold 0.3, as the package) or NMS-exported (``dets [1, N, 5]``; default 0.5)."""
    sess = make_session(path, threads)
    inp = sess.get_inputs()[0]
    shape = list(inp.shape)
    if len(shape) != 4 or _dim(shape[2]) is None or _dim(shape[3]) is None:
        raise InputError(path, f"expected a fixed [1, 3, H, W] detector input, got {shape}")
    outs = [list(o.shape) for o in sess.get_outputs()]
    hw = (int(shape[2]), int(shape[3]))
    if len(outs) >= 2 and len(outs[0]) == 3 and outs[0][-1] == 4 and len(outs[1]) == 3:
        return RFDETR(sess, inp.name, hw, 0.3 if score_thr is None else score_thr, path=Path(path))
    if outs and len(outs[0]) == 3 and outs[0][-1] == 5:
        return Detector(sess, inp.name, hw, 0.5 if score_thr is None else score_thr, Path(path))
    raise InputError(path, f"outputs {outs} are neither RF-DETR (boxes [1, Q, 4], logits [1, Q, C]) nor a "
                           "detector with its NMS exported (dets [1, N, 5])")
