"""A compact RTMPose-style top-down model: a CSPNeXt-like convolutional backbone and a SimCC head.

Input [N, 3, H, W] (normalised crops); outputs ``simcc_x`` [N, K, W * r] and ``simcc_y`` [N, K, H * r]
raw logits (r = 2, no softmax in the graph), as the SpinePose / mmdeploy exports.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
from torch import nn


@dataclass
class ModelConfig:
    num_keypoints: int = 37
    input_w: int = 192
    input_h: int = 256
    width: float = 1.0  # channel multiplier
    depth: int = 1  # residual blocks per stage
    hidden: int = 128  # SimCC head hidden size
    split_ratio: float = 2.0

    def to_dict(self) -> dict:
        return asdict(self)


def _conv(cin: int, cout: int, k: int = 3, s: int = 1, groups: int = 1) -> nn.Sequential:
    pad = 0 if k == s else k // 2
    return nn.Sequential(nn.Conv2d(cin, cout, k, s, pad, groups=groups, bias=False), nn.BatchNorm2d(cout),
                         nn.SiLU(inplace=True))


class _Block(nn.Module):
    """Depthwise-separable residual block (CSPNeXt's large-kernel depthwise idea, kept small)."""

    def __init__(self, c: int):
        super().__init__()
        self.dw = _conv(c, c, 5, groups=c)
        self.pw = nn.Sequential(nn.Conv2d(c, c, 1, bias=False), nn.BatchNorm2d(c))
        self.act = nn.SiLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(x + self.pw(self.dw(x)))


class SimCCNet(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.cfg = cfg
        c = [max(8, int(round(v * cfg.width))) for v in (16, 32, 64, 128, 256)]
        # patchify stem (stride 4) keeps the full-resolution activations small on CPUs
        layers: list[nn.Module] = [_conv(3, c[0], 4, 4), _conv(c[0], c[1], 3, 1)]
        for cin, cout in zip(c[1:-1], c[2:]):
            layers.append(_conv(cin, cout, 3, 2))
            layers.extend(_Block(cout) for _ in range(cfg.depth))
        self.backbone = nn.Sequential(*layers)  # stride 32
        fh, fw = cfg.input_h // 32, cfg.input_w // 32
        self.final = nn.Conv2d(c[-1], cfg.num_keypoints, 3, 1, 1)
        self.mlp = nn.Sequential(nn.Linear(fh * fw, cfg.hidden), nn.SiLU(), nn.LayerNorm(cfg.hidden),
                                 nn.Linear(cfg.hidden, cfg.hidden), nn.SiLU())
        self.cls_x = nn.Linear(cfg.hidden, int(cfg.input_w * cfg.split_ratio))
        self.cls_y = nn.Linear(cfg.hidden, int(cfg.input_h * cfg.split_ratio))

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        f = self.final(self.backbone(x)).flatten(2)  # [N, K, fh * fw]
        h = self.mlp(f)
        return self.cls_x(h), self.cls_y(h)


@dataclass
class OnnxIO:
    """The I/O contract an export keeps: tensor names and dims (an int, a name for a dynamic axis, or None for
    a dim the file leaves unknown)."""

    input_name: str = "input"
    output_names: tuple[str, str] = ("simcc_x", "simcc_y")
    input_dims: tuple = ("batch", 3, 256, 192)
    output_dims: tuple[tuple, tuple] = (("batch", 37, 384), ("batch", 37, 512))

    @classmethod
    def spinepose(cls, cfg) -> "OnnxIO":
        """The SpinePose contract for a model config (``input`` -> ``simcc_x``, ``simcc_y``, dynamic batch)."""
        r, k = cfg.split_ratio, cfg.num_keypoints
        return cls(input_dims=("batch", 3, cfg.input_h, cfg.input_w),
                   output_dims=(("batch", k, int(cfg.input_w * r)), ("batch", k, int(cfg.input_h * r))))

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "OnnxIO":
        return cls(d["input_name"], tuple(d["output_names"]), tuple(d["input_dims"]),
                   tuple(tuple(o) for o in d["output_dims"]))


def export_onnx(model: nn.Module, path: str, io: OnnxIO | None = None) -> None:
    """Export (eval mode, opset 17, BatchNorm folded by the exporter) with the I/O contract ``io`` (default:
    the SpinePose one for ``model.cfg``): its names, and its dims pinned, symbolic ones as dynamic axes."""
    cfg = model.cfg
    io = io or OnnxIO.spinepose(cfg)
    model.eval()
    x = torch.zeros(1, 3, cfg.input_h, cfg.input_w)
    import warnings

    names = [io.input_name, *io.output_names]
    all_dims = [io.input_dims, *io.output_dims]
    dynamic = {n: {i: d for i, d in enumerate(dims) if isinstance(d, str)} for n, dims in zip(names, all_dims)}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(model, (x,), path, input_names=[io.input_name], output_names=list(io.output_names),
                          dynamic_axes={n: a for n, a in dynamic.items() if a}, opset_version=17, dynamo=False)
    import onnx  # pin the dims the exporter left symbolic (keypoints, bins), name the dynamic ones as given

    m = onnx.load(path)
    for value, dims in zip([*m.graph.input, *m.graph.output], all_dims):
        proto = value.type.tensor_type.shape.dim
        for i, d in enumerate(dims):
            if isinstance(d, str):
                proto[i].dim_param = d
            elif d is None:
                proto[i].Clear()
            else:
                proto[i].dim_value = int(d)
    onnx.save(m, path)
