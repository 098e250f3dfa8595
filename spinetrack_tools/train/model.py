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


def export_onnx(model: SimCCNet, path: str) -> None:
    """Export with the SpinePose I/O contract: ``input`` -> ``simcc_x``, ``simcc_y``, dynamic batch."""
    cfg = model.cfg
    model.eval()
    x = torch.zeros(1, 3, cfg.input_h, cfg.input_w)
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(model, (x,), path, input_names=["input"], output_names=["simcc_x", "simcc_y"],
                          dynamic_axes={"input": {0: "batch"}, "simcc_x": {0: "batch"}, "simcc_y": {0: "batch"}},
                          opset_version=17, dynamo=False)
    import onnx  # pin the keypoint and bin dimensions the exporter left symbolic

    m = onnx.load(path)
    for out, size in zip(m.graph.output, (int(cfg.input_w * cfg.split_ratio), int(cfg.input_h * cfg.split_ratio))):
        dims = out.type.tensor_type.shape.dim
        dims[1].dim_value, dims[2].dim_value = cfg.num_keypoints, size
    onnx.save(m, path)
