"""parallelize_dit (Ulysses + FSDP2) and per-rank shard loading on 2 gloo CPU ranks."""
from __future__ import annotations

import pytest
import torch
import torch.distributed as dist
from safetensors.torch import save_file
from torch import nn
from torch.distributed.fsdp import FSDPModule
from torch.distributed.tensor import DTensor

from wan_animate.distributed.loading import SafetensorsSource, load_local_shards
from wan_animate.distributed.mesh import build_mesh
from wan_animate.distributed.parallelize import ParallelConfig, parallelize_dit
from wan_animate.distributed.pool import WorkerPool
from wan_animate.distributed.protocol import Job, PoolSpec
from wan_animate.errors import CheckpointError, ParallelConfigError
from wan_animate.models.attention import NoSequenceParallel

DIM, HEADS, DEPTH = 16, 4, 3


class ToyBlock(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(DIM)
        self.qkv = nn.Linear(DIM, 3 * DIM)
        self.o = nn.Linear(DIM, DIM)
        self.modulation = nn.Parameter(torch.randn(1, 1, DIM))

    def forward(self, x, attention, length):
        b, l, c = x.shape
        # [B, L, 3C] -> 3 x [B, L, N, D]
        q, k, v = self.qkv(self.norm(x) + self.modulation).view(b, l, 3, HEADS, c // HEADS).unbind(2)
        return x + self.o(attention(q, k, v, k_len=length).flatten(2))


class ToyDiT(nn.Module):
    """A DiT-shaped toy: embed -> shard -> blocks (+ a fuser block) -> head -> gather."""

    num_heads = HEADS

    def __init__(self) -> None:
        super().__init__()
        self.embed = nn.Linear(4, DIM)
        self.scale = nn.Parameter(torch.randn(DIM).to(torch.bfloat16))  # a second dtype in root
        self.blocks = nn.ModuleList(ToyBlock() for _ in range(DEPTH))
        self.face_adapter = nn.Module()
        self.face_adapter.fuser_blocks = nn.ModuleList([nn.Linear(DIM, DIM), nn.Linear(DIM, DIM)])
        self.head = nn.Linear(DIM, 4)
        self.sp = NoSequenceParallel()

    def set_parallel(self, sp) -> None:
        self.sp = sp

    def forward(self, x):  # [B, L, 4] -> [B, L, 4]
        length = x.shape[1]
        h = self.sp.shard(self.embed(x) * self.scale.float())
        for i, block in enumerate(self.blocks):
            h = block(h, self.sp.attention, length)
            if i % 2 == 0:
                h = h + self.face_adapter.fuser_blocks[i // 2](h)
        return self.sp.gather(self.head(h), length)


# --- run inside the workers ---------------------------------------------------------------


def make_mesh(env, config):
    return build_mesh(env.device.type)


def sharded_forward(mesh, payload, ctx):
    with torch.device("meta"):
        model = ToyDiT()
    parallelize_dit(model, mesh, ParallelConfig(world_size=ctx.world_size, fsdp=payload["fsdp"]))
    model.to_empty(device=ctx.device)
    load_local_shards(model, SafetensorsSource(payload["files"]), "toy")
    x = payload["x"].to(ctx.device)
    with torch.no_grad():
        y1 = model(x)
        y2 = model(x)  # FSDP reshards after forward; a second pass must agree
    local = torch.tensor([sum((p.to_local() if isinstance(p, DTensor) else p).numel()
                              for p in model.parameters())], device=ctx.device)
    dist.all_reduce(local)
    return {"y1": y1, "y2": y2, "local_sum": int(local), "total": sum(p.numel() for p in model.parameters()),
            "sp": type(model.sp).__name__, "fsdp_units": sum(isinstance(m, FSDPModule) for m in model.modules())}


# --- tests ----------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def pool():
    spec = PoolSpec(factory=f"{__name__}:make_mesh", handlers={"forward": f"{__name__}:sharded_forward"},
                    world_size=2, device_type="cpu", start_timeout_s=120, abort_grace_s=5)
    p = WorkerPool(spec)
    p.start()
    yield p
    p.close()


@pytest.fixture(scope="module")
def toy(tmp_path_factory):
    torch.manual_seed(0)
    ref = ToyDiT().eval()
    state = {k: v.contiguous() for k, v in ref.state_dict().items()}
    keys = sorted(state)
    folder = tmp_path_factory.mktemp("toy")
    files = [str(folder / "a.safetensors"), str(folder / "b.safetensors")]
    save_file({k: state[k] for k in keys[::2]}, files[0])
    save_file({k: state[k] for k in keys[1::2]}, files[1])
    return ref, files


@pytest.mark.parametrize("length", [8, 7])  # 7 tokens: padded to 8 across 2 ranks
def test_fsdp_ulysses_equals_unsharded(pool, toy, length):
    ref, files = toy
    x = torch.randn(2, length, 4, generator=torch.Generator().manual_seed(length))
    with torch.no_grad():
        want = ref(x)
    got = pool.submit(Job("forward", {"files": files, "x": x, "fsdp": True}))
    torch.testing.assert_close(got["y1"], want, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(got["y2"], want, atol=1e-5, rtol=1e-5)
    assert got["sp"] == "UlyssesSequenceParallel"
    assert got["fsdp_units"] == DEPTH + 2 + 1  # blocks, fuser blocks, root
    assert got["local_sum"] == got["total"]  # each parameter row lives on exactly one rank


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_nccl_pool(toy):
    """The same path on GPUs: NCCL model group, gloo control group (2 GPUs if present)."""
    ref, files = toy
    world = min(2, torch.cuda.device_count())
    spec = PoolSpec(factory=f"{__name__}:make_mesh", handlers={"forward": f"{__name__}:sharded_forward"},
                    world_size=world, device_type="cuda", start_timeout_s=300, abort_grace_s=5)
    x = torch.randn(2, 7, 4, generator=torch.Generator().manual_seed(7))
    with torch.no_grad():
        want = ref(x)
    pool = WorkerPool(spec)
    try:
        got = pool.submit(Job("forward", {"files": files, "x": x, "fsdp": True}))
    finally:
        pool.close()
    torch.testing.assert_close(got["y1"], want, atol=1e-4, rtol=1e-4)
    assert got["local_sum"] == got["total"]


def test_replicated_without_fsdp(pool, toy):
    ref, files = toy
    x = torch.randn(1, 5, 4, generator=torch.Generator().manual_seed(5))
    with torch.no_grad():
        want = ref(x)
    got = pool.submit(Job("forward", {"files": files, "x": x, "fsdp": False}))
    torch.testing.assert_close(got["y1"], want, atol=1e-5, rtol=1e-5)
    assert got["fsdp_units"] == 0 and got["local_sum"] == 2 * got["total"]


def test_load_local_shards_is_strict(toy, tmp_path):
    ref, files = toy
    model = ToyDiT()
    load_local_shards(model, SafetensorsSource(files), "toy")  # unsharded model: whole tensors
    x = torch.randn(1, 3, 4)
    with torch.no_grad():
        torch.testing.assert_close(model(x), ref(x))
    with pytest.raises(CheckpointError, match=r"missing keys: .*blocks\.1\.qkv"):
        load_local_shards(ToyDiT(), SafetensorsSource(files[:1]), "toy")
    bad = {k: v for k, v in ref.state_dict().items()}
    bad["head.weight"] = torch.zeros(3, DIM)
    save_file({k: v.contiguous() for k, v in bad.items()}, str(tmp_path / "bad.safetensors"))
    with pytest.raises(CheckpointError, match=r"head\.weight \(3, 16\) \(model \(4, 16\)\)"):
        load_local_shards(ToyDiT(), SafetensorsSource([tmp_path / "bad.safetensors"]), "bad")


def test_parallel_config_validation():
    assert ParallelConfig(world_size=4).sp_size == 4
    assert ParallelConfig(world_size=4, cfg_parallel=True).sp_size == 2
    with pytest.raises(ParallelConfigError, match="even pool size; got 3"):
        ParallelConfig(world_size=3, cfg_parallel=True)
    with pytest.raises(ParallelConfigError, match="does not match world_size 4"):
        ParallelConfig(world_size=4, sp_size=3)
    with pytest.raises(ParallelConfigError, match="40 attention heads.*1, 2, 4, 5, 8, 10, 20, 40"):
        ParallelConfig(world_size=3).check_heads(40)
