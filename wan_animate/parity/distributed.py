"""``python -m wan_animate.parity --world-size N``: DiT fixtures through a real worker pool.

Every rank builds the fixture's DiT on meta, applies Ulysses + FSDP2 (the production
:func:`~wan_animate.distributed.animate.build_sharded_dit`), reads only its own rows of
``weights.safetensors`` and runs the documented call; rank 0's outputs are compared with the
same tolerances as the single-process check.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from wan_animate.checkpoints.load import read_safetensors
from wan_animate.models.config import DiTConfig
from wan_animate.parity.common import Comparison, compare, read_config, tolerance
from wan_animate.parity.dit_animate import dit_inputs, timestep_keys


@dataclass(frozen=True)
class FixtureSpec:
    folder: str
    lora_folder: str | None = None


def load_fixture_dit(env, spec: FixtureSpec):  # noqa: ANN001, ANN201 - WorkerEnv -> AnimateDiT
    from wan_animate.distributed.animate import build_sharded_dit, merge_lora_local
    from wan_animate.distributed.loading import SafetensorsSource
    from wan_animate.models.lora import normalize_lora_state
    from wan_animate.placement import Placement

    folder = Path(spec.folder)
    cfg = read_config(folder)
    dcfg = DiTConfig.from_dict(cfg["constructor"], cfg.get("hardcoded_overrides", {}))
    source = SafetensorsSource([folder / "weights.safetensors"])
    placement = Placement(device_type=env.device.type, ranks=env.world_size, dtype="fp32",
                          dit_sharded=env.world_size > 1)
    model = build_sharded_dit(env, folder, placement, cfg=dcfg, source=source)
    if spec.lora_folder:
        lf = Path(spec.lora_folder)
        alpha = float(read_config(lf).get("alpha", 0)) or None
        merge_lora_local(model, normalize_lora_state(
            read_safetensors(lf / "weights.safetensors"), str(lf), alpha=alpha))
    return model


@torch.no_grad()
def forward_handler(model, folder: str, ctx):  # noqa: ANN001, ANN201
    io = read_safetensors(Path(folder) / "io.safetensors")
    inputs = {k: v.to(ctx.device) if isinstance(v, torch.Tensor) else [u.to(ctx.device) for u in v]
              for k, v in dit_inputs(io).items()}
    model.set_parallel(model.pool_layouts.get("world", model.pool_layouts["halves"]))
    return {tk: model(t=io[tk].to(ctx.device), **inputs)[0].cpu() for tk in timestep_keys(io)}


def run(folder: Path, world_size: int) -> list[Comparison]:
    """Run ``dit_animate`` / ``relighting_lora`` fixtures on a CPU pool of ``world_size``."""
    from wan_animate.distributed.pool import WorkerPool
    from wan_animate.distributed.protocol import Job, PoolSpec

    cfg = read_config(folder)
    name = cfg["fixture"]
    if name == "relighting_lora":
        base = (folder / str(cfg.get("base_model_fixture", "../dit_animate")).split()[0]).resolve()
        spec, outs, prefix = FixtureSpec(str(base), str(folder)), folder, "out_lora_"
    elif name == "dit_animate":
        base = folder
        spec, outs, prefix = FixtureSpec(str(folder)), folder, "out_"
    else:
        raise ValueError(f"--world-size applies to the DiT fixtures, not {name!r}")
    mod = "wan_animate.parity.distributed"
    pool = WorkerPool.get(PoolSpec(factory=f"{mod}:load_fixture_dit", config=spec,
                                   handlers={"forward": f"{mod}:forward_handler"},
                                   world_size=world_size, device_type="cpu"))
    try:
        got = pool.submit(Job("forward", str(base)))
    finally:
        pool.close()
    ref = read_safetensors(outs / "io.safetensors")
    tol = tolerance(cfg, "outputs")
    return [compare(name, f"world{world_size}.{prefix}{tk[2:]}", out, ref[f"{prefix}{tk[2:]}"], *tol)
            for tk, out in sorted(got.items())]
