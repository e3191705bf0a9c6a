"""Import the official Wan2.2-Animate DiT from a checkout (or a carried copy) for side-by-side timing.

Nothing of the official code is kept in this repository: ``root`` is a Wan-Video/Wan2.2 checkout
(or ``.bench_carry/wan22`` holding only the files the DiT needs). The official code is imported
unchanged, with the same substitutions the parity fixtures used (shared/fixtures/official/*/README.md):

1. ``wan``, ``wan.modules``, ``wan.modules.animate`` and ``wan.distributed`` are registered as bare
   packages, so their ``__init__`` files (which import T5, CLIP, both VAEs and every pipeline) never run.
2. ``diffusers``: the real package when importable; otherwise minimal stand-ins for ``ModelMixin``
   (an ``nn.Module``), ``ConfigMixin``, ``register_to_config`` and ``PeftAdapterMixin``. The DiT's
   forward uses none of their machinery (they serve ``from_pretrained``, config storage and LoRA).
3. ``flash_attention`` (FlashAttention 2/3 varlen, mandatory on CUDA) -> ``scaled_dot_product_attention``
   with the same casts (inputs to bf16, output back to the query's dtype), the same key-length
   masking and softmax scale; ``face_blocks.flash_attn_func`` -> SDPA likewise. Which SDPA kernel
   runs is chosen by the caller's ``torch.nn.attention.sdpa_kernel`` context.

The model is built on the meta device and materialized on the target device by the caller
(:func:`build_official`), so its ~35 GB of bf16 weights are allocated once, on the GPU.
"""
from __future__ import annotations

import importlib
import importlib.util
import math
import sys
import types
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

_PACKAGES = {"wan": "wan", "wan.modules": "wan/modules", "wan.modules.animate": "wan/modules/animate",
             "wan.distributed": "wan/distributed"}
_MODULES = ("wan.modules.attention", "wan.modules.model", "wan.modules.animate.face_blocks",
            "wan.modules.animate.motion_encoder", "wan.modules.animate.model_animate")
_NEEDED_FILES = ("wan/modules/model.py", "wan/modules/attention.py",
                 "wan/modules/animate/model_animate.py", "wan/modules/animate/face_blocks.py",
                 "wan/modules/animate/motion_encoder.py", "wan/distributed/sequence_parallel.py",
                 "wan/distributed/ulysses.py", "wan/distributed/util.py")


@dataclass
class Official:
    """Handles on the imported official modules."""

    root: Path
    model_cls: type
    rope_params: Any
    diffusers: str
    """"real <version>" or "stub" (see the module docstring)."""


# ---- attention substitutes -------------------------------------------------------------------

def sdpa_flash_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
                         q_lens: torch.Tensor | None = None, k_lens: torch.Tensor | None = None,
                         dropout_p: float = 0.0, softmax_scale: float | None = None,
                         q_scale: float | None = None, causal: bool = False,
                         window_size: tuple[int, int] = (-1, -1), deterministic: bool = False,
                         dtype: torch.dtype = torch.bfloat16, version: int | None = None) -> torch.Tensor:
    """SDPA stand-in for the official ``wan.modules.attention.flash_attention`` (same signature).

    q [B, Lq, N, D], k/v [B, Lk, N, D] -> [B, Lq, N, D] in q's dtype. Non-half inputs are cast to
    ``dtype`` (bf16) as the official helper does; keys at or beyond ``k_lens[b]`` are masked.
    """
    if tuple(window_size) != (-1, -1):
        raise NotImplementedError(f"sliding-window attention {window_size} is not used by Animate")
    if dropout_p:
        raise NotImplementedError("dropout is not used at inference")
    half = (torch.float16, torch.bfloat16)
    b, lq, lk, out_dtype = q.shape[0], q.shape[1], k.shape[1], q.dtype
    if q_lens is not None and any(int(n) != lq for n in q_lens.tolist()):
        raise NotImplementedError("packed (q_lens < Lq) queries are not used by Animate")
    q, k, v = (t if t.dtype in half else t.to(dtype) for t in (q, k, v))
    q, k = q.to(v.dtype), k.to(v.dtype)
    if q_scale is not None:
        q = q * q_scale
    mask = None
    if k_lens is not None:
        lens = [int(n) for n in k_lens.tolist()]
        if b == 1 and lens[0] < lk:
            k, v = k[:, :lens[0]], v[:, :lens[0]]
        elif any(n < lk for n in lens):
            ar = torch.arange(lk, device=k.device)
            mask = (ar[None, :] < torch.tensor(lens, device=k.device)[:, None])[:, None, None, :]
    # [B, L, N, D] -> [B, N, L, D]
    out = F.scaled_dot_product_attention(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2),
                                         attn_mask=mask, is_causal=causal, scale=softmax_scale)
    return out.transpose(1, 2).type(out_dtype)  # -> [B, Lq, N, D]


def sdpa_flash_attn_func(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, dropout_p: float = 0.0,
                         softmax_scale: float | None = None, causal: bool = False,
                         **_: Any) -> torch.Tensor:
    """SDPA stand-in for ``flash_attn.flash_attn_func``: [B, L, N, D] in and out, scale 1/sqrt(D)."""
    if dropout_p:
        raise NotImplementedError("dropout is not used at inference")
    out = F.scaled_dot_product_attention(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2),
                                         is_causal=causal, scale=softmax_scale)
    return out.transpose(1, 2)  # [B, N, L, D] -> [B, L, N, D]


# ---- diffusers stand-ins ---------------------------------------------------------------------

def _install_diffusers_stub() -> None:
    class ModelMixin(nn.Module):
        """Stand-in: only ``nn.Module`` (loading/saving helpers are not used by the benchmark)."""

    class ConfigMixin:
        """Stand-in: the constructor arguments are not recorded."""

    class PeftAdapterMixin:
        """Stand-in: no LoRA adapters in the benchmark."""

    def register_to_config(init):  # noqa: ANN001, ANN202 - decorator
        return init

    mods = {name: types.ModuleType(name) for name in (
        "diffusers", "diffusers.configuration_utils", "diffusers.models",
        "diffusers.models.modeling_utils", "diffusers.loaders")}
    mods["diffusers.configuration_utils"].ConfigMixin = ConfigMixin
    mods["diffusers.configuration_utils"].register_to_config = register_to_config
    mods["diffusers.models.modeling_utils"].ModelMixin = ModelMixin
    mods["diffusers.loaders"].PeftAdapterMixin = PeftAdapterMixin
    mods["diffusers"].__path__ = []
    mods["diffusers.models"].__path__ = []
    sys.modules.update(mods)


def _diffusers() -> str:
    """Import the real diffusers pieces the DiT needs, or install the stand-ins."""
    try:
        import diffusers
        import diffusers.configuration_utils
        import diffusers.loaders
        import diffusers.models.modeling_utils

        return f"real {diffusers.__version__}"
    except Exception as e:  # noqa: BLE001 - missing, or broken against this huggingface_hub
        for name in [n for n in sys.modules if n == "diffusers" or n.startswith("diffusers.")]:
            del sys.modules[name]
        _install_diffusers_stub()
        return f"stub ({type(e).__name__}: {str(e)[:80]})"


# ---- import ------------------------------------------------------------------------------------

def load_official(root: str | Path, use_real_diffusers: bool = True) -> Official:
    """Import ``WanAnimateModel`` from the official sources under ``root`` with the substitutions above."""
    root = Path(root).resolve()
    missing = [f for f in _NEEDED_FILES if not (root / f).is_file()]
    if missing:
        raise FileNotFoundError(f"{root} is not a Wan2.2 checkout: missing {missing}")
    clash = [n for n in _PACKAGES if n in sys.modules
             and Path(getattr(sys.modules[n], "__path__", [""])[0] or "").resolve() != root / _PACKAGES[n]]
    if clash:
        raise RuntimeError(f"another 'wan' package is already imported: {clash}")
    if use_real_diffusers:
        which = _diffusers()
    else:
        _install_diffusers_stub()
        which = "stub (asked)"
    for name, rel in _PACKAGES.items():
        if name not in sys.modules:
            pkg = types.ModuleType(name)
            pkg.__path__ = [str(root / rel)]
            pkg.__package__ = name
            sys.modules[name] = pkg
    # the official code's deprecated torch.cuda.amp.autocast calls and its checkpoint() under no_grad
    warnings.filterwarnings("ignore", message=r".*torch\.cuda\.amp\.autocast", category=FutureWarning)
    warnings.filterwarnings("ignore", message=r"None of the inputs have requires_grad", category=UserWarning)
    mods = {name: importlib.import_module(name) for name in _MODULES}
    for name in ("wan.modules.attention", "wan.modules.model", "wan.modules.animate.model_animate"):
        mods[name].flash_attention = sdpa_flash_attention
    if importlib.util.find_spec("wan.distributed.ulysses") is not None:
        ulysses = importlib.import_module("wan.distributed.ulysses")
        ulysses.flash_attention = sdpa_flash_attention
    mods["wan.modules.animate.face_blocks"].flash_attn_func = sdpa_flash_attn_func
    animate = mods["wan.modules.animate.model_animate"]
    return Official(root=root, model_cls=animate.WanAnimateModel,
                    rope_params=mods["wan.modules.model"].rope_params, diffusers=which)


def build_official(off: Official, device: torch.device, dtype: torch.dtype,
                   **constructor: Any) -> nn.Module:
    """The official ``WanAnimateModel(**constructor)`` built on meta, materialized (uninitialised)
    in ``dtype`` on ``device``; the caller fills the weights.

    The official ``freqs`` attribute (a plain complex128 tensor, not a buffer) is rebuilt off the
    meta device with the official ``rope_params`` for the per-axis widths of the official constructor.
    """
    with torch.device("meta"):
        model = off.model_cls(**constructor)
    model = model.to(dtype).to_empty(device=device).eval().requires_grad_(False)
    d = model.dim // model.num_heads
    c = d // 2
    pairs = (c - 2 * (c // 3), c // 3, c // 3)          # rotary pairs for (t, h, w)
    model.freqs = torch.cat([off.rope_params(1024, 2 * p) for p in pairs], dim=1)
    return model


def official_forward(model: nn.Module, x: torch.Tensor, t: torch.Tensor, clip_fea: torch.Tensor,
                     context: torch.Tensor, y: torch.Tensor, pose_latents: torch.Tensor,
                     face_pixels: torch.Tensor, autocast_dtype: torch.dtype | None) -> torch.Tensor:
    """One official forward as ``wan/animate.py::WanAnimate.generate`` calls it (batch 1).

    x [1, 16, F, h, w] fp32, y [1, 20, F, h, w], pose [1, 16, F-1, h, w], face [1, 3, T, 512, 512],
    context [Lt, text_dim], clip_fea [1, 257, 1280] -> velocity [1, 16, F, h, w] fp32.
    ``autocast_dtype``: bf16 on CUDA (as generate()); None runs without autocast (CPU smoke test).
    """
    seq_len = x.shape[2] * math.prod(s // 2 for s in x.shape[3:])
    from contextlib import nullcontext

    ctx = (torch.autocast(device_type=x.device.type, dtype=autocast_dtype)
           if autocast_dtype is not None else nullcontext())
    with ctx, torch.no_grad():
        out = model([x[0]], t=t, clip_fea=clip_fea, context=[context], seq_len=seq_len, y=[y[0]],
                    pose_latents=pose_latents, face_pixel_values=face_pixels)
    return out[0][None]


def official_motion_path(model: nn.Module, embedded: torch.Tensor, pose_latents: torch.Tensor,
                         face_pixels: torch.Tensor, autocast_dtype: torch.dtype | None) -> torch.Tensor:
    """The official per-forward motion work (``after_patch_embedding``: pose add, LIA encoder on
    every face frame in batches of 8, face encoder). ``embedded``: [1, C, F, H', W'] (modified)."""
    from contextlib import nullcontext

    ctx = (torch.autocast(device_type=embedded.device.type, dtype=autocast_dtype)
           if autocast_dtype is not None else nullcontext())
    with ctx, torch.no_grad():
        _, motion_vec = model.after_patch_embedding([embedded], pose_latents, face_pixels)
    return motion_vec
