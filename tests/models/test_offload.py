"""Block swap: same output as the resident model, weights back on the host after each block."""
from __future__ import annotations

import pytest
import torch

from wan_animate.checkpoints.load import read_safetensors
from wan_animate.models.fp8 import Fp8Linear, quantize_dit
from wan_animate.models.offload import BlockSwap, parked_on_host, place_with_swap
from wan_animate.parity.dit_animate import build_dit, dit_inputs, timestep_keys


def _call(model, folder):
    io = read_safetensors(folder / "io.safetensors")
    with torch.no_grad():
        return model(t=io[timestep_keys(io)[0]], **dit_inputs(io))


@pytest.fixture
def folder(official_fixtures):
    return official_fixtures / "dit_animate"


def test_block_swap_gives_the_same_output_and_puts_weights_back(folder):
    model, _ = build_dit(folder)
    ref = _call(model, folder)
    n = len(model.blocks)
    swap = BlockSwap(model.blocks, n - 1, "cpu")
    assert swap.swapped == list(range(1, n)) and swap.host_bytes() > 0
    seen = []

    def runner(i, block, *args):
        seen.append(i)
        return swap(i, block, *args)

    model.set_block_runner(runner)
    out = _call(model, folder)
    torch.testing.assert_close(out, ref, atol=0, rtol=0)
    assert seen == list(range(n))
    for i in swap.swapped:                       # each swapped block points at its host copy again
        assert [p.data_ptr() for p in model.blocks[i].parameters()] == \
            [cpu.data_ptr() for _, cpu in swap.host[i]]
    assert len(swap.inflight) <= 1               # only the next step's first block is prefetched
    model.set_block_runner(None)
    swap.restore()
    torch.testing.assert_close(_call(model, folder), ref, atol=0, rtol=0)


def test_place_with_swap_fp8_equals_quantized_resident_model(folder):
    ref_model, _ = build_dit(folder)
    quantize_dit(ref_model)
    ref = _call(ref_model, folder)
    model, _ = build_dit(folder)
    runner = place_with_swap(model, 2, "cpu", fp8=True)
    model.set_block_runner(runner)
    assert sum(isinstance(m, Fp8Linear) for m in model.modules()) == \
        sum(isinstance(m, Fp8Linear) for m in ref_model.modules()) > 0
    torch.testing.assert_close(_call(model, folder), ref, atol=0, rtol=0)


def test_swap_count_out_of_range_is_a_clear_error(folder):
    model, _ = build_dit(folder)
    with pytest.raises(ValueError, match="swap_blocks must be between 0 and"):
        BlockSwap(model.blocks, len(model.blocks) + 1, "cpu")
    with pytest.raises(ValueError, match="swap_blocks"):
        place_with_swap(model, -1, "cpu")


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU (pinned memory, copy stream)")
def test_parked_model_frees_the_gpu_and_comes_back(folder):
    model, _ = build_dit(folder)
    model.to("cuda")
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    used = torch.cuda.memory_allocated()
    with parked_on_host(model):
        assert all(p.device.type == "cpu" for p in model.parameters())
        assert torch.cuda.memory_allocated() < used
    for n, p in model.named_parameters():
        assert p.device.type == "cuda" and torch.equal(p, before[n])


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU (pinned memory, copy stream)")
def test_block_swap_streams_on_gpu(folder):
    model, _ = build_dit(folder)
    model.to("cuda")
    io = read_safetensors(folder / "io.safetensors")
    inputs = {k: (v.cuda() if torch.is_tensor(v) else [c.cuda() for c in v])
              for k, v in dit_inputs(io).items()}
    t = io[timestep_keys(io)[0]].cuda()
    with torch.no_grad():
        ref = model(t=t, **inputs)
    swap = BlockSwap(model.blocks, 2, "cuda")
    model.set_block_runner(swap)
    assert all(p.device.type == "cpu" and p.is_pinned() for i in swap.swapped
               for p in model.blocks[i].parameters())
    with torch.no_grad():
        for _ in range(2):                                # the second step uses the prefetch
            torch.testing.assert_close(model(t=t, **inputs), ref, atol=0, rtol=0)


def _tiny_t5(tmp_path, device, dtype):
    from wan_animate.checkpoints.official import load_t5
    from wan_animate.checkpoints.tiny import write_tiny_checkpoint
    return load_t5(write_tiny_checkpoint(tmp_path / "tiny"), device, dtype)


def test_parked_encoder_on_cpu_stays_put_and_computes_the_same(tmp_path):
    from wan_animate.models.offload import Parked
    t5 = _tiny_t5(tmp_path, "cpu", torch.float32)
    ids, mask = torch.randint(1, 50, (1, 12)), torch.ones(1, 12, dtype=torch.long)
    ref = t5(ids, mask)
    parked = Parked(t5, "cpu")
    with parked.visiting() as m:
        assert m is t5
        torch.testing.assert_close(m(ids, mask), ref, atol=0, rtol=0)
    assert parked.host_bytes() == sum(p.numel() * 4 for p in t5.parameters()) + \
        sum(b.numel() * b.element_size() for b in t5.buffers())


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU (pinned memory)")
def test_parked_encoder_holds_no_gpu_memory_between_visits():
    from wan_animate.models.offload import Parked
    net = torch.nn.Sequential(torch.nn.Linear(4096, 4096), torch.nn.GELU(), torch.nn.Linear(4096, 4096))
    net = net.to("cuda", torch.bfloat16)                       # 64 MiB of weights
    x = torch.randn(8, 4096, device="cuda", dtype=torch.bfloat16)
    with torch.no_grad():
        ref = net(x)
    parked = Parked(net, "cuda")
    base = torch.cuda.memory_allocated()
    assert all(p.device.type == "cpu" and p.is_pinned() for p in net.parameters())
    with parked.visiting() as m, torch.no_grad():
        assert torch.cuda.memory_allocated() >= base + parked.host_bytes()
        out = m(x)
    del m
    slack = 8 << 20                                             # cuBLAS workspace and the like
    assert parked.host_bytes() > 8 * slack
    assert torch.cuda.memory_allocated() <= base + out.numel() * out.element_size() + slack
    assert all(p.device.type == "cpu" for p in net.parameters())
    torch.testing.assert_close(out, ref, atol=0, rtol=0)
