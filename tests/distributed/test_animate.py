"""The Animate model on a real 2-rank gloo pool: equals one process, cancels, reuses weights."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch

from wan_animate.checkpoints.tiny import write_tiny_checkpoint
from wan_animate.cli.demo_media import write_preprocessed
from wan_animate.distributed.animate import layout_for
from wan_animate.distributed.pool import WorkerPool
from wan_animate.engine import ModelSpec, load_model, unload_all
from wan_animate.errors import Cancelled, ParallelConfigError
from wan_animate.parity import distributed as parity_distributed
from wan_animate.sampling.folder import read_preprocessed
from wan_animate.sampling.options import SampleOptions


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory) -> Path:
    return write_tiny_checkpoint(tmp_path_factory.mktemp("c") / "tiny")


@pytest.fixture(scope="module")
def single(ckpt):
    model = load_model(ModelSpec(str(ckpt), device="cpu", dtype="fp32", use_relighting_lora=True))
    yield model
    unload_all()


def test_layout_for():
    assert layout_for(8, 40) == (2, 4) and layout_for(5, 40) == (1, 5)
    assert layout_for(2, 3) == (2, 1) and layout_for(3, 3) == (1, 3) and layout_for(1, 40) == (1, 1)
    with pytest.raises(ParallelConfigError, match=r"4 GPUs cannot split the DiT's 3 attention heads.*\[1, 3\]"):
        layout_for(4, 3)


def test_cfg_parallel_equals_one_process(ckpt, single, tmp_path):
    inputs = read_preprocessed(write_preprocessed(tmp_path / "g", 5, 48, 48), False)
    opts = SampleOptions(frame_num=5, steps=2, seed=9, guide_scale=2.5)
    ref = single.decode(single.sample(inputs, opts))
    pooled = load_model(ModelSpec(str(ckpt), gpus=2, device="cpu", dtype="fp32",
                                  use_relighting_lora=True))
    out = pooled.decode(pooled.sample(inputs, opts))
    torch.testing.assert_close(out, ref, atol=1e-4, rtol=1e-4)


def test_pool_of_two_equals_one_process_with_padding(ckpt, single, tmp_path):
    # 48x48 -> 3x3 tokens per latent frame x 3 frames = 27 tokens: Ulysses pads to 28
    inputs = read_preprocessed(write_preprocessed(tmp_path / "s", 9, 48, 48, replace=True), True)
    opts = SampleOptions(mode="replace", frame_num=5, steps=2, seed=5)
    ref = single.decode(single.sample(inputs, opts))
    pooled = load_model(ModelSpec(str(ckpt), gpus=2, device="cpu", dtype="fp32",
                                  use_relighting_lora=True))
    events = []
    latent = pooled.sample(inputs, opts, on_step=events.append)
    out = pooled.decode(latent)
    assert out.shape == ref.shape == (3, 9, 48, 48)
    torch.testing.assert_close(out, ref, atol=1e-4, rtol=1e-4)
    assert [(e.clip, e.step) for e in events] == [(1, 1), (1, 2), (2, 1), (2, 2)]
    pool = WorkerPool.get(pooled.pool_spec())
    starts = pool.starts
    # cancel mid-job, then the same pool (weights loaded once) runs the next job
    seen = []
    with pytest.raises(Cancelled):
        pooled.sample(inputs, SampleOptions(mode="replace", frame_num=5, steps=4, seed=5),
                      on_step=seen.append, cancelled=lambda: len(seen) >= 1)
    assert len(seen) <= 2
    again = pooled.decode(pooled.sample(inputs, opts))
    torch.testing.assert_close(again, out, atol=0, rtol=0)
    assert pool.starts == starts and pool.alive
    pooled.close()
    assert not pool.alive


def test_gpu_count_must_divide_heads(ckpt):
    with pytest.raises(ParallelConfigError, match=r"divides 2: \[1, 2\]"):
        load_model(ModelSpec(str(ckpt), gpus=3, device="cpu"))


def test_parity_world_size_three(official_fixtures):
    results = parity_distributed.run(official_fixtures / "dit_animate", 3)
    assert results and all(r.passed for r in results), [r.line() for r in results]


def test_user_lora_same_on_pool_and_in_process(ckpt, tmp_path):
    """A kohya-format LoRA merged in-process equals the same LoRA merged into the pool's shards."""
    from safetensors.torch import save_file

    g = torch.Generator().manual_seed(0)
    lora = {}
    for i in range(2):
        for lin, (din, dout) in {"self_attn_q": (32, 32), "ffn_0": (32, 64)}.items():
            name = f"lora_unet_blocks_{i}_{lin}"
            lora[f"{name}.lora_down.weight"] = torch.randn(4, din, generator=g) * 0.3
            lora[f"{name}.lora_up.weight"] = torch.randn(dout, 4, generator=g) * 0.3
            lora[f"{name}.alpha"] = torch.tensor(4.0)
    save_file(lora, str(tmp_path / "style.safetensors"))
    inputs = read_preprocessed(write_preprocessed(tmp_path / "l", 5, 32, 48), False)
    opts = SampleOptions(frame_num=5, steps=2, seed=4)
    spec = dict(device="cpu", dtype="fp32", loras=((str(tmp_path / "style.safetensors"), 0.8),))
    one = load_model(ModelSpec(str(ckpt), **spec))
    ref = one.decode(one.sample(inputs, opts))
    base = load_model(ModelSpec(str(ckpt), device="cpu", dtype="fp32"))
    assert not torch.allclose(base.decode(base.sample(inputs, opts)), ref, atol=1e-3)
    two = load_model(ModelSpec(str(ckpt), gpus=2, **spec))
    torch.testing.assert_close(two.decode(two.sample(inputs, opts)), ref, atol=1e-4, rtol=1e-4)
    unload_all()


def test_vae_split_over_the_pool_equals_whole(ckpt, tmp_path):
    """vae "auto" on 2 ranks splits the VAE by rows; "whole" keeps it on rank 0: same video
    (two clips: the first one's decode conditions the second)."""
    inputs = read_preprocessed(write_preprocessed(tmp_path / "v", 9, 80, 48), False)
    opts = SampleOptions(frame_num=5, steps=1, seed=3)
    outs = {}
    for vae in ("auto", "whole"):
        model = load_model(ModelSpec(str(ckpt), gpus=2, device="cpu", dtype="fp32", vae=vae))
        assert ("VAE split by rows over 2 GPUs" in model.describe()) == (vae == "auto")
        outs[vae] = model.decode(model.sample(inputs, opts))
        model.close()
    assert (outs["auto"] - outs["whole"]).abs().max() <= 1e-5
