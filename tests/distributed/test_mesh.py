"""Mesh axes on 2 gloo CPU ranks: sizes, SP groups under CFG parallel, the CFG exchange."""
from __future__ import annotations

import socket

import pytest
import torch

from wan_animate.distributed.endpoints import free_port
from wan_animate.distributed.mesh import Axis, backend_for, build_mesh
from wan_animate.distributed.pool import WorkerPool
from wan_animate.distributed.protocol import Job, PoolSpec


def nothing(env, config):
    return None


def mesh_info(state, payload, ctx):
    """Build the mesh with the job's CFG size; exchange a per-rank tensor over the CFG axis."""
    mesh = build_mesh(ctx.device.type, cfg=payload["cfg"])
    sizes = {a.value: mesh.size(a) for a in Axis}
    info = {"sizes": sizes, "cfg_rank": mesh.cfg_rank}
    if payload["cfg"] == 2:
        x = torch.full((1, 3), float(ctx.rank + 1))
        info["pair"] = mesh.cfg_pair(x)
    return info


@pytest.fixture(scope="module")
def pool():
    p = WorkerPool(PoolSpec(factory=f"{__name__}:nothing", handlers={"mesh": f"{__name__}:mesh_info"},
                            world_size=2, device_type="cpu", start_timeout_s=120))
    p.start()
    yield p
    p.close()


def test_sp_only(pool):
    got = pool.submit(Job("mesh", {"cfg": 1}))
    assert got["sizes"] == {"cfg": 1, "sp": 2, "fsdp": 2} and got["cfg_rank"] == 0


def test_cfg_parallel_axes_and_exchange(pool):
    got = pool.submit(Job("mesh", {"cfg": 2}))
    assert got["sizes"] == {"cfg": 2, "sp": 1, "fsdp": 2} and got["cfg_rank"] == 0
    cond, uncond = got["pair"]
    torch.testing.assert_close(cond, torch.full((1, 3), 1.0))  # from rank 0 (half 0)
    torch.testing.assert_close(uncond, torch.full((1, 3), 2.0))  # from rank 1 (half 1)


def test_backend_and_port():
    assert backend_for("cuda") == "nccl" and backend_for("cpu") == "gloo"
    with pytest.raises(ValueError, match="unsupported device type"):
        backend_for("mps")
    port = free_port()
    with socket.socket() as s:
        s.bind(("127.0.0.1", port))  # really free


def test_gather_looks_up_torch_distributed_at_each_call(monkeypatch):
    """The sequence and CFG gathers go through ``torch.distributed`` as it is at call time, so a
    wrapped collective (the bench's stand-ins for the fake process group) sees every gather: a
    name bound at import once let the bench's latent carry uninitialized rows."""
    import torch.distributed as dist

    from wan_animate.distributed import mesh

    seen = []

    def wrapped(out, x, group=None):
        seen.append(group)
        out.copy_(x.repeat(2, 1))

    for name in ("all_gather_single", "all_gather_into_tensor"):
        if hasattr(dist, name):
            monkeypatch.setattr(dist, name, wrapped)
    out = torch.empty(4, 3)
    mesh.all_gather_single(out, torch.ones(2, 3), group="g")
    assert seen == ["g"] and bool((out == 1).all())
