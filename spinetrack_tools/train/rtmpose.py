"""RTMPose in plain PyTorch (no mmpose): CSPNeXt-P5 backbone and the RTMCC head with its GAU block, as mmpose's
``backbones/cspnext.py``, ``heads/coord_cls_heads/rtmcc_head.py`` and ``utils/rtmcc_block.py`` build them.

``folded=False`` is the training form of mmpose (Conv + BatchNorm + SiLU); ``folded=True`` has the
convolutions with a bias and no BatchNorm, the form torch's ONNX exporter leaves in eval mode, which is the
form an ONNX file's weights load into (``onnx_import``). Parameters are registered in the order the forward
pass uses them, which is the order the exported graph consumes them.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F
from torch import nn

# (deepen_factor, widen_factor) of the released RTMPose sizes (SpinePose small/medium/large/xlarge = s/m/l/x)
ARCHS = {"t": (0.167, 0.375), "s": (0.33, 0.5), "m": (0.67, 0.75), "l": (1.0, 1.0), "x": (1.33, 1.25)}
# CSPNeXt P5: in channels, out channels, blocks, add identity, SPP
P5 = ((64, 128, 3, True, False), (128, 256, 6, True, False), (256, 512, 6, True, False), (512, 1024, 3, False, True))


@dataclass
class RTMPoseConfig:
    num_keypoints: int = 37
    input_w: int = 192
    input_h: int = 256
    deepen: float = 0.33
    widen: float = 0.5
    split_ratio: float = 2.0
    hidden: int = 256  # GAU token dims
    s: int = 128  # GAU attention dims
    expansion: int = 2
    folded: bool = True  # convolutions with bias, no BatchNorm (the exported form)

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def named(cls, arch: str, **kw) -> "RTMPoseConfig":
        deepen, widen = ARCHS[arch]
        return cls(deepen=deepen, widen=widen, **kw)

    def stage_blocks(self) -> list[int]:
        return [max(round(n * self.deepen), 1) for _, _, n, _, _ in P5]

    def stem_channels(self) -> int:
        return int(P5[0][0] * self.widen // 2)

    def conv_count(self) -> int:
        """Convolutions of the network: 3 stem; per stage a downsampling conv, (SPP 2), CSP layer 3 + the
        channel attention's 1 + 3 per block; the head's final conv."""
        return 3 + sum(1 + 2 * spp + 4 + 3 * b for (*_, spp), b in zip(P5, self.stage_blocks())) + 1


class ConvModule(nn.Sequential):
    """mmcv ConvModule: Conv2d + BatchNorm2d(eps 1e-3, momentum 0.03) + SiLU; folded: Conv2d with bias + SiLU."""

    def __init__(self, cin: int, cout: int, k: int, stride: int = 1, groups: int = 1, folded: bool = True):
        layers: list[nn.Module] = [nn.Conv2d(cin, cout, k, stride, k // 2, groups=groups, bias=folded)]
        if not folded:
            layers.append(nn.BatchNorm2d(cout, eps=1e-3, momentum=0.03))
        super().__init__(*layers, nn.SiLU(inplace=True))


class DepthwiseSeparable(nn.Sequential):
    def __init__(self, cin: int, cout: int, k: int, folded: bool):
        super().__init__(ConvModule(cin, cin, k, groups=cin, folded=folded), ConvModule(cin, cout, 1, folded=folded))


class CSPNeXtBlock(nn.Module):
    def __init__(self, c: int, add_identity: bool, folded: bool):
        super().__init__()
        self.conv1 = ConvModule(c, c, 3, folded=folded)
        self.conv2 = DepthwiseSeparable(c, c, 5, folded)
        self.add_identity = add_identity

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.conv2(self.conv1(x))
        return out + x if self.add_identity else out


class ChannelAttention(nn.Module):
    def __init__(self, c: int):
        super().__init__()
        self.fc = nn.Conv2d(c, c, 1, bias=True)
        self.act = nn.Hardsigmoid()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.act(self.fc(F.adaptive_avg_pool2d(x, 1)))


class CSPLayer(nn.Module):
    """mmpose CSPLayer with CSPNeXt blocks and channel attention (expand ratio 0.5); the short branch runs first."""

    def __init__(self, cin: int, cout: int, blocks: int, add_identity: bool, folded: bool):
        super().__init__()
        mid = int(cout * 0.5)
        self.short_conv = ConvModule(cin, mid, 1, folded=folded)
        self.main_conv = ConvModule(cin, mid, 1, folded=folded)
        self.blocks = nn.Sequential(*(CSPNeXtBlock(mid, add_identity, folded) for _ in range(blocks)))
        self.attention = ChannelAttention(2 * mid)
        self.final_conv = ConvModule(2 * mid, cout, 1, folded=folded)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        short = self.short_conv(x)
        main = self.blocks(self.main_conv(x))
        return self.final_conv(self.attention(torch.cat((main, short), 1)))


class SPPBottleneck(nn.Module):
    def __init__(self, c: int, folded: bool, kernels: tuple[int, ...] = (5, 9, 13)):
        super().__init__()
        mid = c // 2
        self.conv1 = ConvModule(c, mid, 1, folded=folded)
        self.pools = nn.ModuleList(nn.MaxPool2d(k, 1, k // 2) for k in kernels)
        self.conv2 = ConvModule(mid * (len(kernels) + 1), c, 1, folded=folded)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv1(x)
        return self.conv2(torch.cat([x] + [p(x) for p in self.pools], 1))


class CSPNeXt(nn.Sequential):
    """CSPNeXt-P5, the last stage's output (stride 32)."""

    def __init__(self, cfg: RTMPoseConfig):
        f, c0 = cfg.folded, cfg.stem_channels()
        layers: list[nn.Module] = [ConvModule(3, c0, 3, 2, folded=f), ConvModule(c0, c0, 3, folded=f),
                                   ConvModule(c0, int(P5[0][0] * cfg.widen), 3, folded=f)]
        for (cin, cout, _, identity, spp), blocks in zip(P5, cfg.stage_blocks()):
            cin, cout = int(cin * cfg.widen), int(cout * cfg.widen)
            layers.append(ConvModule(cin, cout, 3, 2, folded=f))
            if spp:
                layers.append(SPPBottleneck(cout, f))
            layers.append(CSPLayer(cout, cout, blocks, identity, f))
        super().__init__(*layers)


class ScaleNorm(nn.Module):
    def __init__(self, dim: int, eps: float = 1e-5):
        super().__init__()
        self.scale, self.eps = dim ** -0.5, eps
        self.g = nn.Parameter(torch.ones(1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        norm = torch.linalg.norm(x, dim=-1, keepdim=True) * self.scale
        return x / norm.clamp(min=self.eps) * self.g


class Scale(nn.Module):
    def __init__(self, dim: int):
        super().__init__()
        self.scale = nn.Parameter(torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.scale


class OffsetScale(nn.Module):
    """The GAU's per-head gamma and beta: [B, K, s] -> [B, K, 2, s]."""

    def __init__(self, s: int):
        super().__init__()
        self.gamma = nn.Parameter(torch.rand(2, s))
        self.beta = nn.Parameter(torch.rand(2, s))

    def forward(self, base: torch.Tensor) -> torch.Tensor:
        return base.unsqueeze(2) * self.gamma[None, None, :] + self.beta


class GAU(nn.Module):
    """RTMCCBlock, self-attention, no relative bias or rotary encoding (the RTMPose configs)."""

    def __init__(self, dims: int, expansion: int, s: int):
        super().__init__()
        self.e, self.s = dims * expansion, s
        self.ln = ScaleNorm(dims)
        self.uv = nn.Linear(dims, 2 * self.e + s, bias=False)
        self.offset_scale = OffsetScale(s)
        self.o = nn.Linear(self.e, dims, bias=False)
        self.res_scale = Scale(dims)  # submodules only, so that parameters() follows the forward order
        nn.init.xavier_uniform_(self.uv.weight)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        u, v, base = torch.split(F.silu(self.uv(self.ln(x))), [self.e, self.e, self.s], dim=2)
        q, k = torch.unbind(self.offset_scale(base), dim=2)
        kernel = torch.square(F.relu(torch.bmm(q, k.permute(0, 2, 1)) / math.sqrt(self.s)))
        return self.o(u * torch.bmm(kernel, v)) + self.res_scale(x)


class RTMCCHead(nn.Module):
    def __init__(self, cfg: RTMPoseConfig):
        super().__init__()
        tokens = (cfg.input_w // 32) * (cfg.input_h // 32)
        self.final_layer = nn.Conv2d(int(P5[-1][1] * cfg.widen), cfg.num_keypoints, 7, 1, 3)
        self.mlp = nn.Sequential(ScaleNorm(tokens), nn.Linear(tokens, cfg.hidden, bias=False))
        self.gau = GAU(cfg.hidden, cfg.expansion, cfg.s)
        self.cls_x = nn.Linear(cfg.hidden, int(cfg.input_w * cfg.split_ratio), bias=False)
        self.cls_y = nn.Linear(cfg.hidden, int(cfg.input_h * cfg.split_ratio), bias=False)

    def forward(self, f: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        h = self.gau(self.mlp(self.final_layer(f).flatten(2)))
        return self.cls_x(h), self.cls_y(h)


class RTMPose(nn.Module):
    """Input [N, 3, H, W] -> simcc_x [N, K, W * r], simcc_y [N, K, H * r] (raw logits)."""

    def __init__(self, cfg: RTMPoseConfig):
        super().__init__()
        if cfg.input_w % 32 or cfg.input_h % 32:
            raise ValueError(f"input {cfg.input_w} x {cfg.input_h} is not a multiple of 32")
        self.cfg = cfg
        self.backbone = CSPNeXt(cfg)
        self.head = RTMCCHead(cfg)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.head(self.backbone(x))


def randomize_(model: nn.Module, seed: int = 0) -> nn.Module:
    """Random BatchNorm statistics and affine terms, ScaleNorm gains and GAU scales (so that folding and
    loading are tested on weights that are not their initial constants), and classifiers scaled to give
    logits of a trained model's size (a few units, not tens)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, RTMCCHead):
                m.cls_x.weight.mul_(0.1)
                m.cls_y.weight.mul_(0.1)
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                for t, lo, hi in ((m.weight, 0.5, 1.5), (m.bias, -0.2, 0.2), (m.running_mean, -0.2, 0.2),
                                  (m.running_var, 0.5, 2.0)):
                    t.copy_(torch.rand(t.shape, generator=g) * (hi - lo) + lo)
            elif isinstance(m, ScaleNorm):
                m.g.copy_(torch.rand(1, generator=g) + 0.5)
            elif isinstance(m, GAU):
                m.res_scale.scale.copy_(torch.rand(m.res_scale.scale.shape, generator=g) + 0.5)
    return model
