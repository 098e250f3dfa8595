"""ONNX Runtime sessions for top-down pose models and person detectors; everything read from the session."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..io import InputError
from . import transforms as T


def make_session(path: str | Path, threads: int = 2):
    """An onnxruntime CPU session (``threads`` intra-op threads, all graph optimisations)."""
    import onnxruntime as ort

    path = Path(path)
    if not path.is_file():
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
        return ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
    except Exception as e:  # onnxruntime raises its own exception types for unreadable graphs
        raise InputError(path, f"not a loadable ONNX model ({str(e).splitlines()[0]})") from None


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


@dataclass
class Detector:
    """A person detector exported with its NMS (mmdeploy 'end2end' / rtmlib YOLOX style): one letterboxed
    image in, ``dets [1, N, 5]`` (x1, y1, x2, y2, score in input pixels) and optionally ``labels [1, N]`` out."""

    session: object
    input_name: str
    input_hw: tuple[int, int]
    score_thr: float = 0.5

    @classmethod
    def load(cls, path: str | Path, threads: int = 2, score_thr: float = 0.5) -> "Detector":
        sess = make_session(path, threads)
        inp = sess.get_inputs()[0]
        shape = list(inp.shape)
        if len(shape) != 4 or _dim(shape[2]) is None or _dim(shape[3]) is None:
            raise InputError(path, f"expected a fixed [1, 3, H, W] detector input, got {shape}")
        outs = sess.get_outputs()
        if not outs or len(outs[0].shape) != 3 or outs[0].shape[-1] != 5:
            raise InputError(path, "expected a detector with its NMS exported (dets [1, N, 5])")
        return cls(sess, inp.name, (int(shape[2]), int(shape[3])), score_thr)

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
