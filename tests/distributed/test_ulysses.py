"""Ulysses sequence parallel on real gloo process groups (2 and 3 CPU ranks) vs LocalAttention."""
from __future__ import annotations

import pytest
import torch
import torch.distributed as dist

from wan_animate.distributed.mesh import Axis, build_mesh
from wan_animate.distributed.pool import WorkerPool
from wan_animate.distributed.protocol import Job, PoolSpec, WorkerError
from wan_animate.distributed.ulysses import UlyssesSequenceParallel, check_heads, valid_sp_sizes
from wan_animate.errors import ParallelConfigError
from wan_animate.models.attention import LocalAttention

# --- run inside the workers ---------------------------------------------------------------


def make_mesh(env, config):
    """State factory: the pool's (cfg, sp) mesh."""
    return build_mesh(env.device.type)


def sp_attention(mesh, payload, ctx):
    """Shard q/k/v, Ulysses attention, gather; also report every rank's layout."""
    q, k, v = payload["q"], payload["k"], payload["v"]
    length = q.shape[1]
    sp = UlyssesSequenceParallel(mesh[Axis.SP])
    local = [sp.shard(t) for t in (q, k, v)]
    assert local[0].shape[1] == sp.padded_len(length) // sp.size
    out = sp.gather(sp.attention(*local, k_len=length), length)
    roundtrip = sp.gather(local[0], length)
    layout = [None] * sp.size
    dist.all_gather_object(layout, (sp.rank, sp.local_range(length), local[0].shape[1]),
                           group=sp.group)
    return {"out": out, "roundtrip": roundtrip, "layout": layout}


# --- tests ----------------------------------------------------------------------------------

def _spec(world: int) -> PoolSpec:
    return PoolSpec(factory=f"{__name__}:make_mesh", handlers={"attn": f"{__name__}:sp_attention"},
                    world_size=world, device_type="cpu", start_timeout_s=120, abort_grace_s=5)


@pytest.fixture(scope="module")
def pool2():
    pool = WorkerPool(_spec(2))
    pool.start()
    yield pool
    pool.close()


def _qkv(length: int, heads: int, seed: int, dim: int = 8, batch: int = 2):
    g = torch.Generator().manual_seed(seed)
    return {n: torch.randn(batch, length, heads, dim, generator=g) for n in "qkv"}


def _check(pool: WorkerPool, length: int, heads: int, seed: int) -> None:
    qkv = _qkv(length, heads, seed)
    got = pool.submit(Job("attn", qkv))
    ref = LocalAttention()(qkv["q"], qkv["k"], qkv["v"])
    torch.testing.assert_close(got["out"], ref, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(got["roundtrip"], qkv["q"], atol=0, rtol=0)
    # Real token ranges are contiguous, disjoint and cover [0, L); slices are equal-sized.
    ranges = [r for _, r, _ in sorted(got["layout"])]
    assert ranges[0][0] == 0 and ranges[-1][1] == length
    assert all(a[1] == b[0] for a, b in zip(ranges, ranges[1:]))
    assert len({n for _, _, n in got["layout"]}) == 1


def test_two_ranks_divisible(pool2):
    _check(pool2, length=10, heads=4, seed=0)


def test_two_ranks_padding(pool2):
    _check(pool2, length=7, heads=4, seed=1)  # 7 tokens -> padded to 8, 1 padding key masked


def test_heads_not_divisible_fails_on_ranks(pool2):
    with pytest.raises(WorkerError, match=r"(?s)3 attention heads.*1, 3") as info:
        pool2.submit(Job("attn", _qkv(6, heads=3, seed=2)))
    assert "ParallelConfigError" in info.value.worker_traceback
    _check(pool2, length=5, heads=2, seed=3)  # the pool is still usable


def test_three_ranks_three_heads():
    pool = WorkerPool(_spec(3))
    try:
        pool.start()
        _check(pool, length=8, heads=3, seed=4)  # 8 tokens -> padded to 9
    finally:
        pool.close()


def test_check_heads_lists_valid_sizes():
    assert valid_sp_sizes(40) == [1, 2, 4, 5, 8, 10, 20, 40]
    check_heads(40, 8)
    with pytest.raises(ParallelConfigError, match="1, 2, 4, 5, 8, 10, 20, 40"):
        check_heads(40, 3)
