"""Load an RTMPose / SpinePose ONNX export as a trainable ``rtmpose.RTMPose`` (folded form), without mmpose.

The graph's weights are read in the order its nodes consume them and assigned to the module's parameters in
the order its forward pass uses them, matched by shape (a MatMul's weight transposed; scalar constants of the
graph such as ScaleNorm's scale or the clamp's eps skipped). The loaded module must reproduce onnxruntime's
outputs (``PARITY_TOL``) before it is used; otherwise loading refuses, naming the first tensor that does not map
or the size of the difference.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..io import InputError
from .model import OnnxIO

PARITY_TOL = 1e-4


@dataclass
class Tensor:
    """A weight of the graph as one node consumes it."""

    name: str
    op: str
    node: str
    value: np.ndarray
    transposed: bool  # the node computes x @ value (MatMul, Gemm without transB): a Linear weight transposed


def _load(path: Path):
    import onnx

    try:
        return onnx.load(str(path))
    except FileNotFoundError:
        raise InputError(path, "ONNX file not found") from None
    except Exception as e:
        raise InputError(path, f"not an ONNX file ({e})") from None


def _dims(value) -> tuple:
    """Each dim: its value, its symbolic name, or None (unknown)."""
    return tuple(d.dim_param or (d.dim_value if d.HasField("dim_value") else None)
                 for d in value.type.tensor_type.shape.dim)


def read_io(path: Path, model=None) -> OnnxIO:
    """The SimCC I/O of an export: input [N, 3, H, W] (H, W fixed), outputs ``simcc_x``, ``simcc_y`` [N, K, bins]."""
    m = model or _load(path)
    inits = {i.name for i in m.graph.initializer}
    inputs = [i for i in m.graph.input if i.name not in inits]
    outs = {o.name: o for o in m.graph.output}
    if len(inputs) != 1 or set(outs) != {"simcc_x", "simcc_y"}:
        raise InputError(path, f"not a SimCC export (inputs {[i.name for i in inputs]}, outputs {sorted(outs)}; "
                               "expected one input and the outputs simcc_x, simcc_y)")
    din, dx, dy = _dims(inputs[0]), _dims(outs["simcc_x"]), _dims(outs["simcc_y"])
    if len(din) != 4 or din[1] != 3 or not all(_fixed(d) for d in din[2:]):
        raise InputError(path, f"input {inputs[0].name} has dims {din}, expected [N, 3, H, W] with fixed H, W")
    if len(dx) != 3 or len(dy) != 3:
        raise InputError(path, f"simcc_x {dx} / simcc_y {dy}: expected [N, K, bins]")
    return OnnxIO(inputs[0].name, ("simcc_x", "simcc_y"), din, (dx, dy))


def _fixed(d) -> bool:
    return isinstance(d, int) and d > 0


def _sizes(path: Path, m, io: OnnxIO) -> tuple[int, float]:
    """Keypoints and split ratio: from the outputs' dims, else (symbolic dims) from the final Conv, 2.0."""
    (_, kx, bx), (_, ky, by) = io.output_dims
    k = next((d for d in (kx, ky) if _fixed(d)), None) or _final_conv_keypoints(path, m)
    r = bx / io.input_dims[3] if _fixed(bx) else by / io.input_dims[2] if _fixed(by) else 2.0
    return int(k), r


def _final_conv_keypoints(path: Path, m) -> int:
    convs = [n for n in m.graph.node if n.op_type == "Conv"]
    inits = {i.name: i for i in m.graph.initializer}
    if not convs or convs[-1].input[1] not in inits:
        raise InputError(path, "the number of keypoints is neither in the outputs' dims nor in a final Conv")
    return int(inits[convs[-1].input[1]].dims[0])


def weights(m) -> list[Tensor]:
    """The float weights (initializers and Constant nodes, through Identity) in the order the nodes use them."""
    from onnx import numpy_helper

    values = {i.name: numpy_helper.to_array(i) for i in m.graph.initializer}
    for n in m.graph.node:
        if n.op_type == "Constant" and n.attribute and n.attribute[0].name == "value":
            values[n.output[0]] = numpy_helper.to_array(n.attribute[0].t)
    alias = {n.output[0]: n.input[0] for n in m.graph.node if n.op_type == "Identity" and n.input[0] in values}
    out = []
    for n in m.graph.node:
        if n.op_type in ("Constant", "Identity"):
            continue
        trans_b = any(a.name == "transB" and a.i for a in n.attribute)
        for j, name in enumerate(n.input):
            src = alias.get(name, name)
            v = values.get(src)
            if v is None or not np.issubdtype(v.dtype, np.floating):
                continue
            transposed = j == 1 and (n.op_type == "MatMul" or (n.op_type == "Gemm" and not trans_b))
            out.append(Tensor(src, n.op_type, n.name, v, transposed))
    return out


def inspect(path: Path):
    """The ``RTMPoseConfig`` of an RTMPose-style export (I/O contract, stem width, number of convolutions), or
    InputError saying why it is not one."""
    from .rtmpose import ARCHS, RTMPoseConfig

    m = _load(path)
    io = read_io(path, m)
    h, w = io.input_dims[2], io.input_dims[3]
    k, r = _sizes(path, m, io)
    convs = [n for n in m.graph.node if n.op_type == "Conv"]
    inits = {i.name: tuple(i.dims) for i in m.graph.initializer}
    if not convs or convs[0].input[0] != io.input_name or inits.get(convs[0].input[1], (0, 0))[1:] != (3, 3, 3):
        raise InputError(path, "not an RTMPose-style network: its first node is not a 3x3 convolution of the input")
    stem = inits[convs[0].input[1]][0]
    for deepen, widen in ARCHS.values():
        cfg = RTMPoseConfig(num_keypoints=int(k), input_w=int(w), input_h=int(h), deepen=deepen, widen=widen,
                            split_ratio=r)
        if cfg.stem_channels() == stem and cfg.conv_count() == len(convs):
            return cfg
    known = ", ".join(f"{a} {RTMPoseConfig(deepen=d, widen=w_).stem_channels()} / "
                      f"{RTMPoseConfig(deepen=d, widen=w_).conv_count()}" for a, (d, w_) in ARCHS.items())
    raise InputError(path, f"not a known RTMPose size: stem width {stem}, {len(convs)} convolutions (RTMPose "
                           f"{known})")


def detect(path: Path) -> bool:
    """Whether ``path`` is an RTMPose / SpinePose-style ONNX export that ``load`` can turn into a torch module."""
    try:
        inspect(Path(path))
    except (InputError, ImportError):
        return False
    return True


def _match(param, t: Tensor) -> np.ndarray | None:
    """The tensor's value in the parameter's layout, or None when it does not fit."""
    want = tuple(param.shape)
    v = t.value.T if t.transposed and t.value.ndim == 2 else t.value
    if v.shape == want:
        return v
    if param.numel() > 1 and v.size == param.numel() and tuple(s for s in v.shape if s != 1) == \
            tuple(s for s in want if s != 1):
        return v.reshape(want)  # a parameter broadcast by indexing (the GAU's gamma[None, None, :])
    return None


def assign(model, tensors: list[Tensor], path: Path) -> None:
    """Copy ``tensors`` into the module's parameters by order and shape, or raise naming the first misfit."""
    import torch

    params = list(model.named_parameters())
    used: dict[str, str] = {}
    i = 0
    with torch.no_grad():
        for t in tensors:
            if i < len(params) and (v := _match(params[i][1], t)) is not None:
                params[i][1].copy_(torch.from_numpy(np.array(v, dtype=np.float32)))
                used[params[i][0]] = t.name
                i += 1
            elif t.value.size <= 1:
                continue  # a scalar constant of the graph (a scale, an eps, an exponent)
            elif i >= len(params):
                raise InputError(path, f"tensor {t.name} {list(t.value.shape)} (input of {t.op} node {t.node}) "
                                       "is left over after every parameter of the RTMPose module was mapped")
            else:
                name, p = params[i]
                raise InputError(path, f"cannot map tensor {t.name} {list(t.value.shape)} (input of {t.op} node "
                                       f"{t.node}) to the RTMPose parameter {name} {list(p.shape)}")
    if i < len(params):
        raise InputError(path, f"the graph has no tensor for the RTMPose parameter {params[i][0]} "
                               f"{list(params[i][1].shape)} ({len(params) - i} unmapped)")


def parity(model, path: Path, seed: int = 0, batch: int = 2) -> float:
    """Max |difference| of the module's outputs and onnxruntime's on a random batch."""
    import onnxruntime as ort
    import torch

    cfg = model.cfg
    x = np.random.default_rng(seed).normal(0, 1, (batch, 3, cfg.input_h, cfg.input_w)).astype(np.float32)
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = max(1, torch.get_num_threads())
    sess = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
    names = [o.name for o in sess.get_outputs()]
    ref = dict(zip(names, sess.run(None, {sess.get_inputs()[0].name: x})))
    model.eval()
    with torch.no_grad():
        px, py = (t.numpy() for t in model(torch.from_numpy(x)))
    return float(max(np.abs(px - ref["simcc_x"]).max(), np.abs(py - ref["simcc_y"]).max()))


def load(path: Path, tol: float = PARITY_TOL):
    """The export at ``path`` as a trainable ``RTMPose`` (folded form) and its ``OnnxIO``; refuses unless the
    module reproduces onnxruntime's outputs within ``tol``. Returns (model, io, max |diff|)."""
    from .rtmpose import RTMPose

    path = Path(path)
    cfg = inspect(path)
    m = _load(path)
    model = RTMPose(cfg)
    assign(model, weights(m), path)
    diff = parity(model, path)
    if not diff < tol:
        raise InputError(path, f"the loaded RTMPose module differs from onnxruntime by {diff:.2e} (max |simcc|, "
                               f"tolerance {tol:g}): the graph is not the RTMPose topology this loader re-implements")
    return model, read_io(path, m), diff
