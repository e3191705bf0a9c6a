"""ComfyUI single-file layouts (DiT, umT5, CLIP vision, VAE; bf16 / fp8 / fp8-scaled) -> official keys.

Stated tolerance for fp8 files (tiny random-weight DiT of the fixture, float32 compute):
rel L2 of the DiT output <= 0.10 against the official float32 weights (observed ~0.05-0.06);
bf16 files give exactly the output of the official weights rounded to bf16.
"""
from __future__ import annotations

import json

import pytest
import torch
import torch.nn.functional as F

from wan_animate.checkpoints import comfy_layout as cl
from wan_animate.checkpoints.load import load_into, read_safetensors
from wan_animate.errors import CheckpointError

NETS = {"dit": "dit_animate", "t5": "t5", "clip": "clip_visual", "vae": "vae"}


def _fixture_state(official_fixtures, net):
    state = read_safetensors(official_fixtures / NETS[net] / "weights.safetensors")
    return {k: v for k, v in state.items() if net != "clip" or k.startswith("visual.")}


def _r(*shape, seed=0):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed))


# ---- the key names ComfyUI files use (from ComfyUI's own loaders) ------------------------------
def test_t5_hf_names_and_gated_ffn_semantics():
    d, f = 8, 12
    hf = {"shared.weight": _r(30, d), "encoder.final_layer_norm.weight": _r(d, seed=1), "spiece_model":
          torch.tensor([1, 2, 3], dtype=torch.uint8)}
    for i in range(2):
        p = f"encoder.block.{i}."
        hf.update({p + f"layer.0.SelfAttention.{x}.weight": _r(d, d, seed=10 * i + j)
                   for j, x in enumerate("qkvo")})
        hf[p + "layer.0.SelfAttention.relative_attention_bias.weight"] = _r(32, 2, seed=5 + i)
        hf[p + "layer.0.layer_norm.weight"] = _r(d, seed=7 + i)
        hf[p + "layer.1.layer_norm.weight"] = _r(d, seed=9 + i)
        hf[p + "layer.1.DenseReluDense.wi_0.weight"] = _r(f, d, seed=11 + i)
        hf[p + "layer.1.DenseReluDense.wi_1.weight"] = _r(f, d, seed=13 + i)
        hf[p + "layer.1.DenseReluDense.wo.weight"] = _r(d, f, seed=15 + i)
    conv = cl.convert_state(hf, "umt5_xxl_fp16.safetensors", dtype=torch.float32)
    s = conv.state
    assert (conv.plan.network, conv.plan.layout) == ("t5", "hf") and "spiece_model" in conv.plan.dropped
    assert len(s) == 2 + 2 * 10
    assert s["token_embedding.weight"] is hf["shared.weight"] and s["norm.weight"] is hf[
        "encoder.final_layer_norm.weight"]
    assert s["blocks.1.attn.o.weight"] is hf["encoder.block.1.layer.0.SelfAttention.o.weight"]
    assert s["blocks.0.pos_embedding.embedding.weight"] is hf[
        "encoder.block.0.layer.0.SelfAttention.relative_attention_bias.weight"]
    assert s["blocks.1.norm2.weight"] is hf["encoder.block.1.layer.1.layer_norm.weight"]
    # ComfyUI/HF: wo(gelu_tanh(wi_0 x) * wi_1 x); official Wan: fc2(fc1(x) * gelu_tanh(gate(x)))
    x = _r(3, d, seed=99)
    p = "encoder.block.0.layer.1.DenseReluDense."
    theirs = F.linear(F.gelu(F.linear(x, hf[p + "wi_0.weight"]), approximate="tanh")
                      * F.linear(x, hf[p + "wi_1.weight"]), hf[p + "wo.weight"])
    ours = F.linear(F.linear(x, s["blocks.0.ffn.fc1.weight"])
                    * F.gelu(F.linear(x, s["blocks.0.ffn.gate.0.weight"]), approximate="tanh"),
                    s["blocks.0.ffn.fc2.weight"])
    assert torch.equal(theirs, ours)


def test_clip_vision_hf_names_and_tensor_ops():
    d, n = 6, 5
    hf = {"vision_model.embeddings.class_embedding": _r(d),
          "vision_model.embeddings.position_embedding.weight": _r(n, d, seed=1),
          "vision_model.embeddings.patch_embedding.weight": _r(d, 3, 2, 2, seed=2),
          "vision_model.embeddings.position_ids": torch.arange(n)[None],
          "vision_model.pre_layrnorm.weight": _r(d, seed=3), "vision_model.pre_layrnorm.bias": _r(d, seed=4),
          "vision_model.post_layernorm.weight": _r(d, seed=5), "vision_model.post_layernorm.bias": _r(d, seed=6),
          "visual_projection.weight": _r(4, d, seed=7)}
    p = "vision_model.encoder.layers.0."
    for j, name in enumerate(["layer_norm1", "layer_norm2"]):
        hf[p + name + ".weight"], hf[p + name + ".bias"] = _r(d, seed=10 + j), _r(d, seed=20 + j)
    for j, name in enumerate(["q_proj", "k_proj", "v_proj", "out_proj"]):
        hf[p + f"self_attn.{name}.weight"] = torch.full((d, d), float(j))
        hf[p + f"self_attn.{name}.bias"] = torch.full((d,), float(j))
    hf[p + "mlp.fc1.weight"], hf[p + "mlp.fc1.bias"] = _r(4 * d, d, seed=30), _r(4 * d, seed=31)
    hf[p + "mlp.fc2.weight"], hf[p + "mlp.fc2.bias"] = _r(d, 4 * d, seed=32), _r(d, seed=33)
    conv = cl.convert_state(hf, "clip_vision_h.safetensors", dtype=torch.float32)
    s = conv.state
    assert (conv.plan.network, conv.plan.layout) == ("clip", "hf")
    qkv = s["visual.transformer.0.attn.to_qkv.weight"]
    # the official attention splits to_qkv(x).view(b, s, 3, heads, hd): rows [q | k | v]
    assert qkv.shape == (3 * d, d) and [qkv[i * d, 0].item() for i in range(3)] == [0.0, 1.0, 2.0]
    assert s["visual.transformer.0.attn.to_qkv.bias"].tolist() == [0.0] * d + [1.0] * d + [2.0] * d
    assert torch.equal(s["visual.transformer.0.attn.proj.weight"], hf[p + "self_attn.out_proj.weight"])
    assert torch.equal(s["visual.head"], hf["visual_projection.weight"].t())           # x @ head
    assert s["visual.cls_embedding"].shape == (1, 1, d) and s["visual.pos_embedding"].shape == (1, n, d)
    assert torch.equal(s["visual.pre_norm.bias"], hf["vision_model.pre_layrnorm.bias"])
    assert torch.equal(s["visual.transformer.0.mlp.2.weight"], hf[p + "mlp.fc2.weight"])
    assert torch.equal(s["visual.transformer.0.norm2.weight"], hf[p + "layer_norm2.weight"])
    assert conv.plan.dropped == ("vision_model.embeddings.position_ids",)
    del hf[p + "self_attn.k_proj.bias"]
    with pytest.raises(CheckpointError, match="q, k and v"):
        cl.convert_state(hf, "clip.safetensors")


def test_clip_open_clip_layout_drops_the_text_tower(official_fixtures):
    state = _fixture_state(official_fixtures, "clip")
    oc = cl.export_comfy(state, "clip", dtype=torch.float32, prefix="visual.", clip_layout="open_clip")
    assert "visual.transformer.resblocks.0.attn.in_proj_weight" in oc and "visual.proj" in oc
    oc.update({"token_embedding.weight": torch.zeros(3, 2), "positional_embedding": torch.zeros(4, 2),
               "transformer.resblocks.0.attn.in_proj_weight": torch.zeros(6, 2), "logit_scale": torch.ones(())})
    conv = cl.convert_state(oc, "open_clip.bin", dtype=torch.float32)
    assert conv.plan.layout == "open_clip" and set(conv.state) == set(state)
    assert all(torch.equal(conv.state[k], state[k]) for k in state)
    assert "non-visual" in conv.warnings[0]


# ---- detection and errors ----------------------------------------------------------------------
_DIT = ["blocks.0.self_attn.q.weight", "patch_embedding.weight", "face_adapter.fuser_blocks.0.linear2.weight"]


@pytest.mark.parametrize("keys,expect,want", [
    (_DIT, None, ("dit", "native", "")),
    (["model.diffusion_model." + k for k in _DIT], None, ("dit", "native", "model.diffusion_model.")),
    (["diffusion_model." + k for k in _DIT] + ["diffusion_model.scaled_fp8"], None,
     ("dit", "native", "diffusion_model.")),
    (["encoder.block.0.layer.0.SelfAttention.q.weight", "shared.weight"], None, ("t5", "hf", "")),
    (["blocks.0.attn.q.weight", "token_embedding.weight"], None, ("t5", "native", "")),
    (["visual.transformer.0.attn.to_qkv.weight", "textual.blocks.0.attn.q.weight",
      "textual.token_embedding.weight"], None, ("clip", "native", "")),
    (["decoder.middle.0.residual.0.gamma", "conv1.weight"], None, ("vae", "native", "")),
    (["first_stage_model.decoder.middle.0.residual.0.gamma"], None, ("vae", "native", "first_stage_model.")),
    (_DIT + ["decoder.middle.0.residual.0.gamma"], "vae", ("vae", "native", "")),
])
def test_detect_layout(keys, expect, want):
    assert cl.detect_layout(keys, "f", expect) == want


@pytest.mark.parametrize("keys,expect,match", [
    (["blocks.0.attn1.to_q.weight", "condition_embedder.time_proj.weight"], None, "diffusers"),
    (["decoder.mid_block.resnets.0.norm1.gamma", "post_quant_conv.weight"], None, "diffusers"),
    (["blocks.0.self_attn.q.weight", "patch_embedding.weight"], None, "not Wan2.2-Animate"),
    (_DIT, "t5", "expected a t5 checkpoint but found dit"),
    (_DIT + ["decoder.middle.0.residual.0.gamma"], None, "several networks"),
    (["some.random.weight"], None, "not a Wan DiT"),
])
def test_detect_layout_errors(keys, expect, match):
    with pytest.raises(CheckpointError, match=match):
        cl.detect_layout(keys, "wan_model.safetensors", expect)


def test_unknown_and_stray_keys_name_file_and_key():
    t5 = {"encoder.block.0.layer.0.SelfAttention.q.weight": torch.zeros(2, 2),
          "encoder.block.0.layer.0.SelfAttention.qq.weight": torch.zeros(2, 2)}
    with pytest.raises(CheckpointError, match=r"umt5\.safetensors.*SelfAttention\.qq\.weight"):
        cl.convert_state(t5, "umt5.safetensors")
    dit = {"model.diffusion_model." + k: torch.zeros(1) for k in _DIT}
    dit["cond_stage_model.x.weight"] = torch.zeros(1)
    with pytest.raises(CheckpointError, match=r"outside the dit prefix.*cond_stage_model"):
        cl.convert_state(dit, "ckpt.safetensors")
    assert set(cl.convert_state(dit, "ckpt.safetensors", expect="dit").state) == set(_DIT)
    with pytest.raises(CheckpointError, match="GGUF"):
        cl.read_single_file("wan2.2_animate_Q4_K_M.gguf")


# ---- round trips over the fixtures and the full-size key sets ----------------------------------
@pytest.mark.parametrize("net", list(NETS))
@pytest.mark.parametrize("mode", [None, "plain", "scaled", "comfy_quant"])
def test_round_trip_every_layout(official_fixtures, net, mode):
    state = _fixture_state(official_fixtures, net)
    prefix = "model.diffusion_model." if net == "dit" else ""
    conv = cl.convert_state(cl.export_comfy(state, net, fp8=mode, prefix=prefix), f"{net}.sft",
                            dtype=torch.float32)
    assert set(conv.state) == set(state)
    for k, ref in state.items():
        got = conv.state[k]
        assert got.shape == ref.shape, k
        if mode is None or got.dtype == torch.bfloat16:
            assert torch.equal(got.float(), ref.to(torch.bfloat16).float()), k
        else:
            assert ((got - ref).norm() / ref.norm()).item() < 0.06, k
    quantized = conv.fp8.dequantized
    assert (quantized > 0) == (mode is not None and net != "vae")


@pytest.mark.parametrize("net", list(NETS))
def test_full_size_key_sets_on_meta(official_fixtures, net):
    spec = json.loads((official_fixtures / NETS[net] / "full_size_key_shapes.json").read_text())["keys"]
    state = {k: torch.empty(v["shape"], device="meta") for k, v in spec.items()
             if net != "clip" or k.startswith("visual.")}
    comfy = cl.export_comfy(state, net)
    conv = cl.convert_state(comfy, "full.safetensors", expect=net)
    assert {k: tuple(v.shape) for k, v in conv.state.items()} == {k: tuple(v.shape) for k, v in state.items()}
    if net == "t5":
        assert len(comfy) == 242 and "encoder.block.23.layer.1.DenseReluDense.wo.weight" in comfy
        assert comfy["shared.weight"].shape == (256384, 4096)
    if net == "clip":
        assert comfy["visual_projection.weight"].shape == (1024, 1280)
        assert comfy["vision_model.encoder.layers.31.self_attn.q_proj.weight"].shape == (1280, 1280)
        assert comfy["vision_model.embeddings.position_embedding.weight"].shape == (257, 1280)
    if net == "dit":
        assert len(comfy) == 1441


def test_read_single_file_lazily_and_refuse_corrupt(official_fixtures, tmp_path):
    from safetensors.torch import save_file

    state = _fixture_state(official_fixtures, "dit")
    path = tmp_path / "wan2.2_animate_14B_fp8_scaled.safetensors"
    save_file(cl.export_comfy(state, "dit", fp8="scaled", prefix="model.diffusion_model."), str(path))
    sub = cl.read_single_file(path, keep=lambda k: k.startswith("blocks.1."), dtype=torch.float32)
    assert set(sub.state) == {k for k in state if k.startswith("blocks.1.")}
    assert sub.plan.fp8.kind == "scaled" and sub.plan.source == str(path)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="corrupt or incomplete"):
        cl.read_single_file(path)
    pth = tmp_path / "models_t5_umt5-xxl-enc-bf16.pth"
    t5 = _fixture_state(official_fixtures, "t5")
    torch.save(t5, pth)
    conv = cl.read_single_file(pth, expect="t5")
    assert conv.plan.layout == "native" and all(torch.equal(conv.state[k], t5[k]) for k in t5)


# ---- the models on converted weights -----------------------------------------------------------
def _dit_runner(official_fixtures):
    from wan_animate.models.config import DiTConfig
    from wan_animate.models.dit import AnimateDiT
    from wan_animate.parity.common import read_config
    from wan_animate.parity.dit_animate import dit_inputs

    folder = official_fixtures / "dit_animate"
    cfg = read_config(folder)
    dcfg = DiTConfig.from_dict(cfg["constructor"], cfg.get("hardcoded_overrides", {}))
    io = read_safetensors(folder / "io.safetensors")
    inputs = dit_inputs(io)

    @torch.no_grad()
    def run(state):
        with torch.device("meta"):
            model = AnimateDiT(dcfg)
        load_into(model, state, "converted", dtype=torch.float32)
        return model.eval()(t=io["t_0"], **inputs)[0]
    return run, io


def test_dit_output_for_each_comfy_layout(official_fixtures):
    run, io = _dit_runner(official_fixtures)
    state = _fixture_state(official_fixtures, "dit")
    ref = run(state)
    assert ((ref - io["out_0"]).norm() / io["out_0"].norm()).item() < 1e-5
    ref_bf16 = run({k: v.to(torch.bfloat16).float() for k, v in state.items()})

    def rel(out):
        return ((out - ref).norm() / ref.norm()).item()

    bf16 = cl.convert_state(cl.export_comfy(state, "dit", prefix="model.diffusion_model."), "bf16",
                            dtype=torch.float32)
    assert torch.equal(run(bf16.state), ref_bf16)
    errors = {}
    for mode in ("plain", "scaled", "comfy_quant"):
        conv = cl.convert_state(cl.export_comfy(state, "dit", fp8=mode), mode, dtype=torch.float32)
        errors[mode] = rel(run(conv.state))
        assert any("Faces may degrade" in w for w in conv.warnings)
    assert all(0 < e <= 0.10 for e in errors.values()), errors
    assert errors["scaled"] == errors["comfy_quant"]
    safe = cl.convert_state(cl.export_comfy(state, "dit", fp8="scaled", per_channel=True,
                                            quantize_protected=False), "kj", dtype=torch.float32)
    assert not safe.warnings and rel(run(safe.state)) <= errors["scaled"]


def test_t5_from_a_comfy_file_matches_the_fixture(official_fixtures):
    from wan_animate.models.t5 import T5Config, T5Encoder

    folder = official_fixtures / "t5"
    cfg = json.loads((folder / "config.json").read_text())
    state = _fixture_state(official_fixtures, "t5")
    conv = cl.convert_state(cl.export_comfy(state, "t5", dtype=torch.float32), "umt5.safetensors",
                            dtype=torch.float32)
    with torch.device("meta"):
        model = T5Encoder(T5Config.from_constructor(cfg["constructor"]))
    load_into(model, conv.state, "umt5.safetensors", dtype=torch.float32)
    io = read_safetensors(folder / "io.safetensors")
    with torch.no_grad():
        hidden = model.eval()(io["ids"], io["mask"])
    ref = io["hidden_states"]
    assert ((hidden - ref).norm() / ref.norm()).item() < 1e-5
