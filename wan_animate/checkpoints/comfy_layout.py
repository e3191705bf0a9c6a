"""ComfyUI single-file layouts of the DiT, umT5, CLIP vision and VAE -> official key names.

What ComfyUI users hold (``ComfyUI/models/...``) and how it maps (checked against ComfyUI's
loaders: ``comfy/ldm/wan/model_animate.py``, ``comfy/text_encoders/t5.py``,
``comfy/clip_vision.py``, ``comfy/ldm/wan/vae.py``):

- ``diffusion_models/wan2.2_animate_14B_*.safetensors``: the official DiT keys (1441 incl. the
  motion encoder's blur kernels), optionally under ``model.diffusion_model.`` /
  ``diffusion_model.``; bf16, fp16, fp8 or fp8-scaled (see :mod:`fp8`). Identity mapping.
- ``text_encoders/umt5_xxl_*.safetensors``: Hugging Face T5 names
  (``encoder.block.{i}.layer.0.SelfAttention.q.weight``, ``...relative_attention_bias`` in every
  layer for umT5, ``layer.1.DenseReluDense.wi_0/wi_1/wo``, ``shared.weight``,
  ``encoder.final_layer_norm.weight``), possibly with a ``spiece_model`` tokenizer blob.
  ``wi_0`` is the GELU gate (official ``ffn.gate.0``), ``wi_1`` the linear branch (``ffn.fc1``).
- ``clip_vision/clip_vision_h.safetensors``: Hugging Face CLIPVision names
  (``vision_model.encoder.layers.{i}.self_attn.{q,k,v}_proj`` -> concatenated ``attn.to_qkv``,
  ``pre_layrnorm`` -> ``pre_norm``, ``visual_projection.weight`` [1024, 1280] -> ``visual.head``
  transposed, class/position embeddings gain leading 1-dims); the open_clip form
  (``visual.transformer.resblocks.{i}.attn.in_proj_weight``, ``visual.proj``) is read too.
  Only the visual tower is produced (Animate never runs the text tower).
- ``vae/wan_2.1_vae.safetensors``: the official VAE keys. Identity mapping.

The official files (``.pth`` of T5/CLIP/VAE, the DiT's safetensors) pass through unchanged,
so one entry point reads any of them. Unsupported layouts (diffusers folders, other Wan DiTs,
GGUF) and unknown keys raise :class:`CheckpointError` naming the file and the key. The output
is a key dict for ``checkpoints.load.load_into`` (which checks it strictly against the model).
"""
from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import torch

from wan_animate.checkpoints import fp8 as fp8mod
from wan_animate.errors import CheckpointError

NETWORKS = ("dit", "t5", "clip", "vae")
_ST_DTYPES = {"F64": torch.float64, "F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16,
              "F8_E4M3": torch.float8_e4m3fn, "F8_E5M2": torch.float8_e5m2, "I64": torch.int64,
              "I32": torch.int32, "I16": torch.int16, "I8": torch.int8, "U8": torch.uint8,
              "BOOL": torch.bool}
# (network, layout, signature key suffix); earlier entries win when several match.
_SIGNATURES = (
    ("dit", "diffusers", "blocks.0.attn1.to_q.weight"),
    ("dit", "native", "blocks.0.self_attn.q.weight"),
    ("clip", "hf", "vision_model.encoder.layers.0.self_attn.q_proj.weight"),
    ("clip", "open_clip", "transformer.resblocks.0.attn.in_proj_weight"),
    ("clip", "native", "visual.transformer.0.attn.to_qkv.weight"),
    ("t5", "hf", "encoder.block.0.layer.0.SelfAttention.q.weight"),
    ("t5", "native", "blocks.0.attn.q.weight"),
    ("vae", "diffusers", "post_quant_conv.weight"),
    ("vae", "native", "decoder.middle.0.residual.0.gamma"),
)
_NEEDS = {("dit", "native"): "patch_embedding.weight", ("t5", "native"): "token_embedding.weight",
          ("clip", "open_clip"): "conv1.weight"}
_ROOT_AUX = ("spiece_model", fp8mod.MARKER_KEY)


def file_dtypes(handle) -> dict[str, torch.dtype]:  # noqa: ANN001 - a safetensors safe_open handle
    """key -> torch dtype of every tensor in an open safetensors file (uint8 for unknown)."""
    return {k: _ST_DTYPES.get(handle.get_slice(k).get_dtype(), torch.uint8) for k in handle.keys()}


@dataclass(frozen=True)
class Recipe:
    """How one official tensor is built from file tensors. ``op``: copy | cat0 | transpose |
    lead2 (add two leading 1-dims: [D] -> [1, 1, D]) | lead1 ([N, D] -> [1, N, D])."""

    file_keys: tuple[str, ...]
    op: str = "copy"


@dataclass(frozen=True)
class ConversionPlan:
    source: str
    network: str
    layout: str
    prefix: str
    recipes: Mapping[str, Recipe]
    fp8: fp8mod.Fp8Layout
    dropped: tuple[str, ...] = ()
    notes: tuple[str, ...] = ()


@dataclass(frozen=True)
class Converted:
    """Official-named tensors (fp8 dequantized; other dtypes as in the file) and how they were made."""

    state: dict[str, torch.Tensor]
    plan: ConversionPlan
    fp8: fp8mod.Fp8Report = field(default_factory=lambda: fp8mod.Fp8Report("none", 0, (), ()))

    @property
    def warnings(self) -> list[str]:
        return list(self.plan.notes) + self.fp8.warnings()


# ---- detection -----------------------------------------------------------------------------------
def detect_layout(keys: Iterable[str], source: str = "<state>",
                  expect: str | None = None) -> tuple[str, str, str]:
    """(network, layout, key prefix) of a key set; errors for unsupported or ambiguous files."""
    keys = set(keys)
    found: dict[str, tuple[str, str]] = {}
    for network, lay, sig in _SIGNATURES:
        if network in found:
            continue
        for k in keys:
            if k.endswith(sig) and (len(k) == len(sig) or k[-len(sig) - 1] == "."):
                prefix = k[:-len(sig)]
                need = _NEEDS.get((network, lay))
                if need is None or prefix + need in keys:
                    found[network] = (lay, prefix)
                    break
    if "clip" in found and found["clip"][0] == "native" and "t5" in found and \
            found["t5"][1].startswith(found["clip"][1] + "textual."):
        del found["t5"]                                  # the official CLIP's text tower
    if not found:
        raise CheckpointError(f"{source}: not a Wan DiT, umT5, CLIP vision or VAE checkpoint "
                              f"(no known key, e.g. {sorted(keys)[:3]})")
    if expect is not None:
        if expect not in NETWORKS:
            raise ValueError(f"expect must be one of {NETWORKS}, got {expect!r}")
        if expect not in found:
            raise CheckpointError(f"{source}: expected a {expect} checkpoint but found "
                                  f"{', '.join(found)}; check which file goes where")
        network = expect
    elif len(found) > 1:
        raise CheckpointError(f"{source}: holds several networks ({', '.join(found)}); say which one "
                              f"to read")
    else:
        network = next(iter(found))
    lay, prefix = found[network]
    if lay == "diffusers":
        raise CheckpointError(f"{source}: this {network} is in the diffusers layout, which is not "
                              f"supported; use the official Wan-AI/Wan2.2-Animate-14B files or "
                              f"ComfyUI's repackaged single files")
    if network == "dit" and not any(k.startswith((prefix + "face_adapter.", prefix + "motion_encoder."))
                                    for k in keys):
        raise CheckpointError(f"{source}: a Wan DiT without face_adapter/motion_encoder keys: this is "
                              f"not Wan2.2-Animate (a T2V/I2V model?); use "
                              f"wan2.2_animate_14B_*.safetensors")
    return network, lay, prefix


# ---- key maps (one table per layout; both directions are derived from it) ----------------------
_T5_BLOCK = {  # official suffix under blocks.{i}. -> Hugging Face suffix under encoder.block.{i}.
    "attn.q.weight": "layer.0.SelfAttention.q.weight",
    "attn.k.weight": "layer.0.SelfAttention.k.weight",
    "attn.v.weight": "layer.0.SelfAttention.v.weight",
    "attn.o.weight": "layer.0.SelfAttention.o.weight",
    "pos_embedding.embedding.weight": "layer.0.SelfAttention.relative_attention_bias.weight",
    "norm1.weight": "layer.0.layer_norm.weight",
    "norm2.weight": "layer.1.layer_norm.weight",
    "ffn.gate.0.weight": "layer.1.DenseReluDense.wi_0.weight",
    "ffn.fc1.weight": "layer.1.DenseReluDense.wi_1.weight",
    "ffn.fc2.weight": "layer.1.DenseReluDense.wo.weight",
}
_T5_TOP = {"norm.weight": "encoder.final_layer_norm.weight", "token_embedding.weight": "shared.weight"}
_T5_DROP = re.compile(r"(decoder\..*|lm_head\.weight|encoder\.embed_tokens\.weight)")

_WB = ("weight", "bias")
# official suffix under visual.transformer.{i}. -> file suffix under the layer prefix
_CLIP_LAYER = {
    "hf": {**{f"norm1.{p}": f"layer_norm1.{p}" for p in _WB},
           **{f"norm2.{p}": f"layer_norm2.{p}" for p in _WB},
           **{f"attn.proj.{p}": f"self_attn.out_proj.{p}" for p in _WB},
           **{f"mlp.0.{p}": f"mlp.fc1.{p}" for p in _WB}, **{f"mlp.2.{p}": f"mlp.fc2.{p}" for p in _WB}},
    "open_clip": {**{f"norm1.{p}": f"ln_1.{p}" for p in _WB}, **{f"norm2.{p}": f"ln_2.{p}" for p in _WB},
                  "attn.to_qkv.weight": "attn.in_proj_weight", "attn.to_qkv.bias": "attn.in_proj_bias",
                  **{f"attn.proj.{p}": f"attn.out_proj.{p}" for p in _WB},
                  **{f"mlp.0.{p}": f"mlp.c_fc.{p}" for p in _WB},
                  **{f"mlp.2.{p}": f"mlp.c_proj.{p}" for p in _WB}},
}
_CLIP_LAYER_PREFIX = {"hf": "vision_model.encoder.layers.{i}.", "open_clip": "transformer.resblocks.{i}."}
_CLIP_TOP = {  # official key -> (file key, op)
    "hf": {"visual.cls_embedding": ("vision_model.embeddings.class_embedding", "lead2"),
           "visual.pos_embedding": ("vision_model.embeddings.position_embedding.weight", "lead1"),
           "visual.patch_embedding.weight": ("vision_model.embeddings.patch_embedding.weight", "copy"),
           **{f"visual.pre_norm.{p}": (f"vision_model.pre_layrnorm.{p}", "copy") for p in _WB},
           **{f"visual.post_norm.{p}": (f"vision_model.post_layernorm.{p}", "copy") for p in _WB},
           "visual.head": ("visual_projection.weight", "transpose")},
    "open_clip": {"visual.cls_embedding": ("class_embedding", "lead2"),
                  "visual.pos_embedding": ("positional_embedding", "lead1"),
                  "visual.patch_embedding.weight": ("conv1.weight", "copy"),
                  **{f"visual.pre_norm.{p}": (f"ln_pre.{p}", "copy") for p in _WB},
                  **{f"visual.post_norm.{p}": (f"ln_post.{p}", "copy") for p in _WB},
                  "visual.head": ("proj", "copy")},
}
_HF_QKV = re.compile(r"vision_model\.encoder\.layers\.(\d+)\.self_attn\.([qkv])_proj\.(weight|bias)")
_CLIP_HF_DROP = re.compile(r"(vision_model\.embeddings\.position_ids|text_model\..*|text_projection\..*|"
                           r"logit_scale)")


def _unknown(source: str, network: str, lay: str, key: str) -> CheckpointError:
    return CheckpointError(f"{source}: key {key!r} of this {lay}-layout {network} file has no "
                           f"counterpart in the official layout; the file is not the expected model")


def _map_t5_hf(keys: list[str], source: str) -> tuple[dict[str, Recipe], list[str]]:
    inv_block = {v: k for k, v in _T5_BLOCK.items()}
    inv_top = {v: k for k, v in _T5_TOP.items()}
    recipes: dict[str, Recipe] = {}
    dropped = []
    for k in keys:
        m = re.fullmatch(r"encoder\.block\.(\d+)\.(.+)", k)
        if m and m[2] in inv_block:
            recipes[f"blocks.{m[1]}.{inv_block[m[2]]}"] = Recipe((k,))
        elif k in inv_top:
            recipes[inv_top[k]] = Recipe((k,))
        elif k == "encoder.embed_tokens.weight" and "shared.weight" not in keys:
            recipes["token_embedding.weight"] = Recipe((k,))    # untied export: same tensor
        elif _T5_DROP.fullmatch(k):
            dropped.append(k)
        else:
            raise _unknown(source, "t5", "hf", k)
    return recipes, dropped


def _map_clip(keys: list[str], source: str, lay: str) -> tuple[dict[str, Recipe], list[str]]:
    inv_layer = {v: k for k, v in _CLIP_LAYER[lay].items()}
    inv_top = {f: (o, op) for o, (f, op) in _CLIP_TOP[lay].items()}
    layer_re = re.compile(re.escape(_CLIP_LAYER_PREFIX[lay]).replace(r"\{i\}", r"(\d+)") + "(.+)")
    recipes: dict[str, Recipe] = {}
    dropped = []
    qkv: dict[tuple[str, str], dict[str, str]] = {}
    for k in keys:
        if lay == "hf" and (m := _HF_QKV.fullmatch(k)):
            qkv.setdefault((m[1], m[3]), {})[m[2]] = k
        elif (m := layer_re.fullmatch(k)) and m[2] in inv_layer:
            recipes[f"visual.transformer.{m[1]}.{inv_layer[m[2]]}"] = Recipe((k,))
        elif k in inv_top:
            recipes[inv_top[k][0]] = Recipe((k,), inv_top[k][1])
        elif lay == "hf" and _CLIP_HF_DROP.fullmatch(k):
            dropped.append(k)
        else:
            raise _unknown(source, "clip", lay, k)
    for (layer, param), parts in sorted(qkv.items()):
        if set(parts) != {"q", "k", "v"}:
            raise CheckpointError(f"{source}: CLIP layer {layer} has only the {sorted(parts)} "
                                  f"projections ({param}); q, k and v are all needed")
        recipes[f"visual.transformer.{layer}.attn.to_qkv.{param}"] = Recipe(
            (parts["q"], parts["k"], parts["v"]), "cat0")
    return recipes, dropped


def plan_conversion(dtypes: Mapping[str, torch.dtype], source: str = "<state>", expect: str | None = None,
                    get: Callable[[str], torch.Tensor] | None = None,
                    metadata: Mapping[str, str] | None = None) -> ConversionPlan:
    """Detect the layout of a key set and how to build every official tensor from it.

    Args:
        dtypes: every file key -> its dtype (from the safetensors header; nothing is read).
        expect: ``"dit" | "t5" | "clip" | "vae"`` when the caller knows what the file should be.
        get: reads one file tensor (only the small fp8 ``comfy_quant`` configs are read here).
    """
    network, lay, prefix = detect_layout(dtypes, source, expect)
    inside = [k for k in dtypes if k.startswith(prefix)]
    outside = [k for k in dtypes if not k.startswith(prefix)]
    stray = [k for k in outside if k not in _ROOT_AUX]
    if stray and expect is None and not (network == "clip" and lay == "open_clip"):
        raise CheckpointError(f"{source}: {len(stray)} keys outside the {network} prefix {prefix!r}, "
                              f"e.g. {stray[0]!r}")
    strip = {k[len(prefix):]: k for k in inside}
    strip.update({k: k for k in outside if k in _ROOT_AUX and k not in strip})
    lay8 = fp8mod.detect({s: dtypes[f] for s, f in strip.items()}, source,
                         (lambda s: get(strip[s])) if get else None, metadata)
    weights = [s for s in strip if s not in lay8.aux and s != "spiece_model"]
    dropped = [strip[s] for s in strip if s in lay8.aux or s == "spiece_model"]
    dropped += [k for k in outside if k not in strip.values()]
    notes = []
    if network == "t5" and lay == "hf":
        recipes, more = _map_t5_hf(weights, source)
    elif network == "clip" and lay in ("hf", "open_clip"):
        recipes, more = _map_clip(weights, source, lay)
    elif network == "clip":
        recipes = {s: Recipe((s,)) for s in weights if s.startswith("visual.")}
        more = [s for s in weights if not s.startswith("visual.")]
    else:
        recipes, more = {s: Recipe((s,)) for s in weights}, []
    if network == "clip" and (more or stray):
        notes.append(f"{len(more) + len(stray)} non-visual CLIP keys ignored (Animate uses only the "
                     f"visual tower)")
    recipes = {o: Recipe(tuple(strip[s] for s in r.file_keys), r.op) for o, r in recipes.items()}
    scales = {strip[w]: strip[s] for w, s in lay8.scales.items()}
    lay8 = fp8mod.Fp8Layout(lay8.kind, frozenset(strip[k] for k in lay8.fp8_keys), scales,
                            frozenset(strip[k] for k in lay8.aux), lay8.formats)
    dropped += [strip[s] if s in strip else s for s in more]
    return ConversionPlan(source, network, lay, prefix, recipes, lay8, tuple(sorted(dropped)), tuple(notes))


def apply_plan(plan: ConversionPlan, get: Callable[[str], torch.Tensor], dtype: torch.dtype = torch.bfloat16,
               keep: Callable[[str], bool] | None = None) -> dict[str, torch.Tensor]:
    """Build the official tensors (only those with ``keep(official_key)``), dequantizing fp8 to
    :func:`fp8.storage_dtype` of ``dtype``; other tensors keep the file's dtype."""
    out: dict[str, torch.Tensor] = {}
    for okey, r in sorted(plan.recipes.items()):
        if keep is not None and not keep(okey):
            continue
        parts = []
        for fk in r.file_keys:
            t = get(fk)
            if t.dtype in fp8mod.FP8_DTYPES:
                sk = plan.fp8.scales.get(fk)
                t = fp8mod.dequantize(t, get(sk) if sk else None, fp8mod.storage_dtype(okey, dtype), fk)
            parts.append(t)
        t = parts[0]
        if r.op == "cat0":
            t = torch.cat(parts, 0)                                  # 3 x [D, ...] -> [3D, ...]
        elif r.op == "transpose":
            t = t.t().contiguous()                                   # [out, in] -> [in, out]
        elif r.op == "lead2":
            t = t.reshape(1, 1, -1)                                  # [D] -> [1, 1, D]
        elif r.op == "lead1":
            t = t.unsqueeze(0)                                       # [N, D] -> [1, N, D]
        out[okey] = t
    return out


def convert_state(state: Mapping[str, torch.Tensor], source: str = "<state>", expect: str | None = None,
                  dtype: torch.dtype = torch.bfloat16, metadata: Mapping[str, str] | None = None,
                  keep: Callable[[str], bool] | None = None) -> Converted:
    """An in-memory state dict of any supported layout -> official keys."""
    plan = plan_conversion({k: v.dtype for k, v in state.items()}, source, expect, state.__getitem__,
                           metadata)
    return Converted(apply_plan(plan, state.__getitem__, dtype, keep), plan, fp8_report(plan))


def fp8_report(plan: ConversionPlan) -> fp8mod.Fp8Report:
    """What the file's fp8 storage means for the model (protected keys named by official key)."""
    stored = plan.fp8.fp8_keys
    protected = sorted(o for o, r in plan.recipes.items()
                       if fp8mod.is_protected(o) and any(f in stored for f in r.file_keys))
    return fp8mod.Fp8Report(plan.fp8.kind, len(stored), tuple(protected), tuple(sorted(plan.fp8.aux)))


def read_single_file(path: str | Path, expect: str | None = None, dtype: torch.dtype = torch.bfloat16,
                     keep: Callable[[str], bool] | None = None,
                     device: str | torch.device = "cpu") -> Converted:
    """Read a ComfyUI (or official) single file, reading only the tensors ``keep`` selects.

    ``.safetensors`` are read lazily from their header; ``.pth``/``.ckpt``/``.pt`` through
    ``checkpoints.load.read_pth`` (weights_only).
    """
    from safetensors import safe_open

    from wan_animate.checkpoints.load import read_pth

    path = Path(path)
    if path.suffix == ".gguf":
        raise CheckpointError(f"{path}: GGUF files are not supported; use a safetensors file "
                              f"(bf16, fp16, fp8 or fp8-scaled)")
    if not path.is_file():
        raise CheckpointError(f"missing checkpoint file: {path}")
    if path.suffix != ".safetensors":
        return convert_state(read_pth(path, ("state_dict",)), str(path), expect, dtype, keep=keep)
    try:
        with safe_open(str(path), framework="pt", device=str(device)) as f:
            dtypes = file_dtypes(f)
            plan = plan_conversion(dtypes, str(path), expect, f.get_tensor, f.metadata() or {})
            state = apply_plan(plan, f.get_tensor, dtype, keep)
    except CheckpointError:
        raise
    except Exception as e:  # safetensors raises several types for truncated or corrupt files
        raise CheckpointError(f"cannot read {path}: {e}. The file is corrupt or incomplete; "
                              f"download it again.") from e
    return Converted(state, plan, fp8_report(plan))


# ---- export (tiny ComfyUI-layout files for tests and make-tiny-checkpoint) ------------------------
def _to_t5_hf(key: str) -> str:
    m = re.fullmatch(r"blocks\.(\d+)\.(.+)", key)
    if m and m[2] in _T5_BLOCK:
        return f"encoder.block.{m[1]}.{_T5_BLOCK[m[2]]}"
    if key in _T5_TOP:
        return _T5_TOP[key]
    raise KeyError(f"no Hugging Face T5 name for {key!r}")


def _to_clip(state: Mapping[str, torch.Tensor], lay: str) -> dict[str, torch.Tensor]:
    """Official visual keys -> Hugging Face CLIPVision ('hf') or open_clip tower names."""
    out = {}
    lead = {"copy": lambda t: t, "lead2": lambda t: t.reshape(-1), "lead1": lambda t: t[0],
            "transpose": lambda t: t.t().contiguous()}
    for k, t in state.items():
        m = re.fullmatch(r"visual\.transformer\.(\d+)\.(.+)", k)
        if m and lay == "hf" and m[2].startswith("attn.to_qkv."):
            for name, part in zip("qkv", t.chunk(3, 0)):      # [3D, ...] -> 3 x [D, ...]
                out[f"vision_model.encoder.layers.{m[1]}.self_attn.{name}_proj.{m[2].split('.')[-1]}"] = part
        elif m:
            out[_CLIP_LAYER_PREFIX[lay].format(i=m[1]) + _CLIP_LAYER[lay][m[2]]] = t
        elif k in _CLIP_TOP[lay]:
            name, op = _CLIP_TOP[lay][k]
            out[name] = lead[op](t)
        elif k.startswith("visual."):
            raise KeyError(f"no {lay} CLIP name for {k!r}")
    return out


def export_comfy(state: Mapping[str, torch.Tensor], network: str, *, fp8: str | None = None,
                 dtype: torch.dtype = torch.bfloat16, prefix: str = "", per_channel: bool = False,
                 quantize_protected: bool = True, clip_layout: str = "hf") -> dict[str, torch.Tensor]:
    """Official-named ``state`` -> the ComfyUI single-file layout of ``network``.

    ``fp8``: None (cast to ``dtype``) | "plain" | "scaled" (``scale_weight`` + ``scaled_fp8``
    marker) | "comfy_quant" (``weight_scale`` + per-layer ``comfy_quant`` JSON). Only 2-D Linear
    weights are quantized (not norms, embeddings or the motion encoder, as ComfyUI does);
    ``quantize_protected=False`` keeps the face adapter/encoder in ``dtype``. ``clip_layout``:
    "hf" (clip_vision_h) or "open_clip" (give ``prefix="visual."``).
    """
    if network == "t5":
        named = {_to_t5_hf(k): v for k, v in state.items()}
    elif network == "clip":
        named = _to_clip(state, clip_layout)
    elif network in ("dit", "vae"):
        named = dict(state)
    else:
        raise ValueError(f"network must be one of {NETWORKS}")
    out: dict[str, torch.Tensor] = {}
    for k, t in named.items():
        quant = (fp8 is not None and t.dim() == 2 and k.endswith(".weight") and "norm" not in k
                 and "embed" not in k and not k.startswith("shared.") and not k.startswith("motion_encoder.")
                 and (quantize_protected or not fp8mod.is_protected(k)))
        if not quant:
            out[prefix + k] = t.to(dtype) if t.is_floating_point() else t
        elif fp8 == "plain":
            fmax = torch.finfo(torch.float8_e4m3fn).max
            out[prefix + k] = t.float().clamp(-fmax, fmax).to(torch.float8_e4m3fn)
        else:
            q, s = fp8mod.quantize(t, per_channel=per_channel)
            layer = k[:-len(".weight")]
            out[prefix + k] = q
            if fp8 == "scaled":
                out[prefix + layer + ".scale_weight"] = s
            elif fp8 == "comfy_quant":
                out[prefix + layer + ".weight_scale"] = s
                out[prefix + layer + ".comfy_quant"] = torch.tensor(
                    list(json.dumps({"format": "float8_e4m3fn"}).encode()), dtype=torch.uint8)
            else:
                raise ValueError(f"fp8 must be None, 'plain', 'scaled' or 'comfy_quant', got {fp8!r}")
    if fp8 == "scaled":
        out[prefix + fp8mod.MARKER_KEY] = torch.empty(0, dtype=torch.float8_e4m3fn)
    return out
