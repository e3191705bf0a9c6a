"""One placement for every GPU count: each loader option gives the same video on one rank in
this process and on a 2-rank pool (gloo, tiny weights), or is refused up front by name."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch

from wan_animate.checkpoints.tiny import write_tiny_checkpoint
from wan_animate.engine import ModelSpec, load_model, unload_all
from wan_animate.errors import InputError
from wan_animate.placement import Placement
from wan_animate.sampling.options import SampleOptions


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory) -> Path:
    return write_tiny_checkpoint(tmp_path_factory.mktemp("c") / "tiny")


@pytest.fixture(scope="module")
def inputs():
    from wan_animate.cli.demo_media import face_frames, pose_frames, reference_image
    from wan_animate.sampling.options import AnimateInputs
    return AnimateInputs(pose=pose_frames(5, 48, 48), face=face_frames(5),
                         reference=reference_image(40, 48), fps=16)


def test_defaults_park_the_encoders_on_cuda_only() -> None:
    gpu = Placement.resolve(device_type="cuda", gpus=2, pooled=True)
    assert (gpu.t5, gpu.clip, gpu.ranks, gpu.compile) == ("parked", "parked", 2, True)
    one = Placement.resolve(device_type="cuda", gpus=1, pooled=False, t5_cpu=True)
    assert (one.t5, one.clip, one.compile) == ("cpu", "parked", True)
    assert Placement.resolve(device_type="cuda", gpus=1, pooled=False, encoders="gpu").t5 == "gpu"
    cpu = Placement.resolve(device_type="cpu", gpus=1, pooled=False)
    assert (cpu.t5, cpu.clip, cpu.compile) == ("gpu", "gpu", False)    # nothing to park on a CPU
    assert "umT5 parked" in gpu.describe() and "sharded over 2 GPU(s)" in gpu.describe()


@pytest.mark.parametrize("kw,match", [
    ({"swap_blocks": 4, "fsdp": False}, "it needs fsdp on"),
    ({"mode": "fast"}, "mode 'fast'"),
    ({"encoders": "host"}, "encoders must be auto, gpu or parked"),
    ({"swap_blocks": 41}, "swap_blocks must be between 0 and 40"),
    ({"vae": "bands"}, "on several GPUs use vae 'split'"),
    ({"vae": "tiled"}, "vae must be one of auto, whole, split, bands"),
])
def test_pool_refusals_name_the_option(ckpt, kw, match) -> None:
    with pytest.raises(InputError, match=match):
        ModelSpec(str(ckpt), device="cpu", gpus=2, **kw).validate()


OPTIONS = [
    pytest.param({}, id="defaults"),
    pytest.param({"dtype": "bf16"}, id="dtype-bf16"),     # reaches umT5 on both paths
    pytest.param({"t5_cpu": True}, id="t5_cpu"),
    pytest.param({"attention": "math"}, id="attention-math"),
    pytest.param({"use_relighting_lora": True}, id="relighting"),
    pytest.param({"compile": "off", "encoders": "gpu"}, id="compile-off-encoders-gpu"),
    pytest.param({"swap_blocks": 1}, id="swap_blocks"),       # BlockSwap / FSDP2 CPU offload
    pytest.param({"compile": "on"}, id="compile-on"),         # each block's forward, before FSDP2
    pytest.param({"fsdp": False}, id="fsdp-off"),
    pytest.param({"vae": "whole"}, id="vae-whole"),          # default on 2 ranks: split by rows
]


@pytest.mark.parametrize("kw", OPTIONS)
def test_each_option_gives_the_same_video_at_1_and_2_ranks(ckpt, inputs, kw) -> None:
    opts = SampleOptions(frame_num=5, steps=2, seed=11)
    videos = []
    try:
        for gpus in (1, 2):
            model = load_model(ModelSpec(str(ckpt), device="cpu", gpus=gpus, **kw))
            videos.append(model.decode(model.sample(inputs, opts)))
            unload_all()
    finally:
        unload_all()
    a, b = videos
    assert a.shape == b.shape
    # fp32 on the CPU: equal up to the order of sums; bf16: up to bf16 rounding
    tol = 2e-2 if kw.get("dtype") == "bf16" else 1e-4
    assert float((a - b).abs().max()) < tol


def test_dtype_reaches_umt5_on_the_pool(ckpt) -> None:
    from wan_animate.sampling.jobs import PoolModelConfig
    from wan_animate.placement import precision
    pl = ModelSpec(str(ckpt), device="cpu", gpus=2, dtype="bf16").placement()
    cfg = PoolModelConfig(str(ckpt), pl)
    assert precision(cfg.placement).t5 == torch.bfloat16


def test_repeated_prompt_and_reference_are_encoded_once(ckpt, inputs) -> None:
    opts = SampleOptions(frame_num=5, steps=1, seed=2)
    try:
        model = load_model(ModelSpec(str(ckpt), device="cpu"))
        bundle = model._models()
        calls = {"t5": 0, "clip": 0}
        bundle.t5.register_forward_hook(lambda *_: calls.__setitem__("t5", calls["t5"] + 1))
        bundle.clip.register_forward_hook(lambda *_: calls.__setitem__("clip", calls["clip"] + 1))
        first = model.sample(inputs, opts)
        assert calls == {"t5": 1, "clip": 1}
        again = model.sample(inputs, opts)
        assert calls == {"t5": 1, "clip": 1}                   # both remembered
        torch.testing.assert_close(again.pending, first.pending, atol=0, rtol=0)
        model.sample(inputs, SampleOptions(frame_num=5, steps=1, seed=2, prompt="a dancer"))
        assert calls == {"t5": 2, "clip": 1}                   # a new prompt: one new encode
    finally:
        unload_all()


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_parked_encoders_give_the_resident_video_on_cuda(ckpt, inputs) -> None:
    """Parked umT5/CLIP (the CUDA default) == resident ones, in process and on a pool of one."""
    opts = SampleOptions(frame_num=5, steps=2, seed=5)
    videos = {}
    try:
        for label, kw in (("resident", {"encoders": "gpu"}), ("parked", {}),
                          ("pool-parked", {"use_pool": True})):
            model = load_model(ModelSpec(str(ckpt), device="cuda", compile="off", **kw))
            videos[label] = model.decode(model.sample(inputs, opts))
            if label == "parked":
                bundle = model._models()
                assert all(p.device.type == "cpu" for p in bundle.t5.parameters())
                assert set(bundle.parked) == {"t5", "clip"}
            unload_all()
    finally:
        unload_all()
    torch.testing.assert_close(videos["parked"], videos["resident"], atol=0, rtol=0)
    torch.testing.assert_close(videos["pool-parked"], videos["resident"], atol=0, rtol=0)


def test_vae_bands_on_one_gpu_give_the_whole_vae_video(ckpt, inputs) -> None:
    opts = SampleOptions(frame_num=5, steps=1, seed=4)
    videos = {}
    try:
        for vae in ("whole", "bands"):
            model = load_model(ModelSpec(str(ckpt), device="cpu", vae=vae))
            assert ("VAE in 8 bands of rows" in model.describe()) == (vae == "bands")
            videos[vae] = model.decode(model.sample(inputs, opts))
            unload_all()
    finally:
        unload_all()
    assert float((videos["whole"] - videos["bands"]).abs().max()) <= 1e-5
