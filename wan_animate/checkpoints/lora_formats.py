"""LoRA files of the common formats -> official DiT module paths (``<module>.lora_A.weight`` ...).

Formats read (key examples for the DiT's ``blocks.0.self_attn.q``):

- PEFT (the relighting LoRA): ``blocks.0.self_attn.q.lora_A.weight`` / ``.lora_B.weight``, also
  with the ``base_model.model.`` prefix and an adapter-name infix (``.lora_A.default.weight``);
  alpha from ``adapter_config.json`` (``lora_alpha``, ``alpha_pattern``) when given, else = rank.
- ComfyUI / diffusion-pipe / lightx2v: ``diffusion_model.blocks.0.self_attn.q.lora_down.weight``
  / ``.lora_up.weight`` / ``.alpha`` (or ``lora_A``/``lora_B``), plus full-tensor differences
  ``<module>.diff`` (weight), ``<module>.diff_b`` (bias) and ``blocks.N.diff_m`` (modulation),
  as the lightx2v distillation LoRAs carry for norms and biases.
- kohya / musubi-tuner: ``lora_unet_blocks_0_self_attn_q.lora_down.weight`` (dots flattened to
  underscores; resolved against the DiT's own module names).
- diffusers: ``transformer.blocks.0.attn1.to_q.lora_A.weight`` (diffusers module names, mapped
  back: attn1/attn2 -> self_attn/cross_attn, to_out.0 -> o, add_k_proj -> k_img,
  ffn.net.0.proj -> ffn.0, norm2 <-> norm3, condition_embedder.* -> embeddings, proj_out -> head.head).

Scale per module = alpha / rank (rank = lora_A's first dim); a missing alpha means scale 1.
LoKr/LoHa/DoRA and other adapter kinds are refused. Every key must land on a DiT parameter;
unknown keys raise :class:`CheckpointError` naming file and key (``allow_unmatched`` lists them
instead), and a LoRA that touches nothing is an error.
"""
from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch

from wan_animate.errors import CheckpointError

_PREFIXES = ("base_model.model.", "model.diffusion_model.", "diffusion_model.", "transformer.",
             "unet.", "model.")
_KOHYA_PREFIXES = ("lora_unet_", "lora_transformer_", "lycoris_")
# (regex on the key after prefix stripping, role)
_ROLES = (
    (re.compile(r"(.+)\.lora_A(?:\.[A-Za-z0-9_]+)?\.weight"), "A"),
    (re.compile(r"(.+)\.lora_B(?:\.[A-Za-z0-9_]+)?\.weight"), "B"),
    (re.compile(r"(.+)\.lora_B(?:\.[A-Za-z0-9_]+)?\.bias"), "B_bias"),
    (re.compile(r"(.+)\.lora_down\.weight"), "A"),
    (re.compile(r"(.+)\.lora_up\.weight"), "B"),
    (re.compile(r"(.+)\.lora_up\.bias"), "B_bias"),
    (re.compile(r"(.+)\.lora\.down\.weight"), "A"),
    (re.compile(r"(.+)\.lora\.up\.weight"), "B"),
    (re.compile(r"(.+)\.lora_linear_layer\.down\.weight"), "A"),
    (re.compile(r"(.+)\.lora_linear_layer\.up\.weight"), "B"),
    (re.compile(r"(.+)\.alpha"), "alpha"),
    (re.compile(r"(.+)\.diff"), "diff"),
    (re.compile(r"(.+)\.diff_b"), "diff_b"),
    (re.compile(r"(.+)\.diff_m"), "diff_m"),
)
_UNSUPPORTED = re.compile(r".*\.(hada_w[12]_[ab]|lokr_w[12](_[ab])?|dora_scale|oft_blocks|"
                          r"lora_magnitude_vector.*|ia3_l)")
# official module suffix under blocks.{i}. -> diffusers name
_DIFFUSERS_BLOCK = {
    "self_attn.q": "attn1.to_q", "self_attn.k": "attn1.to_k", "self_attn.v": "attn1.to_v",
    "self_attn.o": "attn1.to_out.0", "self_attn.norm_q": "attn1.norm_q", "self_attn.norm_k": "attn1.norm_k",
    "cross_attn.q": "attn2.to_q", "cross_attn.k": "attn2.to_k", "cross_attn.v": "attn2.to_v",
    "cross_attn.o": "attn2.to_out.0", "cross_attn.k_img": "attn2.add_k_proj",
    "cross_attn.v_img": "attn2.add_v_proj", "cross_attn.norm_q": "attn2.norm_q",
    "cross_attn.norm_k": "attn2.norm_k", "cross_attn.norm_k_img": "attn2.norm_added_k",
    "ffn.0": "ffn.net.0.proj", "ffn.2": "ffn.net.2", "norm3": "norm2",
}
_DIFFUSERS_TOP = {
    "text_embedding.0": "condition_embedder.text_embedder.linear_1",
    "text_embedding.2": "condition_embedder.text_embedder.linear_2",
    "time_embedding.0": "condition_embedder.time_embedder.linear_1",
    "time_embedding.2": "condition_embedder.time_embedder.linear_2",
    "time_projection.1": "condition_embedder.time_proj",
    "img_emb.proj.0": "condition_embedder.image_embedder.norm1",
    "img_emb.proj.1": "condition_embedder.image_embedder.ff.net.0.proj",
    "img_emb.proj.3": "condition_embedder.image_embedder.ff.net.2",
    "img_emb.proj.4": "condition_embedder.image_embedder.norm2",
    "head.head": "proj_out",
}


def diffusers_name(module: str) -> str | None:
    """The diffusers module name of an official DiT module path, if it has one."""
    m = re.fullmatch(r"blocks\.(\d+)\.(.+)", module)
    if m and m[2] in _DIFFUSERS_BLOCK:
        return f"blocks.{m[1]}.{_DIFFUSERS_BLOCK[m[2]]}"
    return _DIFFUSERS_TOP.get(module)


@dataclass(frozen=True)
class LoraFile:
    """A LoRA in canonical form.

    ``state``: ``<module>.lora_A.weight`` [r, in, *k], ``<module>.lora_B.weight`` [out, r, *1] and
    ``<module>.alpha`` (0-d float32, always present) -- the input of
    ``models.lora.normalize_lora_state``. ``diffs``: official parameter key -> additive delta
    (full-tensor differences, and lora_B biases already scaled). ``modules``: module paths with
    an A/B pair; ``format``: peft | comfy | kohya | diffusers.
    """

    source: str
    format: str
    state: dict[str, torch.Tensor]
    diffs: dict[str, torch.Tensor]
    modules: tuple[str, ...]
    unmatched: tuple[str, ...] = ()

    @property
    def touched(self) -> tuple[str, ...]:
        """Every official parameter the LoRA changes (``<module>.weight`` of pairs + diff keys)."""
        return tuple(sorted({m + ".weight" for m in self.modules} | set(self.diffs)))

    def scale(self, module: str) -> float:
        return float(self.state[module + ".alpha"]) / self.state[module + ".lora_A.weight"].shape[0]

    def delta(self, module: str, shape: Sequence[int]) -> torch.Tensor:
        """alpha / r * B @ A in float32, shaped like the weight (Linear [out, in] or Conv [out, in, *k])."""
        a = self.state[module + ".lora_A.weight"].float()
        b = self.state[module + ".lora_B.weight"].float()
        d = b.reshape(b.shape[0], -1) @ a.reshape(a.shape[0], -1)       # [out, r] @ [r, in*k] -> [out, in*k]
        return (d * self.scale(module)).reshape(tuple(shape))


def _strip(key: str) -> tuple[str, bool]:
    """Remove known prefixes; second value: it was a kohya-style (underscored) name."""
    changed = True
    while changed:
        changed = False
        for p in _PREFIXES:
            if key.startswith(p):
                key, changed = key[len(p):], True
    for p in _KOHYA_PREFIXES:
        if key.startswith(p):
            return key[len(p):], True
    return key, False


class _Resolver:
    """Official module path from a LoRA module name (official, diffusers, or underscored)."""

    def __init__(self, base_keys: Iterable[str]) -> None:
        self.params = set(base_keys)
        modules = {k.rsplit(".", 1)[0] for k in self.params if "." in k}
        self.exact: dict[str, tuple[str, str]] = {}
        self.flat: dict[str, tuple[str, str]] = {}
        for m in modules:
            for name, kind in ((m, "official"), (diffusers_name(m), "diffusers")):
                if name:
                    self.exact.setdefault(name, (m, kind))
                    self.flat.setdefault(name.replace(".", "_"), (m, kind))

    def __call__(self, name: str, underscored: bool) -> tuple[str, str] | None:
        """(official module, naming kind) or None. ``blocks.0`` resolves too (owner of ``modulation``)."""
        return self.flat.get(name.replace(".", "_")) if underscored else self.exact.get(name)


def normalize_lora(state: Mapping[str, torch.Tensor], base_keys: Iterable[str], source: str = "<lora>",
                   *, alpha: float | None = None, alpha_pattern: Mapping[str, float] | None = None,
                   allow_unmatched: bool = False) -> LoraFile:
    """Map a LoRA state dict of any supported format onto the DiT's official module paths.

    Args:
        state: the file's tensors.
        base_keys: the DiT's official state-dict keys (e.g. its index's ``weight_map`` keys).
        alpha: alpha for modules without an ``.alpha`` tensor (PEFT ``lora_alpha``); None = rank.
        alpha_pattern: PEFT ``alpha_pattern`` (module name or suffix -> alpha).
        allow_unmatched: list keys that name no DiT parameter in ``unmatched`` instead of raising.
    """
    resolve = _Resolver(base_keys)
    parts: dict[str, dict[str, torch.Tensor]] = {}
    unmatched: list[str] = []
    kinds: set[str] = set()
    comfy = False
    for key, t in state.items():
        if _UNSUPPORTED.fullmatch(key):
            raise CheckpointError(f"{source}: key {key!r} belongs to a LoKr/LoHa/DoRA/OFT adapter; only "
                                  f"plain LoRA (A/B pairs, alpha, diff tensors) is supported")
        comfy |= key.startswith(("diffusion_model.", "model.diffusion_model."))
        name, underscored = _strip(key)
        role = next(((m[1], r) for rx, r in _ROLES if (m := rx.fullmatch(name))), None)
        hit = resolve(role[0], underscored) if role else None
        if role is None or hit is None:
            if allow_unmatched:
                unmatched.append(key)
                continue
            what = "is not a LoRA key" if role is None else f"names module {role[0]!r}, not in the DiT"
            raise CheckpointError(f"{source}: key {key!r} {what}; is this a LoRA for Wan2.2-Animate "
                                  f"(or Wan 14B)? Pass allow_unmatched to skip such keys.")
        module, kind = hit
        kinds.add("kohya" if underscored else kind)
        if role[1] in parts.setdefault(module, {}):
            raise CheckpointError(f"{source}: two keys give {role[1]} of module {module} (e.g. {key!r})")
        parts[module][role[1]] = t
    out: dict[str, torch.Tensor] = {}
    diffs: dict[str, torch.Tensor] = {}
    modules = []
    for module, p in sorted(parts.items()):
        if ("A" in p) != ("B" in p):
            raise CheckpointError(f"{source}: module {module} has lora_{'A' if 'A' in p else 'B'} "
                                  f"(down/up) without its partner")
        for role, suffix in (("diff", ".weight"), ("diff_b", ".bias"), ("diff_m", ".modulation")):
            if role in p:
                _check_param(module + suffix, resolve.params, source)
                diffs[module + suffix] = p[role]
        if "A" not in p:
            continue
        a, b = p["A"], p["B"]
        rank = a.shape[0]
        if b.shape[1] != rank or any(s != 1 for s in b.shape[2:]):
            raise CheckpointError(f"{source}: {module}: lora_B {tuple(b.shape)} does not match lora_A "
                                  f"{tuple(a.shape)} (rank {rank})")
        _check_param(module + ".weight", resolve.params, source)
        al = p["alpha"] if "alpha" in p else _pattern_alpha(module, alpha_pattern, alpha, rank)
        out[module + ".lora_A.weight"] = a
        out[module + ".lora_B.weight"] = b
        out[module + ".alpha"] = torch.tensor(float(al), dtype=torch.float32)
        if "B_bias" in p:
            diffs[module + ".bias"] = p["B_bias"].float() * (float(al) / rank)
        modules.append(module)
    if not modules and not diffs:
        raise CheckpointError(f"{source}: the LoRA touches 0 DiT modules ({len(state)} keys, "
                              f"{len(unmatched)} unmatched, e.g. {unmatched[:2]}); it is not a LoRA for "
                              f"this model")
    fmt = "kohya" if "kohya" in kinds else "diffusers" if "diffusers" in kinds else \
        "comfy" if comfy else "peft"
    return LoraFile(source, fmt, out, diffs, tuple(modules), tuple(unmatched))


def _check_param(key: str, params: set[str], source: str) -> None:
    if key not in params:
        raise CheckpointError(f"{source}: the LoRA changes {key}, which the DiT does not have")


def _pattern_alpha(module: str, pattern: Mapping[str, float] | None, alpha: float | None,
                   rank: int) -> float:
    for pat, value in (pattern or {}).items():
        if module == pat or module.endswith("." + pat) or re.fullmatch(pat, module):
            return float(value)
    return float(alpha) if alpha is not None else float(rank)


def read_lora(path: str | Path, base_keys: Iterable[str], *, allow_unmatched: bool = False) -> LoraFile:
    """Read a LoRA file (``.safetensors``, ``.ckpt``/``.pt``/``.pth`` with an optional
    ``state_dict`` wrapper, or a PEFT folder with ``adapter_model.*`` + ``adapter_config.json``)."""
    from wan_animate.checkpoints.load import read_pth, read_safetensors

    path = Path(path)
    alpha = None
    pattern = None
    cfg = path / "adapter_config.json" if path.is_dir() else path.with_name("adapter_config.json")
    if path.is_dir():
        files = [path / n for n in ("adapter_model.safetensors", "adapter_model.bin") if (path / n).is_file()]
        if not files:
            raise CheckpointError(f"{path}: a LoRA folder needs adapter_model.safetensors (PEFT)")
        path = files[0]
    if cfg.is_file():
        try:
            conf = json.loads(cfg.read_text())
            alpha, pattern = conf.get("lora_alpha"), conf.get("alpha_pattern") or None
        except ValueError as e:
            raise CheckpointError(f"{cfg}: unreadable adapter config ({e})") from e
    if not path.is_file():
        raise CheckpointError(f"missing LoRA file: {path}")
    state = read_safetensors(path) if path.suffix == ".safetensors" else read_pth(path, ("state_dict",))
    return normalize_lora(state, base_keys, str(path), alpha=alpha, alpha_pattern=pattern,
                          allow_unmatched=allow_unmatched)


def merge_loras(state: Mapping[str, torch.Tensor], loras: Sequence[tuple[LoraFile, float]],
                *, partial: bool = False) -> dict[str, torch.Tensor]:
    """Merge LoRAs (each with its strength) into a DiT state dict; returns a new dict.

    Each touched weight becomes ``W + sum(strength * alpha / r * B @ A) + sum(strength * diff)``,
    summed in float32 and rounded once to W's dtype; untouched tensors are shared, not copied.
    ``partial=True`` skips parameters ``state`` does not hold (one rank's shard).
    """
    deltas: dict[str, list[torch.Tensor]] = {}
    for lora, strength in loras:
        for module in lora.modules:
            key = module + ".weight"
            if key not in state:
                if partial:
                    continue
                raise CheckpointError(f"{lora.source}: the state has no {key}")
            deltas.setdefault(key, []).append(strength * lora.delta(module, state[key].shape))
        for key, d in lora.diffs.items():
            if key not in state:
                if partial:
                    continue
                raise CheckpointError(f"{lora.source}: the state has no {key}")
            if d.numel() != state[key].numel():
                raise CheckpointError(f"{lora.source}: diff for {key} has {tuple(d.shape)}, the weight "
                                      f"{tuple(state[key].shape)}")
            deltas.setdefault(key, []).append(strength * d.float().reshape(state[key].shape))
    out = dict(state)
    for key, ds in deltas.items():
        w = state[key]
        total = w.float()
        for d in ds:
            total = total + d.to(total.device)
        out[key] = total.to(w.dtype)
    return out

