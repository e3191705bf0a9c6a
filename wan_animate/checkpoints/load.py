"""Read weight files and load them strictly into modules built on the meta device.

Rules (DESIGN.md §3):
- `.pth` files are read with ``torch.load(weights_only=True, mmap=True)``; anything that is not
  a tensor (or a dict of tensors under a known wrapper key) is refused.
- Loading is strict: missing, unexpected or mis-shaped keys raise :class:`CheckpointError`
  naming the file and the first offending keys.
- Tensors are converted one at a time straight to their target dtype/device and *assigned*
  into the module (``load_state_dict(assign=True)``), so a module built on ``meta`` never exists
  as a full float32 copy in host memory.
"""
from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path

import torch
from torch import nn

from wan_animate.errors import CheckpointError

DtypeRule = Callable[[str, torch.Tensor], torch.dtype | None]
"""Given (key, tensor) return the dtype to store it in, or None to keep the file's dtype."""

_SHOW = 8  # how many offending keys an error message lists


def _first(keys: Iterable[str]) -> str:
    keys = sorted(keys)
    more = f" ... (+{len(keys) - _SHOW} more)" if len(keys) > _SHOW else ""
    return ", ".join(keys[:_SHOW]) + more


def missing_file(path: Path) -> str:
    """The message for a checkpoint file that is not there, with the command that fetches it."""
    group = "relight" if path.name == "relighting_lora.ckpt" else "core"
    return (f"missing checkpoint file: {path}; fetch it with `wan-animate setup download --with "
            f"{group} --local_dir {path.parent}` (`wan-animate setup status --local_dir "
            f"{path.parent}` lists every missing file and what it disables)")


def read_safetensors(path: str | Path, keys: Iterable[str] | None = None,
                     device: str | torch.device = "cpu") -> dict[str, torch.Tensor]:
    """Read all (or only ``keys``) tensors of one safetensors file."""
    from safetensors import safe_open

    path = Path(path)
    if not path.is_file():
        raise CheckpointError(missing_file(path))
    try:
        with safe_open(str(path), framework="pt", device=str(device)) as f:
            names = list(f.keys()) if keys is None else list(keys)
            return {k: f.get_tensor(k) for k in names}
    except CheckpointError:
        raise
    except Exception as e:  # safetensors raises several types for truncated/corrupt files
        raise CheckpointError(f"cannot read {path}: {e}. The file is corrupt or incomplete; "
                              f"re-download it (wan-animate setup verify / --force-redownload).") from e


def read_weight_map(folder: str | Path, index_name: str) -> dict[str, str]:
    """key -> shard file name, from a sharded checkpoint's ``*.index.json``."""
    index_path = Path(folder) / index_name
    if not index_path.is_file():
        raise CheckpointError(f"missing checkpoint index: {index_path}")
    try:
        return dict(json.loads(index_path.read_text())["weight_map"])
    except (KeyError, TypeError, json.JSONDecodeError) as e:
        raise CheckpointError(f"{index_path}: not a safetensors index ({e})") from e


class LazyTensors(Mapping[str, torch.Tensor]):
    """Key -> tensor view over safetensors files that reads a tensor only when asked.

    Loading through it keeps at most one tensor of the checkpoint in host memory at a time
    (``load_into`` converts and places each tensor before reading the next).
    """

    def __init__(self, files: Mapping[str, Path], device: str | torch.device = "cpu") -> None:
        from safetensors import safe_open

        self._files = dict(files)          # key -> file
        self._device = str(device)
        self._handles: dict[Path, object] = {}
        self._open = safe_open
        for f in set(self._files.values()):
            if not Path(f).is_file():
                keys = [k for k, v in self._files.items() if v == f]
                raise CheckpointError(f"missing checkpoint shard {f} ({len(keys)} keys, e.g. "
                                      f"{_first(keys)}); re-download the checkpoint")

    def _handle(self, f: Path):  # noqa: ANN202 - safetensors handle type is private
        if f not in self._handles:
            try:
                self._handles[f] = self._open(str(f), framework="pt", device=self._device)
            except Exception as e:  # corrupt header
                raise CheckpointError(f"cannot read {f}: {e}; re-download it") from e
        return self._handles[f]

    def __getitem__(self, key: str) -> torch.Tensor:
        return self._handle(self._files[key]).get_tensor(key)

    def shape(self, key: str) -> tuple[int, ...]:
        return tuple(self._handle(self._files[key]).get_slice(key).get_shape())

    def __iter__(self):  # noqa: ANN204
        return iter(self._files)

    def __len__(self) -> int:
        return len(self._files)

    @classmethod
    def from_index(cls, folder: str | Path, index_name: str,
                   device: str | torch.device = "cpu") -> LazyTensors:
        """Lazy view of a sharded checkpoint through its ``*.index.json``."""
        folder = Path(folder)
        return cls({k: folder / v for k, v in read_weight_map(folder, index_name).items()}, device)

    @classmethod
    def from_file(cls, path: str | Path, device: str | torch.device = "cpu") -> LazyTensors:
        from safetensors import safe_open

        path = Path(path)
        if not path.is_file():
            raise CheckpointError(missing_file(path))
        try:
            with safe_open(str(path), framework="pt") as f:
                keys = list(f.keys())
        except Exception as e:
            raise CheckpointError(f"cannot read {path}: {e}; the file is corrupt or incomplete: "
                                  f"re-download it (`wan-animate setup verify`, then "
                                  f"`wan-animate setup download --force-redownload`)") from e
        return cls({k: path for k in keys}, device)


def _shape(state: Mapping[str, torch.Tensor], key: str) -> tuple[int, ...]:
    if isinstance(state, LazyTensors):
        return state.shape(key)
    return tuple(state[key].shape)


def read_pth(path: str | Path, wrapper_keys: tuple[str, ...] = ()) -> dict[str, torch.Tensor]:
    """Read a ``.pth``/``.ckpt`` state dict safely (``weights_only=True``, memory-mapped).

    ``wrapper_keys``: top-level keys that may wrap the state dict (e.g. ``"state_dict"``).
    Refuses files holding anything but tensors.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(missing_file(path))
    try:
        obj = torch.load(str(path), map_location="cpu", weights_only=True, mmap=True)
    except Exception as e:  # pickle errors, unsafe globals, truncated zip
        raise CheckpointError(
            f"refusing or unable to read {path}: {e}. Only plain tensor state dicts are loaded "
            f"(weights_only=True); re-download the file if it is corrupt.") from e
    for wk in wrapper_keys:
        if isinstance(obj, Mapping) and wk in obj and isinstance(obj[wk], Mapping):
            obj = obj[wk]
            break
    if not isinstance(obj, Mapping):
        raise CheckpointError(f"{path}: expected a state dict (key -> tensor), got {type(obj).__name__}")
    bad = [k for k, v in obj.items() if not isinstance(v, torch.Tensor)]
    if bad:
        raise CheckpointError(f"{path}: entries that are not tensors: {_first(map(str, bad))}; "
                              f"refusing to load it")
    return dict(obj)


def check_keys(module: nn.Module, state: Mapping[str, torch.Tensor], source: str,
               ignore_missing: Callable[[str], bool] | None = None) -> None:
    """Raise :class:`CheckpointError` unless ``state`` has exactly the module's keys and shapes."""
    expected = {k: tuple(v.shape) for k, v in module.state_dict(keep_vars=True).items()}
    missing = [k for k in expected if k not in state and not (ignore_missing and ignore_missing(k))]
    unexpected = [k for k in state if k not in expected]
    if missing or unexpected:
        parts = []
        if missing:
            parts.append(f"{len(missing)} missing keys: {_first(missing)}")
        if unexpected:
            parts.append(f"{len(unexpected)} unexpected keys: {_first(unexpected)}")
        raise CheckpointError(f"{source}: checkpoint does not match the model ({'; '.join(parts)})")
    wrong = [f"{k} {_shape(state, k)} (model {expected[k]})" for k in state
             if _shape(state, k) != expected[k]]
    if wrong:
        raise CheckpointError(f"{source}: shape mismatch for {len(wrong)} keys: {_first(wrong)}")


def load_into(module: nn.Module, state: Mapping[str, torch.Tensor], source: str,
              device: str | torch.device = "cpu", dtype: torch.dtype | DtypeRule | None = None,
              ignore_missing: Callable[[str], bool] | None = None) -> nn.Module:
    """Strictly load ``state`` into ``module`` (possibly on meta), tensor by tensor.

    Args:
        module: built on any device, typically ``meta``.
        state: key -> tensor with the module's own key names.
        source: file or folder named in errors.
        device: where the parameters end up.
        dtype: one dtype for floating tensors, or a rule ``(key, tensor) -> dtype | None``.
        ignore_missing: keys the module can rebuild itself (left as they are).
    """
    check_keys(module, state, source, ignore_missing)
    converted: dict[str, torch.Tensor] = {}
    for key in state:
        t = state[key]
        target = dtype(key, t) if callable(dtype) else dtype
        if target is None or not t.is_floating_point():
            target = t.dtype
        converted[key] = t.to(device=device, dtype=target)
    own = module.state_dict(keep_vars=True)
    for key in own:  # keys the module rebuilds itself must be materialized too
        if key not in converted:
            converted[key] = own[key].detach().to(device) if own[key].device.type != "meta" else \
                _rebuild_missing(module, key, device)
    module.load_state_dict(converted, strict=True, assign=True)
    return module


def _rebuild_missing(module: nn.Module, key: str, device: str | torch.device) -> torch.Tensor:
    """Ask the owning submodule for a value of a key that checkpoints may omit."""
    owner_name, _, leaf = key.rpartition(".")
    owner = module.get_submodule(owner_name) if owner_name else module
    rebuild = getattr(owner, "rebuild_buffer", None)
    if rebuild is None:
        raise CheckpointError(f"missing key {key} and {type(owner).__name__} cannot rebuild it")
    return rebuild(leaf).to(device)


def save_safetensors_sharded(state: Mapping[str, torch.Tensor], folder: str | Path,
                             index_name: str, shard_pattern: str, num_shards: int) -> list[Path]:
    """Write ``state`` as ``num_shards`` safetensors files plus an index (the official layout).

    ``shard_pattern`` is formatted with ``i`` (1-based) and ``n``.
    """
    from safetensors.torch import save_file

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    keys = sorted(state)
    per = max(1, -(-len(keys) // num_shards))
    weight_map: dict[str, str] = {}
    files: list[Path] = []
    total = 0
    for i in range(num_shards):
        chunk = keys[i * per:(i + 1) * per]
        name = shard_pattern.format(i=i + 1, n=num_shards)
        tensors = {k: state[k].contiguous() for k in chunk}
        save_file(tensors, str(folder / name), metadata={"format": "pt"})
        total += sum(t.numel() * t.element_size() for t in tensors.values())
        weight_map.update({k: name for k in chunk})
        files.append(folder / name)
    index = {"metadata": {"total_size": total}, "weight_map": weight_map}
    (folder / index_name).write_text(json.dumps(index, indent=2))
    return files
