"""Per-rank weight loading: each rank reads only the rows of its own FSDP shards.

After ``parallelize_dit`` (on meta) and ``model.to_empty(device=...)``, every parameter is a
DTensor sharded on dim 0 over the FSDP mesh (rank r of P holds rows
``[r*ceil(n/P), min((r+1)*ceil(n/P), n))``). :func:`load_local_shards` asks a
:class:`TensorSource` for exactly those rows, so host memory over all ranks is about one model.
Unsharded tensors (buffers, or every tensor without FSDP) are read whole.

A source is anything with ``keys()``, ``shape(key)`` and ``read(key, start, stop)``;
:class:`SafetensorsSource` reads memory-mapped row slices of safetensors files. Key renames or
fp8 de-scaling of other layouts wrap a source (same three methods).
"""
from __future__ import annotations

from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any, Protocol

import torch
from torch import nn
from torch.distributed.tensor import DTensor, Shard

from wan_animate.errors import CheckpointError

_SHOW = 8


class TensorSource(Protocol):
    """Random row access to the tensors of a checkpoint (native key names)."""

    def keys(self) -> Iterable[str]: ...

    def shape(self, key: str) -> tuple[int, ...]: ...

    def read(self, key: str, start: int | None = None, stop: int | None = None) -> torch.Tensor:
        """Rows ``[start, stop)`` of dim 0 (the whole tensor when ``start`` is None), on CPU."""
        ...


class SafetensorsSource:
    """Row slices of one or more safetensors files (memory-mapped; nothing read up front).

    Args:
        files: the ``.safetensors`` files; a key must live in exactly one of them.
    """

    def __init__(self, files: Iterable[str | Path]) -> None:
        from safetensors import safe_open

        self._handles: dict[Path, Any] = {}
        self._where: dict[str, Path] = {}
        for path in map(Path, files):
            if not path.is_file():
                raise CheckpointError(f"missing checkpoint file: {path}")
            try:
                handle = safe_open(str(path), framework="pt", device="cpu")
            except Exception as e:  # safetensors raises several types for corrupt headers
                raise CheckpointError(f"cannot read {path}: {e}; re-download it") from e
            self._handles[path] = handle
            for key in handle.keys():
                if key in self._where:
                    raise CheckpointError(f"key {key} is in both {self._where[key]} and {path}")
                self._where[key] = path

    @classmethod
    def from_index(cls, folder: str | Path, index_name: str) -> SafetensorsSource:
        """The files listed in a sharded checkpoint's ``*.index.json``."""
        from wan_animate.checkpoints.load import read_weight_map

        names = sorted(set(read_weight_map(folder, index_name).values()))
        return cls(Path(folder) / n for n in names)

    def keys(self) -> Iterable[str]:
        return self._where.keys()

    def shape(self, key: str) -> tuple[int, ...]:
        return tuple(self._handles[self._where[key]].get_slice(key).get_shape())

    def read(self, key: str, start: int | None = None, stop: int | None = None) -> torch.Tensor:
        handle = self._handles[self._where[key]]
        if start is None or not self.shape(key):
            return handle.get_tensor(key)
        return handle.get_slice(key)[start:stop]


def local_rows(t: DTensor) -> tuple[int, int]:
    """The global ``[start, stop)`` rows of dim 0 that this rank's shard of ``t`` holds."""
    if t.device_mesh.ndim != 1 or tuple(t.placements) != (Shard(0),):
        raise NotImplementedError(f"only dim-0 sharding on a 1-D mesh is supported, got "
                                  f"{t.placements} on {t.device_mesh}")
    n, size, rank = t.shape[0], t.device_mesh.size(), t.device_mesh.get_local_rank()
    chunk = -(-n // size)  # torch.chunk sizes, as FSDP2 shards
    start = min(rank * chunk, n)
    return start, min(start + chunk, n)


def _check(own: dict[str, torch.Tensor], source: TensorSource, name: str,
           ignore_missing: Callable[[str], bool] | None) -> None:
    have = set(source.keys())
    missing = sorted(k for k in own if k not in have and not (ignore_missing and ignore_missing(k)))
    unexpected = sorted(k for k in have if k not in own)
    wrong = sorted(f"{k} {source.shape(k)} (model {tuple(own[k].shape)})" for k in own
                   if k in have and source.shape(k) != tuple(own[k].shape))
    parts = [f"{len(v)} {what}: {', '.join(v[:_SHOW])}{' ...' if len(v) > _SHOW else ''}"
             for what, v in (("missing keys", missing), ("unexpected keys", unexpected),
                              ("shape mismatches", wrong)) if v]
    if parts:
        raise CheckpointError(f"{name}: checkpoint does not match the model ({'; '.join(parts)})")


@torch.no_grad()
def load_local_shards(model: nn.Module, source: TensorSource, name: str,
                      ignore_missing: Callable[[str], bool] | None = None) -> nn.Module:
    """Strictly fill a materialized (``to_empty``) model from ``source``, reading only local rows.

    Values are cast to each parameter's own dtype (set dtypes on meta, before sharding).
    ``ignore_missing(key)``: keys the owning module rebuilds (``rebuild_buffer(leaf)``).
    """
    own = model.state_dict(keep_vars=True)
    _check(own, source, name, ignore_missing)
    have = set(source.keys())
    for key, t in own.items():
        if t.device.type == "meta":
            raise RuntimeError(f"{key} is still on the meta device; call model.to_empty() first")
        if key not in have:
            owner_name, _, leaf = key.rpartition(".")
            owner = model.get_submodule(owner_name) if owner_name else model
            rebuild = getattr(owner, "rebuild_buffer", None)
            if rebuild is None:
                raise CheckpointError(f"{name}: missing key {key} and {type(owner).__name__} "
                                      f"cannot rebuild it")
            t.copy_(rebuild(leaf))
            continue
        if isinstance(t, DTensor):
            local = t.to_local()
            start, stop = local_rows(t)
            if local.shape[0] != stop - start:
                raise RuntimeError(f"{key}: local shard has {local.shape[0]} rows, expected "
                                   f"rows [{start}, {stop}) of {t.shape[0]}")
            if stop > start:
                local.copy_(source.read(key, start, stop))
        else:
            t.copy_(source.read(key))
    return model
