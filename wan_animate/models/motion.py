"""LIA-style motion encoder: 512x512 face crops -> motion vectors in style space.

Ported from Wan2.2 wan/modules/animate/motion_encoder.py::Generator (numerics re-derived:
equalized-lr convs/linears, blur-then-stride-2 downsampling, fused leaky ReLU, QR direction).
Keys: ``enc.net_app.convs.*``, ``enc.fc.*``, ``dec.direction.weight``.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from wan_animate.models.config import MotionEncoderConfig

_BLUR_TAPS = (1.0, 3.0, 3.0, 1.0)


def blur_kernel() -> torch.Tensor:
    """outer([1,3,3,1]) / 64: the [4, 4] low-pass used before every stride-2 conv."""
    k = torch.tensor(_BLUR_TAPS, dtype=torch.float32)
    k = k[None, :] * k[:, None]
    return k / k.sum()


class Blur(nn.Module):
    """Depthwise 4x4 blur with symmetric zero padding ``pad`` (upfirdn2d with up=down=1)."""

    def __init__(self, pad: tuple[int, int]) -> None:
        super().__init__()
        self.pad = pad
        self.register_buffer("kernel", torch.empty(4, 4))

    def rebuild_buffer(self, name: str) -> torch.Tensor:
        assert name == "kernel"
        return blur_kernel()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x [N, C, H, W] -> [N, C, H + p0 + p1 - 3, W + p0 + p1 - 3]."""
        c = x.shape[1]
        p0, p1 = self.pad
        x = F.pad(x, (p0, p1, p0, p1))
        # the kernel is symmetric, so correlation == the official flipped convolution
        w = self.kernel.to(x.dtype).flip([0, 1]).expand(c, 1, 4, 4)
        return F.conv2d(x, w, groups=c)


class EqualConv2d(nn.Module):
    """Conv2d whose weight is scaled by 1/sqrt(fan_in) at run time."""

    def __init__(self, cin: int, cout: int, k: int, stride: int = 1, padding: int = 0,
                 bias: bool = True) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.empty(cout, cin, k, k))
        self.bias = nn.Parameter(torch.empty(cout)) if bias else None
        self.scale = 1.0 / math.sqrt(cin * k * k)
        self.stride, self.padding = stride, padding

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.conv2d(x, self.weight * self.scale, self.bias, self.stride, self.padding)


class EqualLinear(nn.Module):
    """Linear whose weight is scaled by 1/sqrt(in_dim) (lr_mul 1, no activation)."""

    def __init__(self, din: int, dout: int) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.empty(dout, din))
        self.bias = nn.Parameter(torch.empty(dout))
        self.scale = 1.0 / math.sqrt(din)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(x, self.weight * self.scale, self.bias)


class FusedLeakyReLU(nn.Module):
    """leaky_relu(x + b, 0.2) * sqrt(2), b of shape [1, C, 1, 1]."""

    def __init__(self, c: int) -> None:
        super().__init__()
        self.bias = nn.Parameter(torch.empty(1, c, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.leaky_relu(x + self.bias, 0.2) * math.sqrt(2.0)


def conv_layer(cin: int, cout: int, k: int, downsample: bool = False,
               activate: bool = True) -> nn.Sequential:
    """[Blur] -> EqualConv2d -> [FusedLeakyReLU], indexed as in the official Sequential."""
    layers: list[nn.Module] = []
    if downsample:
        p = (len(_BLUR_TAPS) - 2) + (k - 1)
        layers.append(Blur(((p + 1) // 2, p // 2)))
        layers.append(EqualConv2d(cin, cout, k, stride=2, padding=0, bias=False))
    else:
        layers.append(EqualConv2d(cin, cout, k, padding=k // 2, bias=False))
    if activate:
        layers.append(FusedLeakyReLU(cout))
    return nn.Sequential(*layers)


class ResBlock(nn.Module):
    """(conv2(conv1(x)) + skip(x)) / sqrt(2), halving H and W."""

    def __init__(self, cin: int, cout: int) -> None:
        super().__init__()
        self.conv1 = conv_layer(cin, cin, 3)
        self.conv2 = conv_layer(cin, cout, 3, downsample=True)
        self.skip = conv_layer(cin, cout, 1, downsample=True, activate=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (self.conv2(self.conv1(x)) + self.skip(x)) / math.sqrt(2.0)


class AppearanceEncoder(nn.Module):
    """``net_app``: [N, 3, S, S] -> [N, style_dim] (1x1 conv, log2(S)-2 ResBlocks, 4x4 conv)."""

    def __init__(self, cfg: MotionEncoderConfig) -> None:
        super().__init__()
        log_size = int(math.log2(cfg.size))
        ch = cfg.channel(cfg.size)
        self.convs = nn.ModuleList([conv_layer(3, ch, 1)])
        for i in range(log_size, 2, -1):
            out = cfg.channel(2 ** (i - 1))
            self.convs.append(ResBlock(ch, out))
            ch = out
        self.convs.append(EqualConv2d(ch, cfg.style_dim, 4, bias=False))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for conv in self.convs:
            x = conv(x)
        return x.flatten(1)  # [N, style, 1, 1] -> [N, style]


class _Encoder(nn.Module):
    def __init__(self, cfg: MotionEncoderConfig) -> None:
        super().__init__()
        self.net_app = AppearanceEncoder(cfg)
        dims = [cfg.style_dim] * 4 + [cfg.motion_dim]
        self.fc = nn.Sequential(*[EqualLinear(cfg.style_dim, d) for d in dims])


class _Direction(nn.Module):
    def __init__(self, cfg: MotionEncoderConfig) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.empty(cfg.direction_rows, cfg.motion_dim))


class _Synthesis(nn.Module):
    def __init__(self, cfg: MotionEncoderConfig) -> None:
        super().__init__()
        self.direction = _Direction(cfg)


class MotionEncoder(nn.Module):
    """Face crops -> motion vectors (the official ``Generator.get_motion``)."""

    def __init__(self, cfg: MotionEncoderConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.enc = _Encoder(cfg)
        self.dec = _Synthesis(cfg)

    def direction_basis(self) -> torch.Tensor:
        """Q of QR(direction + 1e-8), computed in fp32, returned in the weight dtype: [rows, motion_dim]."""
        w = self.dec.direction.weight
        q, _ = torch.linalg.qr(w.float() + 1e-8)
        return q.to(w.dtype)

    def forward(self, faces: torch.Tensor, chunk: int = 8) -> torch.Tensor:
        """faces [N, 3, S, S] in [-1, 1] -> motion [N, style_dim] fp32.

        Frames are encoded ``chunk`` at a time (bounds activation memory, as the official 8).
        """
        wdt = self.enc.fc[0].weight.dtype
        q = self.direction_basis().float()                    # [style, motion_dim]
        out = []
        for i in range(0, faces.shape[0], chunk):
            h = self.enc.net_app(faces[i:i + chunk].to(wdt))  # [n, style]
            alpha = self.enc.fc(h).float()                    # [n, motion_dim]
            out.append(alpha @ q.T)                           # sum_k alpha_k Q[:, k] -> [n, style]
        return torch.cat(out)
