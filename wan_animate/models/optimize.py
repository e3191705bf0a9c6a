"""Speed options applied to a built model from outside (no change to its math)."""
from __future__ import annotations

import torch
from torch import nn


def compile_blocks(model: nn.Module, mode: str | None = None) -> nn.Module:
    """``torch.compile`` every DiT block in place (fuses the fp32 modulation / norm / RoPE /
    gated-residual element-wise work around the matmuls and attention). The 40 blocks share
    one compiled graph: they have the same code and shapes.
    """
    torch._dynamo.config.cache_size_limit = max(torch._dynamo.config.cache_size_limit, 64)
    for block in model.blocks:
        block.compile(mode=mode, dynamic=False)
    return model
