"""LoRA formats (PEFT, PEFT with base_model.model., ComfyUI/lightx2v, kohya, diffusers) -> official
module paths; merged weights and DiT outputs equal a merge done by hand; the relighting fixture."""
from __future__ import annotations

import json

import pytest
import torch

from wan_animate.checkpoints.load import load_into, read_safetensors
from wan_animate.checkpoints.lora_formats import diffusers_name, merge_loras, normalize_lora, read_lora
from wan_animate.errors import CheckpointError

RANK = 3
TARGETS = ["blocks.0.self_attn.q", "blocks.1.cross_attn.k_img", "blocks.2.ffn.2", "blocks.0.cross_attn.o",
           "img_emb.proj.1", "head.head", "text_embedding.0", "patch_embedding"]
# written from diffusers' Wan conversion table, independently of the module under test
DIFFUSERS = {"blocks.0.self_attn.q": "blocks.0.attn1.to_q", "blocks.1.cross_attn.k_img": "blocks.1.attn2.add_k_proj",
             "blocks.2.ffn.2": "blocks.2.ffn.net.2", "blocks.0.cross_attn.o": "blocks.0.attn2.to_out.0",
             "img_emb.proj.1": "condition_embedder.image_embedder.ff.net.0.proj", "head.head": "proj_out",
             "text_embedding.0": "condition_embedder.text_embedder.linear_1", "patch_embedding": "patch_embedding",
             "blocks.0.norm3": "blocks.0.norm2", "blocks.1.self_attn.norm_q": "blocks.1.attn1.norm_q"}
DIFFS = {"blocks.0.norm3.weight": ("blocks.0.norm3", "diff"), "blocks.0.cross_attn.k.bias": (
    "blocks.0.cross_attn.k", "diff_b"), "blocks.1.self_attn.norm_q.weight": ("blocks.1.self_attn.norm_q", "diff")}


@pytest.fixture(scope="module")
def base(official_fixtures):
    return read_safetensors(official_fixtures / "dit_animate" / "weights.safetensors")


@pytest.fixture(scope="module")
def canon(base):
    """module -> (A [r, in, *k], B [out, r, *1], alpha); param key -> diff."""
    g = torch.Generator().manual_seed(7)
    pairs = {}
    for i, m in enumerate(TARGETS):
        w = base[m + ".weight"]
        a = torch.randn(RANK, *w.shape[1:], generator=g) / 4
        b = torch.randn(w.shape[0], RANK, *([1] * (w.dim() - 2)), generator=g) / 4
        pairs[m] = (a, b, float(RANK * (1 + i % 3)))
    diffs = {k: torch.randn(base[k].shape, generator=g) / 10 for k in DIFFS}
    diffs["blocks.0.modulation"] = torch.randn(base["blocks.0.modulation"].shape, generator=g) / 10
    return pairs, diffs


def _export(canon, fmt):
    """The canonical LoRA written in ``fmt`` (test-side writers, from each format's key scheme)."""
    pairs, diffs = canon
    out = {}
    for m, (a, b, alpha) in pairs.items():
        if fmt == "peft":
            out.update({f"{m}.lora_A.weight": a, f"{m}.lora_B.weight": b, f"{m}.alpha": torch.tensor(alpha)})
        elif fmt == "peft_prefixed":
            p = f"base_model.model.{m}"
            out.update({f"{p}.lora_A.default.weight": a, f"{p}.lora_B.default.weight": b,
                        f"{p}.alpha": torch.tensor(alpha)})
        elif fmt == "comfy":
            p = f"diffusion_model.{m}"
            out.update({f"{p}.lora_down.weight": a, f"{p}.lora_up.weight": b, f"{p}.alpha": torch.tensor(alpha)})
        elif fmt == "kohya":
            p = "lora_unet_" + m.replace(".", "_")
            out.update({f"{p}.lora_down.weight": a, f"{p}.lora_up.weight": b, f"{p}.alpha": torch.tensor(alpha)})
        elif fmt == "diffusers":
            p = f"transformer.{DIFFUSERS[m]}"
            out.update({f"{p}.lora_A.weight": a, f"{p}.lora_B.weight": b, f"{p}.alpha": torch.tensor(alpha)})
    for key, d in diffs.items():
        mod, role = DIFFS.get(key, ("blocks.0", "diff_m"))
        name = {"peft": mod, "peft_prefixed": f"base_model.model.{mod}", "comfy": f"diffusion_model.{mod}",
                "kohya": "lora_unet_" + mod.replace(".", "_"),
                "diffusers": f"transformer.{DIFFUSERS.get(mod, mod)}"}[fmt]
        out[f"{name}.{role}"] = d
    return out


def _hand_merge(base, canon, strength):
    pairs, diffs = canon
    out = dict(base)
    for m, (a, b, alpha) in pairs.items():
        w = base[m + ".weight"]
        delta = (b.reshape(b.shape[0], -1) @ a.reshape(RANK, -1)).reshape(w.shape) * (alpha / RANK)
        out[m + ".weight"] = (w.float() + strength * delta).to(w.dtype)
    for k, d in diffs.items():
        out[k] = (base[k].float() + strength * d).to(base[k].dtype)
    return out


FORMATS = ["peft", "peft_prefixed", "comfy", "kohya", "diffusers"]


@pytest.mark.parametrize("fmt", FORMATS)
def test_every_format_normalizes_to_official_paths(base, canon, fmt):
    pairs, diffs = canon
    lf = normalize_lora(_export(canon, fmt), base.keys(), f"lora-{fmt}.safetensors")
    assert lf.format == {"peft_prefixed": "peft"}.get(fmt, fmt)
    assert set(lf.modules) == set(TARGETS) and set(lf.diffs) == set(diffs)
    for m, (a, b, alpha) in pairs.items():
        assert lf.state[m + ".lora_A.weight"] is a and lf.state[m + ".lora_B.weight"] is b
        assert lf.scale(m) == alpha / RANK
    assert set(lf.touched) == {m + ".weight" for m in TARGETS} | set(diffs)


@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("strength", [1.0, 0.35])
def test_merge_equals_merging_by_hand(base, canon, fmt, strength):
    lf = normalize_lora(_export(canon, fmt), base.keys(), fmt)
    merged = merge_loras(base, [(lf, strength)])
    hand = _hand_merge(base, canon, strength)
    assert merged.keys() == base.keys()
    for k in base:
        assert torch.equal(merged[k], hand[k]), k
        if k not in lf.touched:
            assert merged[k] is base[k]


def test_several_loras_and_partial_shards(base, canon):
    a = normalize_lora(_export(canon, "comfy"), base.keys(), "a")
    b = normalize_lora(_export(canon, "kohya"), base.keys(), "b")
    merged = merge_loras(base, [(a, 1.0), (b, -0.5)])
    k = "blocks.0.self_attn.q.weight"
    d = a.delta("blocks.0.self_attn.q", base[k].shape)
    assert torch.equal(merged[k], base[k] + d - 0.5 * d)
    shard = {key: v for key, v in base.items() if key.startswith("blocks.1.")}
    part = merge_loras(shard, [(a, 1.0)], partial=True)
    key = "blocks.1.cross_attn.k_img.weight"
    assert torch.equal(part[key], merge_loras(base, [(a, 1.0)])[key])
    with pytest.raises(CheckpointError, match="the state has no"):
        merge_loras(shard, [(a, 1.0)])


def _run_dit(official_fixtures, state):
    from wan_animate.models.config import DiTConfig
    from wan_animate.models.dit import AnimateDiT
    from wan_animate.parity.common import read_config
    from wan_animate.parity.dit_animate import dit_inputs

    folder = official_fixtures / "dit_animate"
    cfg = read_config(folder)
    io = read_safetensors(folder / "io.safetensors")
    with torch.device("meta"):
        model = AnimateDiT(DiTConfig.from_dict(cfg["constructor"], cfg.get("hardcoded_overrides", {})))
    load_into(model, state, "merged", dtype=torch.float32)
    with torch.no_grad():
        return model.eval()(t=io["t_0"], **dit_inputs(io))[0], model, io


def test_dit_output_changes_exactly_as_the_hand_merge(official_fixtures, base, canon):
    lf = normalize_lora(_export(canon, "diffusers"), base.keys(), "diffusers")
    out, _, io = _run_dit(official_fixtures, merge_loras(base, [(lf, 0.7)]))
    hand, _, _ = _run_dit(official_fixtures, _hand_merge(base, canon, 0.7))
    assert torch.equal(out, hand)
    ref = io["out_0"]
    assert ((out - ref).norm() / ref.norm()).item() > 1e-2              # the LoRA does change it


def test_relighting_fixture_in_every_wrapper(official_fixtures, base, tmp_path):
    from wan_animate.models import lora as model_lora

    folder = official_fixtures / "relighting_lora"
    cfg = json.loads((folder / "config.json").read_text())
    raw = read_safetensors(folder / "weights.safetensors")
    plain = read_lora(folder / "weights.safetensors", base.keys())
    assert plain.format == "peft" and list(plain.modules) == sorted(cfg["target_modules"])
    assert all(plain.scale(m) == cfg["scaling"] for m in plain.modules)
    ckpt = tmp_path / "relighting_lora.ckpt"
    torch.save({"state_dict": {"base_model.model." + k: v for k, v in raw.items()}}, ckpt)
    wrapped = read_lora(ckpt, base.keys())
    assert wrapped.modules == plain.modules
    out, _, _ = _run_dit(official_fixtures, merge_loras(base, [(wrapped, 1.0)]))
    ref = read_safetensors(folder / "io.safetensors")["out_lora_0"]
    assert (out - ref).abs().max().item() <= 1e-4 and ((out - ref).norm() / ref.norm()).item() <= 1e-5
    # the canonical state feeds models.lora (unmerged path) with the same result
    _, model, io = _run_dit(official_fixtures, base)
    from wan_animate.parity.dit_animate import dit_inputs
    model_lora.apply_lora(model, model_lora.normalize_lora_state(wrapped.state, "relight"), "relight",
                          merge=False)
    with torch.no_grad():
        unmerged = model(t=io["t_0"], **dit_inputs(io))[0]
    assert (unmerged - out).abs().max().item() <= 1e-4


def test_peft_folder_alpha_from_adapter_config(base, canon, tmp_path):
    from safetensors.torch import save_file

    pairs, _ = canon
    state = {f"base_model.model.{m}.lora_{ab}.weight": t.contiguous()
             for m, (a, b, _) in pairs.items() for ab, t in (("A", a), ("B", b))}
    save_file(state, str(tmp_path / "adapter_model.safetensors"))
    (tmp_path / "adapter_config.json").write_text(json.dumps(
        {"r": RANK, "lora_alpha": 6, "alpha_pattern": {"head.head": 1.5}}))
    lf = read_lora(tmp_path, base.keys())
    assert lf.scale("blocks.0.self_attn.q") == 2.0 and lf.scale("head.head") == 0.5
    no_cfg = normalize_lora(state, base.keys())
    assert no_cfg.scale("blocks.0.self_attn.q") == 1.0                   # missing alpha = rank


def test_lora_b_bias_becomes_a_scaled_bias_delta(base, canon):
    pairs, _ = canon
    a, b, _ = pairs["blocks.0.self_attn.q"]
    bias = torch.ones(b.shape[0])
    lf = normalize_lora({"blocks.0.self_attn.q.lora_A.weight": a, "blocks.0.self_attn.q.lora_B.weight": b,
                         "blocks.0.self_attn.q.lora_B.bias": bias, "blocks.0.self_attn.q.alpha": torch.tensor(6.0)},
                        base.keys())
    assert torch.equal(lf.diffs["blocks.0.self_attn.q.bias"], bias * 2.0)


def test_errors_name_file_and_key(base, canon):
    pairs, _ = canon
    a, b, _ = pairs["blocks.0.self_attn.q"]
    other = {"diffusion_model.double_blocks.0.img_attn.qkv.lora_down.weight": a,
             "diffusion_model.double_blocks.0.img_attn.qkv.lora_up.weight": b}
    with pytest.raises(CheckpointError, match=r"flux\.safetensors.*double_blocks\.0\.img_attn\.qkv"):
        normalize_lora(other, base.keys(), "flux.safetensors")
    with pytest.raises(CheckpointError, match="touches 0 DiT modules"):
        normalize_lora(other, base.keys(), "flux.safetensors", allow_unmatched=True)
    mixed = dict(other, **{"blocks.0.self_attn.q.lora_A.weight": a, "blocks.0.self_attn.q.lora_B.weight": b})
    lf = normalize_lora(mixed, base.keys(), "mixed", allow_unmatched=True)
    assert lf.modules == ("blocks.0.self_attn.q",) and len(lf.unmatched) == 2
    with pytest.raises(CheckpointError, match="without its partner"):
        normalize_lora({"blocks.0.self_attn.q.lora_A.weight": a}, base.keys(), "half")
    with pytest.raises(CheckpointError, match="does not match lora_A"):
        normalize_lora({"blocks.0.self_attn.q.lora_A.weight": a,
                        "blocks.0.self_attn.q.lora_B.weight": b[:, :2]}, base.keys(), "rank")
    with pytest.raises(CheckpointError, match="LoKr/LoHa"):
        normalize_lora({"lora_unet_blocks_0_self_attn_q.lokr_w1": a}, base.keys(), "lokr")
    with pytest.raises(CheckpointError, match="not a LoRA key"):
        normalize_lora({"blocks.0.self_attn.q.weight": a}, base.keys(), "full")
    assert diffusers_name("blocks.7.cross_attn.v_img") == "blocks.7.attn2.add_v_proj"
    assert diffusers_name("face_adapter.fuser_blocks.0.linear2") is None
