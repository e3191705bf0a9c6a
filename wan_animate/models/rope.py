"""3-D rotary position embedding of the Wan DiT.

Ported from Wan2.2 wan/modules/model.py::{rope_params, rope_apply}. Head dim D is rotated as
D/2 complex pairs of *adjacent* elements (2i, 2i+1), split over (time, height, width) as
[c - 2*(c//3), c//3, c//3] pairs with c = D/2 (22/21/21 at D = 128). Angles are built in
float64 (as the official code) and applied in float32.
"""
from __future__ import annotations

import torch

THETA = 10000.0


def axis_pairs(head_dim: int) -> tuple[int, int, int]:
    """Number of rotary pairs given to (t, h, w)."""
    c = head_dim // 2
    return c - 2 * (c // 3), c // 3, c // 3


def _axis_angles(positions: torch.Tensor, pairs: int) -> torch.Tensor:
    """positions [P] float64 -> angles [P, pairs]; omega_i = theta^(-2i / (2*pairs))."""
    dim = 2 * pairs
    omega = 1.0 / torch.pow(THETA, torch.arange(0, dim, 2, dtype=torch.float64) / dim)
    return torch.outer(positions, omega)


def rope_tables(grid: tuple[int, int, int], head_dim: int, start: int, stop: int,
                device: torch.device | str = "cpu") -> tuple[torch.Tensor, torch.Tensor]:
    """cos/sin for global token positions [start, stop) of a (F, H', W') grid.

    Tokens are ordered (f, h, w) row-major; positions at or beyond F*H'*W' (sequence padding)
    get the identity rotation (cos 1, sin 0).

    Returns:
        (cos, sin), each [stop - start, head_dim // 2] float32.
    """
    f, h, w = grid
    real = f * h * w
    idx = torch.arange(start, min(stop, real), dtype=torch.int64)
    fi, rem = idx // (h * w), idx % (h * w)
    hi, wi = rem // w, rem % w
    pt, ph, pw = axis_pairs(head_dim)
    ang = torch.cat([_axis_angles(fi.double(), pt), _axis_angles(hi.double(), ph),
                     _axis_angles(wi.double(), pw)], dim=1)            # [Lr, D/2] float64
    cos, sin = torch.cos(ang), torch.sin(ang)
    pad = (stop - start) - ang.shape[0]
    if pad > 0:
        cos = torch.cat([cos, cos.new_ones(pad, cos.shape[1])])
        sin = torch.cat([sin, sin.new_zeros(pad, sin.shape[1])])
    return cos.float().to(device), sin.float().to(device)


def apply_rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor,
               out_dtype: torch.dtype | None = None) -> torch.Tensor:
    """Rotate x [B, L, N, D] by (cos, sin) [L, D/2] in float32; returns ``out_dtype`` (default fp32).

    One complex multiply per pair (x0 + i x1)(cos + i sin), read once, written once.
    """
    xc = torch.view_as_complex(x.float().unflatten(-1, (-1, 2)))   # [B, L, N, D/2] complex64
    rot = torch.complex(cos, sin)[None, :, None, :]                # [1, L, 1, D/2]
    out = torch.view_as_real(xc * rot).flatten(-2)                 # -> [B, L, N, D]
    return out if out_dtype is None else out.to(out_dtype)
