"""Speed options applied to a built model from outside (no change to its math)."""
from __future__ import annotations

import torch
from torch import nn


def compile_blocks(model: nn.Module, mode: str | None = None) -> nn.Module:
    """``torch.compile`` the forward of every DiT block in place (fuses the fp32 modulation /
    norm / RoPE / gated-residual element-wise work around the matmuls and attention).

    Only ``forward`` is compiled, not the module call, so hooks stay outside the graphs: call it
    before ``fully_shard`` (torchtitan's order) and FSDP2's unshard / reshard hooks run eagerly
    around each compiled block. Works on a meta-device model (compilation happens at the first
    call). The 40 blocks share one compiled graph: they have the same code and shapes. Ulysses'
    all-to-alls are left out of the graph (``distributed.ulysses``).
    """
    torch._dynamo.config.cache_size_limit = max(torch._dynamo.config.cache_size_limit, 64)
    for block in model.blocks:
        block.forward = torch.compile(block.forward, mode=mode, dynamic=False)
    return model

