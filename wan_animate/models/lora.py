"""LoRA for the DiT: the relighting LoRA (PEFT keys) and user LoRAs, merged or unmerged.

A LoRA adds ``scale * B @ A`` to a Linear's weight (``y = W x + b + scale * B (A x)``). Merged
(default) changes the weights once before sharding and costs nothing per step; unmerged keeps
the base weights and adds the low-rank path in a forward hook (same result within float
rounding). Keys are ``<module>.lora_A.weight`` [r, in] / ``<module>.lora_B.weight`` [out, r];
the PEFT prefix ``base_model.model.`` and adapter infix ``.default`` are accepted.
"""
from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass

import torch
from torch import nn

from wan_animate.errors import CheckpointError

_PREFIXES = ("base_model.model.", "diffusion_model.", "model.diffusion_model.")


def relighting_targets(model: nn.Module) -> list[str]:
    """Official target rule: every Linear whose name has 'blocks' and neither 'face' nor 'modulation'."""
    return [name for name, m in model.named_modules() if isinstance(m, nn.Linear)
            and "blocks" in name and "face" not in name and "modulation" not in name]


@dataclass(frozen=True)
class LoraPair:
    """One adapted Linear: A [r, in], B [out, r], scale (alpha / r * strength)."""

    module: str
    a: torch.Tensor
    b: torch.Tensor
    scale: float


def normalize_lora_state(state: Mapping[str, torch.Tensor], source: str,
                         strength: float = 1.0, alpha: float | None = None) -> list[LoraPair]:
    """Group ``*.lora_A.weight``/``*.lora_B.weight`` (+ optional ``*.alpha``) keys into pairs.

    ``alpha=None`` means alpha == rank (scale 1.0), the relighting LoRA's setting, unless the
    file carries per-module ``.alpha`` tensors.
    """
    a_keys: dict[str, torch.Tensor] = {}
    b_keys: dict[str, torch.Tensor] = {}
    alphas: dict[str, float] = {}
    for key, t in state.items():
        k = key
        for p in _PREFIXES:
            if k.startswith(p):
                k = k[len(p):]
        k = re.sub(r"\.default(?=\.weight$)", "", k)
        if k.endswith(".lora_A.weight"):
            a_keys[k[:-len(".lora_A.weight")]] = t
        elif k.endswith(".lora_B.weight"):
            b_keys[k[:-len(".lora_B.weight")]] = t
        elif k.endswith(".alpha"):
            alphas[k[:-len(".alpha")]] = float(t)
        else:
            raise CheckpointError(f"{source}: unexpected LoRA key {key!r} (expected "
                                  f"'<module>.lora_A.weight' / '.lora_B.weight' / '.alpha')")
    if set(a_keys) != set(b_keys):
        odd = sorted(set(a_keys) ^ set(b_keys))[:5]
        raise CheckpointError(f"{source}: LoRA A/B keys do not pair up for modules {odd}")
    pairs = []
    for mod in sorted(a_keys):
        a, b = a_keys[mod], b_keys[mod]
        rank = a.shape[0]
        if b.shape[1] != rank:
            raise CheckpointError(f"{source}: {mod}: lora_B {tuple(b.shape)} does not match "
                                  f"lora_A {tuple(a.shape)}")
        al = alphas.get(mod, alpha if alpha is not None else rank)
        pairs.append(LoraPair(mod, a, b, strength * al / rank))
    return pairs


def apply_lora(model: nn.Module, pairs: list[LoraPair], source: str, merge: bool = True) -> int:
    """Add the LoRA to ``model``'s Linears; returns the number of modules touched (> 0).

    Raises :class:`CheckpointError` for modules the model does not have, shape mismatches,
    or a LoRA that touches nothing.
    """
    if not pairs:
        raise CheckpointError(f"{source}: the LoRA touched 0 modules; its keys do not name any "
                              f"DiT Linear (expected e.g. 'blocks.0.self_attn.q.lora_A.weight')")
    modules = dict(model.named_modules())
    for p in pairs:
        m = modules.get(p.module)
        if not isinstance(m, nn.Linear):
            raise CheckpointError(f"{source}: LoRA targets {p.module!r}, which is not a Linear "
                                  f"of the model")
        if p.a.shape[1] != m.in_features or p.b.shape[0] != m.out_features:
            raise CheckpointError(
                f"{source}: {p.module}: LoRA A {tuple(p.a.shape)} / B {tuple(p.b.shape)} do not fit "
                f"Linear({m.in_features}, {m.out_features})")
    for p in pairs:
        m = modules[p.module]
        if merge:
            with torch.no_grad():
                delta = (p.b.float().to(m.weight.device) @ p.a.float().to(m.weight.device)) * p.scale
                m.weight.copy_((m.weight.float() + delta).to(m.weight.dtype))
        else:
            _attach_unmerged(m, p)
    return len(pairs)


def _attach_unmerged(m: nn.Linear, p: LoraPair) -> None:
    dt, dev = m.weight.dtype, m.weight.device
    m.register_buffer("lora_a", p.a.to(dev, dt), persistent=False)
    m.register_buffer("lora_b", p.b.to(dev, dt), persistent=False)
    scale = p.scale

    def hook(mod: nn.Module, inputs: tuple[torch.Tensor, ...], out: torch.Tensor) -> torch.Tensor:
        x = inputs[0]
        return out + scale * torch.nn.functional.linear(
            torch.nn.functional.linear(x, mod.lora_a), mod.lora_b)

    m.register_forward_hook(hook)
